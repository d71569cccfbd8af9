// Memory optimizer: candidate selection against brute force over every strategy triple, and
// the per-rank branch-and-bound against exhaustive enumeration on small random instances.
#include <doctest/doctest.h>

#include <pipeweaver/search/memory_optimizer.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/memory_reference.hpp"

namespace pw = pipeweaver;

namespace {

struct Rng {  // splitmix64: the test's own portable generator
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::int64_t uniform(std::int64_t lo, std::int64_t hi) {  // inclusive
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
};

bool dominates(const pw::StrategyCandidate& a, const pw::StrategyCandidate& b) {
  return a.time <= b.time && a.bytes <= b.bytes && (a.time < b.time || a.bytes < b.bytes);
}

std::vector<pw::StrategyCandidate> all_triples(int L, auto eval) {
  std::vector<pw::StrategyCandidate> all;
  for (int f = 0; f <= L; ++f)
    for (int s = 0; f + s <= L; ++s)
      for (int o = 0; f + s + o <= L; ++o) {
        pw::MemoryStrategy st{static_cast<std::int16_t>(f), static_cast<std::int16_t>(s), static_cast<std::int16_t>(o)};
        auto c = eval(st);
        all.push_back({st, c.time, c.bytes});
      }
  return all;
}

}  // namespace

TEST_CASE("candidate_strategies keeps the fastest, the most frugal and the fastest per memory bucket") {
  const int L = 6;
  Rng rng{7};
  auto linear = [](const pw::MemoryStrategy& s) {
    // recompute: slow, saves most; selective: cheap, saves some; offload: medium.
    return pw::StrategyCost{pw::Nanoseconds{100 * s.full_recompute + 17 * s.selective_recompute + 45 * s.offload},
                            pw::Bytes{10000 - 1500 * s.full_recompute - 600 * s.selective_recompute - 1100 * s.offload}};
  };
  std::vector<std::int64_t> noise_t(512), noise_b(512);
  for (auto& x : noise_t) x = rng.uniform(0, 400);
  for (auto& x : noise_b) x = rng.uniform(0, 4000);
  auto noisy = [&](const pw::MemoryStrategy& s) {
    auto i = static_cast<std::size_t>(s.full_recompute * 64 + s.selective_recompute * 8 + s.offload);
    return pw::StrategyCost{pw::Nanoseconds{noise_t[i]}, pw::Bytes{noise_b[i]}};
  };
  for (int S : {2, 3, 5, 10}) {
    for (int which = 0; which < 2; ++which) {
      CAPTURE(S);
      CAPTURE(which);
      auto eval = [&](const pw::MemoryStrategy& s) { return which == 0 ? linear(s) : noisy(s); };
      auto all = all_triples(L, eval);
      auto got = pw::candidate_strategies(L, eval, {.max_candidates = S});
      REQUIRE(!got.empty());
      CHECK(got.size() <= static_cast<std::size_t>(S));
      // Every candidate is a real triple's cost and no triple dominates it.
      for (const auto& c : got) {
        CHECK(eval(c.strategy).time == c.time);
        CHECK(eval(c.strategy).bytes == c.bytes);
        for (const auto& t : all) CHECK_FALSE(dominates(t, c));
      }
      for (std::size_t i = 1; i < got.size(); ++i) {
        CHECK(got[i - 1].time < got[i].time);
        CHECK(got[i - 1].bytes > got[i].bytes);
      }
      // Fastest and most frugal by brute force.
      auto min_t = std::min_element(all.begin(), all.end(), [](auto& a, auto& b) { return a.time < b.time; })->time;
      auto min_b = std::min_element(all.begin(), all.end(), [](auto& a, auto& b) { return a.bytes < b.bytes; })->bytes;
      CHECK(got.front().time == min_t);
      CHECK(got.back().bytes == min_b);
      // The non-dominated set, by brute force.
      std::vector<pw::StrategyCandidate> front;
      for (const auto& t : all)
        if (std::none_of(all.begin(), all.end(), [&](const auto& u) { return dominates(u, t); })) front.push_back(t);
      if (front.size() <= static_cast<std::size_t>(S)) {
        // Every distinct (time, bytes) of the frontier is kept.
        for (const auto& t : front)
          CHECK(std::any_of(got.begin(), got.end(), [&](auto& c) { return c.time == t.time && c.bytes == t.bytes; }));
      } else {
        // Fastest frontier point in each of S-2 buckets between the extremes is kept.
        const double hi = static_cast<double>(got.front().bytes.count()), lo = static_cast<double>(min_b.count());
        for (int j = 0; j < S - 2; ++j) {
          const pw::StrategyCandidate* fastest = nullptr;
          for (const auto& t : front) {
            if (t.time == min_t || t.bytes == min_b) continue;  // the extremes are kept anyway
            int b = static_cast<int>((hi - static_cast<double>(t.bytes.count())) * (S - 2) / (hi - lo));
            b = std::min(b, S - 3);
            if (b == j && (!fastest || t.time < fastest->time)) fastest = &t;
          }
          if (fastest)
            CHECK(std::any_of(got.begin(), got.end(), [&](auto& c) { return c.time == fastest->time && c.bytes == fastest->bytes; }));
        }
      }
    }
  }
}

TEST_CASE("candidate_strategies: options and bad input") {
  auto eval = [](const pw::MemoryStrategy& s) {
    return pw::StrategyCost{pw::Nanoseconds{10 * s.full_recompute + 3 * s.selective_recompute + 5 * s.offload},
                            pw::Bytes{1000 - 90 * s.full_recompute - 40 * s.selective_recompute - 70 * s.offload}};
  };
  SUBCASE("only full recompute") {
    auto got = pw::candidate_strategies(4, eval, {.max_candidates = 10, .selective = false, .offload = false});
    REQUIRE(got.size() == 5);  // 0..4 recomputed layers: all on the frontier
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].strategy == pw::MemoryStrategy::full(static_cast<int>(i)));
  }
  SUBCASE("coarse grid still contains both extremes") {
    auto got = pw::candidate_strategies(40, eval, {.max_candidates = 10, .max_evaluations = 200});
    CHECK(got.front().strategy.is_none());
    CHECK(got.back().bytes == pw::Bytes{1000 - 90 * 40});  // all recomputed is the most frugal
  }
  SUBCASE("zero layers") {
    auto got = pw::candidate_strategies(0, eval);
    REQUIRE(got.size() == 1);
    CHECK(got[0].strategy.is_none());
  }
  CHECK_THROWS_AS((void)pw::candidate_strategies(-1, eval), pw::Error);
  CHECK_THROWS_AS((void)pw::candidate_strategies(3, eval, {.max_candidates = 1}), pw::Error);
}

