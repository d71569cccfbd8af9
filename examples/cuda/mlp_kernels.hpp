#pragma once
// Launchers of the small CUDA model's kernels (mlp_kernels.cu). Every launcher enqueues on the
// stream `s` (a cudaStream_t) and returns cudaGetLastError(); rows are tokens, hidden the
// width of every layer; matrices are row-major hidden x hidden. Plain C++: g++ includes it.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace mlp_cuda {

/// out[rows x hidden] = deterministic values in [-0.5, 0.5) from (a, b, c, element index).
cudaError_t gen(float* out, int rows, int hidden, std::uint32_t a, std::uint32_t b, std::uint32_t c, void* s);
/// y = tanh(x W^T + b) row by row.
cudaError_t linear_tanh(const float* x, const float* w, const float* b, float* y, int rows, int hidden, void* s);
/// gpre = gy * (1 - y^2).
cudaError_t tanh_grad(const float* gy, const float* y, float* gpre, long long n, void* s);
/// gx = gpre W.
cudaError_t input_grad(const float* gpre, const float* w, float* gx, int rows, int hidden, void* s);
/// dW += gpre^T x, db += column sums of gpre.
cudaError_t weight_grad(const float* gpre, const float* x, float* dw, float* db, int rows, int hidden, void* s);
/// out[j] += scale * sum over rows of x[r][j].
cudaError_t col_sum(const float* x, int rows, int hidden, float scale, float* out, void* s);
/// x[r][j] += v[j].
cudaError_t add_row(float* x, const float* v, int rows, int hidden, void* s);
/// x[r][j] = scale * v[j].
cudaError_t fill_rows(float* x, const float* v, int rows, int hidden, float scale, void* s);
/// gy = scale * y, *loss_sum += scale * sum(y^2) / 2 (one thread, in element order).
cudaError_t loss(const float* y, long long n, float scale, float* gy, float* loss_sum, void* s);
/// w -= lr * g.
cudaError_t sgd(float* w, const float* g, long long n, float lr, void* s);

}  // namespace mlp_cuda
