// Checked time and memory arithmetic (core/units.hpp) against a second implementation in
// 128-bit integers: every sum, difference and product of random operands near the bounds is
// either the exact result (when it is within +-2^62) or Error(input), never a wrapped value;
// conversions from double refuse what is not finite or out of range. And error messages are
// printable whatever the input echoed into them holds.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/limits.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/data/random.hpp>

namespace pw = pipeweaver;

namespace {

using i128 = __int128;
constexpr i128 bound = pw::limits::max_nanoseconds;

/// Operands spread over magnitudes: small, near 2^31, near 2^62 and beyond.
std::int64_t operand(pw::Rng& rng) {
  const int shift = static_cast<int>(rng.below(63));
  const auto mag = static_cast<std::int64_t>(rng.next_u64() >> (63 - shift));
  return rng.below(2) ? -mag : mag;
}

template <class F>
bool throws_input(F&& f) {
  try {
    f();
  } catch (const pw::Error& e) {
    return e.kind() == pw::ErrorKind::input;
  }
  return false;
}

}  // namespace

TEST_CASE("checked arithmetic equals 128-bit arithmetic in range and throws outside it") {
  pw::Rng rng(2024);
  int exact = 0, refused = 0;
  for (int i = 0; i < 200000; ++i) {
    const std::int64_t a = operand(rng), b = operand(rng);
    const bool in = a >= -bound && a <= bound && b >= -bound && b <= bound;
    const pw::Nanoseconds x{a}, y{b};
    const i128 sum = i128{a} + b, diff = i128{a} - b, prod = i128{a} * b;
    // Sums and differences need both operands in range and an in-range result.
    if (in && sum >= -bound && sum <= bound) {
      CHECK((x + y).count() == static_cast<std::int64_t>(sum));
      ++exact;
    } else {
      CHECK(throws_input([&] { (void)(x + y); }));
      ++refused;
    }
    if (in && diff >= -bound && diff <= bound) CHECK((x - y).count() == static_cast<std::int64_t>(diff));
    else CHECK(throws_input([&] { (void)(x - y); }));
    // A product needs only an in-range result (the factor is a plain count).
    if (prod >= -bound && prod <= bound) CHECK((pw::Bytes{a} * b).count() == static_cast<std::int64_t>(prod));
    else CHECK(throws_input([&] { (void)(pw::Bytes{a} * b); }));
  }
  CHECK(exact > 1000);
  CHECK(refused > 1000);
}

TEST_CASE("the bounds themselves and the sentinels") {
  const pw::Nanoseconds top{pw::limits::max_nanoseconds};
  CHECK((top + pw::Nanoseconds{0}) == top);
  CHECK((-top).count() == -pw::limits::max_nanoseconds);
  CHECK(throws_input([&] { (void)(top + pw::Nanoseconds{1}); }));
  CHECK(throws_input([&] { (void)(-top - pw::Nanoseconds{1}); }));
  CHECK(throws_input([&] { (void)(pw::Nanoseconds::max() + pw::Nanoseconds{0}); }));  // a sentinel is no operand
  CHECK(throws_input([&] { (void)(-pw::Nanoseconds{std::numeric_limits<std::int64_t>::min()}); }));
  CHECK(pw::Nanoseconds::max() > top);  // comparisons with the sentinel stay valid
  CHECK(throws_input([&] { (void)(pw::Bytes{2} * std::numeric_limits<std::int64_t>::min()); }));
}

TEST_CASE("conversions from double refuse what is not finite or out of range, naming the value") {
  CHECK(pw::round_ns(4.6e18).count() == 4600000000000000000);
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(), 4.7e18, -4.7e18, 1e300}) {
    CAPTURE(bad);
    try {
      (void)pw::round_ns(bad);
      FAIL("converted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(std::string(e.what()).find("time out of range") != std::string::npos);
    }
    CHECK(throws_input([&] { (void)pw::ceil_bytes(bad); }));
  }
  CHECK(throws_input([] { (void)pw::from_gib(1e10); }));  // memory_gib 1e10 used to wrap to a negative capacity
  CHECK(pw::from_gib(1 << 20).count() == std::int64_t{1} << 50);
  CHECK(pw::checked_add(1, 2, "x") == 3);
  CHECK(throws_input([] { (void)pw::checked_add(pw::limits::max_nanoseconds, 1, "a sum"); }));
}

TEST_CASE("error messages are printable: control bytes and invalid UTF-8 are escaped, valid UTF-8 kept") {
  const pw::Error e = pw::input_error("model 'a\x1b[31mb\x07' \xff\xfe name \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xed\xa0\x80",
                                      {.file = "f\n.json", .path = "/name"});
  const std::string what = e.what();
  CHECK(what == "f\\x0a.json: /name: model 'a\\x1b[31mb\\x07' \\xff\\xfe name \xc3\xa9t\xc3\xa9 \xe2\x82\xac \\xed\\xa0\\x80");
  CHECK(e.message().find('\x1b') != std::string::npos);  // the message itself is kept as given
}
