// The portable RNG, math and distributions: against std:: (math), a second implementation
// (xoshiro256**), and closed-form moments over many draws (distributions).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "data/make_distribution.hpp"
#include "io/error_check.hpp"
#include "pipeweaver/data/random.hpp"

using namespace pipeweaver;

namespace {

double rel_err(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-300); }

// Straight transcription of the reference xoshiro256** / splitmix64 (Vigna's C code).
struct ReferenceXoshiro {
  std::uint64_t s[4];
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  explicit ReferenceXoshiro(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& w : s) {
      std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      w = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
    const std::uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

struct Moments {
  double mean = 0, var = 0;
};
template <class F>
Moments moments(int n, F&& draw_one) {
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = draw_one();
    sum += x;
    sum2 += x * x;
  }
  Moments m;
  m.mean = sum / n;
  m.var = sum2 / n - m.mean * m.mean;
  return m;
}

}  // namespace

TEST_CASE("portable exp and log agree with std:: to 1e-14 relative") {
  Rng rng(7);
  double worst_exp = 0, worst_log = 0;
  for (int i = 0; i < 200000; ++i) {
    const double x = -700 + 1400 * rng.uniform01();
    worst_exp = std::max(worst_exp, rel_err(detail::portable_exp(x), std::exp(x)));
    const double small = -1 + 2 * rng.uniform01();
    worst_exp = std::max(worst_exp, rel_err(detail::portable_exp(small), std::exp(small)));
    // log over magnitudes 1e-300 .. 1e300, and close to 1 where log x -> 0
    const double y = std::pow(10.0, -300 + 600 * rng.uniform01());
    worst_log = std::max(worst_log, rel_err(detail::portable_log(y), std::log(y)));
    const double near1 = 1 + (rng.uniform01() - 0.5) * 1e-6;
    if (near1 != 1) worst_log = std::max(worst_log, rel_err(detail::portable_log(near1), std::log(near1)));
    const double mid = 0.1 + 10 * rng.uniform01();
    if (mid != 1) worst_log = std::max(worst_log, rel_err(detail::portable_log(mid), std::log(mid)));
  }
  CHECK(worst_exp < 1e-14);
  CHECK(worst_log < 1e-14);
  CHECK(detail::portable_exp(0) == 1.0);
  CHECK(detail::portable_log(1) == 0.0);
  CHECK(detail::portable_exp(1000) == HUGE_VAL);
  CHECK(detail::portable_exp(-1000) == 0.0);
  CHECK(std::isnan(detail::portable_log(-1)));
  CHECK(detail::portable_log(0) == -HUGE_VAL);
}

TEST_CASE("log_factorial agrees with lgamma") {
  for (std::int64_t k = 0; k <= 2000; ++k) {
    const double want = std::lgamma(static_cast<double>(k) + 1);
    const double got = detail::log_factorial(k);
    if (k <= 1) CHECK(got == 0.0);
    else CHECK(rel_err(got, want) < 1e-14);
  }
  for (std::int64_t k : {123456LL, 987654321LL, 1000000000000LL})
    CHECK(rel_err(detail::log_factorial(k), std::lgamma(static_cast<double>(k) + 1)) < 1e-14);
}

TEST_CASE("Rng is xoshiro256** seeded by splitmix64") {
  CHECK(splitmix64_mix(0x9e3779b97f4a7c15ULL) == 0xe220a8397b1dcdafULL);  // splitmix64(0)'s first output
  for (std::uint64_t seed : {0ULL, 1ULL, 42ULL, 0xffffffffffffffffULL}) {
    Rng a(seed);
    ReferenceXoshiro b(seed);
    for (int i = 0; i < 1000; ++i) REQUIRE(a.next_u64() == b.next());
  }
  Rng x(1), y(2);
  CHECK(x.next_u64() != y.next_u64());
  // streams: distinct per (seed, stream), reproducible
  CHECK(Rng::stream(5, 0).next_u64() != Rng::stream(5, 1).next_u64());
  CHECK(Rng::stream(5, 0).next_u64() != Rng::stream(6, 0).next_u64());
  CHECK(Rng::stream(5, 3).next_u64() == Rng::stream(5, 3).next_u64());
}

