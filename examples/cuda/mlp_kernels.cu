// The kernels of the small CUDA model (mlp_model.hpp): float32, one thread per output element,
// no atomics, so each launch computes the same bits every time. Sizes are small (hidden 16).
#include "mlp_kernels.hpp"

#include <cstdint>

namespace mlp_cuda {
namespace {

constexpr int threads = 128;
unsigned blocks(long long n) { return static_cast<unsigned>((n + threads - 1) / threads); }
cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

__device__ float hash_unit(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t d) {
  std::uint32_t h = 2166136261u;
  for (std::uint32_t v : {a, b, c, d}) {
    h ^= v;
    h *= 16777619u;
    h ^= h >> 13;
  }
  return static_cast<float>(h & 0xffffu) / 32768.0f - 1.0f;  // [-1, 1)
}

__global__ void gen_kernel(float* out, int rows, int hidden, std::uint32_t a, std::uint32_t b, std::uint32_t c) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(rows) * hidden) return;
  out[i] = 0.5f * hash_unit(a, b, c, static_cast<std::uint32_t>(i));
}

__global__ void linear_tanh_kernel(const float* x, const float* w, const float* bias, float* y, int rows, int hidden) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(rows) * hidden) return;
  const long long r = i / hidden;
  const int o = static_cast<int>(i % hidden);
  float acc = bias[o];
  for (int j = 0; j < hidden; ++j) acc += w[o * hidden + j] * x[r * hidden + j];
  y[i] = tanhf(acc);
}

__global__ void tanh_grad_kernel(const float* gy, const float* y, float* gpre, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) gpre[i] = gy[i] * (1.0f - y[i] * y[i]);
}

__global__ void input_grad_kernel(const float* gpre, const float* w, float* gx, int rows, int hidden) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(rows) * hidden) return;
  const long long r = i / hidden;
  const int j = static_cast<int>(i % hidden);
  float acc = 0.0f;
  for (int o = 0; o < hidden; ++o) acc += w[o * hidden + j] * gpre[r * hidden + o];
  gx[i] = acc;
}

__global__ void weight_grad_kernel(const float* gpre, const float* x, float* dw, float* db, int rows, int hidden) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= hidden * hidden) return;
  const int o = i / hidden;
  const int j = i % hidden;
  float acc = 0.0f, bacc = 0.0f;
  for (long long r = 0; r < rows; ++r) {
    acc += gpre[r * hidden + o] * x[r * hidden + j];
    bacc += gpre[r * hidden + o];
  }
  dw[i] += acc;
  if (j == 0) db[o] += bacc;
}

__global__ void col_sum_kernel(const float* x, int rows, int hidden, float scale, float* out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= hidden) return;
  float acc = 0.0f;
  for (long long r = 0; r < rows; ++r) acc += x[r * hidden + j];
  out[j] += scale * acc;
}

__global__ void add_row_kernel(float* x, const float* v, int rows, int hidden) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < static_cast<long long>(rows) * hidden) x[i] += v[i % hidden];
}

__global__ void fill_rows_kernel(float* x, const float* v, int rows, int hidden, float scale) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < static_cast<long long>(rows) * hidden) x[i] = scale * v[i % hidden];
}

__global__ void loss_kernel(const float* y, long long n, float scale, float* gy, float* loss) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  float acc = 0.0f;
  for (long long i = 0; i < n; ++i) {
    gy[i] = scale * y[i];
    acc += y[i] * y[i];
  }
  *loss += 0.5f * scale * acc;
}

__global__ void sgd_kernel(float* w, const float* g, long long n, float lr) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) w[i] -= lr * g[i];
}

}  // namespace

cudaError_t gen(float* out, int rows, int hidden, std::uint32_t a, std::uint32_t b, std::uint32_t c, void* s) {
  if (rows > 0) gen_kernel<<<blocks(1LL * rows * hidden), threads, 0, as_stream(s)>>>(out, rows, hidden, a, b, c);
  return cudaGetLastError();
}
cudaError_t linear_tanh(const float* x, const float* w, const float* b, float* y, int rows, int hidden, void* s) {
  if (rows > 0) linear_tanh_kernel<<<blocks(1LL * rows * hidden), threads, 0, as_stream(s)>>>(x, w, b, y, rows, hidden);
  return cudaGetLastError();
}
cudaError_t tanh_grad(const float* gy, const float* y, float* gpre, long long n, void* s) {
  if (n > 0) tanh_grad_kernel<<<blocks(n), threads, 0, as_stream(s)>>>(gy, y, gpre, n);
  return cudaGetLastError();
}
cudaError_t input_grad(const float* gpre, const float* w, float* gx, int rows, int hidden, void* s) {
  if (rows > 0) input_grad_kernel<<<blocks(1LL * rows * hidden), threads, 0, as_stream(s)>>>(gpre, w, gx, rows, hidden);
  return cudaGetLastError();
}
cudaError_t weight_grad(const float* gpre, const float* x, float* dw, float* db, int rows, int hidden, void* s) {
  if (rows > 0) weight_grad_kernel<<<blocks(1LL * hidden * hidden), threads, 0, as_stream(s)>>>(gpre, x, dw, db, rows, hidden);
  return cudaGetLastError();
}
cudaError_t col_sum(const float* x, int rows, int hidden, float scale, float* out, void* s) {
  if (rows > 0) col_sum_kernel<<<blocks(hidden), threads, 0, as_stream(s)>>>(x, rows, hidden, scale, out);
  return cudaGetLastError();
}
cudaError_t add_row(float* x, const float* v, int rows, int hidden, void* s) {
  if (rows > 0) add_row_kernel<<<blocks(1LL * rows * hidden), threads, 0, as_stream(s)>>>(x, v, rows, hidden);
  return cudaGetLastError();
}
cudaError_t fill_rows(float* x, const float* v, int rows, int hidden, float scale, void* s) {
  if (rows > 0) fill_rows_kernel<<<blocks(1LL * rows * hidden), threads, 0, as_stream(s)>>>(x, v, rows, hidden, scale);
  return cudaGetLastError();
}
cudaError_t loss(const float* y, long long n, float scale, float* gy, float* loss_sum, void* s) {
  loss_kernel<<<1, 1, 0, as_stream(s)>>>(y, n, scale, gy, loss_sum);
  return cudaGetLastError();
}
cudaError_t sgd(float* w, const float* g, long long n, float lr, void* s) {
  if (n > 0) sgd_kernel<<<blocks(n), threads, 0, as_stream(s)>>>(w, g, n, lr);
  return cudaGetLastError();
}

}  // namespace mlp_cuda
