#pragma once
// A portable seeded random number generator and the distributions of the dataset format
// (examples/workloads/README.md, "datasets/*.json"). Nothing here uses std:: distributions or
// libm's transcendental functions, whose results differ between standard libraries: the same
// seed gives the same draws on every platform (see data/detail/portable_math.hpp).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <type_traits>
#include <variant>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/detail/portable_math.hpp"
#include "pipeweaver/model/validate.hpp"

namespace pipeweaver {

/// splitmix64's output function: a bijective 64-bit mix (used for seeding and stream ids).
[[nodiscard]] constexpr std::uint64_t splitmix64_mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// xoshiro256** (Blackman & Vigna) seeded with splitmix64, plus the few draws the library needs.
class Rng {
 public:
  using result_type = std::uint64_t;

  explicit constexpr Rng(std::uint64_t seed) noexcept {
    std::uint64_t x = seed;
    for (auto& w : s_) {
      x += 0x9e3779b97f4a7c15ULL;
      w = splitmix64_mix(x);
    }
  }

  /// An independent stream for (seed, stream), e.g. one per training step, so that stream k
  /// can be generated without generating the streams before it.
  [[nodiscard]] static constexpr Rng stream(std::uint64_t seed, std::uint64_t stream) noexcept {
    return Rng{splitmix64_mix(seed) ^ splitmix64_mix(stream * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL)};
  }

  static constexpr std::uint64_t min() noexcept { return 0; }
  static constexpr std::uint64_t max() noexcept { return ~std::uint64_t{0}; }

  constexpr std::uint64_t operator()() noexcept { return next_u64(); }

  constexpr std::uint64_t next_u64() noexcept {
    const std::uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = std::rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, n) without bias (n >= 1): rejection of the high bits beyond n's width.
  constexpr std::uint64_t below(std::uint64_t n) noexcept {
    if (n <= 1) return 0;
    const int shift = 64 - std::bit_width(n - 1);
    for (;;) {
      const std::uint64_t x = next_u64() >> shift;
      if (x < n) return x;
    }
  }

  /// Uniform integer in [lo, hi], both inclusive (lo <= hi).
  constexpr std::int64_t uniform_int(std::int64_t lo, std::int64_t hi) noexcept {
    const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
    const std::uint64_t off = span == max() ? next_u64() : below(span + 1);
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + off);
  }

  /// Uniform in [0, 1) with 53 random bits (every value a multiple of 2^-53).
  constexpr double uniform01() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Standard normal by Marsaglia's polar method (needs only log and the exact sqrt).
  double normal() noexcept {
    for (;;) {
      const double u = 2.0 * uniform01() - 1.0;
      const double v = 2.0 * uniform01() - 1.0;
      const double s = u * u + v * v;
      if (s >= 1.0 || s == 0.0) continue;
      return u * std::sqrt(-2.0 * detail::portable_log(s) / s);
    }
  }

  /// Poisson(mean), mean >= 0. Inversion by sequential search below mean 10; above, Hormann's
  /// transformed rejection with squeeze (PTRS, 1993), O(1) per draw.
  std::int64_t poisson(double mean) noexcept {
    if (!(mean > 0)) return 0;
    if (mean < 10) {
      const double u = uniform01();
      double p = detail::portable_exp(-mean);
      double cdf = p;
      std::int64_t k = 0;
      // Rounding can leave the cdf a hair below 1: stop where the tail is negligible.
      while (u >= cdf && k < 1000) {
        ++k;
        p *= mean / static_cast<double>(k);
        cdf += p;
      }
      return k;
    }
    const double smu = std::sqrt(mean);
    const double b = 0.931 + 2.53 * smu;
    const double a = -0.059 + 0.02483 * b;
    const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    const double vr = 0.9277 - 3.6224 / (b - 2);
    const double log_mean = detail::portable_log(mean);
    for (;;) {
      const double u = uniform01() - 0.5;
      const double v = uniform01();
      const double us = 0.5 - std::fabs(u);
      const double kd = std::floor((2 * a / us + b) * u + mean + 0.43);
      if (us >= 0.07 && v <= vr) return static_cast<std::int64_t>(kd);
      if (kd < 0 || (us < 0.013 && v > us)) continue;
      const auto k = static_cast<std::int64_t>(kd);
      if (detail::portable_log(v) + detail::portable_log(inv_alpha) - detail::portable_log(a / (us * us) + b) <=
          -mean + kd * log_mean - detail::log_factorial(k))
        return k;
    }
  }

  /// Index i with probability weights[i] / sum (weights >= 0, sum > 0); zero weights are never
  /// chosen.
  template <class Weights>
  std::size_t weighted_index(const Weights& weights) noexcept {
    double total = 0;
    for (double w : weights) total += w;
    const double u = uniform01() * total;
    double cum = 0;
    std::size_t last_positive = 0;
    for (std::size_t i = 0; i < std::size(weights); ++i) {
      if (!(weights[i] > 0)) continue;
      cum += weights[i];
      last_positive = i;
      if (u < cum) return i;
    }
    return last_positive;  // u within rounding of the total
  }

 private:
  std::uint64_t s_[4]{};
};

