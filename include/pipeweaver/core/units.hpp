#pragma once
// Strong types for the two quantities every component trades in: time and memory.
// Both are exact 64-bit integers (nanoseconds, bytes) so that emulation and search
// are bit-for-bit reproducible on every platform; conversion to floating point
// happens only for reporting.
//
// Arithmetic is checked: a sum, difference, product or conversion whose result leaves
// [-limits::max_nanoseconds, limits::max_nanoseconds] (or the same range of bytes) throws
// Error(input) naming the quantity and the operands, never a wrapped value. The range is a
// quarter of int64's, so code that adds two in-range counts as raw integers cannot overflow
// either. Constructing a Quantity from a raw count is unchecked (max() is a sentinel).
#include <cmath>
#include <compare>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"

namespace pipeweaver {

namespace detail {

struct NanosecondsTag;
struct BytesTag;

template <class Tag>
struct QuantityTraits;
template <>
struct QuantityTraits<NanosecondsTag> {
  static constexpr const char* unit = "ns";
  static constexpr const char* what = "time";
  static constexpr std::int64_t bound = limits::max_nanoseconds;
};
template <>
struct QuantityTraits<BytesTag> {
  static constexpr const char* unit = "bytes";
  static constexpr const char* what = "memory size";
  static constexpr std::int64_t bound = limits::max_bytes;
};

/// Error(input) for a result out of range (kept out of the checks' fast path).
[[noreturn]] inline void quantity_overflow(const char* what, const char* unit, std::int64_t bound,
                                                                    const std::string& operation) {
  throw input_error(std::string(what) + " out of range: " + operation + " leaves the 64-bit range the library computes in",
                    {.expected = "at most " + std::to_string(bound) + " " + unit +
                                 " in magnitude: smaller token counts, sizes or counts, or faster device figures"});
}

template <class Tag>
class Quantity {
  using traits = QuantityTraits<Tag>;

 public:
  using rep = std::int64_t;
  constexpr Quantity() = default;
  constexpr explicit Quantity(rep v) noexcept : v_(v) {}
  [[nodiscard]] constexpr rep count() const noexcept { return v_; }

  constexpr Quantity& operator+=(Quantity o) { return *this = *this + o; }
  constexpr Quantity& operator-=(Quantity o) { return *this = *this - o; }
  constexpr Quantity& operator*=(rep k) { return *this = *this * k; }
  friend constexpr Quantity operator+(Quantity a, Quantity b) {
    // Both operands in range: the exact sum fits in int64, then it is range-checked.
    if (!in_range(a.v_) || !in_range(b.v_) || !in_range(a.v_ + b.v_)) [[unlikely]]
      fail(std::to_string(a.v_) + " + " + std::to_string(b.v_));
    return Quantity{a.v_ + b.v_};
  }
  friend constexpr Quantity operator-(Quantity a, Quantity b) {
    if (!in_range(a.v_) || !in_range(b.v_) || !in_range(a.v_ - b.v_)) [[unlikely]]
      fail(std::to_string(a.v_) + " - " + std::to_string(b.v_));
    return Quantity{a.v_ - b.v_};
  }
  friend constexpr Quantity operator-(Quantity a) {
    if (!in_range(a.v_)) [[unlikely]] fail("-" + std::to_string(a.v_));
    return Quantity{-a.v_};
  }
  friend constexpr Quantity operator*(Quantity a, rep k) {
    // |a| <= bound / |k| keeps |a x k| <= bound (magnitudes as unsigned: -2^63 has one).
    const auto magnitude = [](rep x) { return x < 0 ? 0 - static_cast<std::uint64_t>(x) : static_cast<std::uint64_t>(x); };
    const std::uint64_t ma = magnitude(a.v_), mk = magnitude(k);
    if (mk != 0 && ma > static_cast<std::uint64_t>(traits::bound) / mk) [[unlikely]]
      fail(std::to_string(a.v_) + " x " + std::to_string(k));
    return Quantity{a.v_ * k};
  }
  friend constexpr Quantity operator*(rep k, Quantity a) { return a * k; }
  friend constexpr Quantity operator/(Quantity a, rep k) noexcept { return Quantity{a.v_ / k}; }
  friend constexpr rep operator/(Quantity a, Quantity b) noexcept { return a.v_ / b.v_; }
  friend constexpr auto operator<=>(Quantity, Quantity) noexcept = default;