TEST_CASE("alive_points follows forward/backward events") {
  // F0 F1 B0 F2 B1 F3 (pair 2 and 3 never released)
  std::vector<pw::PairEvent> ev{{0, true}, {1, true}, {0, false}, {2, true}, {1, false}, {3, true}};
  auto pts = pwtest::alive_points(ev, 4);
  REQUIRE(pts.size() == 4);
  CHECK(pts[0] == std::vector<std::int32_t>{0});
  CHECK(pts[1] == std::vector<std::int32_t>{0, 1});
  CHECK(pts[2] == std::vector<std::int32_t>{1, 2});
  CHECK(pts[3] == std::vector<std::int32_t>{2, 3});
  std::vector<pw::PairEvent> bad{{5, true}};
  CHECK_THROWS_AS((void)pwtest::alive_points(bad, 4), pw::Error);
}

TEST_CASE("rank_pairs matches forwards with their releasing backwards") {
  pw::StageGraph g;
  auto add = [&](int chunk, int smb, pw::Pass pass) {
    pw::StageNode n;
    n.stage = pw::StageRef{pw::ModuleId{0}, chunk, pw::SubMicrobatchId{smb}, pass};
    g.nodes.push_back(n);
    return static_cast<pw::NodeIndex>(g.nodes.size() - 1);
  };
  auto f0 = add(0, 0, pw::Pass::forward), f1 = add(0, 1, pw::Pass::forward);
  auto bi0 = add(0, 0, pw::Pass::backward_input), bw0 = add(0, 0, pw::Pass::backward_weight);
  auto b1 = add(0, 1, pw::Pass::backward);
  auto f2 = add(1, 0, pw::Pass::forward);  // a frozen stage: no backward
  std::vector<pw::ScheduledStage> order{{f0, {}}, {f1, {}}, {bi0, {}}, {f2, {}}, {b1, {}}, {bw0, {}}};
  auto rp = pwtest::rank_pairs(g, order);
  CHECK(rp.forward == std::vector<pw::NodeIndex>{f0, f1, f2});
  CHECK(rp.release == std::vector<pw::NodeIndex>{bw0, b1, -1});
  REQUIRE(rp.order.size() == 6);
  CHECK((rp.order[2].pair == 2 && rp.order[2].forward));
  CHECK((rp.order[3].pair == 2 && !rp.order[3].forward));  // released right after its forward
  CHECK((rp.order[4].pair == 1 && !rp.order[4].forward));
  CHECK((rp.order[5].pair == 0 && !rp.order[5].forward));
  auto pts = pwtest::alive_points(rp.order, 3);
  REQUIRE(pts.size() == 3);
  CHECK(pts[2] == std::vector<std::int32_t>{0, 1, 2});
  // A frozen module's split backward has no weight part: its input part frees the forward.
  auto f3 = add(2, 0, pw::Pass::forward), bi3 = add(2, 0, pw::Pass::backward_input);
  const std::vector<pw::ScheduledStage> frozen{{f3, {}}, {f0, {}}, {bi3, {}}, {bi0, {}}, {bw0, {}}};
  const auto fr = pwtest::rank_pairs(g, frozen);
  CHECK(fr.forward == std::vector<pw::NodeIndex>{f3, f0});
  CHECK(fr.release == std::vector<pw::NodeIndex>{bi3, bw0});
  REQUIRE(fr.order.size() == 4);
  CHECK((fr.order[2].pair == 0 && !fr.order[2].forward));  // at bi3
  CHECK((fr.order[3].pair == 1 && !fr.order[3].forward));  // at bw0, not bi0
}

