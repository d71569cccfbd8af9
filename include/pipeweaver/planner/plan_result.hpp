#pragma once
// What a planner hands back for one step: the plan and how it was obtained.
// Produced by the Planner facade (searched plan), by a planner's fallback (best baseline) and
// passed through by the AsyncPlanner, which sets `fallback` when it had to use the fallback.
// std-only.
#include <cstdint>
#include <string>
#include <vector>

#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

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
  Nanoseconds lower_bound{0};  ///< a lower bound on any plan's step time for this batch
  Nanoseconds search_time{0};  ///< wall-clock time spent finding `plan`
  std::int64_t iterations = 0; ///< MCTS iterations (expansions, each with several rollouts); 0 for a baseline
  bool fallback = false;       ///< true when the searched plan was not ready and a fallback was used
  std::string source{};          ///< what produced it: "dip", "1f1b", "interleaved-1f1b", ...
  /// Per rank: static memory + the highest activation footprint of `plan` (its emulation).
  std::vector<Bytes> peak_memory{};
  /// The searched schedule's best step time over the search (after each MCTS round; the seeds
  /// first). Empty for a fallback. Its last point is the search's pick, which a baseline may beat.
  std::vector<SearchTracePoint> search_trace{};
  /// The planner's cost-model version the plan was made with (Planner::update_cost).
  std::uint64_t cost_version = 0;
};

}  // namespace pipeweaver
