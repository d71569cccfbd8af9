#pragma once
// What an emulation reports: step time, per-rank busy/idle time and memory, and
// optionally the timeline of every compute action and transfer. std-only.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

struct EmulateOptions {
  bool record_timeline = false;  ///< fill EmulationResult::timeline
  /// emulate(plan, ..., cost) only (the overload taking a cache uses the cache's own settings):
  /// reuse stage costs within the step, with uniform-layer keys (see stage_cost_cache.hpp).
  StageCostCacheOptions cache{};
};

struct RankStats {
  Nanoseconds busy{0};     ///< sum of compute latencies on the rank's compute stream
  Nanoseconds idle{0};     ///< step_time - busy (bubbles, waiting for transfers, finishing early)
  Bytes static_memory{0};  ///< weights, gradients and optimizer state of the chunks it holds
  Bytes peak_memory{0};    ///< static_memory + the highest activation footprint over the step
  bool fits_memory = true; ///< peak_memory <= memory_capacity(setup)
  int compute_actions = 0;
};

/// One interval of the timeline: a compute action on a rank, or a transfer on a link.
struct TimelineEvent {
  enum class Kind : std::uint8_t { compute, transfer };
  Kind kind = Kind::compute;
  RankId rank{0};           ///< compute: the rank; transfer: the sender
  RankId peer{0};           ///< transfer: the receiver; compute: same as rank
  StageRef stage{};           ///< compute: the stage; transfer: the producing stage
  TransferId transfer{};    ///< transfer only (invalid for compute)
  std::int32_t action = 0;  ///< position in the rank's action list (compute: itself; transfer: its Send)
  Nanoseconds start{0};
  Nanoseconds end{0};
  Bytes bytes{0};           ///< compute: activation bytes kept (forward); transfer: message size
};

struct EmulationResult {
  Nanoseconds step_time{0};  ///< latest end of any compute action or transfer (the step starts at 0)
  std::vector<RankStats> ranks{};
  /// With EmulateOptions::record_timeline: compute events in (rank, list position) order, then
  /// transfer events in TransferId order.
  std::vector<TimelineEvent> timeline{};
  Bytes memory_capacity{0};    ///< per-device limit the peaks were checked against
  std::int64_t actions = 0;    ///< actions emulated (all kinds)
  StageCostCacheStats cache{};   ///< the cache's counters for this emulation (its own lookups only)

  [[nodiscard]] Bytes peak_memory() const noexcept {
    Bytes m{0};
    for (const auto& r : ranks) m = std::max(m, r.peak_memory);
    return m;
  }
  [[nodiscard]] bool fits_memory() const noexcept {
    return std::all_of(ranks.begin(), ranks.end(), [](const RankStats& r) { return r.fits_memory; });
  }
  [[nodiscard]] Nanoseconds total_busy() const {
    Nanoseconds t{0};
    for (const auto& r : ranks) t += r.busy;
    return t;
  }
};

}  // namespace pipeweaver
