#pragma once
// GPipe baseline: the whole chain (encoders, backbone, generators) split into P
// contiguous ranges, range r on rank r; every rank runs all its forwards (microbatch order), then
// all its backwards (microbatch order). The split is chosen once on the profile ("average")
// steps: min-max DP on per-layer costs, then neighboring splits emulated under GPipe's own order
// (schedule/baselines/builder.hpp). Uniform recompute per step: the cheapest that fits.
// With zero communication cost on a homogeneous chain its step time is (M + P − 1)(F + B).
// std-only.
#include <span>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"

namespace pipeweaver {

template <class C>
[[nodiscard]] PreparedBaseline prepare_gpipe(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                             const BaselineOptions& options = {}) {
  return prepare_chain_baseline(ctx, "gpipe", BaselineOrder::gpipe, profile, options);
}

}  // namespace pipeweaver
