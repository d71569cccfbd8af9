#include <doctest/doctest.h>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/memory_strategy.hpp>
#include <pipeweaver/core/units.hpp>

namespace pw = pipeweaver;

TEST_CASE("time and bytes are exact integers with explicit conversions") {
  SUBCASE("rounding") {
    CHECK(pw::round_ns(1.49) == pw::Nanoseconds{1});
    CHECK(pw::round_ns(1.5) == pw::Nanoseconds{2});
    CHECK(pw::round_ns(-1.5) == pw::Nanoseconds{-2});
    CHECK(pw::ceil_bytes(10.0) == pw::Bytes{10});
    CHECK(pw::ceil_bytes(10.01) == pw::Bytes{11});
  }
  SUBCASE("units") {
    CHECK(pw::from_ms(2.5) == pw::Nanoseconds{2'500'000});
    CHECK(pw::from_us(3) == pw::Nanoseconds{3'000});
    CHECK(pw::to_ms(pw::Nanoseconds{1'234'000}) == doctest::Approx(1.234));
    CHECK(pw::from_gib(1) == pw::Bytes{1LL << 30});
    CHECK(pw::to_gib(pw::Bytes{3LL << 29}) == doctest::Approx(1.5));
  }
  SUBCASE("arithmetic and order") {
    pw::Nanoseconds a{5}, b{7};
    CHECK(a + b == pw::Nanoseconds{12});
    CHECK(b - a == pw::Nanoseconds{2});
    CHECK(a * 3 == pw::Nanoseconds{15});
    CHECK(b / a == 1);
    CHECK(a < b);
    CHECK(std::max(a, b) == b);
  }
}

TEST_CASE("errors name the file, the path and what was expected") {
  pw::Error e(pw::ErrorKind::input, "unknown key 'layrs'",
              {.file = "m.json", .path = "/modules/0/layrs", .expected = "one of: name, layers, ..."});
  CHECK(std::string(e.what()) == "m.json: /modules/0/layrs: unknown key 'layrs' (expected one of: name, layers, ...)");
  CHECK(e.kind() == pw::ErrorKind::input);
  CHECK(e.message() == "unknown key 'layrs'");
  pw::Error bare(pw::ErrorKind::infeasible, "does not fit");
  CHECK(std::string(bare.what()) == "does not fit");
}

TEST_CASE("memory strategies describe themselves") {
  CHECK(pw::to_string(pw::MemoryStrategy{}) == "none");
  CHECK(pw::to_string(pw::MemoryStrategy{2, 0, 1}) == "recompute 2 + offload 1");
  CHECK(pw::MemoryStrategy::full(4).layers_changed() == 4);
  CHECK(pw::MemoryStrategy::selective(3) == pw::MemoryStrategy{0, 3, 0});
}