namespace {

struct Instance {
  std::vector<std::vector<pw::StrategyCandidate>> store;
  pwtest::RankMemoryProblem pb;
  Instance() = default;
  Instance(const Instance&) = delete;
};

void random_instance(Rng& rng, Instance& in) {
  const int n = static_cast<int>(rng.uniform(1, 7));
  for (int i = 0; i < n; ++i) {
    const int k = static_cast<int>(rng.uniform(1, 4));
    std::vector<pw::StrategyCandidate> cs;
    for (int j = 0; j < k; ++j)
      cs.push_back({pw::MemoryStrategy{static_cast<std::int16_t>(j), 0, 0}, pw::Nanoseconds{rng.uniform(100, 1000)},
                    pw::Bytes{rng.uniform(1, 100)}});
    in.store.push_back(cs);
  }
  for (const auto& cs : in.store) in.pb.candidates.push_back(cs);
  // Random event order: each forward before its backward; some pairs never released.
  std::vector<pw::PairEvent> ev;
  std::vector<int> state(static_cast<std::size_t>(n), 0);  // 0 not started, 1 alive, 2 done
  int next = 0;
  while (true) {
    std::vector<int> releasable;
    for (int i = 0; i < next; ++i)
      if (state[static_cast<std::size_t>(i)] == 1) releasable.push_back(i);
    const bool can_f = next < n;
    if (!can_f && releasable.empty()) break;
    if (can_f && (releasable.empty() || rng.uniform(0, 1) == 0)) {
      state[static_cast<std::size_t>(next)] = 1;
      ev.push_back({next++, true});
    } else {
      int i = releasable[static_cast<std::size_t>(rng.uniform(0, static_cast<std::int64_t>(releasable.size()) - 1))];
      if (rng.uniform(0, 5) == 0 && can_f) {  // occasionally keep it alive forever
        state[static_cast<std::size_t>(i)] = 2;
        continue;
      }
      state[static_cast<std::size_t>(i)] = 2;
      ev.push_back({i, false});
    }
  }
  in.pb.points = pwtest::alive_points(ev, n);
  in.pb.static_bytes = pw::Bytes{rng.uniform(0, 50)};
  in.pb.capacity = in.pb.static_bytes + pw::Bytes{rng.uniform(20, 300)};
}

struct Exhaustive {
  bool feasible = false;
  std::int64_t best = std::numeric_limits<std::int64_t>::max();
};

bool fits(const pwtest::RankMemoryProblem& pb, const std::vector<std::int32_t>& choice) {
  for (const auto& pt : pb.points) {
    std::int64_t load = pb.static_bytes.count();
    for (auto i : pt) load += pb.candidates[static_cast<std::size_t>(i)][static_cast<std::size_t>(choice[static_cast<std::size_t>(i)])].bytes.count();
    if (load > pb.capacity.count()) return false;
  }
  return true;
}

Exhaustive exhaustive(const pwtest::RankMemoryProblem& pb) {
  Exhaustive ex;
  const auto n = pb.candidates.size();
  std::vector<std::int32_t> c(n, 0);
  while (true) {
    if (fits(pb, c)) {
      std::int64_t t = 0;
      for (std::size_t i = 0; i < n; ++i) t += pb.candidates[i][static_cast<std::size_t>(c[i])].time.count();
      ex.feasible = true;
      ex.best = std::min(ex.best, t);
    }
    std::size_t i = 0;
    for (; i < n; ++i) {
      if (++c[i] < static_cast<std::int32_t>(pb.candidates[i].size())) break;
      c[i] = 0;
    }
    if (i == n) break;
  }
  return ex;
}

}  // namespace

