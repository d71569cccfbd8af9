#pragma once
// The watchdog: one thread per process that watches the ranks of a World while they run a
// step, for what a rank's own interruptible waits cannot see:
//  * a rank whose host thread stays outside the runtime's waits longer than the host deadline
//    (a stage callback that does not return, a launch blocked behind a full queue);
//  * a communicator's asynchronous error while its rank is busy elsewhere;
//  * another process's abort, reported by the world's abort channel.
// Any of them aborts the world (which revokes and aborts every communicator and wakes every
// wait). When, after an abort, a rank has still not left its step after twice the abort grace
// period (a callback that never returns, an abort that hangs inside NCCL), the last-resort
// hook runs once for the step: by default it prints why and calls std::abort, since only a
// new process can free a device stuck that way.
// std-only.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/world.hpp"

namespace pipeweaver::cuda {

struct WatchdogOptions {
  bool enabled = true;                    ///< (for CudaExecutor) run a watchdog at all
  std::chrono::milliseconds period{10};  ///< between checks
  /// The last resort when an abort does not stop every rank within the grace period. Empty:
  /// print the reason to stderr and std::abort().
  std::function<void(const std::string&)> on_stuck{};
};

/// The default last resort: the reason on stderr, then std::abort().
[[noreturn]] inline void abort_process(const std::string& why) noexcept {
  std::fprintf(stderr, "pipeweaver: %s; aborting the process\n", why.c_str());
  std::fflush(stderr);
  std::abort();
}

template <DeviceApi Api>
class Watchdog {
 public:
  explicit Watchdog(World<Api>& world, WatchdogOptions options = {}) : world_(&world), options_(std::move(options)) {
    thread_ = std::thread([this] { loop(); });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  /// One round of checks (the thread runs it every period).
  void check() {
    if (auto notice = world_->poll_channel(); notice && !world_->aborted()) world_->abort(notice->rank, notice->reason, true);
    if (world_->aborted()) return check_stuck();
    if (auto found = find_failure()) world_->abort(found->first, found->second);
  }

 private:
  void loop() {
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, options_.period, [&] { return stop_; })) {
      lk.unlock();
      check();
      lk.lock();
    }
  }

  // A rank with a failed communicator, or a host thread outside the runtime too long.
  std::optional<std::pair<RankId, std::string>> find_failure() {
    std::optional<std::pair<RankId, std::string>> found;
    const std::int64_t now = detail::now_ns();
    const auto limit = world_->options().host_deadline();
    world_->for_each_control([&](RankId r, detail::RankControl& control) {
      detail::RankMonitor& m = world_->monitor(r);
      if (found || !m.in_step.load()) return;
      if (std::string err = control.comm_error(); !err.empty()) {
        found.emplace(r, std::move(err));
        return;
      }
      const std::int64_t idle = now - m.last_host_ns.load();
      if (!m.in_wait.load() && idle > std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count())
        found.emplace(r, "rank " + std::to_string(r.value()) + "'s host thread stayed outside the runtime for more than " +
                             std::to_string(limit.count()) + " ms (a stage callback that does not return, or a launch blocked behind a full queue)");
    });
    return found;
  }

  // After an abort: every rank must leave its step within twice the grace period (one to stop
  // the communicators, one to come back).
  void check_stuck() {
    const auto limit = 2 * world_->options().abort_grace;
    if (detail::now_ns() - world_->abort_time_ns() <= std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count()) return;
    std::string stuck;
    world_->for_each_control([&](RankId r, detail::RankControl&) {
      if (world_->monitor(r).in_step.load()) stuck += (stuck.empty() ? "" : ", ") + std::to_string(r.value());
    });
    if (stuck.empty() || !world_->claim_stuck_report()) return;
    const std::string why = "rank(s) " + stuck + " did not stop within " + std::to_string(limit.count()) +
                            " ms after the step was aborted (rank " + std::to_string(world_->first_aborting_rank().value()) + ": " +
                            world_->abort_reason() + "); a host thread is stuck in a stage callback or inside CUDA or NCCL";
    if (options_.on_stuck) options_.on_stuck(why);
    else abort_process(why);
  }

  World<Api>* world_;
  WatchdogOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pipeweaver::cuda
