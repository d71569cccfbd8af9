#pragma once
// Megatron-LM as deployed for multimodal models ("megatron"): what users of Megatron-LM, NeMo or
// torchtitan run, as opposed to interleaved-1f1b (the best static split of the whole chain,
// encoder and language layers mixed freely, which no framework ships).
//
// Layout, vision-language models (encoders + backbone, no generator):
//  * every encoder (and its projector, part of the encoder module here) lives whole on pipeline
//    rank 0, in its first virtual stage: Megatron-LM's pretrain_vlm.py builds the vision model
//    and projection with pipeline size 1 on the first stage ("Vision Encoder and Projection
//    should live on PP rank0"; add_encoder only on the first pipeline stage); encoder pipeline
//    parallelism (--encoder-pipeline-model-parallel-size) was removed from Megatron-LM in 2025;
//  * the backbone's L decoder layers are split evenly over the P ranks, rank 0 holding f of
//    them (Megatron's --decoder-first-pipeline-num-layers, TransformerConfig::
//    num_layers_in_first_pipeline_stage in megatron/core/transformer/transformer_config.py;
//    unset means an equal division), the others (L − f) / (P − 1) each;
//  * with the interleaved schedule (--num-layers-per-virtual-pipeline-stage, v = 2) every rank's
//    layers are split evenly into its v model chunks (range j = vstage·P + rank, as in
//    Megatron's layer offsets); the encoders precede rank 0's first chunk.
//  Megatron's constraints, as this baseline enforces them: f >= 1; (L − f) divisible by P − 1
//  (the other stages are equal); with v > 1, f and (L − f) / (P − 1) both divisible by v
//  (each stage's layer count must be divisible by the virtual pipeline size: "number of layers
//  at last stage: 6 must be divisible by virtual pipeline parallel degree 4", the limitation
//  Megatron-LM's flexible pipeline layout was introduced to lift); every model chunk non-empty.
//  Every f that satisfies them is a candidate; a model whose layer count admits none at v = 1
//  (never for the reference models) takes the rest near-even (the first L mod (P − 1) ranks one
//  layer more) instead of failing.
// Layout, text-to-video models (a backbone feeding generators): Megatron-LM ships no such model;
// as deployed (text model before the diffusion transformer in one pipeline), the encoders (if
// any) and the text backbone occupy the first k virtual stages, its layers split near-evenly
// over them, and the generators' layers are split near-evenly over the remaining P·v − k
// virtual stages (the first ones one layer more where the count does not divide).
// Static choice, made once on the profile ("average") steps like every baseline here: among
// v ∈ {1, 2} (1F1B, or Megatron's interleaved 1F1B with two virtual stages per rank; v = 2 only
// where the constraints admit a split) and every admissible f (vision-language) or k
// (text-to-video), the candidate with the best ProfileScore (fits memory first, then the least
// emulated time on the profile steps; ties: the earlier candidate, v = 1 and small f first).
// This is the value a user would tune on the average step. Per step: the cheapest uniform
// recompute setting that fits (none, selective, full), as for the other baselines.
// std-only.
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"

