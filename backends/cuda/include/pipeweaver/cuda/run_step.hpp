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
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver::cuda {

struct CudaRunOptions {
  RuntimeOptions runtime{};
  ExecutorOptions executor{};
  WatchdogOptions watchdog{};
};

/// How one rank ended the last step.
struct RankOutcome {
  bool ok = true;
  ErrorKind kind = ErrorKind::execution;  ///< when !ok
  std::string message{};                  ///< Error::what() when !ok
};

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
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
    outcomes_.assign(static_cast<std::size_t>(ranks), RankOutcome{});
    auto body = [&](int r) {
      const auto i = static_cast<std::size_t>(r);
      try {
        auto step = runtimes_[i]->step(plan.transfers.size());
        executors_[i]->prepare(plan, model);
        executors_[i]->run(callbacks);
      } catch (...) {
        errors[i] = std::current_exception();
        outcomes_[i] = outcome_of(errors[i]);
        if (outcomes_[i].kind != ErrorKind::cancelled) world_->abort(RankId{r}, outcomes_[i].message);
      }
    };
    const auto start = std::chrono::steady_clock::now();
    on_rank_threads(ranks, body);
    last_step_ = std::chrono::steady_clock::now() - start;
    if (world_->aborted())
      for (auto& rt : runtimes_) rt->drain();
    rethrow_root_cause(errors);
  }

  [[nodiscard]] const std::vector<RankOutcome>& outcomes() const noexcept { return outcomes_; }
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
    });
    for (const auto& e : errors)
      if (e) {
        const auto by = std::chrono::steady_clock::now() + options_.runtime.abort_grace;
        for (auto& rt : runtimes_) rt->stop_comms(by);
        world_->reset();
        std::rethrow_exception(e);
      }
  }

  template <class F>
  void on_rank_threads(int ranks, F&& body) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(ranks));
    try {
      for (int r = 0; r < ranks; ++r) threads.emplace_back(std::ref(body), r);
    } catch (...) {  // could not start a thread: stop and join those that run
      world_->abort(RankId{0}, "could not start the rank threads");
      for (auto& t : threads) t.join();
      throw;
    }
    for (auto& t : threads) t.join();
  }

  static RankOutcome outcome_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      return {false, x.kind(), x.what()};
    } catch (const std::exception& x) {
      return {false, ErrorKind::execution, x.what()};
    } catch (...) {
      return {false, ErrorKind::execution, "unknown exception"};
    }
  }

  // The error of the rank that aborted first, else any non-cancelled one, else any.
  void rethrow_root_cause(const std::vector<std::exception_ptr>& errors) const {
    if (world_->aborted()) {
      const RankId first = world_->first_aborting_rank();
      if (first.valid() && first.index() < errors.size() && errors[first.index()]) std::rethrow_exception(errors[first.index()]);
    }
    for (std::size_t r = 0; r < errors.size(); ++r)
      if (errors[r] && outcomes_[r].kind != ErrorKind::cancelled) std::rethrow_exception(errors[r]);
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  ApiFactory make_api_;
  CudaRunOptions options_;
  std::unique_ptr<World<Api>> world_;
  std::vector<std::unique_ptr<Runtime>> runtimes_;
  std::vector<std::unique_ptr<Executor<Runtime>>> executors_;
  std::unique_ptr<Watchdog<Api>> watchdog_;  // declared last: stopped before the runtimes go
  std::vector<RankOutcome> outcomes_;
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
