#pragma once
// Running a whole plan in one process: one host thread per pipeline rank, each driving the
// generic Executor over its CudaRuntimeT, with one World and one Watchdog for them all. With
// Transport::local every rank may sit on the same GPU (devices {0, 0, 0, 0}), so one GPU runs
// the whole runtime; with Transport::nccl each rank needs its own device (NCCL refuses two
// ranks on one GPU before 2.30) and the communicators are made here, in process, before the
// first step (the root's ids reach the rank threads directly).
//
// Fault path, as the host backend's: the first rank that fails aborts the world; every rank
// returns (Error(execution) on the failing rank, Error(cancelled) on the others); run() joins
// every thread and rethrows the failing rank's error. After a failed step every runtime's
// streams are drained, and the communicators (aborted by the abort path) are made anew before
// the next step.
// std-only (the CUDA calls are behind Api).
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/cuda/bootstrap.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/runtime.hpp"
#include "pipeweaver/cuda/watchdog.hpp"
#include "pipeweaver/cuda/world.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/execute/rank_errors.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver::cuda {

struct CudaRunOptions {
  RuntimeOptions runtime{};
  ExecutorOptions executor{};
  WatchdogOptions watchdog{};
};


using pipeweaver::RankOutcome;

template <DeviceApi Api>
class CudaExecutor {
 public:
  using Runtime = CudaRuntimeT<Api>;
  /// Makes rank r's device API (CudaApi{device of r}, or FakeDeviceApi{system, r}).
  using ApiFactory = std::function<Api(RankId)>;

  explicit CudaExecutor(ApiFactory make_api, CudaRunOptions options = {}) : make_api_(std::move(make_api)), options_(std::move(options)) {}
  CudaExecutor(const CudaExecutor&) = delete;
  CudaExecutor& operator=(const CudaExecutor&) = delete;
  ~CudaExecutor() { release(); }

  /// Runs one step of `plan` (all ranks) and returns when every rank has finished.
  template <StageCallbacks C>
  void run(const Plan& plan, const ModelSpec& model, C& callbacks) {
    const int ranks = plan.rank_count();
    if (ranks <= 0) throw input_error("plan '" + plan.name + "' has no ranks", {.path = "ranks", .expected = "at least one rank"});
    if (!world_ || world_->rank_count() != ranks) build(ranks);
    else world_->reset();
    for (int r = 0; r < ranks; ++r)
      if (runtimes_[static_cast<std::size_t>(r)]->poisoned())
        throw execution_error("rank " + std::to_string(r) + ": device work of a failed step never finished (or the device failed)",
                              {.expected = "a new process: the device may still write this rank's memory"});
    if (options_.runtime.transport == Transport::nccl) connect_all();
    auto body = [&](int r) {
      const auto i = static_cast<std::size_t>(r);
      auto step = runtimes_[i]->step(plan.transfers.size());
      executors_[i]->prepare(plan, model);
      executors_[i]->run(callbacks);
    };
    const auto start = std::chrono::steady_clock::now();
    errors_.run(ranks, body, abort_world());
    last_step_ = std::chrono::steady_clock::now() - start;
    if (world_->aborted())
      for (auto& rt : runtimes_) rt->drain();
    errors_.rethrow_root_cause(world_->aborted() ? world_->first_aborting_rank() : RankId{});
  }

  [[nodiscard]] const std::vector<RankOutcome>& outcomes() const noexcept { return errors_.outcomes(); }
  [[nodiscard]] std::chrono::nanoseconds last_step_time() const noexcept { return last_step_; }
  [[nodiscard]] const Executor<Runtime>& executor(RankId r) const { return *executors_.at(r.index()); }
  [[nodiscard]] Runtime& runtime(RankId r) { return *runtimes_.at(r.index()); }
  [[nodiscard]] World<Api>& world() { return *world_; }
  [[nodiscard]] const CudaRunOptions& options() const noexcept { return options_; }

 private:
  // Device work may still use what the executors own (stage IO, segments): drain the streams
  // before the executors go, then the runtimes (which free the arenas only when drained).
  void release() noexcept {
    watchdog_.reset();
    for (auto& rt : runtimes_) rt->drain();
    executors_.clear();
    runtimes_.clear();
  }
  void build(int ranks) {
    release();
    world_ = std::make_unique<World<Api>>(ranks, options_.runtime);
    for (int r = 0; r < ranks; ++r) {
      runtimes_.push_back(std::make_unique<Runtime>(*world_, RankId{r}, make_api_(RankId{r})));
      executors_.push_back(std::make_unique<Executor<Runtime>>(*runtimes_.back(), options_.executor));
    }
    if (options_.watchdog.enabled) watchdog_ = std::make_unique<Watchdog<Api>>(*world_, options_.watchdog);
  }

  // Makes the communicators where any rank lacks them (the first step, or after an abort).
  void connect_all() {
    bool all = true;
    for (auto& rt : runtimes_) all = all && rt->has_comms();
    if (all) return;
    const auto stop_by = std::chrono::steady_clock::now() + options_.runtime.abort_grace;
    for (auto& rt : runtimes_) rt->stop_comms(stop_by);
    const auto ids = make_unique_ids(runtimes_[0]->api(), options_.runtime.topology, world_->rank_count());
    std::vector<std::exception_ptr> errors(runtimes_.size());
    on_rank_threads(world_->rank_count(), [&](int r) {
      try {
        connect(*runtimes_[static_cast<std::size_t>(r)], ids);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
        world_->abort(RankId{r}, "communicator setup failed");
      }
    }, abort_world());
    for (const auto& e : errors)
      if (e) {
        const auto by = std::chrono::steady_clock::now() + options_.runtime.abort_grace;
        for (auto& rt : runtimes_) rt->stop_comms(by);
        world_->reset();
        std::rethrow_exception(e);
      }
  }

  [[nodiscard]] RankAbort abort_world() {
    return [this](RankId r, std::string_view why) { world_->abort(r, why); };
  }

  ApiFactory make_api_;
  CudaRunOptions options_;
  std::unique_ptr<World<Api>> world_;
  std::vector<std::unique_ptr<Runtime>> runtimes_;
  std::vector<std::unique_ptr<Executor<Runtime>>> executors_;
  std::unique_ptr<Watchdog<Api>> watchdog_;  // declared last: stopped before the runtimes go
  RankErrors errors_;
  std::chrono::nanoseconds last_step_{0};
};

/// Runs one step of `plan` in this process (one thread per rank) with the user's callbacks.
template <DeviceApi Api, StageCallbacks C>
void run_step(const Plan& plan, const ModelSpec& model, C& callbacks, typename CudaExecutor<Api>::ApiFactory make_api,
              const CudaRunOptions& options = {}) {
  CudaExecutor<Api> executor{std::move(make_api), options};
  executor.run(plan, model, callbacks);
}

}  // namespace pipeweaver::cuda
