#pragma once
// CudaApi: the DeviceApi (device_api.hpp) over the CUDA runtime API and NCCL, every call
// through the checking wrapper (check.hpp), and CudaRuntime, the runtime built on it.
//  * activate() first asks cudaGetDeviceCount: on a machine without a driver or a GPU it
//    throws Error(infeasible) quoting CUDA's own error (35 or 100), so constructing a
//    CudaRuntime there fails cleanly; then cudaSetDevice for the calling thread.
//  * Streams are non-blocking (no implicit sync with the legacy default stream); communication
//    streams get the highest priority of cudaDeviceGetStreamPriorityRange. More than eight
//    streams per device alias hardware queues unless CUDA_DEVICE_MAX_CONNECTIONS is raised
//    before the context is created.
//  * Events are made with cudaEventDisableTiming (cheapest record and wait).
//  * Communicators are non-blocking (config.blocking = 0): ncclCommInitRankConfig returns at
//    once and comm_status polls ncclCommGetAsyncError; an operation that returns
//    ncclInProgress is polled until enqueued before the next NCCL call, as NCCL requires.
//  * Messages are bytes (ncclUint8), so any element type travels.
// Compiles under g++ with the CUDA and NCCL headers; only kernels.cu needs nvcc.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cuda/check.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/kernels.hpp"
#include "pipeweaver/cuda/runtime.hpp"
#include "pipeweaver/execute/runtime.hpp"

namespace pipeweaver::cuda {

static_assert(sizeof(ncclUniqueId) == unique_id_bytes, "NCCL's unique id size changed");

class CudaApi {
 public:
  using stream = cudaStream_t;
  using event = cudaEvent_t;
  using comm = ncclComm_t;

  explicit CudaApi(int device = 0, const KernelTable& kernels = builtin_kernels()) : device_(device), kernels_(kernels) {}

  [[nodiscard]] int device() const noexcept { return device_; }

  /// The NCCL library's version code (ncclGetVersion), e.g. 22809 for 2.28.9.
  [[nodiscard]] static int nccl_version() {
    int v = 0;
    PW_NCCL_CHECK(ncclGetVersion(&v));
    return v;
  }
  /// CUDA devices present; throws Error(infeasible) where CUDA cannot run at all.
  [[nodiscard]] static int device_count() {
    int count = 0;
    PW_CUDA_CHECK(cudaGetDeviceCount(&count));
    return count;
  }

  void activate() {
    const int count = device_count();
    if (device_ < 0 || device_ >= count)
      throw infeasible_error("no usable CUDA device: device " + std::to_string(device_) + " was asked for and " + std::to_string(count) +
                                 " are present",
                             {.expected = "a device index below cudaGetDeviceCount"});
    PW_CUDA_CHECK(cudaSetDevice(device_));
  }

