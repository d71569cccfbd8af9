// The backend's kernels (kernels.hpp): float32 accumulation and a spin kernel for tests. Kept
// thin: nvcc is slow, and everything else of the backend is plain C++.
#include "pipeweaver/cuda/kernels.hpp"

#include <algorithm>

namespace pipeweaver::cuda {
namespace {

__global__ void accumulate_f32_kernel(float* __restrict__ dst, const float* __restrict__ src, std::size_t count) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) dst[i] += src[i];
}

__device__ std::uint64_t global_timer() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin_kernel(std::uint64_t nanoseconds) {
  const std::uint64_t start = global_timer();
  while (global_timer() - start < nanoseconds) {
  }
}

cudaError_t launch_accumulate_f32(float* dst, const float* src, std::size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  constexpr unsigned threads = 256;
  const auto blocks = static_cast<unsigned>(std::min<std::size_t>((count + threads - 1) / threads, 4096));
  accumulate_f32_kernel<<<blocks, threads, 0, stream>>>(dst, src, count);
  return cudaGetLastError();
}

cudaError_t launch_spin(std::uint64_t nanoseconds, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(nanoseconds);
  return cudaGetLastError();
}

}  // namespace

const KernelTable& builtin_kernels() noexcept {
  static const KernelTable table{&launch_accumulate_f32, &launch_spin};
  return table;
}

}  // namespace pipeweaver::cuda
