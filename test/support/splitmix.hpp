#pragma once
// The tests' generator of random cases: splitmix64 (the library's output mix over a Weyl
// sequence), deterministic everywhere; kept apart from the library's Rng (data/random.hpp), so
// that the cases do not move when the library's draws do. No test framework here: bench/
// includes it too (through small_steps.hpp).
#include <cstddef>
#include <cstdint>

#include <pipeweaver/data/random.hpp>

namespace pwtest {

struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() { return pipeweaver::splitmix64_mix(s += 0x9e3779b97f4a7c15ULL); }
  /// In [lo, hi] (a slight modulo bias, as the cases need no more).
  int uniform(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1)); }
  /// In [0, n).
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  /// True with probability `percent` / 100.
  bool chance(int percent) { return uniform(1, 100) <= percent; }
};

}  // namespace pwtest
