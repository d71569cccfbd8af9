#pragma once
// What one plan() call is allowed: its own budget (a wall-clock time from the call's start or an
// absolute deadline, an iteration budget) and a way to stop it early. Every field is optional:
// a default SearchControl uses the planner's own budgets (PlannerOptions) and never stops early.
//
//   planner.plan(batch);                                          // the planner's budgets
//   planner.plan(batch, {.iterations = 200});                     // reproducible: 200 MCTS iterations
//   planner.plan(batch, {.budget = std::chrono::milliseconds(50)});
//   planner.plan(batch, {.stop = token, .deadline = step_start + 1s});
//
// The AsyncPlanner hands each background search a control with its cancellation token, its
// deadline and the step it plans.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>

namespace pipeweaver {

struct SearchControl {
  using clock = std::chrono::steady_clock;

  /// Cancellation: the search returns the best it has soon after stop is requested.
  std::stop_token stop{};
  /// Absolute end of the search; max(): none.
  clock::time_point deadline = clock::time_point::max();
  /// This call's wall-clock budget from its start, instead of PlannerOptions::budget (0: none).
  std::optional<std::chrono::nanoseconds> budget{};
  /// This call's MCTS iteration budget, instead of PlannerOptions::iterations (0: none).
  /// With no time budget and no deadline, the plan is reproducible.
  std::optional<std::int64_t> iterations{};
  /// The step (submission index) planned; -1 outside an AsyncPlanner. Only reported.
  std::int64_t step = -1;

  /// Someone asked the search to stop.
  [[nodiscard]] bool cancelled() const noexcept { return stop.stop_requested(); }
  /// The deadline, if any, has passed.
  [[nodiscard]] bool deadline_passed() const noexcept { return deadline != clock::time_point::max() && clock::now() >= deadline; }
  /// The search should return now with the best it has (cancelled or out of time).
  [[nodiscard]] bool stop_requested() const noexcept { return cancelled() || deadline_passed(); }

  /// Sleeps for up to `d`, waking early when stop is requested or the deadline passes.
  /// Returns !stop_requested().
  bool sleep_for(std::chrono::nanoseconds d) const {
    auto until = clock::now() + d;
    if (deadline < until) until = deadline;
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    cv.wait_until(lk, stop, until, [] { return false; });
    return !stop_requested();
  }
};

}  // namespace pipeweaver
