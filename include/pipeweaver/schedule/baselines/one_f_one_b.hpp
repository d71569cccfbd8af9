#pragma once
// Megatron-style 1F1B baseline (issue 3, item 3): all modules' layers in one chain (encoder
// layers on the first ranks), split into P contiguous ranges (range r on rank r; a range that
// spans two modules is one chunk of each), whole microbatches (no sub-microbatches). Rank r runs
// min(P − r − 1, M) warm-up forwards, then one forward and one backward alternately, then the
// remaining backwards (cool-down); so at most min(P − r, M) microbatches are in flight on rank r.
// The split is the best static contiguous split on the profile ("average") steps: min-max DP on
// per-layer costs of the average microbatch, then neighbouring splits emulated (builder.hpp);
// chosen once and reused for every step. Uniform recompute per step: the cheapest that fits.
// std-only.
#include <span>
#include <utility>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/schedule/baselines/builder.hpp"

namespace pipeweaver {

template <class C>
[[nodiscard]] PreparedBaseline prepare_1f1b(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                            const BaselineOptions& options = {}) {
  const auto chain = chain_modules(ctx.model());
  const auto weights = chain_layer_costs(ctx, chain, profile);
  if (static_cast<int>(weights.size()) < ctx.setup().pipeline_stages)
    throw Error(ErrorKind::infeasible,
                "model '" + ctx.model().name + "' has " + std::to_string(weights.size()) + " layers for " +
                    std::to_string(ctx.setup().pipeline_stages) + " pipeline stages",
                {.file = {}, .path = "1f1b", .expected = "at least one layer per pipeline stage"});
  auto [b, score] = best_chain_baseline(ctx, "1f1b", BaselineOrder::one_f_one_b, 1, profile, options, weights);
  return {std::move(b), score};
}

}  // namespace pipeweaver