TEST_CASE("below and uniform_int are unbiased and inclusive") {
  Rng rng(11);
  for (std::uint64_t n : {2ULL, 3ULL, 6ULL, 10ULL, 37ULL}) {
    std::vector<int> counts(n, 0);
    const int draws = 20000 * static_cast<int>(n);
    for (int i = 0; i < draws; ++i) {
      const auto v = rng.below(n);
      REQUIRE(v < n);
      ++counts[v];
    }
    // chi-square with n-1 degrees of freedom; 3x the dof is far in the tail for these n
    double chi2 = 0;
    for (int c : counts) chi2 += (c - 20000.0) * (c - 20000.0) / 20000.0;
    CHECK(chi2 < 3.0 * static_cast<double>(n - 1) + 20);
  }
  CHECK(rng.below(1) == 0);
  bool lo_seen = false, hi_seen = false;
  for (int i = 0; i < 1000; ++i) {
    const auto v = rng.uniform_int(-3, 3);
    REQUIRE(v >= -3);
    REQUIRE(v <= 3);
    lo_seen = lo_seen || v == -3;
    hi_seen = hi_seen || v == 3;
  }
  CHECK(lo_seen);
  CHECK(hi_seen);
  CHECK(rng.uniform_int(5, 5) == 5);
  (void)rng.uniform_int(INT64_MIN, INT64_MAX);  // full range: no overflow (UBSan)
}

TEST_CASE("uniform01 and normal have the right moments") {
  Rng rng(3);
  double lo = 1, hi = 0;
  const auto u = moments(200000, [&] {
    const double x = rng.uniform01();
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    return x;
  });
  CHECK(lo >= 0);
  CHECK(hi < 1);
  CHECK(u.mean == doctest::Approx(0.5).epsilon(0.005));
  CHECK(u.var == doctest::Approx(1.0 / 12).epsilon(0.01));
  const auto z = moments(200000, [&] { return rng.normal(); });
  CHECK(std::fabs(z.mean) < 0.01);  // std error 1/sqrt(2e5) = 0.0022
  CHECK(z.var == doctest::Approx(1.0).epsilon(0.015));
}

TEST_CASE("distributions: closed-form moments over many draws") {
  Rng rng(2024);
  const int n = 100000;
  SUBCASE("fixed and rounding to the nearest integer") {
    CHECK(draw(dist(FixedDist{2.4}), rng) == 2);
    CHECK(draw(dist(FixedDist{2.5}), rng) == 3);
    CHECK(draw(dist(FixedDist{1.5}, 2.0), rng) == 3);
    CHECK(draw(dist(FixedDist{0.2}, 1.0, 1.0), rng) == 1);       // min clamps after scale
    CHECK(draw(dist(FixedDist{50}, 2.0, {}, 60.0), rng) == 60);  // max clamps after scale
    CHECK(draw(dist(FixedDist{1e300}), rng) == static_cast<std::int64_t>(max_draw));
  }
  SUBCASE("uniform [lo, hi] with scale") {
    const Distribution d = dist(UniformDist{1, 6}, 2048);
    std::vector<int> seen(7, 0);
    const auto m = moments(n, [&] {
      const auto v = draw(d, rng);
      REQUIRE(v % 2048 == 0);
      ++seen.at(static_cast<std::size_t>(v / 2048));
      return static_cast<double>(v);
    });
    CHECK(m.mean == doctest::Approx(3.5 * 2048).epsilon(0.01));
    CHECK(m.var == doctest::Approx((36.0 - 1) / 12 * 2048 * 2048).epsilon(0.02));
    CHECK(seen[0] == 0);
    for (int k = 1; k <= 6; ++k) CHECK(seen[static_cast<std::size_t>(k)] > 0);
  }
  SUBCASE("poisson: mean = variance = m, P(0) = e^-m") {
    for (double mean : {0.3, 2.5, 9.9, 10.0, 50.0, 1e4}) {
      CAPTURE(mean);
      int zeros = 0;
      const auto m = moments(n, [&] {
        const auto v = rng.poisson(mean);
        REQUIRE(v >= 0);
        zeros += v == 0;
        return static_cast<double>(v);
      });
      const double se = std::sqrt(mean / n);
      CHECK(std::fabs(m.mean - mean) < 5 * se);
      CHECK(m.var == doctest::Approx(mean).epsilon(0.03));
      const double p0 = std::exp(-mean);
      CHECK(std::fabs(zeros / static_cast<double>(n) - p0) < 5 * std::sqrt(p0 * (1 - p0) / n) + 1e-9);
    }
    CHECK(rng.poisson(0) == 0);
  }
  SUBCASE("lognormal: median and log-moments") {
    const double median = 1e6, sigma = 0.9;  // large median: integer rounding is negligible
    const Distribution d = dist(LognormalDist{median, sigma});
    std::vector<double> xs;
    xs.reserve(static_cast<std::size_t>(n));
    const auto logs = moments(n, [&] {
      const auto v = draw(d, rng);
      xs.push_back(static_cast<double>(v));
      return std::log(static_cast<double>(v));
    });
    std::nth_element(xs.begin(), xs.begin() + n / 2, xs.end());
    // sample median of N(mu, s^2) has std error 1.2533 s / sqrt(n) = 0.0036 in log space
    CHECK(std::fabs(std::log(xs[static_cast<std::size_t>(n / 2)]) - std::log(median)) < 0.02);
    CHECK(std::fabs(logs.mean - std::log(median)) < 0.015);
    CHECK(logs.var == doctest::Approx(sigma * sigma).epsilon(0.02));
  }
  SUBCASE("choice: frequencies follow the weights; zero weights never chosen") {
    const Distribution d = dist(ChoiceDist{{10, 20, 30, 40}, {0.5, 0.0, 1.5, 2.0}});
    std::vector<int> counts(4, 0);
    for (int i = 0; i < n; ++i) ++counts.at(static_cast<std::size_t>(draw(d, rng) / 10 - 1));
    CHECK(counts[1] == 0);
    const double p[] = {0.125, 0, 0.375, 0.5};
    for (int k : {0, 2, 3})
      CHECK(std::fabs(counts[static_cast<std::size_t>(k)] / static_cast<double>(n) - p[k]) <
            5 * std::sqrt(p[k] * (1 - p[k]) / n));
    const Distribution equal = dist(ChoiceDist{{1, 2}, {}});  // no weights: equally likely
    int ones = 0;
    for (int i = 0; i < n; ++i) ones += draw(equal, rng) == 1;
    CHECK(std::fabs(ones / static_cast<double>(n) - 0.5) < 5 * std::sqrt(0.25 / n));
  }
  SUBCASE("min and max clamp every draw") {
    const Distribution d = dist(LognormalDist{700, 0.9}, 1.0, 32.0, 7000.0);
    bool hit_min = false, hit_max = false;
    for (int i = 0; i < n; ++i) {
      const auto v = draw(d, rng);
      REQUIRE(v >= 32);
      REQUIRE(v <= 7000);
      hit_min = hit_min || v == 32;
      hit_max = hit_max || v == 7000;
    }
    // P(x < 32) = Phi(ln(32/700)/0.9) = Phi(-3.43) = 3e-4: about 30 of 1e5 draws
    CHECK(hit_min);
    CHECK(hit_max);
  }
}

