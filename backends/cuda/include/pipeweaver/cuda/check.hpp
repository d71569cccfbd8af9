#pragma once
// The one checking wrapper of every CUDA runtime and NCCL call of the backend:
//   PW_CUDA_CHECK(cudaStreamCreate(&s));
//   PW_NCCL_CHECK(ncclGroupEnd());
// A failure throws pipeweaver::Error naming the call as written, the result code with its name
// and CUDA's or NCCL's own message (and NCCL's last error text), and the file and line of the
// call. The kind is execution, or infeasible when CUDA says there is no usable device (error
// 35, no driver; error 100, no device).
// Driver API entry points, if ever needed, come through cudaGetDriverEntryPointByVersion:
// linking -lcuda makes a program unable to start on a machine without a driver.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <source_location>
#include <string>

#include "pipeweaver/core/error.hpp"

namespace pipeweaver::cuda {

/// Whether a CUDA error means that this machine has no usable GPU.
[[nodiscard]] inline bool is_no_device(cudaError_t e) noexcept { return e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice; }

/// The name of an NCCL result code (ncclGetErrorString gives the message).
[[nodiscard]] inline const char* nccl_result_name(ncclResult_t r) noexcept {
  switch (r) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "ncclResult_t(unknown)";
  }
}

namespace detail {
[[nodiscard]] inline std::string at(const std::source_location& loc) {
  std::string file = loc.file_name();
  if (const auto slash = file.find_last_of('/'); slash != std::string::npos) file = file.substr(slash + 1);
  return file + ":" + std::to_string(loc.line());
}
}  // namespace detail

/// Throws unless r is cudaSuccess (see the header).
inline void check_cuda(cudaError_t r, const char* call, std::source_location loc = std::source_location::current()) {
  if (r == cudaSuccess) return;
  std::string msg = std::string(call) + " returned " + std::to_string(static_cast<int>(r)) + " " + cudaGetErrorName(r) + ": " +
                    cudaGetErrorString(r) + " (at " + detail::at(loc) + ")";
  if (is_no_device(r)) throw infeasible_error("no usable CUDA device: " + msg, {.expected = "a CUDA driver and at least one GPU"});
  throw execution_error(std::move(msg), {.expected = "cudaSuccess"});
}

/// Throws unless r is ncclSuccess (or ncclInProgress when in_progress_ok, for non-blocking
/// communicators). `comm` (may be null) adds NCCL's last error text for it.
inline void check_nccl(ncclResult_t r, const char* call, ncclComm_t comm = nullptr, bool in_progress_ok = false,
                       std::source_location loc = std::source_location::current()) {
  if (r == ncclSuccess || (in_progress_ok && r == ncclInProgress)) return;
  std::string msg = std::string(call) + " returned " + std::to_string(static_cast<int>(r)) + " " + nccl_result_name(r) + ": " + ncclGetErrorString(r);
  if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') msg += " (" + std::string(last) + ")";
  msg += " (at " + detail::at(loc) + ")";
  throw execution_error(std::move(msg), {.expected = "ncclSuccess"});
}

}  // namespace pipeweaver::cuda

#define PW_CUDA_CHECK(call) ::pipeweaver::cuda::check_cuda((call), #call)
#define PW_NCCL_CHECK(call) ::pipeweaver::cuda::check_nccl((call), #call)