namespace pipeweaver {

/// One layout Megatron admits: the split of the chain (chain_modules order) and a description.
struct MegatronCandidate {
  ChainSplit split{};
  std::string description{};
};

namespace detail {

/// Bounds of ranges whose layer counts are `counts`, the first range preceded by `lead` layers.
[[nodiscard]] inline std::vector<int> bounds_of(int lead, const std::vector<int>& counts) {
  std::vector<int> b{0};
  int at = lead;
  for (int c : counts) b.push_back(at += c);
  return b;
}

/// Vision-language layout for decoder layers per rank (`per_rank`, rank 0 first) with v chunks
/// per rank of equal size (near-equal when not divisible); `lead` encoder layers before range 0.
[[nodiscard]] inline ChainSplit megatron_rank_split(int lead, const std::vector<int>& per_rank, int v) {
  const int P = static_cast<int>(per_rank.size());
  std::vector<int> counts(static_cast<std::size_t>(P * v), 0);
  for (int r = 0; r < P; ++r) {
    const std::vector<int> pieces = even_layer_counts(per_rank[static_cast<std::size_t>(r)], v);
    for (std::size_t s = 0; s < pieces.size(); ++s) counts[s * static_cast<std::size_t>(P) + static_cast<std::size_t>(r)] = pieces[s];
  }
  return ChainSplit{P, v, bounds_of(lead, counts)};
}

[[nodiscard]] inline bool all_ranges_non_empty(const ChainSplit& s) {
  for (std::size_t j = 0; j + 1 < s.bounds.size(); ++j)
    if (s.bounds[j] >= s.bounds[j + 1]) return false;
  return true;
}

[[nodiscard]] inline std::vector<MegatronCandidate> megatron_vlm_candidates(int encoder_layers, int L, int P) {
  std::vector<MegatronCandidate> out;
  for (int v : {1, 2})
    for (int f = 1; f <= L; ++f) {
      const int rest = L - f;
      if (P == 1 ? rest != 0 : rest % (P - 1) != 0) continue;
      const int g = P == 1 ? 0 : rest / (P - 1);
      if (f % v != 0 || g % v != 0 || (P > 1 && g < v) || f < v) continue;
      std::vector<int> per_rank(static_cast<std::size_t>(P), g);
      per_rank[0] = f;
      ChainSplit s = megatron_rank_split(encoder_layers, per_rank, v);
      if (!all_ranges_non_empty(s)) continue;
      out.push_back({std::move(s), "v=" + std::to_string(v) + ", encoders on rank 0, decoder layers " + std::to_string(f) +
                                       " on rank 0 and " + std::to_string(g) + " on each other rank"});
    }
  if (out.empty() && P > 1)  // no split satisfies the divisibility rules: the nearest near-even ones
    for (int f = 1; f <= L - (P - 1); ++f) {
      std::vector<int> per_rank{f};
      for (int c : even_layer_counts(L - f, P - 1)) per_rank.push_back(c);
      if (static_cast<int>(per_rank.size()) != P) continue;
      out.push_back({megatron_rank_split(encoder_layers, per_rank, 1),
                     "v=1, encoders on rank 0, decoder layers " + std::to_string(f) + " on rank 0, the rest near-even (no split meets Megatron's divisibility rules)"});
    }
  return out;
}

[[nodiscard]] inline std::vector<MegatronCandidate> megatron_generator_candidates(int encoder_layers, int T, int D, int P) {
  std::vector<MegatronCandidate> out;
  for (int v : {1, 2}) {
    const int R = P * v;
    for (int k = 1; k < R; ++k) {
      if (T < k || D < R - k) continue;
      std::vector<int> counts = even_layer_counts(T, k);
      for (int c : even_layer_counts(D, R - k)) counts.push_back(c);
      ChainSplit s{P, v, bounds_of(encoder_layers, counts)};
      out.push_back({std::move(s), "v=" + std::to_string(v) + ", text backbone on the first " + std::to_string(k) +
                                       " of " + std::to_string(R) + " virtual stages, generators evenly on the rest"});
    }
  }
  return out;
}

}  // namespace detail

/// Every layout Megatron admits for `model` on `P` ranks (see the header comment), in the order
/// ties are broken: v = 1 first, then increasing f (or k). Empty when the model cannot be laid
/// out (fewer decoder layers than ranks).
[[nodiscard]] inline std::vector<MegatronCandidate> megatron_candidates(const ModelSpec& model, int P) {
  int encoders = 0, text = 0, generators = 0;
  for (const ModuleSpec& m : model.modules) {
    if (m.role == ModuleRole::encoder) encoders += m.layers;
    else if (m.role == ModuleRole::backbone) text += m.layers;
    else generators += m.layers;
  }
  if (P < 1) return {};
  return generators > 0 ? detail::megatron_generator_candidates(encoders, text, generators, P)
                        : detail::megatron_vlm_candidates(encoders, text, P);
}

/// The megatron baseline: the candidate layout with the best score on the profile steps.
/// Throws Error{infeasible} when Megatron's layout has no candidate (fewer decoder layers than
/// pipeline stages).
template <class C>
[[nodiscard]] PreparedBaseline prepare_megatron(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                                const BaselineOptions& = {}) {
  const ModelSpec& model = ctx.model();
  const int P = ctx.setup().pipeline_stages;
  const std::vector<MegatronCandidate> candidates = megatron_candidates(model, P);
  if (candidates.empty())
    throw infeasible_error("model '" + model.name + "' has too few decoder layers for Megatron's layout on " + std::to_string(P) +
                               " pipeline stages",
                           {.path = "megatron", .expected = "at least one decoder layer per pipeline stage"});
  const std::vector<ModuleId> chain = chain_modules(model);
  PreparedBaseline best;
  bool found = false;
  for (const MegatronCandidate& c : candidates) {
    StaticBaseline b;
    b.name = "megatron";
    b.layout = chain_layout(model, chain, c.split, "megatron");
    b.chain = chain;
    b.order = c.split.virtual_stages > 1 ? BaselineOrder::interleaved : BaselineOrder::one_f_one_b;
    b.description = c.description + ", chain ranges " + describe_bounds(c.split);
    const ProfileScore score = score_on_profile(ctx, b, profile);
    if (!found || score < best.score) {
      best = {std::move(b), score};
      found = true;
    }
  }
  return best;
}

}  // namespace pipeweaver
