#pragma once
// Strong types for the two quantities every component trades in: time and memory.
// Both are exact 64-bit integers (nanoseconds, bytes) so that emulation and search
// are bit-for-bit reproducible on every platform; conversion to floating point
// happens only for reporting.
#include <compare>
#include <cstdint>
#include <limits>

namespace pipeweaver {

namespace detail {
template <class Tag>
class Quantity {
 public:
  using rep = std::int64_t;
  constexpr Quantity() = default;
  constexpr explicit Quantity(rep v) noexcept : v_(v) {}
  [[nodiscard]] constexpr rep count() const noexcept { return v_; }

  constexpr Quantity& operator+=(Quantity o) noexcept { v_ += o.v_; return *this; }
  constexpr Quantity& operator-=(Quantity o) noexcept { v_ -= o.v_; return *this; }
  constexpr Quantity& operator*=(rep k) noexcept { v_ *= k; return *this; }
  friend constexpr Quantity operator+(Quantity a, Quantity b) noexcept { return Quantity{a.v_ + b.v_}; }
  friend constexpr Quantity operator-(Quantity a, Quantity b) noexcept { return Quantity{a.v_ - b.v_}; }
  friend constexpr Quantity operator-(Quantity a) noexcept { return Quantity{-a.v_}; }
  friend constexpr Quantity operator*(Quantity a, rep k) noexcept { return Quantity{a.v_ * k}; }
  friend constexpr Quantity operator*(rep k, Quantity a) noexcept { return Quantity{a.v_ * k}; }
  friend constexpr Quantity operator/(Quantity a, rep k) noexcept { return Quantity{a.v_ / k}; }
  friend constexpr rep operator/(Quantity a, Quantity b) noexcept { return a.v_ / b.v_; }
  friend constexpr auto operator<=>(Quantity, Quantity) noexcept = default;

  static constexpr Quantity zero() noexcept { return Quantity{0}; }
  static constexpr Quantity max() noexcept { return Quantity{std::numeric_limits<rep>::max()}; }

 private:
  rep v_ = 0;
};
struct NanosecondsTag;
struct BytesTag;
}  // namespace detail

/// Time in nanoseconds (exact integer arithmetic).
using Nanoseconds = detail::Quantity<detail::NanosecondsTag>;
/// Memory or message size in bytes (exact integer arithmetic).
using Bytes = detail::Quantity<detail::BytesTag>;

/// Rounds a floating-point nanosecond figure to the nearest integer nanosecond (halves away from zero).
[[nodiscard]] constexpr Nanoseconds round_ns(double ns) noexcept {
  return Nanoseconds{static_cast<std::int64_t>(ns < 0 ? ns - 0.5 : ns + 0.5)};
}
/// Rounds a floating-point byte count up to whole bytes.
[[nodiscard]] constexpr Bytes ceil_bytes(double b) noexcept {
  auto i = static_cast<std::int64_t>(b);
  return Bytes{static_cast<double>(i) < b ? i + 1 : i};
}

[[nodiscard]] constexpr Nanoseconds from_ms(double ms) noexcept { return round_ns(ms * 1e6); }
[[nodiscard]] constexpr Nanoseconds from_us(double us) noexcept { return round_ns(us * 1e3); }
[[nodiscard]] constexpr double to_ms(Nanoseconds t) noexcept { return static_cast<double>(t.count()) / 1e6; }
[[nodiscard]] constexpr double to_seconds(Nanoseconds t) noexcept { return static_cast<double>(t.count()) / 1e9; }

inline constexpr double bytes_per_gib = 1024.0 * 1024.0 * 1024.0;
[[nodiscard]] constexpr Bytes from_gib(double gib) noexcept { return ceil_bytes(gib * bytes_per_gib); }
[[nodiscard]] constexpr double to_gib(Bytes b) noexcept { return static_cast<double>(b.count()) / bytes_per_gib; }

}  // namespace pipeweaver