TEST_CASE("optimize_rank_memory agrees with exhaustive enumeration on random small instances") {
  Rng rng{2024};
  int feasible = 0, infeasible = 0, tight = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    CAPTURE(trial);
    Instance in;
    random_instance(rng, in);
    const auto ex = exhaustive(in.pb);
    for (double gap : {0.0, 0.05}) {
      const auto got = pwtest::optimize_rank_memory(in.pb, {.gap = gap});
      REQUIRE(got.feasible == ex.feasible);
      if (!ex.feasible) {
        // The reported point is the first one that overflows even at its most frugal.
        std::int32_t first = -1;
        std::int64_t first_bytes = 0;
        for (std::size_t p = 0; p < in.pb.points.size() && first < 0; ++p) {
          std::int64_t load = in.pb.static_bytes.count();
          for (auto i : in.pb.points[p]) {
            std::int64_t m = std::numeric_limits<std::int64_t>::max();
            for (const auto& c : in.pb.candidates[static_cast<std::size_t>(i)]) m = std::min(m, c.bytes.count());
            load += m;
          }
          if (load > in.pb.capacity.count()) {
            first = static_cast<std::int32_t>(p);
            first_bytes = load;
          }
        }
        CHECK(got.violating_point == first);
        CHECK(got.violating_bytes == pw::Bytes{first_bytes});
        CHECK_THROWS_AS(pwtest::require_feasible(got, 3, in.pb.capacity), pw::Error);
        if (gap == 0.0) ++infeasible;
        continue;
      }
      REQUIRE(got.choice.size() == in.pb.candidates.size());
      CHECK(fits(in.pb, got.choice));
      std::int64_t t = 0;
      for (std::size_t i = 0; i < got.choice.size(); ++i) t += in.pb.candidates[i][static_cast<std::size_t>(got.choice[i])].time.count();
      CHECK(got.total_time == pw::Nanoseconds{t});
      CHECK(got.proven);
      CHECK(got.lower_bound <= pw::Nanoseconds{ex.best});  // the bound is valid
      CHECK(static_cast<double>(t) <= (1.0 + gap) * static_cast<double>(ex.best) + 1e-9);
      if (gap == 0.0) {
        CHECK(t == ex.best);
        ++feasible;
        std::int64_t lb = 0;
        for (const auto& cs : in.pb.candidates) {
          std::int64_t m = std::numeric_limits<std::int64_t>::max();
          for (const auto& c : cs) m = std::min(m, c.time.count());
          lb += m;
        }
        if (ex.best > lb) ++tight;
      }
      CHECK_NOTHROW(pwtest::require_feasible(got, 0, in.pb.capacity));
    }
  }
  // The generator must exercise all three regimes.
  CHECK(feasible > 100);
  CHECK(infeasible > 50);
  CHECK(tight > 100);
}

