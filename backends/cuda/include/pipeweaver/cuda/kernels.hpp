#pragma once
// The backend's own kernels, reached through function pointers so that every header stays
// compilable by a plain C++ compiler: the kernels live in src/kernels.cu, the one file of the
// static library pipeweaver_cuda_kernels (linked by pipeweaver::cuda). A user may hand CudaApi
// another table (for example gradients in bf16).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace pipeweaver::cuda {

struct KernelTable {
  /// dst[i] += src[i] for i < count, on `stream`. Returns the launch's error.
  cudaError_t (*accumulate_f32)(float* dst, const float* src, std::size_t count, cudaStream_t stream) = nullptr;
  /// Keeps `stream` busy for `nanoseconds` (device clock): stages of fixed length for tests.
  cudaError_t (*spin)(std::uint64_t nanoseconds, cudaStream_t stream) = nullptr;
};

/// The kernels of pipeweaver_cuda_kernels.
[[nodiscard]] const KernelTable& builtin_kernels() noexcept;

}  // namespace pipeweaver::cuda
