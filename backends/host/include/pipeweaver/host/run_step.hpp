#pragma once
// Running a whole plan on the host: one thread per pipeline rank, each driving the generic
// Executor over its HostRuntime; the embedded default that runs every plan on any machine.
//
// Fault path: the first rank that fails (a callback throws, a transfer is lost or times out,
// its action list cannot be run) aborts the World, which wakes every blocked rank; they stop
// with Error(cancelled). All threads are joined before run() returns or throws, and run()
// throws the failing rank's Error(execution) (or Error(invalid_plan) from preparation), whose
// path names the rank and the action and whose message gives the cause. A rank blocked on a
// transfer gives up after Options::timeout, so no step hangs (a callback that never returns
// is the one thing the host cannot interrupt).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/execute/rank_errors.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver::host {

using pipeweaver::RankOutcome;

/// Keeps one World, runtime and executor per rank across steps, so that pools and channel
/// storage are reused (no allocation in the steady state beyond the P threads of a step).
class HostExecutor {
 public:
  explicit HostExecutor(Options options = {}) : options_(std::move(options)) {}

  /// Runs one step of `plan` (all ranks) and returns when every rank has finished. `step`
  /// reaches every stage call as StageIO::step.
  template <StageCallbacks C>
  void run(const Plan& plan, const ModelSpec& model, C& callbacks, std::int64_t step = 0) {
    const int ranks = plan.rank_count();
    if (ranks <= 0)
      throw input_error("plan '" + plan.name + "' has no ranks", {.path = "ranks", .expected = "at least one rank"});
    if (!world_ || world_->rank_count() != ranks) {
      executors_.clear();
      runtimes_.clear();
      world_ = std::make_unique<World>(ranks, options_);
      for (int r = 0; r < ranks; ++r) {
        runtimes_.push_back(std::make_unique<HostRuntime>(*world_, RankId{r}));
        executors_.push_back(std::make_unique<Executor<HostRuntime>>(*runtimes_.back(), options_.executor));
      }
    } else {
      world_->reset();
    }
    for (auto& rt : runtimes_) rt->begin_step(plan.transfers.size());
    auto body = [&](int r) {
      executors_[static_cast<std::size_t>(r)]->prepare(plan, model);
      executors_[static_cast<std::size_t>(r)]->run(callbacks, step);
    };
    const auto start = std::chrono::steady_clock::now();
    errors_.run(ranks, body, [this](RankId r, std::string_view why) { world_->abort(r, why); });
    last_step_ = std::chrono::steady_clock::now() - start;
    errors_.rethrow_root_cause(world_->aborted() ? world_->first_aborting_rank() : RankId{});
  }

  /// How each rank ended the last step (all ok after a successful step).
  [[nodiscard]] const std::vector<RankOutcome>& outcomes() const noexcept { return errors_.outcomes(); }
  /// Wall-clock time of the last step, from starting the threads to joining them.
  [[nodiscard]] std::chrono::nanoseconds last_step_time() const noexcept { return last_step_; }
  /// The executor of rank r (after a step: pool sizes, operation counts).
  [[nodiscard]] const Executor<HostRuntime>& executor(RankId r) const { return *executors_.at(r.index()); }
  /// With ExecutorOptions::time_stages: every rank's Forward / Backward calls of the last step,
  /// rank 0's in list order, then rank 1's, ... (what latency_samples() turns into samples for
  /// online calibration). Empty when stage timing is off.
  [[nodiscard]] std::vector<StageTiming> stage_times() const {
    std::vector<StageTiming> out;
    for (const auto& e : executors_) {
      const std::span<const StageTiming> t = e->stage_times();
      out.insert(out.end(), t.begin(), t.end());
    }
    return out;
  }
  [[nodiscard]] const Options& options() const noexcept { return options_; }

 private:
  Options options_;
  std::unique_ptr<World> world_;
  std::vector<std::unique_ptr<HostRuntime>> runtimes_;
  std::vector<std::unique_ptr<Executor<HostRuntime>>> executors_;
  RankErrors errors_;
  std::chrono::nanoseconds last_step_{0};
};

/// Runs one step of `plan` on the host backend (P threads) with the user's stage callbacks.
/// Throws Error(execution) naming the failing rank, action and cause (see the header).
template <StageCallbacks C>
void run_step(const Plan& plan, const ModelSpec& model, C& callbacks, const Options& options = {}) {
  HostExecutor executor{options};
  executor.run(plan, model, callbacks);
}

}  // namespace pipeweaver::host
