#pragma once
// Megatron's interleaved 1F1B (virtual pipeline) baseline: the chain split into
// P·v contiguous ranges, range j on rank j mod P as its local virtual stage j / P. Each rank runs
// its units in Megatron's order: microbatches in groups of P; a group runs virtual stage 0 for
// its microbatches, then stage 1, ... (backwards from stage v − 1 down); warm-up
// min(2(P − r − 1) + (v − 1)P, M·v) forwards, then 1F1B, then cool-down. With M divisible by P
// and zero communication cost the bubble is (P − 1)(F + B)/v.
// M not divisible by P (Megatron requires divisibility): the M mod P remaining microbatches join
// the last group, which then holds P + (M mod P) microbatches, and the warm-up is Megatron's
// formula for that group size, 2(P − r − 1) + (v − 1)(P + M mod P): the fewest forwards that let
// the big group's first backward find its forward done. The alternative, a small last group of
// M mod P microbatches, idles the pipeline while they go round the ranks v times (and can
// deadlock with Megatron's warm-up). The extra warm-up costs memory, which the recompute choice
// accounts for. (common.hpp; tests check deadlock freedom for many P, v, M.)
// v is the best of options.virtual_stages (default {2, 4}) with its best split, both chosen on the
// profile steps; a v needing more ranges than the chain has layers is skipped, and if no v fits,
// v = 1 (plain 1F1B order) is used.
// std-only.
#include <span>
#include <utility>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/one_f_one_b.hpp"

namespace pipeweaver {

template <class C>
[[nodiscard]] PreparedBaseline prepare_interleaved_1f1b(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                                        const BaselineOptions& options = {}) {
  const auto chain = chain_modules(ctx.model());
  const auto weights = chain_layer_costs(ctx, chain, profile);
  PreparedBaseline best;
  bool found = false;
  for (int v : options.virtual_stages) {
    if (v < 2 || static_cast<int>(weights.size()) < ctx.setup().pipeline_stages * v) continue;
    auto [b, score] = best_chain_baseline(ctx, "interleaved-1f1b", BaselineOrder::interleaved, v, profile, options, weights);
    if (!found || score < best.score) {
      best = {std::move(b), score};
      found = true;
    }
  }
  if (!found) {
    best = prepare_1f1b(ctx, profile, options);
    best.baseline.name = "interleaved-1f1b";
    best.baseline.layout.partition.name = "interleaved-1f1b";
    best.baseline.description += " (too few layers for v >= 2)";
  }
  return best;
}

}  // namespace pipeweaver