/// Draws are clamped to [0, max_draw] (after scale, min and max), far above any real token
/// count: with at most 65536 items per sample and encoder ratios <= 1024, no sum of tokens
/// can overflow int64.
inline constexpr double max_draw = 1e9;

/// The unscaled draw of a distribution's kind (a real number for lognormal, else an integer).
[[nodiscard]] inline double draw_raw(const Distribution& d, Rng& rng) {
  return std::visit(
      [&](const auto& k) -> double {
        using K = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<K, FixedDist>) {
          return k.value;
        } else if constexpr (std::is_same_v<K, UniformDist>) {
          return static_cast<double>(rng.uniform_int(k.lo, k.hi));
        } else if constexpr (std::is_same_v<K, LognormalDist>) {
          return k.median * detail::portable_exp(k.sigma * rng.normal());
        } else if constexpr (std::is_same_v<K, PoissonDist>) {
          return static_cast<double>(rng.poisson(k.mean));
        } else {
          if (k.weights.empty()) return k.values.at(rng.below(k.values.size()));
          return k.values.at(rng.weighted_index(k.weights));
        }
      },
      d.kind);
}

/// One draw: raw draw x scale, clamped to [min, max], then to [0, max_draw], rounded to the
/// nearest integer (halves up). `d` must be valid (see validate(const Distribution&, ...)).
[[nodiscard]] inline std::int64_t draw(const Distribution& d, Rng& rng) {
  double v = draw_raw(d, rng) * d.scale;
  if (d.min && v < *d.min) v = *d.min;
  if (d.max && v > *d.max) v = *d.max;
  if (!(v >= 0)) v = 0;  // also NaN
  if (v > max_draw) v = max_draw;
  return static_cast<std::int64_t>(std::floor(v + 0.5));
}

/// Checks a distribution; `path` is its JSON path (e.g. "/mixture/0/text"). Throws
/// Error(input) naming the field: fixed value finite >= 0; uniform 0 <= lo <= hi; lognormal
/// median finite > 0 and sigma finite >= 0; poisson mean finite in [0, max_draw]; choice with
/// at most limits::max_choice_values values (finite >= 0) and, if given, as many weights (finite >= 0, positive sum); scale finite
/// > 0; min, max finite >= 0 with min <= max.
inline void validate(const Distribution& d, const std::string& path) {
  using detail::check_positive;
  std::visit(
      [&](const auto& k) {
        using K = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<K, FixedDist>) {
          check_positive(k.value, true, "fixed value", path + "/fixed");
        } else if constexpr (std::is_same_v<K, UniformDist>) {
          if (k.lo < 0)
            throw input_error("uniform lower bound is " + std::to_string(k.lo), {.path = path + "/uniform/0", .expected = "an integer >= 0"});
          if (k.lo > k.hi)
            throw input_error("uniform bounds are reversed: lo " + std::to_string(k.lo) + " > hi " + std::to_string(k.hi), {.path = path + "/uniform", .expected = "[lo, hi] with lo <= hi"});
        } else if constexpr (std::is_same_v<K, LognormalDist>) {
          check_positive(k.median, false, "lognormal median", path + "/lognormal/median");
          check_positive(k.sigma, true, "lognormal sigma", path + "/lognormal/sigma");
        } else if constexpr (std::is_same_v<K, PoissonDist>) {
          check_positive(k.mean, true, "poisson mean", path + "/poisson/mean");
          if (k.mean > max_draw)
            throw input_error("poisson mean is " + detail::number_text(k.mean), {.path = path + "/poisson/mean", .expected = "a number in [0, 1e9]"});
        } else {
          if (k.values.empty())
            throw input_error("choice has no values", {.path = path + "/choice/values", .expected = "a non-empty array of numbers"});
          if (static_cast<std::int64_t>(k.values.size()) > limits::max_choice_values)
            throw input_error("choice has " + std::to_string(k.values.size()) + " values",
                              {.path = path + "/choice/values", .expected = "at most " + std::to_string(limits::max_choice_values) + " values"});
          for (std::size_t i = 0; i < k.values.size(); ++i)
            check_positive(k.values[i], true, "choice value", path + "/choice/values/" + std::to_string(i));
          if (!k.weights.empty()) {
            if (k.weights.size() != k.values.size())
              throw input_error("choice has " + std::to_string(k.values.size()) + " values but " +
                              std::to_string(k.weights.size()) + " weights", {.path = path + "/choice/weights", .expected = "one weight per value"});
            double total = 0;
            for (std::size_t i = 0; i < k.weights.size(); ++i) {
              check_positive(k.weights[i], true, "choice weight", path + "/choice/weights/" + std::to_string(i));
              total += k.weights[i];
            }
            if (!(total > 0) || !std::isfinite(total))
              throw input_error("choice weights sum to " + detail::number_text(total), {.path = path + "/choice/weights", .expected = "weights with a positive finite sum"});
          }
        }
      },
      d.kind);
  check_positive(d.scale, false, "scale", path + "/scale");
  if (d.min) check_positive(*d.min, true, "min", path + "/min");
  if (d.max) check_positive(*d.max, true, "max", path + "/max");
  if (d.min && d.max && *d.min > *d.max)
    throw input_error("min " + detail::number_text(*d.min) + " is greater than max " + detail::number_text(*d.max), {.path = path + "/min", .expected = "min <= max"});
}

}  // namespace pipeweaver
