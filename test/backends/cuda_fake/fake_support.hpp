#pragma once
// Test support for the CUDA backend on the fake device: gates that hold a stream, polling with
// a deadline, and stage callbacks that run the user's callbacks on the compute stream (as a
// GPU model enqueues its kernels), so that they see "device" memory in stream order.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/ir/stage.hpp>

namespace fake_support {

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using namespace std::chrono_literals;

/// A gate a stream task waits on until the test opens it.
class Gate {
 public:
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return open_; });
  }
  /// A task for FakeDeviceApi::host_func that holds the stream until open().
  std::function<void()> task() {
    return [this] { pass(); };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Polls `done` until it holds or `limit` passes; returns whether it held.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(200us);
  }
  return true;
}

/// Runs Inner's stage callbacks as host functions on the compute stream (cudaLaunchHostFunc
/// on a GPU): the executor's promises then hold in stream order, as for real kernels.
template <class Inner>
class OnStream {
 public:
  explicit OnStream(Inner& inner) : inner_(&inner) {}
  void forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    cu::FakeDeviceApi::host_func(io.queue, [in = inner_, st, s = &smb, io]() mutable { in->forward(st, *s, io); });
  }
  void backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    cu::FakeDeviceApi::host_func(io.queue, [in = inner_, st, s = &smb, io]() mutable { in->backward(st, *s, io); });
  }

 private:
  Inner* inner_;
};

}  // namespace fake_support
