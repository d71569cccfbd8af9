#pragma once
// nnScaler-style baseline: the best STATIC plan found by a search over plan
// families, run once on the profile ("average") steps and reused for every step, as nnScaler
// compiles one plan for a model and keeps it. Families searched (each scored by emulating the
// profile steps; fitting memory beats not fitting, then the shorter total time wins):
//  * the chain split into P ranges under GPipe and under 1F1B (best split each);
//  * the chain split into P·v ranges under interleaved 1F1B, v ∈ options.virtual_stages;
//  * modality-aware placements: every module cut on its own into P·K_m contiguous chunks of
//    balanced cost (no chunk mixes modules), chunk c of a module on rank c mod P, so that every
//    module is spread over all ranks K_m times; run as a virtual pipeline with v = Σ K_m
//    (interleaved order over the module-aligned ranges). K_m ∈ {1, 2} for every module, plus
//    DIP's rule K_m = ⌊T_m / T_min⌋ (T = a module's per-microbatch cost) capped at 4.
// Families already prepared by the caller (the other baselines of a comparison) can be passed in
// so that their searches are not repeated. Uniform recompute per step: the cheapest that fits.
// std-only.
#include <algorithm>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/gpipe.hpp"
#include "pipeweaver/baselines/interleaved_1f1b.hpp"
#include "pipeweaver/baselines/one_f_one_b.hpp"

namespace pipeweaver {

/// The module-aligned split of the chain: module m (in chain order) into P·K[m] ranges of
/// balanced `weights` (the chain's per-layer costs). Empty bounds when a module has fewer layers
/// than P·K[m].
[[nodiscard]] inline ChainSplit module_aligned_split(const ModelSpec& model, std::span<const ModuleId> chain,
                                                     std::span<const int> K, int P,
                                                     std::span<const std::int64_t> weights) {
  ChainSplit s{P, std::accumulate(K.begin(), K.end(), 0), {0}};
  int offset = 0;
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const int L = model.module(chain[i]).layers;
    if (L < P * K[i]) return ChainSplit{P, s.virtual_stages, {}};
    const auto b = min_max_split(weights.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(L)), P * K[i]);
    for (std::size_t j = 1; j < b.size(); ++j) s.bounds.push_back(offset + b[j]);
    offset += L;
  }
  return s;
}

template <class C>
[[nodiscard]] PreparedBaseline prepare_nnscaler(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                                const BaselineOptions& options = {},
                                                std::span<const PreparedBaseline> already_prepared = {}) {
  const ModelSpec& model = ctx.model();
  const int P = ctx.setup().pipeline_stages;
  const auto chain = chain_modules(model);
  const auto weights = chain_layer_costs(ctx, chain, profile);
  std::vector<PreparedBaseline> candidates(already_prepared.begin(), already_prepared.end());
  const auto have = [&](const std::string& name) {
    return std::any_of(candidates.begin(), candidates.end(), [&](const PreparedBaseline& p) { return p.baseline.name == name; });
  };
  if (!have("gpipe")) candidates.push_back(prepare_gpipe(ctx, profile, options));
  if (!have("1f1b")) candidates.push_back(prepare_1f1b(ctx, profile, options));
  if (!have("interleaved-1f1b")) candidates.push_back(prepare_interleaved_1f1b(ctx, profile, options));

  // Modality-aware placements.
  std::vector<std::vector<int>> ks;
  const std::size_t n = chain.size();
  if (n <= 8)
    for (std::uint32_t mask = 0; mask < (1u << n); ++mask) {
      std::vector<int> k(n);
      for (std::size_t i = 0; i < n; ++i) k[i] = (mask >> i) & 1u ? 2 : 1;
      ks.push_back(k);
    }
  {  // DIP's rule on the average microbatch: K_m = floor(T_m / T_min), capped at 4.
    std::vector<std::int64_t> T(n, 0);
    int offset = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const int L = model.module(chain[i]).layers;
      for (int l = 0; l < L; ++l) T[i] += weights[static_cast<std::size_t>(offset + l)];
      offset += L;
    }
    const std::int64_t tmin = std::max<std::int64_t>(1, *std::min_element(T.begin(), T.end()));
    std::vector<int> k(n);
    for (std::size_t i = 0; i < n; ++i) k[i] = static_cast<int>(std::clamp<std::int64_t>(T[i] / tmin, 1, 4));
    if (std::find(ks.begin(), ks.end(), k) == ks.end()) ks.push_back(k);
  }
  for (const auto& k : ks) {
    const ChainSplit s = module_aligned_split(model, chain, k, P, weights);
    if (s.bounds.empty()) continue;
    StaticBaseline b;
    b.name = "nnscaler";
    b.layout = chain_layout(model, chain, s, "nnscaler");
    b.chain = chain;
    b.order = s.virtual_stages >= 2 ? BaselineOrder::interleaved : BaselineOrder::one_f_one_b;
    std::string ktext;
    for (std::size_t i = 0; i < n; ++i)
      ktext += (i ? "," : "") + model.module(chain[i]).name + "=" + std::to_string(k[i]);
    b.description = "modality-aware placement K={" + ktext + "}, ranges " + describe_bounds(s);
    const ProfileScore score = score_on_profile(ctx, b, profile);
    candidates.push_back({std::move(b), score});
  }

  // Best family; ties keep the earlier candidate (deterministic).
  std::size_t best = 0;
  for (std::size_t i = 1; i < candidates.size(); ++i)
    if (candidates[i].score < candidates[best].score) best = i;
  PreparedBaseline out = candidates.at(best);
  if (out.baseline.name != "nnscaler") out.baseline.description = out.baseline.name + " family: " + out.baseline.description;
  out.baseline.name = "nnscaler";
  out.baseline.layout.partition.name = "nnscaler";
  return out;
}

}  // namespace pipeweaver
