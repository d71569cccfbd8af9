#pragma once
// Megatron-style 1F1B baseline: all modules' layers in one chain (encoder
// layers on the first ranks), split into P contiguous ranges (range r on rank r; a range that
// spans two modules is one chunk of each), whole microbatches (no sub-microbatches). Rank r runs
// min(P − r − 1, M) warm-up forwards, then one forward and one backward alternately, then the
// remaining backwards (cool-down); so at most min(P − r, M) microbatches are in flight on rank r.
// The split is the best static contiguous split on the profile ("average") steps: min-max DP on
// per-layer costs of the average microbatch, then neighboring splits emulated (builder.hpp);
// chosen once and reused for every step. Uniform recompute per step: the cheapest that fits.
// std-only.
#include <span>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"

namespace pipeweaver {

template <class C>
[[nodiscard]] PreparedBaseline prepare_1f1b(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                            const BaselineOptions& options = {}) {
  return prepare_chain_baseline(ctx, "1f1b", BaselineOrder::one_f_one_b, profile, options);
}

}  // namespace pipeweaver
