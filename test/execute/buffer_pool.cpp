// The pool's placement against its invariants on random lifetimes: buffers alive at the same
// time never overlap, offsets are aligned, and the arena lies between the peak of live bytes
// (a lower bound for any placement) and the sum of all buffers.
#include <doctest/doctest.h>

#include <pipeweaver/execute/buffer_pool.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pw = pipeweaver;

TEST_CASE("buffer pool: random lifetimes") {
  std::uint64_t s = 12345;
  auto next = [&] {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return s >> 33;
  };
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t align = std::size_t{1} << (next() % 9);
    std::vector<pw::PoolRequest> req(1 + next() % 40);
    for (auto& r : req) {
      r.bytes = next() % 3 == 0 ? 0 : 1 + next() % 5000;
      r.first = next() % 60;
      r.last = r.first + next() % 20;
    }
    const auto layout = pw::plan_buffer_pool(req, align);
    std::size_t sum = 0, peak = 0;
    for (std::size_t i = 0; i < req.size(); ++i) {
      sum += pw::align_up(req[i].bytes, align);
      if (req[i].bytes == 0) continue;
      CHECK(layout.offsets[i] % align == 0);
      CHECK(layout.offsets[i] + req[i].bytes <= layout.total);
      for (std::size_t j = 0; j < i; ++j) {
        if (req[j].bytes == 0) continue;
        const bool same_time = req[i].first <= req[j].last && req[j].first <= req[i].last;
        const bool same_memory = layout.offsets[i] < layout.offsets[j] + req[j].bytes && layout.offsets[j] < layout.offsets[i] + req[i].bytes;
        CHECK_FALSE((same_time && same_memory));
      }
    }
    for (std::size_t t = 0; t < 80; ++t) {
      std::size_t live = 0;
      for (const auto& r : req) live += (r.first <= t && t <= r.last) ? r.bytes : 0;
      peak = std::max(peak, live);
    }
    CHECK(layout.total >= peak);
    CHECK(layout.total <= sum);
  }
}

TEST_CASE("buffer pool: disjoint lifetimes share one slot, overlapping ones stack") {
  const std::vector<pw::PoolRequest> req{{100, 0, 1}, {100, 2, 3}, {50, 3, 4}};
  const auto l = pw::plan_buffer_pool(req, 64);
  CHECK(l.offsets[0] == 0);
  CHECK(l.offsets[1] == 0);
  CHECK(l.offsets[2] == 128);
  CHECK(l.total == 192);
  CHECK_THROWS_AS((void)pw::plan_buffer_pool(req, 48), pw::Error);
}
