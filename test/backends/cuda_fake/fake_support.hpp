#pragma once
// Test support for the CUDA backend on the fake device: gates that hold a stream, polling with
// a deadline, and stage callbacks that run the user's callbacks on the compute stream (as a
// GPU model enqueues its kernels), so that they see "device" memory in stream order; the
// executor's factory over a fake system and the transport configurations the tests run under.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/cuda/run_step.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/ir/stage.hpp>

namespace fake_support {

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using namespace std::chrono_literals;

#if defined(__SANITIZE_THREAD__)
#define PIPEWEAVER_FAKE_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PIPEWEAVER_FAKE_UNDER_TSAN 1
#endif
#endif
/// How much slower this build runs the fake device's threads: ThreadSanitizer slows
/// synchronisation-heavy code 5 to 15 times, so deadlines meant for a step's work (not those
/// a test measures) are scaled by 10 there.
#ifdef PIPEWEAVER_FAKE_UNDER_TSAN
inline constexpr int slowdown = 10;
#else
inline constexpr int slowdown = 1;
#endif
template <class Duration>
constexpr Duration scaled(Duration d) {
  return d * slowdown;
}

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
/// on a GPU): the executor's promises then hold in stream order, as for real kernels. The
/// happens-before checker sees each call's StageIO buffers (FakeDeviceApi::stage_func).
template <class Inner>
class OnStream {
 public:
  explicit OnStream(Inner& inner) : inner_(&inner) {}
  void forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    cu::FakeDeviceApi::stage_func(io, true, name("forward", st, io), [in = inner_, st, s = &smb, io]() mutable { in->forward(st, *s, io); });
  }
  void backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    cu::FakeDeviceApi::stage_func(io, false, name("backward", st, io), [in = inner_, st, s = &smb, io]() mutable { in->backward(st, *s, io); });
  }
  static std::string name(const char* pass, const pw::StageSpec& st, const pw::StageIO& io) {
    return std::string("the ") + pass + " of module " + std::to_string(st.module().value()) + " chunk " + std::to_string(st.chunk()) +
           ", sub-microbatch " + std::to_string(io.sub_microbatch.value()) + " (rank " + std::to_string(io.rank.value()) + "),";
  }

 private:
  Inner* inner_;
};

/// The executor's device factory over `sys`: rank r drives fake device r.
inline cu::CudaExecutor<cu::FakeDeviceApi>::ApiFactory on(cu::FakeSystem& sys) {
  return [&sys](pw::RankId r) { return cu::FakeDeviceApi(sys, r.value()); };
}

/// A transport configuration of the runtime: NCCL over one communicator per edge or a single
/// one, grouped or not, or device-to-device copies.
struct Config {
  const char* name = "";
  cu::Transport transport = cu::Transport::nccl;
  cu::CommTopology topology = cu::CommTopology::per_edge;
  bool group = false;
};
inline const Config nccl_configs[] = {
    {"nccl per-edge, grouped", cu::Transport::nccl, cu::CommTopology::per_edge, true},
    {"nccl per-edge, ungrouped", cu::Transport::nccl, cu::CommTopology::per_edge, false},
    {"nccl single communicator, grouped", cu::Transport::nccl, cu::CommTopology::single, true},
    {"nccl single communicator, ungrouped", cu::Transport::nccl, cu::CommTopology::single, false},
};
inline const Config local_config{"local device copies", cu::Transport::local, cu::CommTopology::per_edge, false};

/// Run options with `c`'s transport, topology and grouping (the rest at their defaults).
inline cu::CudaRunOptions transport_options(const Config& c) {
  cu::CudaRunOptions o;
  o.runtime.transport = c.transport;
  o.runtime.topology = c.topology;
  o.runtime.group_transfers = c.group;
  return o;
}

}  // namespace fake_support