  static constexpr Quantity zero() noexcept { return Quantity{0}; }
  static constexpr Quantity max() noexcept { return Quantity{std::numeric_limits<rep>::max()}; }

  /// Whether `v` is a count the library computes with (see the header comment).
  [[nodiscard]] static constexpr bool in_range(rep v) noexcept { return v >= -traits::bound && v <= traits::bound; }

  /// The count nearest to `v` (halves away from zero); Error(input) when it is not finite or
  /// out of range. `what` names it in the error ("a stage's latency").
  [[nodiscard]] static constexpr Quantity from_double_rounded(double v, const char* what = traits::what) {
    if (!(v > -static_cast<double>(traits::bound) && v < static_cast<double>(traits::bound))) [[unlikely]]
      quantity_overflow(what, traits::unit, traits::bound, "a value of " + number(v) + " " + traits::unit);
    return Quantity{static_cast<rep>(v < 0 ? v - 0.5 : v + 0.5)};
  }
  /// The smallest count >= `v`; Error(input) when it is not finite or out of range.
  [[nodiscard]] static constexpr Quantity from_double_ceil(double v, const char* what = traits::what) {
    if (!(v > -static_cast<double>(traits::bound) && v < static_cast<double>(traits::bound))) [[unlikely]]
      quantity_overflow(what, traits::unit, traits::bound, "a value of " + number(v) + " " + traits::unit);
    const auto i = static_cast<rep>(v);
    return Quantity{static_cast<double>(i) < v ? i + 1 : i};
  }

 private:
  [[noreturn]] static void fail(const std::string& operation) {
    quantity_overflow(traits::what, traits::unit, traits::bound, operation + " " + traits::unit);
  }
  static std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v < 0 ? "-infinity" : "infinity";
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  }

  rep v_ = 0;
};

}  // namespace detail

/// Time in nanoseconds (exact integer arithmetic, checked).
using Nanoseconds = detail::Quantity<detail::NanosecondsTag>;
/// Memory or message size in bytes (exact integer arithmetic, checked).
using Bytes = detail::Quantity<detail::BytesTag>;

/// Rounds a floating-point nanosecond figure to the nearest integer nanosecond (halves away
/// from zero). Error(input) when it is not finite or beyond limits::max_nanoseconds.
[[nodiscard]] constexpr Nanoseconds round_ns(double ns) { return Nanoseconds::from_double_rounded(ns); }
/// Rounds a floating-point byte count up to whole bytes. Error(input) when it is not finite or
/// beyond limits::max_bytes.
[[nodiscard]] constexpr Bytes ceil_bytes(double b) { return Bytes::from_double_ceil(b); }

[[nodiscard]] constexpr Nanoseconds from_ms(double ms) { return round_ns(ms * 1e6); }
[[nodiscard]] constexpr Nanoseconds from_us(double us) { return round_ns(us * 1e3); }
[[nodiscard]] constexpr double to_ms(Nanoseconds t) noexcept { return static_cast<double>(t.count()) / 1e6; }
[[nodiscard]] constexpr double to_seconds(Nanoseconds t) noexcept { return static_cast<double>(t.count()) / 1e9; }

inline constexpr double bytes_per_gib = 1024.0 * 1024.0 * 1024.0;
[[nodiscard]] constexpr Bytes from_gib(double gib) { return ceil_bytes(gib * bytes_per_gib); }
[[nodiscard]] constexpr double to_gib(Bytes b) noexcept { return static_cast<double>(b.count()) / bytes_per_gib; }

/// Checked a + b of raw counts (for code that accumulates plain int64 figures of time or
/// bytes): Error(input) naming `what` when the sum leaves [-2^62, 2^62].
[[nodiscard]] inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const char* what) {
  constexpr std::int64_t bound = limits::max_nanoseconds;
  const auto ok = [](std::int64_t x) { return x >= -bound && x <= bound; };
  if (!ok(a) || !ok(b) || !ok(a + b)) [[unlikely]]
    detail::quantity_overflow(what, "", bound, std::to_string(a) + " + " + std::to_string(b));
  return a + b;
}

}  // namespace pipeweaver