  // ---- streams and events -----------------------------------------------------------------
  stream stream_create(bool high_priority) {
    int least = 0, greatest = 0;
    PW_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    cudaStream_t s = nullptr;
    PW_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high_priority ? greatest : least));
    return s;
  }
  void stream_destroy(stream s) noexcept { (void)cudaStreamDestroy(s); }
  void* native(stream s) const noexcept { return static_cast<void*>(s); }
  event event_create() {
    cudaEvent_t e = nullptr;
    PW_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void event_destroy(event e) noexcept { (void)cudaEventDestroy(e); }
  void event_record(event e, stream s) { PW_CUDA_CHECK(cudaEventRecord(e, s)); }
  bool event_done(event e) {
    const cudaError_t r = cudaEventQuery(e);
    if (r == cudaErrorNotReady) return false;
    check_cuda(r, "cudaEventQuery(e)");
    return true;
  }
  void stream_wait(stream s, event e) { PW_CUDA_CHECK(cudaStreamWaitEvent(s, e, 0)); }

  // ---- memory -----------------------------------------------------------------------------
  std::byte* alloc(std::size_t n) {
    void* p = nullptr;
    PW_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1)));
    return static_cast<std::byte*>(p);
  }
  void release(std::byte* p) noexcept { (void)cudaFree(p); }
  void copy_async(std::byte* dst, const std::byte* src, std::size_t n, stream s) {
    if (n > 0) PW_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s));
  }
  void zero_async(std::byte* dst, std::size_t n, stream s) {
    if (n > 0) PW_CUDA_CHECK(cudaMemsetAsync(dst, 0, n, s));
  }
  void accumulate_f32_async(std::byte* dst, const std::byte* src, std::size_t n, stream s) {
    if (n == 0) return;
    if (kernels_.accumulate_f32 == nullptr) throw input_error("CudaApi has no accumulate_f32 kernel", {.expected = "a KernelTable with accumulate_f32"});
    check_cuda(kernels_.accumulate_f32(reinterpret_cast<float*>(dst), reinterpret_cast<const float*>(src), n / sizeof(float), s),
               "accumulate_f32 kernel launch");
  }
  /// Keeps the stream busy for `nanoseconds` (tests of overlap on a GPU).
  void spin(std::uint64_t nanoseconds, stream s) {
    if (kernels_.spin == nullptr) throw input_error("CudaApi has no spin kernel", {.expected = "a KernelTable with spin"});
    check_cuda(kernels_.spin(nanoseconds, s), "spin kernel launch");
  }

  // ---- communicators ------------------------------------------------------------------------
  UniqueId unique_id() {
    ncclUniqueId id;
    PW_NCCL_CHECK(ncclGetUniqueId(&id));
    UniqueId out{};
    std::memcpy(out.data(), &id, sizeof id);
    return out;
  }
  comm comm_init(const UniqueId& id, int ranks, int rank) {
    ncclUniqueId nid;
    std::memcpy(&nid, id.data(), sizeof nid);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t c = nullptr;
    const ncclResult_t r = ncclCommInitRankConfig(&c, ranks, nid, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress && c != nullptr) (void)ncclCommAbort(c);
    check_nccl(r, "ncclCommInitRankConfig(&c, ranks, id, rank, &config)", nullptr, true);
    return c;
  }
  CommStatus comm_status(comm c) {
    ncclResult_t state = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(c, &state), "ncclCommGetAsyncError(c, &state)", c);
    if (state == ncclSuccess) return {CommState::ready, {}};
    if (state == ncclInProgress) return {CommState::in_progress, {}};
    std::string msg = std::string(nccl_result_name(state)) + ": " + ncclGetErrorString(state);
    if (const char* last = ncclGetLastError(c); last != nullptr && *last != '\0') msg += " (" + std::string(last) + ")";
    return {CommState::failed, msg};
  }
  void group_start() {
    PW_NCCL_CHECK(ncclGroupStart());
    ++group_depth_;
  }
  void group_end() {
    if (group_depth_ > 0) --group_depth_;
    const ncclResult_t r = ncclGroupEnd();
    check_nccl(r, "ncclGroupEnd()", nullptr, true);
    if (group_depth_ == 0) {
      if (r == ncclInProgress)
        for (comm c : group_comms_) wait_enqueued(c);
      group_comms_.clear();
    }
  }
  void send(const std::byte* src, std::size_t n, int peer, comm c, stream s) {
    after_op(ncclSend(src, n, ncclUint8, peer, c, s), "ncclSend(src, bytes, ncclUint8, peer, comm, stream)", c);
  }
  void recv(std::byte* dst, std::size_t n, int peer, comm c, stream s) {
    after_op(ncclRecv(dst, n, ncclUint8, peer, c, s), "ncclRecv(dst, bytes, ncclUint8, peer, comm, stream)", c);
  }
  void comm_revoke(comm c) noexcept {
#ifdef NCCL_REVOKE_DEFAULT
    (void)ncclCommRevoke(c, NCCL_REVOKE_DEFAULT);
#else
    (void)c;  // an NCCL without revoke: abort alone must stop the work
#endif
  }
  void comm_abort(comm c) noexcept { (void)ncclCommAbort(c); }

 private:
  void after_op(ncclResult_t r, const char* call, comm c) {
    check_nccl(r, call, c, true);
    if (group_depth_ > 0) {
      if (std::find(group_comms_.begin(), group_comms_.end(), c) == group_comms_.end()) group_comms_.push_back(c);
    } else if (r == ncclInProgress) {
      wait_enqueued(c);
    }
  }
  // A non-blocking communicator's operation is enqueued when its async state leaves
  // ncclInProgress; no other NCCL call on it may come before.
  void wait_enqueued(comm c) {
    for (;;) {
      ncclResult_t state = ncclInProgress;
      check_nccl(ncclCommGetAsyncError(c, &state), "ncclCommGetAsyncError(c, &state)", c);
      if (state != ncclInProgress) {
        check_nccl(state, "an enqueued NCCL operation", c);
        return;
      }
      std::this_thread::yield();
    }
  }

  int device_;
  KernelTable kernels_;
  int group_depth_ = 0;
  std::vector<comm> group_comms_;
};

static_assert(DeviceApi<CudaApi>);

/// The CUDA runtime on a GPU.
using CudaRuntime = CudaRuntimeT<CudaApi>;
static_assert(Runtime<CudaRuntime>);
static_assert(!EagerSend<CudaRuntime>);

}  // namespace pipeweaver::cuda
