#pragma once
// What a planner hands back for one step: the plan and how it was obtained.
// Produced by the Planner facade (searched plan), by a planner's fallback (best baseline) and
// passed through by the AsyncPlanner, which sets `fallback` when it had to use the fallback.
//
// Which sample went where. A plan's sub-microbatches name their items by microbatch and sample
// index within it (ItemRef). With re-packing (PlannerOptions::repack) the plan's microbatches
// may group the batch's samples differently from the batch given to plan(); `sample_origin`
// maps every sample of the plan back: plan microbatch mb, sample s (the ItemRef::sample of its
// items) is sample_origin[mb][s] of the given batch. The trainer feeds each plan microbatch from
// these samples, in this order (and, in a job of several processes, sends the mapping along with
// the plan to the ranks that read data). Without re-packing it is the identity.
// std-only.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

/// A sample of the batch given to plan(): its microbatch and its index there.
struct SampleOrigin {
  std::int32_t microbatch = 0;
  std::int32_t sample = 0;
  friend constexpr bool operator==(const SampleOrigin&, const SampleOrigin&) noexcept = default;
};

/// The search's best schedule at one moment of the search.
struct SearchTracePoint {
  Nanoseconds elapsed{0};      ///< since the search started
  std::int64_t rollouts = 0;   ///< schedules evaluated so far
  Nanoseconds step_time{0};    ///< the best one's step time (as the search's evaluator emulates it)
  bool fits_memory = true;     ///< whether that schedule fits memory
  friend bool operator==(const SearchTracePoint&, const SearchTracePoint&) = default;
};

struct PlanResult {
  Plan plan{};
  Nanoseconds step_time{0};    ///< emulated step time of `plan`
  /// Lower bound on the step time of every plan over the partitions compared for this batch
  /// (the searched one and each baseline's): the smallest of their tight bounds
  /// (emulate/lower_bound.hpp), so never above `step_time`.
  Nanoseconds lower_bound{0};
  /// The classic bound max(⌈W/P⌉, longest chain), partition-independent (baselines/compare.hpp);
  /// <= lower_bound.
  Nanoseconds classic_lower_bound{0};
  /// Emulated step time of the searched plan, whether or not it won (0 for a fallback).
  Nanoseconds searched_step_time{0};
  Nanoseconds search_time{0};  ///< wall-clock time spent finding `plan`
  std::int64_t iterations = 0; ///< MCTS iterations (expansions, each with several rollouts); 0 for a baseline
  bool fallback = false;       ///< true when the searched plan was not ready and a fallback was used
  std::string source{};          ///< what produced it: "dip", "1f1b", "interleaved-1f1b", ...
  /// sample_origin[mb][s]: the batch's sample that is sample s of the plan's microbatch mb (see
  /// the header comment); one entry per sample of every microbatch of the plan.
  std::vector<std::vector<SampleOrigin>> sample_origin{};
  bool repacked = false;  ///< the plan groups the samples differently from the batch given
  /// Per rank: static memory + the highest activation footprint of `plan` (its emulation).
  std::vector<Bytes> peak_memory{};
  /// The searched schedule's best step time over the search (after each MCTS round; the seeds
  /// first). Empty for a fallback. Its last point is the search's pick, which a baseline may beat.
  std::vector<SearchTracePoint> search_trace{};
  /// The planner's cost-model version the plan was made with (Planner::update_cost).
  std::uint64_t cost_version = 0;
};

/// The mapping of a plan that keeps `batch`'s microbatches: every sample to itself.
[[nodiscard]] inline std::vector<std::vector<SampleOrigin>> identity_sample_origin(const Batch& batch) {
  std::vector<std::vector<SampleOrigin>> out(batch.microbatches.size());
  for (std::size_t mb = 0; mb < batch.microbatches.size(); ++mb)
    for (std::size_t s = 0; s < batch.microbatches[mb].samples.size(); ++s)
      out[mb].push_back({static_cast<std::int32_t>(mb), static_cast<std::int32_t>(s)});
  return out;
}

/// Whether some backward of `plan` is split into its input and weight parts.
[[nodiscard]] inline bool has_split_backward(const Plan& plan) {
  for (const auto& actions : plan.ranks)
    for (const Action& a : actions)
      if (const auto* b = std::get_if<Backward>(&a); b && b->pass != Pass::backward) return true;
  return false;
}

}  // namespace pipeweaver
