#pragma once
// exp, log and log-factorial from basic IEEE arithmetic only, so that every platform computes
// the same bits (libm's exp/log/lgamma are not correctly rounded and differ between C libraries).
// Only operations IEEE 754 defines exactly are used: + - * /, sqrt, floor, frexp, ldexp.
// Accuracy: within a few ulp of the true value (tests compare with std:: to 1e-14 relative).
//
// Bit-identical results across compilers also need the compiler not to fuse a*b+c into an FMA:
// build with -ffp-contract=off where the target has FMA (GCC fuses by default on aarch64).
#include <cmath>
#include <cstdint>
#include <limits>

namespace pipeweaver::detail {

// ln 2 split so that k * ln2_hi is exact for |k| < 2^11 (fdlibm's constants).
inline constexpr double ln2_hi = 6.93147180369123816490e-01;
inline constexpr double ln2_lo = 1.90821492927058770002e-10;
inline constexpr double inv_ln2 = 1.44269504088896338700e+00;

/// e^x. Range reduction x = k ln2 + r with |r| <= ln2/2, then the Taylor series of e^r to
/// degree 14 (truncation error < 1e-18 relative), scaled by 2^k.
[[nodiscard]] inline double portable_exp(double x) noexcept {
  if (x != x) return x;
  if (x > 709.782712893384) return std::numeric_limits<double>::infinity();
  if (x < -745.2) return 0.0;
  const double kd = std::floor(x * inv_ln2 + 0.5);
  const double r = (x - kd * ln2_hi) - kd * ln2_lo;
  double p = 1.0 / 87178291200.0;  // 1/14!
  constexpr double inv_fact[] = {1.0,
                                 1.0,
                                 1.0 / 2.0,
                                 1.0 / 6.0,
                                 1.0 / 24.0,
                                 1.0 / 120.0,
                                 1.0 / 720.0,
                                 1.0 / 5040.0,
                                 1.0 / 40320.0,
                                 1.0 / 362880.0,
                                 1.0 / 3628800.0,
                                 1.0 / 39916800.0,
                                 1.0 / 479001600.0,
                                 1.0 / 6227020800.0};
  for (int i = 13; i >= 0; --i) p = p * r + inv_fact[i];
  return std::ldexp(p, static_cast<int>(kd));
}

/// ln x. x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m-1)/(m+1),
/// |s| <= 0.1716, series to s^23 (truncation error < 1e-18 relative); ln x = e ln2 + ln m.
[[nodiscard]] inline double portable_log(double x) noexcept {
  if (x != x || x < 0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0) return -std::numeric_limits<double>::infinity();
  if (x == std::numeric_limits<double>::infinity()) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1), exact
  if (m < 0.70710678118654752440) {
    m *= 2;
    e -= 1;
  }
  const double f = m - 1.0;  // exact (Sterbenz)
  const double s = f / (2.0 + f);
  const double s2 = s * s;
  double series = 0;  // sum_{n>=1} s2^n / (2n+1)
  for (int n = 11; n >= 1; --n) series = (series + 1.0 / (2 * n + 1)) * s2;
  // ln m = 2s + 2s*series; written as f - (f - 2s) - ... loses nothing at this size of s.
  const double logm = 2.0 * s + 2.0 * s * series;
  const double ed = static_cast<double>(e);
  return ed * ln2_hi + (logm + ed * ln2_lo);
}

/// ln(k!) for k >= 0: exact product for k <= 20 (20! is exactly representable), Stirling's
/// series ln G(n+1) = n ln n - n + ln(2 pi n)/2 + 1/(12n) - 1/(360n^3) + 1/(1260n^5) - 1/(1680n^7)
/// above (next term < 1e-16 relative there).
[[nodiscard]] inline double log_factorial(std::int64_t k) noexcept {
  if (k <= 1) return 0.0;
  if (k <= 20) {
    double p = 1;
    for (std::int64_t i = 2; i <= k; ++i) p *= static_cast<double>(i);
    return portable_log(p);
  }
  constexpr double two_pi = 6.283185307179586476925;
  const double n = static_cast<double>(k);
  const double inv = 1.0 / n;
  const double inv2 = inv * inv;
  const double corr = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0))));
  return n * portable_log(n) - n + 0.5 * portable_log(two_pi * n) + corr;
}

}  // namespace pipeweaver::detail
