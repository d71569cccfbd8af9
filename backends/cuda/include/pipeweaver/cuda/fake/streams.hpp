#pragma once
// Streams and events of the fake device (fake_device_api.hpp), with CUDA's rules:
//  * a stream is a worker thread running a FIFO of tasks in issue order; its launch queue is
//    bounded, and issuing into a full queue blocks the issuing thread until a task finishes;
//  * an event captures, when recorded, how many tasks its stream had been issued (seq); it is
//    done when that many have finished; an event never recorded is done and an empty wait;
//    a wait captures the event's state when it is issued, so re-recording changes nothing
//    for waits issued before;
//  * a task that throws is a device fault, sticky like CUDA's: every later event query of the
//    device reports it, and no later task of the device's streams runs (they complete without
//    running, as work queued on a dead CUDA context never executes), so that streams drain;
//  * with a RaceChecker (fake/happens_before.hpp), each worker keeps its stream's vector clock:
//    a task's number is its own component, it joins the clock of the device's host (what the
//    host had seen finish when it enqueued the task) and, for a wait, the clock its event
//    captured; an event's record registers a ClockSlot that the worker fills once the tasks
//    issued before the record finish;
//  * chaos: with a seed, each task may first sleep a random time drawn from the stream's own
//    generator, so that work of different streams interleaves in many ways and a missing
//    event shows up as wrong data.
// std-only.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/cuda/fake/happens_before.hpp"

namespace pipeweaver::cuda::fake {

/// Per-stream random delays before each task (all zero: no chaos).
struct Chaos {
  std::uint64_t seed = 0;                    ///< 0: no delays
  std::chrono::microseconds max_delay{200};  ///< longest delay before a task
  double probability = 0.5;                  ///< of a delay before a task
  /// A slow stream class (mutation tests): every task on the streams of device `slow_device`
  /// of one priority (the compute streams, or the high-priority communication streams) first
  /// sleeps `slow_delay`, seed or not. -1: none.
  int slow_device = -1;
  bool slow_high_priority = false;
  std::chrono::microseconds slow_delay{0};
};

/// Where a stream reports a task that threw (the device's sticky error), and the clock of the
/// device's host side (the events its host saw finish; one host thread per device, a rank).
class DeviceState {
 public:
  explicit DeviceState(int index = 0) : index_(index) {}
  [[nodiscard]] int index() const noexcept { return index_; }
  void fault(std::string what) {
    std::lock_guard lk(mu_);
    if (error_.empty()) error_ = std::move(what);
    faulted_.store(true, std::memory_order_release);
  }
  [[nodiscard]] bool faulted() const noexcept { return faulted_.load(std::memory_order_acquire); }
  [[nodiscard]] std::string error() const {
    std::lock_guard lk(mu_);
    return error_;
  }
  /// The host's clock now (nullptr: it has seen nothing finish).
  [[nodiscard]] std::shared_ptr<const Clock> host_clock() const {
    std::lock_guard lk(mu_);
    return host_;
  }
  /// The host saw work with clock `c` finish: what it enqueues later is ordered after it.
  void host_join(const Clock& c) {
    std::lock_guard lk(mu_);
    auto next = std::make_shared<Clock>(host_ ? *host_ : Clock{});
    next->join(c);
    host_ = std::move(next);
  }

