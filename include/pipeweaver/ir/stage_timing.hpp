#pragma once
// A measured stage of a plan: which Forward or Backward action of which rank ran, and how long it
// took. The executor records them when ExecutorOptions::time_stages is on (execute/executor.hpp);
// online calibration (cost/online_calibration.hpp) turns them into latency samples of the cost
// model. Plain data, std-only (nvcc).
#include <cstddef>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"

namespace pipeweaver {

struct StageTiming {
  RankId rank{0};
  std::size_t action = 0;  ///< position of the Forward / Backward in the rank's action list
  ModuleId module{0};
  int chunk = 0;
  SubMicrobatchId sub_microbatch{0};
  Pass pass = Pass::forward;
  MemoryStrategy strategy{};  ///< the action's memory strategy
  Nanoseconds duration{0};    ///< measured: the runtime's own timer, or the wall clock of the call
  friend bool operator==(const StageTiming&, const StageTiming&) = default;
};

}  // namespace pipeweaver
