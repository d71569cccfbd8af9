#pragma once
// What a planner hands back for one step: the plan and how it was obtained.
// Produced by the Planner facade (searched plan), by a planner's fallback (best baseline) and
// passed through by the AsyncPlanner, which sets `fallback` when it had to use the fallback.
// std-only.
#include <cstdint>
#include <string>

#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

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
};

}  // namespace pipeweaver