 private:
  int index_;
  mutable std::mutex mu_;
  std::string error_;
  std::shared_ptr<const Clock> host_{};  // replaced, never changed: tasks keep their snapshot
  std::atomic<bool> faulted_{false};
};

class Stream {
 public:
  Stream(DeviceState& device, std::size_t capacity, const Chaos& chaos, std::uint64_t stream_index,
         const std::atomic<bool>& shutdown_flag, bool slow = false, RaceChecker* checker = nullptr, bool high_priority = false)
      : device_(&device),
        index_(static_cast<std::size_t>(stream_index)),
        name_("stream " + std::to_string(stream_index) + " (device " + std::to_string(device.index()) + ", " +
              (high_priority ? "communication" : "compute") + ")"),
        checker_(checker),
        capacity_(capacity == 0 ? 1 : capacity),
        chaos_(chaos),
        slow_(slow),
        rng_(chaos.seed ^ (0x9e3779b97f4a7c15ULL * (stream_index + 1))),
        shutdown_(&shutdown_flag) {
    worker_ = std::thread([this] { run(); });
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { join(); }

  /// Appends a task; blocks while the launch queue is full.
  void enqueue(std::function<void()> task) {
    std::shared_ptr<const Clock> host = checker_ != nullptr ? device_->host_clock() : nullptr;
    std::unique_lock lk(mu_);
    space_.wait(lk, [&] { return queue_.size() < capacity_ || stopping_; });
    queue_.push_back(Task{std::move(task), std::move(host)});
    ++issued_;
    work_.notify_one();
  }
  /// Tasks issued so far (what an event recorded now captures).
  [[nodiscard]] std::uint64_t issued() const {
    std::lock_guard lk(mu_);
    return issued_;
  }
  /// What an event recorded now captures: the tasks issued so far and (with a checker) the
  /// slot that receives the stream's clock once they have finished.
  /// The record is itself work the device's host enqueues: the slot also carries what that
  /// host had seen finish.
  [[nodiscard]] std::pair<std::uint64_t, std::shared_ptr<ClockSlot>> capture() {
    std::shared_ptr<const Clock> host = checker_ != nullptr ? device_->host_clock() : nullptr;
    std::lock_guard lk(mu_);
    if (checker_ == nullptr) return {issued_, nullptr};
    auto slot = std::make_shared<ClockSlot>();
    if (host) slot->clock = *host;
    if (completed_ >= issued_) {
      slot->clock.join(completed_clock_);
      slot->filled = true;
    } else {
      slots_.push_back({issued_, slot});
    }
    return {issued_, slot};
  }
  /// The clock in a slot this stream fills (empty while unfilled).
  [[nodiscard]] Clock slot_clock(const ClockSlot& slot) const {
    std::lock_guard lk(mu_);
    return slot.filled ? slot.clock : Clock{};
  }
  [[nodiscard]] DeviceState& device_state() const noexcept { return *device_; }
  [[nodiscard]] bool checking() const noexcept { return checker_ != nullptr; }
  [[nodiscard]] RaceChecker* checker() const noexcept { return checker_; }

  // -- on the stream's own worker, inside a task
  /// The stream whose worker runs the calling thread (nullptr on other threads).
  [[nodiscard]] static Stream* current() noexcept { return current_; }
  [[nodiscard]] const Clock& clock() const noexcept { return clock_; }
  void join_clock(const Clock& c) { clock_.join(c); }
  [[nodiscard]] Accessor accessor() const { return Accessor{index_, task_, &clock_, name_}; }
  /// Checks and records the task's accesses; throws (a device fault) on a race.
  void access(const std::vector<Access>& accesses) {
    if (checker_ == nullptr) return;
    if (auto race = checker_->access(accessor(), accesses)) throw std::runtime_error(*race);
  }
  /// Whether the first `seq` tasks have finished.
  [[nodiscard]] bool reached(std::uint64_t seq) const {
    std::lock_guard lk(mu_);
    return completed_ >= seq;
  }
  /// Blocks until the first `seq` tasks have finished (or the system shuts down).
  void wait_reached(std::uint64_t seq) const {
    std::unique_lock lk(mu_);
    done_.wait(lk, [&] { return completed_ >= seq || stopping_ || shutdown(); });
  }
  /// Wakes every wait on this stream (the system is shutting down).
  void wake() {
    std::lock_guard lk(mu_);
    done_.notify_all();
    space_.notify_all();
    work_.notify_all();
  }
  /// Lets the worker finish what is queued, then joins it (idempotent).
  void join() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
      work_.notify_all();
      space_.notify_all();
      done_.notify_all();
    }
    if (worker_.joinable()) worker_.join();
  }