TEST_CASE("same seed gives the same draws") {
  const Distribution d = dist(LognormalDist{220, 0.7}, 1.0, 16.0, 2000.0);
  Rng a(99), b(99);
  for (int i = 0; i < 1000; ++i) REQUIRE(draw(d, a) == draw(d, b));
}

TEST_CASE("validate(Distribution) names the field and what was expected") {
  using pwtest::error_of;
  auto check = [](const Distribution& d, const char* path, const char* message) {
    const auto e = error_of([&] { validate(d, "/x"); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
    CHECK(e->context().path == path);
    CHECK(pwtest::contains(e->message(), message));
    CHECK(!e->context().expected.empty());
  };
  check(dist(UniformDist{5, 2}), "/x/uniform", "reversed");
  check(dist(UniformDist{-1, 2}), "/x/uniform/0", "lower bound");
  check(dist(FixedDist{-1}), "/x/fixed", "fixed value");
  check(dist(LognormalDist{0, 1}), "/x/lognormal/median", "median");
  check(dist(LognormalDist{1, -1}), "/x/lognormal/sigma", "sigma");
  check(dist(PoissonDist{-2}), "/x/poisson/mean", "mean");
  check(dist(PoissonDist{1e20}), "/x/poisson/mean", "mean");
  check(dist(ChoiceDist{{1, 2}, {1, -1}}), "/x/choice/weights/1", "weight");
  check(dist(ChoiceDist{{1, 2}, {1}}), "/x/choice/weights", "2 values but 1 weights");
  check(dist(ChoiceDist{{1, 2}, {0, 0}}), "/x/choice/weights", "sum");
  check(dist(ChoiceDist{{}, {}}), "/x/choice/values", "no values");
  check(dist(FixedDist{1}, 0.0), "/x/scale", "scale");
  check(dist(FixedDist{1}, 1.0, 5.0, 4.0), "/x/min", "greater than max");
  CHECK_NOTHROW(validate(dist(UniformDist{0, 0}), "/x"));
}
