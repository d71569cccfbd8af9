// balance_items against the algorithm as first written (cardinality-limited LPT by a linear scan
// of the bins, round-robin, unbounded pairwise swaps): the heap-based LPT and the bounded swap
// rounds give the same bins on every input small enough for the swap budget, which is every
// microbatch of the reference workloads.
#include <doctest/doctest.h>

#include <pipeweaver/data/random.hpp>
#include <pipeweaver/partition/splitter.hpp>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace pw = pipeweaver;

namespace {

std::vector<double> loads_of(const std::vector<double>& costs, const std::vector<std::size_t>& bin_of, std::size_t bins) {
  std::vector<double> l(bins, 0.0);
  for (std::size_t i = 0; i < costs.size(); ++i) l[bin_of[i]] += costs[i];
  return l;
}
double max_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, x);
  return m;
}

/// The reference: the splitter's documented algorithm, written plainly.
std::vector<std::vector<std::size_t>> reference(const std::vector<double>& costs, std::size_t bins) {
  const std::size_t n = costs.size();
  if (n == 0) return {};
  bins = std::clamp<std::size_t>(bins, 1, n);
  const std::size_t q = n / bins, rem = n % bins;
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  std::vector<std::size_t> lpt(n), count(bins, 0);
  std::vector<double> load(bins, 0.0);
  std::size_t full = 0;
  for (std::size_t i : order) {
    std::size_t best = bins;
    for (std::size_t b = 0; b < bins; ++b) {
      const bool may_take = count[b] < q || (count[b] == q && full < rem);
      if (may_take && (best == bins || load[b] < load[best])) best = b;
    }
    lpt[i] = best;
    load[best] += costs[i];
    if (++count[best] == q + 1) ++full;
  }
  std::vector<std::size_t> rr(n);
  for (std::size_t i = 0; i < n; ++i) rr[i] = i % bins;
  std::vector<std::size_t> bin_of = max_of(loads_of(costs, rr, bins)) < max_of(loads_of(costs, lpt, bins)) ? rr : lpt;
  for (std::size_t iter = 0; iter < 4 * n + 16; ++iter) {
    const auto loads = loads_of(costs, bin_of, bins);
    std::size_t h = 0;
    for (std::size_t b = 1; b < bins; ++b)
      if (loads[b] > loads[h]) h = b;
    double best_max = loads[h];
    std::size_t sa = n, sb = n;
    for (std::size_t a = 0; a < n; ++a) {
      if (bin_of[a] != h) continue;
      for (std::size_t b = 0; b < n; ++b) {
        if (bin_of[b] == h || !(costs[a] > costs[b])) continue;
        const std::size_t o = bin_of[b];
        const double nm = std::max(loads[h] - costs[a] + costs[b], loads[o] - costs[b] + costs[a]);
        if (nm < best_max) {
          best_max = nm;
          sa = a;
          sb = b;
        }
      }
    }
    if (sa == n) break;
    std::swap(bin_of[sa], bin_of[sb]);
  }
  std::vector<std::vector<std::size_t>> out(bins);
  for (std::size_t i = 0; i < n; ++i) out[bin_of[i]].push_back(i);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return out;
}

}  // namespace

TEST_CASE("balance_items gives the bins of the plainly written algorithm") {
  pw::Rng rng(99);
  for (int trial = 0; trial < 3000; ++trial) {
    const std::size_t n = static_cast<std::size_t>(rng.uniform_int(1, trial < 2500 ? 40 : 300));
    std::vector<double> costs(n);
    const bool ties = rng.below(3) == 0;  // many equal costs: the tie rules matter
    for (auto& c : costs) {
      const auto tokens = ties ? rng.uniform_int(1, 4) * 64 : rng.uniform_int(1, 8192);
      c = static_cast<double>(tokens) + static_cast<double>(tokens) * static_cast<double>(tokens) / 4096.0;
    }
    const std::size_t bins = static_cast<std::size_t>(rng.uniform_int(1, static_cast<std::int64_t>(n) + 2));
    CAPTURE(n);
    CAPTURE(bins);
    CHECK(pw::balance_items(costs, bins) == reference(costs, bins));
  }
}