TEST_CASE("optimize_rank_memory: node limit keeps a feasible incumbent - bad input is rejected") {
  Rng rng{99};
  std::vector<std::vector<pw::StrategyCandidate>> store;
  pwtest::RankMemoryProblem pb;
  const int n = 40;
  std::vector<pw::PairEvent> ev;
  for (int i = 0; i < n; ++i) {
    std::vector<pw::StrategyCandidate> cs;
    std::int64_t t = rng.uniform(1000, 2000), b = rng.uniform(80, 100);  // recompute adds up to ~20 %
    for (int k = 0; k < 6; ++k) {
      cs.push_back({pw::MemoryStrategy{static_cast<std::int16_t>(k), 0, 0}, pw::Nanoseconds{t}, pw::Bytes{b}});
      t += rng.uniform(1, 60);
      b -= rng.uniform(1, 12);
    }
    store.push_back(cs);
    ev.push_back({i, true});
    if (i >= 7) ev.push_back({i - 7, false});  // 8 in flight
  }
  for (const auto& cs : store) pb.candidates.push_back(cs);
  pb.points = pwtest::alive_points(ev, n);
  const pwtest::DemandRange d = pwtest::demand_range(pb);  // worst point under each extreme
  pb.capacity = pw::Bytes{(d.frugal.count() + d.fastest.count()) / 2};
  auto exact = pwtest::optimize_rank_memory(pb, {.gap = 0.0, .node_limit = 50});
  REQUIRE(exact.feasible);
  CHECK(fits(pb, exact.choice));
  CHECK_FALSE(exact.proven);
  CHECK(exact.nodes > 50);
  CHECK(exact.peak <= pb.capacity);
  auto gap = pwtest::optimize_rank_memory(pb);  // default 5 % gap proves quickly
  CHECK(gap.feasible);
  CHECK(gap.proven);
  // gap result <= 1.05 optimum <= 1.05 any feasible incumbent.
  CHECK(static_cast<double>(gap.total_time.count()) <= 1.05 * static_cast<double>(exact.total_time.count()));
  CHECK(gap.lower_bound <= gap.total_time);

  pwtest::RankMemoryProblem bad = pb;
  bad.candidates[3] = {};
  CHECK_THROWS_AS((void)pwtest::optimize_rank_memory(bad), pw::Error);
  bad = pb;
  bad.points[0].push_back(n + 3);
  CHECK_THROWS_AS((void)pwtest::optimize_rank_memory(bad), pw::Error);
}

TEST_CASE("a reused solver (the search's evaluator keeps one) gives the same answers as fresh ones") {
  Rng rng{77};
  pw::detail::MemoryBranchAndBound solver;
  pw::MemoryAssignment reused;
  for (int trial = 0; trial < 400; ++trial) {
    CAPTURE(trial);
    Instance in;
    random_instance(rng, in);
    const pw::MemoryOptimizerOptions opt{.gap = trial % 2 == 0 ? 0.0 : 0.05};
    std::vector<std::int32_t> begin{0}, pairs;
    for (const auto& pt : in.pb.points) {
      pairs.insert(pairs.end(), pt.begin(), pt.end());
      begin.push_back(static_cast<std::int32_t>(pairs.size()));
    }
    solver.solve(pw::detail::RankMemoryView{in.pb.candidates, begin, pairs, in.pb.static_bytes, in.pb.capacity}, opt, reused);
    const auto fresh = pwtest::optimize_rank_memory(in.pb, opt);
    CHECK(reused.feasible == fresh.feasible);
    CHECK(reused.choice == fresh.choice);
    CHECK(reused.total_time == fresh.total_time);
    CHECK(reused.lower_bound == fresh.lower_bound);
    CHECK(reused.proven == fresh.proven);
    CHECK(reused.violating_point == fresh.violating_point);
    CHECK(reused.violating_bytes == fresh.violating_bytes);
    CHECK(reused.peak == fresh.peak);
    CHECK(reused.nodes == fresh.nodes);
  }
}

TEST_CASE("demand_range: the worst point under the most frugal and the fastest choices") {
  // Pair 0: fastest (1 ns) holds 10 bytes, frugal holds 4; pair 1: fastest holds 6, frugal 1;
  // a dominated candidate (slower and bigger) and a fastest-time tie with more bytes are ignored.
  const std::vector<pw::StrategyCandidate> c0{{{}, pw::Nanoseconds{2}, pw::Bytes{4}},
                                              {{}, pw::Nanoseconds{1}, pw::Bytes{10}},
                                              {{}, pw::Nanoseconds{5}, pw::Bytes{12}}};
  const std::vector<pw::StrategyCandidate> c1{{{}, pw::Nanoseconds{1}, pw::Bytes{9}},
                                              {{}, pw::Nanoseconds{3}, pw::Bytes{1}},
                                              {{}, pw::Nanoseconds{1}, pw::Bytes{6}}};
  pwtest::RankMemoryProblem pb;
  pb.candidates = {c0, c1};
  pb.points = {{0}, {0, 1}, {1}};
  const pwtest::DemandRange d = pwtest::demand_range(pb);
  CHECK(d.frugal == pw::Bytes{5});    // max(4, 4 + 1, 1)
  CHECK(d.fastest == pw::Bytes{16});  // max(10, 10 + 6, 6)
  // Bad input is named, not read out of bounds.
  pb.points = {{2}};
  CHECK_THROWS_AS((void)pwtest::demand_range(pb), pw::Error);
  pb.candidates.push_back({});
  CHECK_THROWS_AS((void)pwtest::demand_range(pb), pw::Error);
}