 private:
  [[nodiscard]] bool shutdown() const { return shutdown_->load(std::memory_order_acquire); }
  void delay() {
    if (slow_) std::this_thread::sleep_for(chaos_.slow_delay);
    if (chaos_.seed == 0 || chaos_.max_delay.count() <= 0) return;
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    std::uniform_int_distribution<long long> span(0, chaos_.max_delay.count());
    const bool sleep = coin(rng_) < chaos_.probability;
    const auto us = span(rng_);
    if (sleep) std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
  void run() {
    current_ = this;
    for (;;) {
      Task task;
      {
        std::unique_lock lk(mu_);
        work_.wait(lk, [&] { return !queue_.empty() || stopping_; });
        if (queue_.empty()) return;  // stopping and drained
        task = std::move(queue_.front());
      }
      delay();
      clock_.set(index_, ++task_);
      if (task.host) clock_.join(*task.host);
      try {
        if (!device_->faulted()) task.f();
      } catch (const std::exception& e) {
        device_->fault(e.what());
      } catch (...) {
        device_->fault("a device task threw an unknown exception");
      }
      std::lock_guard lk(mu_);
      queue_.pop_front();  // the slot stays taken while the task runs, as a launch does
      ++completed_;
      if (checker_ != nullptr) publish_clock();
      space_.notify_one();
      done_.notify_all();
    }
  }

  struct Task {
    std::function<void()> f{};
    std::shared_ptr<const Clock> host{};  // the device host's clock at enqueue
  };
  // Caller holds mu_: the clock after the completed tasks, into the slots waiting for them.
  void publish_clock() {
    completed_clock_ = clock_;
    std::erase_if(slots_, [&](auto& w) {
      if (w.first > completed_) return false;
      w.second->clock.join(completed_clock_);
      w.second->filled = true;
      return true;
    });
  }

  DeviceState* device_;
  std::size_t index_;
  std::string name_;
  RaceChecker* checker_;
  static inline thread_local Stream* current_ = nullptr;
  Clock clock_{};  // only the worker uses it
  std::uint64_t task_ = 0;  // tasks the worker has started
  Clock completed_clock_{};  // guarded by mu_
  std::vector<std::pair<std::uint64_t, std::shared_ptr<ClockSlot>>> slots_;  // guarded by mu_
  std::size_t capacity_;
  Chaos chaos_;
  bool slow_;  // every task first sleeps chaos_.slow_delay
  std::mt19937_64 rng_;  // only the worker uses it
  const std::atomic<bool>* shutdown_;
  mutable std::mutex mu_;
  mutable std::condition_variable work_, space_, done_;
  std::deque<Task> queue_;
  std::uint64_t issued_ = 0, completed_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

/// An event: the (stream, seq) captured by its last record, and the slot of its clock.
class Event {
 public:
  struct State {
    Stream* stream = nullptr;  ///< nullptr: never recorded
    std::uint64_t seq = 0;
    std::shared_ptr<ClockSlot> clock{};  ///< nullptr without a checker
  };
  void record(Stream& s) {
    auto [seq, slot] = s.capture();
    std::lock_guard lk(mu_);
    stream_ = &s;
    seq_ = seq;
    slot_ = std::move(slot);
  }
  /// The captured state (stream nullptr: never recorded).
  [[nodiscard]] std::pair<Stream*, std::uint64_t> state() const {
    std::lock_guard lk(mu_);
    return {stream_, seq_};
  }
  [[nodiscard]] State snapshot() const {
    std::lock_guard lk(mu_);
    return {stream_, seq_, slot_};
  }
  [[nodiscard]] bool done() const {
    const auto [s, seq] = state();
    return s == nullptr || s->reached(seq);
  }

 private:
  mutable std::mutex mu_;
  Stream* stream_ = nullptr;
  std::uint64_t seq_ = 0;
  std::shared_ptr<ClockSlot> slot_{};
};

}  // namespace pipeweaver::cuda::fake
