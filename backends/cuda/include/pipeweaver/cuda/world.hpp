#pragma once
// What the ranks of one process share in the CUDA backend: the options, the abort state, the
// per-rank progress the watchdog reads, the in-process links of the local transport, and the
// connection to a cross-process abort channel.
//
// Abort: World::abort(rank, why) keeps the first caller's rank and reason, wakes every host
// wait of the process, tells the other processes through the abort channel (when the abort
// started here), then stops the communicators of every rank of the process (revoke, wait until
// quiescent, abort; see CudaRuntimeT::stop_comms), so that no stream stays blocked on a peer
// that is gone, all within the abort grace period. A rank that sees the abort stops with
// stop_error(): Error(execution) on the rank that aborted first, Error(cancelled) on the others.
// std-only.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/rank_errors.hpp"
#include "pipeweaver/cuda/device_api.hpp"

namespace pipeweaver::cuda {

/// How point-to-point messages travel.
enum class Transport {
  nccl,   ///< NCCL send/recv over the communicators of the CommTopology (any process layout)
  local,  ///< device-to-device copies between the ranks of one process (one GPU can run them all)
};

/// Which NCCL communicators carry the messages.
enum class CommTopology {
  per_edge,  ///< one 2-rank communicator per directed rank pair: links never share a FIFO
  single,    ///< one communicator for the whole pipeline: fewer resources, head-of-line blocking
};

struct RuntimeOptions {
  Transport transport = Transport::nccl;
  CommTopology topology = CommTopology::per_edge;
  /// Longest any wait of a rank lasts without progress (a message, the end of the step, the
  /// run-ahead window) before the step fails with Error(execution).
  std::chrono::milliseconds timeout{60'000};
  /// Longest a rank's host thread may stay outside the runtime during a step (inside a stage
  /// callback, or blocked launching into a full queue) before the watchdog aborts the step.
  /// 0: half the timeout.
  std::chrono::milliseconds host_timeout{0};
  /// Grace period of the abort path: for the communicators of every rank to become quiescent
  /// after revoke, and for the streams to drain after a failed step. A rank that has not
  /// returned twice this long after an abort meets the watchdog's last-resort hook.
  std::chrono::milliseconds abort_grace{5'000};
  /// Run-ahead window: before launching stage callback k, the host waits until stage k - window
  /// has finished on the device (keeps device queues short and abort checks timely).
  std::size_t window = 64;
  /// Consecutive sends (or receives) on one link with nothing but event records and waits
  /// between them go in one NCCL group (one launch); with CommTopology::single, consecutive
  /// communication of any link does.
  bool group_transfers = true;
  /// Fault injection (tests): the sender drops this transfer.
  std::optional<TransferId> drop_transfer{};
  /// Mutation testing (tests): on `rank`, the `index`-th record() of each step (0-based, the
  /// events the executor's program records) hands out an event it never records, so every
  /// wait on it orders nothing.
  struct DroppedEvent {
    RankId rank{};
    std::size_t index = 0;
  };
  std::optional<DroppedEvent> drop_event{};

  [[nodiscard]] std::chrono::milliseconds host_deadline() const noexcept {
    return host_timeout.count() > 0 ? host_timeout : timeout / 2;
  }
};

/// A peer's abort, as an abort channel reports it.
struct AbortNotice {
  RankId rank{};
  std::string reason{};
};

/// How the processes of a job tell each other to stop: signal(rank, why) tells every other
/// process (it must not block for long); poll() returns another process's notice, if any. An
/// MPI or TCP implementation lives with the launcher; InProcessAbortChannel serves tests.
template <class C>
concept AbortChannel = requires(C& c, RankId rank, std::string_view why) {
  { c.signal(rank, why) } -> std::same_as<void>;
  { c.poll() } -> std::same_as<std::optional<AbortNotice>>;
};

/// An abort channel between "processes" that are threads of one process (tests). The first
/// signal wins; every poll returns it until reset().
class InProcessAbortChannel {
 public:
  void signal(RankId rank, std::string_view why) {
    std::lock_guard lk(mu_);
    if (!notice_) notice_ = AbortNotice{rank, std::string(why)};
  }
  [[nodiscard]] std::optional<AbortNotice> poll() {
    std::lock_guard lk(mu_);
    return notice_;
  }
  void reset() {
    std::lock_guard lk(mu_);
    notice_.reset();
  }

 private:
  std::mutex mu_;
  std::optional<AbortNotice> notice_;
};
static_assert(AbortChannel<InProcessAbortChannel>);

namespace detail {

/// What the world asks of a rank's runtime on the abort path and for the watchdog.
class RankControl {
 public:
  /// Revokes every communicator, waits until they are quiescent (at most until `deadline`),
  /// aborts them.
  virtual void stop_comms(std::chrono::steady_clock::time_point deadline) noexcept = 0;
  /// A communicator's asynchronous error, or empty (may skip a busy runtime).
  virtual std::string comm_error() noexcept = 0;

 protected:
  ~RankControl() = default;
};

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Per-rank state the watchdog reads (all atomics: written by the rank thread).
struct RankMonitor {
  std::atomic<bool> in_step{false};
  std::atomic<bool> in_wait{false};           ///< the host thread is in an interruptible wait of the runtime
  std::atomic<std::int64_t> last_host_ns{0};  ///< when the host thread last called the runtime or left a wait
  RankControl* control = nullptr;              ///< guarded by World::controls_mu_
};

/// A receive of the local transport, posted by the receiver on the link's queue.
template <class Event>
struct LocalPost {
  TransferId transfer{0};
  RankId from{};  ///< the sender
  std::byte* dst = nullptr;
  std::size_t bytes = 0;
  Event ready{};  ///< recorded on the receiver's recv stream when posted
  // Set by the sender under the link's mutex:
  bool issued = false;
  Event done{};          ///< recorded on the sender's stream after the copy
  std::string error{};   ///< a wrong message consumed this receive
};

template <class Event>
struct LocalLink {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<LocalPost<Event>*> posted;
};

}  // namespace detail

template <DeviceApi Api>
class World {
 public:
  using Post = detail::LocalPost<typename Api::event>;
  using Link = detail::LocalLink<typename Api::event>;

  World(int ranks, RuntimeOptions options) : ranks_(ranks), options_(std::move(options)), monitors_(static_cast<std::size_t>(std::max(ranks, 0))) {
    if (ranks <= 0) throw input_error("a CUDA world of " + std::to_string(ranks) + " ranks", {.expected = "at least one rank"});
    for (int i = 0; i < ranks * ranks; ++i) links_.push_back(std::make_unique<Link>());
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  [[nodiscard]] int rank_count() const noexcept { return ranks_; }
  [[nodiscard]] const RuntimeOptions& options() const noexcept { return options_; }

  /// Connects a cross-process abort channel (it must outlive the world).
  template <AbortChannel C>
  void connect(C& channel) {
    std::unique_lock lk(controls_mu_);
    signal_ = [&channel](RankId r, std::string_view why) { channel.signal(r, why); };
    poll_ = [&channel] { return channel.poll(); };
  }
  /// Another process's abort, if the channel reports one (the watchdog polls it).
  [[nodiscard]] std::optional<AbortNotice> poll_channel() {
    std::shared_lock lk(controls_mu_);
    if (!poll_) return std::nullopt;
    return poll_();
  }

  /// Stops the step on every rank (see the header). Only the first call does anything.
  void abort(RankId rank, std::string_view why, bool from_channel = false) noexcept {
    if (!first_.mark(rank, why, [this] { abort_ns_.store(detail::now_ns(), std::memory_order_relaxed); })) return;
    for (auto& l : links_) {
      std::lock_guard lk(l->mu);
      l->cv.notify_all();
    }
    std::shared_lock lk(controls_mu_);
    if (!from_channel && signal_) {
      try {
        signal_(rank, why);
      } catch (...) {  // a channel that fails must not stop the local abort
      }
    }
    const auto deadline = std::chrono::steady_clock::now() + options_.abort_grace;  // one budget for all ranks
    for (auto& m : monitors_)
      if (m.control != nullptr) m.control->stop_comms(deadline);
  }
  [[nodiscard]] bool aborted() const noexcept { return first_.aborted(); }
  [[nodiscard]] RankId first_aborting_rank() const { return first_.rank(); }
  [[nodiscard]] std::string abort_reason() const { return first_.reason(); }
  /// When the abort happened (steady clock, ns), 0 when none did.
  [[nodiscard]] std::int64_t abort_time_ns() const noexcept { return aborted() ? abort_ns_.load(std::memory_order_relaxed) : 0; }
  /// What a rank that sees the abort throws: execution on the rank that aborted first (with
  /// its reason), cancelled elsewhere.
  [[nodiscard]] Error stop_error(RankId me) const {
    const RankId first = first_.rank();  // fixed until reset(), which runs with no rank thread
    const std::string reason = first_.reason();
    if (first == me) return execution_error(reason, {.expected = "the step to make progress"});
    return cancelled_error("stopped because rank " + std::to_string(first.value()) + " failed: " + reason);
  }
  /// Before a step, with no rank thread running: clears the abort and the local links.
  void reset() {
    for (auto& l : links_) {
      std::lock_guard lk(l->mu);
      l->posted.clear();
    }
    first_.reset();
    std::lock_guard lk(mu_);
    stuck_reported_ = false;
  }

  /// The watchdog reports a stuck abort once per step.
  [[nodiscard]] bool claim_stuck_report() {
    std::lock_guard lk(mu_);
    return !std::exchange(stuck_reported_, true);
  }

  // ---- for runtimes and the watchdog ---------------------------------------------------------
  void attach(RankId rank, detail::RankControl& control) {
    std::unique_lock lk(controls_mu_);
    monitor(rank).control = &control;
  }
  void detach(RankId rank) noexcept {
    std::unique_lock lk(controls_mu_);
    monitors_.at(rank.index()).control = nullptr;
  }
  [[nodiscard]] detail::RankMonitor& monitor(RankId rank) {
    if (!rank.valid() || rank.value() >= ranks_)
      throw input_error("rank " + std::to_string(rank.value()) + " in a CUDA world of " + std::to_string(ranks_) + " ranks",
                        {.expected = "a rank in 0 .. " + std::to_string(ranks_ - 1)});
    return monitors_[rank.index()];
  }
  /// Calls f(rank, control) for every attached rank, under the shared lock (a runtime cannot
  /// detach meanwhile).
  template <class F>
  void for_each_control(F f) {
    std::shared_lock lk(controls_mu_);
    for (std::size_t r = 0; r < monitors_.size(); ++r)
      if (monitors_[r].control != nullptr) f(RankId{static_cast<RankId::rep>(r)}, *monitors_[r].control);
  }
  [[nodiscard]] Link& link(RankId from, RankId to) { return *links_[from.index() * static_cast<std::size_t>(ranks_) + to.index()]; }

 private:
  int ranks_;
  RuntimeOptions options_;
  std::vector<detail::RankMonitor> monitors_;
  std::vector<std::unique_ptr<Link>> links_;  // [from * P + to]
  mutable std::mutex mu_;
  FirstAbort first_;
  std::atomic<std::int64_t> abort_ns_{0};
  bool stuck_reported_ = false;
  std::shared_mutex controls_mu_;
  std::function<void(RankId, std::string_view)> signal_;
  std::function<std::optional<AbortNotice>()> poll_;
};

}  // namespace pipeweaver::cuda
