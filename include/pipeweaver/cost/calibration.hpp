#pragma once
// Least-squares calibration of the analytic model's α factors (α_f, α_m, α_n) to measured
// stage latencies. std-only.
//
// The model's stage latency is a sum of per-operator maxima, so it is piecewise linear in α:
// once every operator's dominant term is fixed, latency = α_f·C + α_m·B + α_n·N + fixed
// (AnalyticCostModel::latency_terms). The fit alternates:
//   1. under the current α, split every measured stage into (C, B, N, fixed);
//   2. solve the linear least squares for α on relative residuals
//      min Σ_i ((α_f·C_i + α_m·B_i + α_n·N_i + fixed_i − y_i) / y_i)²
//      (relative, so short and long stages weigh alike); a factor whose term is zero in every
//      measurement (no tensor parallelism: N = 0) keeps its value; a negative solution is
//      clamped to min_alpha;
//   3. repeat until the split no longer changes (the assignment is stable: α is then the least-
//      squares optimum of its own assignment) or max_iterations pass.
// The result is the best α seen (smallest rms relative error of the real max-model).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

/// One measured stage latency.
struct LatencySample {
  StageSpec stage{};
  SubMicrobatchSpec sub_microbatch{};
  MemoryStrategy strategy{};
  Nanoseconds measured{0};
};

struct CalibrationOptions {
  int max_iterations = 50;
  double min_alpha = 1e-6;  ///< lower clamp of a fitted factor
};

struct CalibrationResult {
  AnalyticOptions options{};        ///< the initial options with the fitted α factors
  double rms_relative_error = 0;  ///< sqrt(mean(((model − measured) / measured)²)) at the fitted α
  int iterations = 0;             ///< least-squares solves performed
  bool converged = false;         ///< the operator assignment became stable
};

namespace detail {
/// Solves the n×n system a·x = b (n ≤ 3) by Gaussian elimination with partial pivoting;
/// false if singular.
inline bool solve_small(std::array<std::array<double, 3>, 3> a, std::array<double, 3> b, int n,
                        std::array<double, 3>& x) {
  for (int col = 0; col < n; ++col) {
    int piv = col;
    for (int r = col + 1; r < n; ++r)
      if (std::abs(a[r][col]) > std::abs(a[piv][col])) piv = r;
    if (!(std::abs(a[piv][col]) > 1e-300)) return false;
    std::swap(a[col], a[piv]);
    std::swap(b[col], b[piv]);
    for (int r = col + 1; r < n; ++r) {
      const double k = a[r][col] / a[col][col];
      for (int c = col; c < n; ++c) a[r][c] -= k * a[col][c];
      b[r] -= k * b[col];
    }
  }
  for (int r = n - 1; r >= 0; --r) {
    double s = b[r];
    for (int c = r + 1; c < n; ++c) s -= a[r][c] * x[c];
    x[r] = s / a[r][r];
  }
  return true;
}
}  // namespace detail

/// Fits α_f, α_m, α_n of `initial` to `samples` (see the header comment). Throws Error{input}
/// on no samples or a non-positive measurement.
[[nodiscard]] inline CalibrationResult calibrate(const ModelSpec& model, const Setup& setup,
                                                 std::span<const LatencySample> samples,
                                                 AnalyticOptions initial = {}, CalibrationOptions copt = {}) {
  if (samples.empty())
    throw input_error("no latency samples to calibrate on", {.path = "calibrate", .expected = "at least one measured stage"});
  for (std::size_t i = 0; i < samples.size(); ++i)
    if (samples[i].measured.count() <= 0)
      throw input_error("measured latency is not positive", {.path = "samples[" + std::to_string(i) + "]", .expected = "measured > 0 ns"});

  auto split = [&](const AnalyticOptions& o) {
    const AnalyticCostModel cost(model, setup, o);
    std::vector<LatencyTerms> rows;
    rows.reserve(samples.size());
    for (const LatencySample& s : samples) rows.push_back(cost.latency_terms(s.stage, s.sub_microbatch, s.strategy));
    return rows;
  };
  auto rms = [&](const std::vector<LatencyTerms>& rows, const AnalyticOptions& o) {
    double sum = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const double y = static_cast<double>(samples[i].measured.count());
      const double r = (rows[i].value(o) - y) / y;
      sum += r * r;
    }
    return std::sqrt(sum / static_cast<double>(rows.size()));
  };
  auto same_assignment = [](const std::vector<LatencyTerms>& a, const std::vector<LatencyTerms>& b) {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i].compute != b[i].compute || a[i].memory != b[i].memory || a[i].network != b[i].network) return false;
    return true;
  };

  AnalyticOptions opts = initial;
  std::vector<LatencyTerms> rows = split(opts);
  CalibrationResult best{opts, rms(rows, opts), 0, false};
  for (int it = 1; it <= copt.max_iterations; ++it) {
    // Normal equations of the relative least squares over the active factors.
    std::array<std::array<double, 3>, 3> ata{};
    std::array<double, 3> atb{};
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const double y = static_cast<double>(samples[i].measured.count());
      const std::array<double, 3> x{rows[i].compute / y, rows[i].memory / y, rows[i].network / y};
      const double target = (y - rows[i].fixed) / y;
      for (int r = 0; r < 3; ++r) {
        atb[r] += x[r] * target;
        for (int c = 0; c < 3; ++c) ata[r][c] += x[r] * x[c];
      }
    }
    std::array<double*, 3> alpha{&opts.alpha_flops, &opts.alpha_memory, &opts.alpha_network};
    // A factor whose term is zero everywhere has an all-zero column: it keeps its value.
    std::array<int, 3> active{};
    int n = 0;
    for (int r = 0; r < 3; ++r)
      if (ata[r][r] > 0) active[n++] = r;
    std::array<std::array<double, 3>, 3> a{};
    std::array<double, 3> b{};
    for (int i = 0; i < n; ++i) {
      b[i] = atb[active[i]];
      for (int j = 0; j < n; ++j) a[i][j] = ata[active[i]][active[j]];
    }
    std::array<double, 3> x{};
    if (n == 0 || !detail::solve_small(a, b, n, x)) break;
    for (int i = 0; i < n; ++i) *alpha[active[i]] = std::max(copt.min_alpha, x[i]);

    std::vector<LatencyTerms> next = split(opts);
    const double err = rms(next, opts);
    const bool stable = same_assignment(rows, next);
    if (err <= best.rms_relative_error) {
      best.options = opts;
      best.rms_relative_error = err;
    }
    best.iterations = it;
    best.converged = stable;
    rows = std::move(next);
    if (stable) break;
  }
  return best;
}

}  // namespace pipeweaver
