#pragma once
// GPipe baseline (issue 3, item 3): the whole chain (encoders, backbone, generators) split into P
// contiguous ranges, range r on rank r; every rank runs all its forwards (microbatch order), then
// all its backwards (microbatch order). The split is chosen once on the profile ("average")
// steps: min-max DP on per-layer costs, then neighbouring splits emulated under GPipe's own order
// (schedule/baselines/builder.hpp). Uniform recompute per step: the cheapest that fits.
// With zero communication cost on a homogeneous chain its step time is (M + P − 1)(F + B).
// std-only.
#include <span>
#include <utility>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/schedule/baselines/builder.hpp"

namespace pipeweaver {

template <class C>
[[nodiscard]] PreparedBaseline prepare_gpipe(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                             const BaselineOptions& options = {}) {
  const auto chain = chain_modules(ctx.model());
  const auto weights = chain_layer_costs(ctx, chain, profile);
  if (static_cast<int>(weights.size()) < ctx.setup().pipeline_stages)
    throw Error(ErrorKind::infeasible,
                "model '" + ctx.model().name + "' has " + std::to_string(weights.size()) + " layers for " +
                    std::to_string(ctx.setup().pipeline_stages) + " pipeline stages",
                {.file = {}, .path = "gpipe", .expected = "at least one layer per pipeline stage"});
  auto [b, score] = best_chain_baseline(ctx, "gpipe", BaselineOrder::gpipe, 1, profile, options, weights);
  return {std::move(b), score};
}

}  // namespace pipeweaver
