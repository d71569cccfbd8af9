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
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>

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

/// Where a stream reports a task that threw (the device's sticky error) and whether the whole
/// fake system is shutting down (every wait gives up).
class DeviceState {
 public:
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

 private:
  mutable std::mutex mu_;
  std::string error_;
  std::atomic<bool> faulted_{false};
};

class Stream {
 public:
  Stream(DeviceState& device, std::size_t capacity, const Chaos& chaos, std::uint64_t stream_index,
         const std::atomic<bool>& shutdown_flag, bool slow = false)
      : device_(&device),
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
    std::unique_lock lk(mu_);
    space_.wait(lk, [&] { return queue_.size() < capacity_ || stopping_; });
    queue_.push_back(std::move(task));
    ++issued_;
    work_.notify_one();
  }
  /// Tasks issued so far (what an event recorded now captures).
  [[nodiscard]] std::uint64_t issued() const {
    std::lock_guard lk(mu_);
    return issued_;
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
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lk(mu_);
        work_.wait(lk, [&] { return !queue_.empty() || stopping_; });
        if (queue_.empty()) return;  // stopping and drained
        task = std::move(queue_.front());
      }
      delay();
      try {
        if (!device_->faulted()) task();
      } catch (const std::exception& e) {
        device_->fault(e.what());
      } catch (...) {
        device_->fault("a device task threw an unknown exception");
      }
      std::lock_guard lk(mu_);
      queue_.pop_front();  // the slot stays taken while the task runs, as a launch does
      ++completed_;
      space_.notify_one();
      done_.notify_all();
    }
  }

  DeviceState* device_;
  std::size_t capacity_;
  Chaos chaos_;
  bool slow_;  // every task first sleeps chaos_.slow_delay
  std::mt19937_64 rng_;  // only the worker uses it
  const std::atomic<bool>* shutdown_;
  mutable std::mutex mu_;
  mutable std::condition_variable work_, space_, done_;
  std::deque<std::function<void()>> queue_;
  std::uint64_t issued_ = 0, completed_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

/// An event: the (stream, seq) captured by its last record.
class Event {
 public:
  void record(Stream& s) {
    const std::uint64_t seq = s.issued();
    std::lock_guard lk(mu_);
    stream_ = &s;
    seq_ = seq;
  }
  /// The captured state (stream nullptr: never recorded).
  [[nodiscard]] std::pair<Stream*, std::uint64_t> state() const {
    std::lock_guard lk(mu_);
    return {stream_, seq_};
  }
  [[nodiscard]] bool done() const {
    const auto [s, seq] = state();
    return s == nullptr || s->reached(seq);
  }

 private:
  mutable std::mutex mu_;
  Stream* stream_ = nullptr;
  std::uint64_t seq_ = 0;
};

}  // namespace pipeweaver::cuda::fake
