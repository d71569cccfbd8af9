// The exact schedule solver (test/support/exact_schedule.hpp) against brute force, and the tight
// lower bound (emulate/lower_bound.hpp) against both. Brute force: every combination of per-rank
// permutations of small random stage DAGs, each emulated by emulate_schedule (deadlocked ones are
// refused there), the least step time kept. Random DAGs over up to 3 ranks and 8 stages, random
// latencies (also zero ones), random transfer times with several messages per link (contention).
#include <doctest/doctest.h>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "support/exact_schedule.hpp"
#include "support/splitmix.hpp"

namespace pw = pipeweaver;

namespace {

using Rng = pwtest::SplitMix;

struct Instance {
  pw::StageGraph graph;
  int ranks = 1;
  std::vector<pw::Nanoseconds> latency;
  std::vector<std::vector<pw::Nanoseconds>> transfer;  // parallel to outputs
};

Instance random_instance(std::uint64_t seed, bool zero_latencies) {
  Rng rng{seed};
  Instance in;
  in.ranks = rng.uniform(1, 3);
  const int n = rng.uniform(2, in.ranks == 1 ? 7 : 8);
  in.graph.nodes.resize(static_cast<std::size_t>(n));
  const int density = rng.uniform(15, 55);
  for (int j = 0; j < n; ++j) {  // node order is a topological order; edges i -> j with i < j
    auto& node = in.graph.nodes[static_cast<std::size_t>(j)];
    node.rank = pw::RankId{rng.uniform(0, in.ranks - 1)};
    node.stage.sub_microbatch = pw::SubMicrobatchId{j};
    for (int i = 0; i < j; ++i)
      if (rng.uniform(1, 100) <= density) {
        node.inputs.push_back(i);
        in.graph.nodes[static_cast<std::size_t>(i)].outputs.push_back(j);
      }
  }
  for (int j = 0; j < n; ++j) in.latency.push_back(pw::Nanoseconds{rng.uniform(zero_latencies ? 0 : 1, 9)});
  for (int j = 0; j < n; ++j) {
    std::vector<pw::Nanoseconds> t;
    for (std::size_t k = 0; k < in.graph.nodes[static_cast<std::size_t>(j)].outputs.size(); ++k) t.push_back(pw::Nanoseconds{rng.uniform(0, 6)});
    in.transfer.push_back(std::move(t));
  }
  return in;
}

pwtest::ExactProblem problem_of(const Instance& in) {
  pwtest::ExactProblem p;
  p.graph = &in.graph;
  p.ranks = in.ranks;
  p.latency = in.latency;
  p.strategy.assign(in.graph.nodes.size(), pw::MemoryStrategy{});
  for (std::size_t u = 0; u < in.graph.nodes.size(); ++u) {
    std::vector<pw::Nanoseconds> t;
    for (std::size_t k = 0; k < in.graph.nodes[u].outputs.size(); ++k)
      t.push_back(in.graph.nodes[static_cast<std::size_t>(in.graph.nodes[u].outputs[k])].rank != in.graph.nodes[u].rank ? in.transfer[u][k]
                                                                                                                       : pw::Nanoseconds{0});
    p.out_transfer.push_back(std::move(t));
  }
  return p;
}

/// The least step time over every combination of per-rank permutations (deadlocks skipped).
pw::Nanoseconds brute_force(const pwtest::ExactProblem& p) {
  std::vector<std::vector<pw::NodeIndex>> lists(static_cast<std::size_t>(p.ranks));
  for (std::size_t n = 0; n < p.graph->nodes.size(); ++n) lists[p.graph->nodes[n].rank.index()].push_back(static_cast<pw::NodeIndex>(n));
  pw::Nanoseconds best = pw::Nanoseconds::max();
  const auto evaluate = [&] {
    pw::Schedule s;
    s.ranks.resize(lists.size());
    for (std::size_t r = 0; r < lists.size(); ++r)
      for (pw::NodeIndex v : lists[r]) s.ranks[r].push_back(pw::ScheduledStage{v, {}});
    try {
      best = std::min(best, pwtest::exact_problem_step_time(p, s));
    } catch (const pw::Error&) {  // a deadlocked order tuple: not a schedule
    }
  };
  // Odometer over the ranks' permutations (each list starts sorted, next_permutation wraps).
  while (true) {
    evaluate();
    std::size_t r = 0;
    while (r < lists.size() && !std::next_permutation(lists[r].begin(), lists[r].end())) ++r;
    if (r == lists.size()) break;
  }
  return best;
}

pw::Nanoseconds tight_bound(const pwtest::ExactProblem& p) {
  return pw::rank_relaxation_bound(*p.graph, p.latency, p.ranks, [&](pw::NodeIndex u, pw::NodeIndex v) {
    const auto& outs = p.graph->nodes[static_cast<std::size_t>(u)].outputs;
    return p.out_transfer[static_cast<std::size_t>(u)][static_cast<std::size_t>(std::find(outs.begin(), outs.end(), v) - outs.begin())];
  });
}

}  // namespace

TEST_CASE("exact solver: the optimum equals brute force on random small DAGs, and the tight bound is below it") {
  int tight_hits = 0, cases = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed)
    for (const bool zeros : {false, true}) {
      CAPTURE(seed);
      CAPTURE(zeros);
      const Instance in = random_instance(seed * 7919 + (zeros ? 1 : 0), zeros);
      const pwtest::ExactProblem p = problem_of(in);
      const pw::Nanoseconds truth = brute_force(p);
      const pwtest::ExactResult r = pwtest::solve_exact(p);
      REQUIRE(r.optimal);
      CHECK(r.step_time == truth);
      CHECK(pwtest::exact_problem_step_time(p, r.schedule) == r.step_time);  // its schedule really takes that long
      CHECK(r.root_bound <= truth);
      const pw::Nanoseconds tight = tight_bound(p);
      CHECK(tight <= truth);
      const pw::LowerBound classic = pw::lower_bound(in.graph, in.latency, in.ranks);
      CHECK(classic.value <= classic.tight);
      CHECK(classic.tight <= tight);  // without transfers the relaxation can only be lower
      tight_hits += tight == truth ? 1 : 0;
      ++cases;
    }
  MESSAGE("tight bound equal to the optimum on ", tight_hits, " of ", cases, " random DAGs");
}

TEST_CASE("exact solver: starting from the worst schedule it still finds the optimum, and an optimal incumbent is kept") {
  for (std::uint64_t seed = 100; seed < 120; ++seed) {
    CAPTURE(seed);
    const Instance in = random_instance(seed, false);
    const pwtest::ExactProblem p = problem_of(in);
    const pw::Nanoseconds truth = brute_force(p);
    // A valid but poor incumbent: each rank in reverse of a topological order is usually not
    // valid, so take node order (topological here) and give it as the incumbent.
    pw::Schedule inc;
    inc.ranks.resize(static_cast<std::size_t>(p.ranks));
    for (std::size_t n = 0; n < in.graph.nodes.size(); ++n)
      inc.ranks[in.graph.nodes[n].rank.index()].push_back(pw::ScheduledStage{static_cast<pw::NodeIndex>(n), {}});
    const pwtest::ExactResult r = pwtest::solve_exact(p, {.incumbent = inc});
    REQUIRE(r.optimal);
    CHECK(r.step_time == truth);
    CHECK(r.improved == (pwtest::exact_problem_step_time(p, inc) > truth));
    const pwtest::ExactResult again = pwtest::solve_exact(p, {.incumbent = r.schedule});
    CHECK(again.step_time == truth);
    CHECK_FALSE(again.improved);
  }
}

TEST_CASE("exact solver: a node limit ends the search early without claiming optimality") {
  Instance in;
  in.ranks = 2;
  const int n = 12;
  in.graph.nodes.resize(n);
  for (int j = 0; j < n; ++j) {
    in.graph.nodes[static_cast<std::size_t>(j)].rank = pw::RankId{j % 2};
    in.latency.push_back(pw::Nanoseconds{1 + (j * 7) % 5});
    in.transfer.emplace_back();
  }
  const pwtest::ExactProblem p = problem_of(in);
  const pwtest::ExactResult r = pwtest::solve_exact(p, {.node_limit = 3});
  CHECK_FALSE(r.optimal);
  CHECK(r.nodes > 3);
  // Independent jobs: the optimum is the busiest rank's work, which the bound reaches.
  const pwtest::ExactResult full = pwtest::solve_exact(p);
  CHECK(full.optimal);
  pw::Nanoseconds work[2] = {pw::Nanoseconds{0}, pw::Nanoseconds{0}};
  for (int j = 0; j < n; ++j) work[j % 2] += in.latency[static_cast<std::size_t>(j)];
  CHECK(full.step_time == std::max(work[0], work[1]));
}

TEST_CASE("tight bound: exact on a 1F1B pipeline, (M + P - 1)(F + B), and at least the classic bound") {
  // A chain pipeline built by hand: P ranks, M microbatches, forward F and backward B per stage.
  for (int P : {2, 3, 4})
    for (int M : {1, 3, 8}) {
      CAPTURE(P);
      CAPTURE(M);
      const pw::Nanoseconds F{3}, B{5};
      pw::StageGraph g;
      const auto id = [&](int mb, int stage, bool bwd) { return static_cast<pw::NodeIndex>((mb * P + stage) * 2 + (bwd ? 1 : 0)); };
      g.nodes.resize(static_cast<std::size_t>(M * P * 2));
      std::vector<pw::Nanoseconds> lat(g.nodes.size());
      const auto edge = [&](pw::NodeIndex a, pw::NodeIndex b) {
        g.nodes[static_cast<std::size_t>(b)].inputs.push_back(a);
        g.nodes[static_cast<std::size_t>(a)].outputs.push_back(b);
      };
      for (int mb = 0; mb < M; ++mb)
        for (int s = 0; s < P; ++s) {
          for (bool bwd : {false, true}) {
            g.nodes[static_cast<std::size_t>(id(mb, s, bwd))].rank = pw::RankId{s};
            lat[static_cast<std::size_t>(id(mb, s, bwd))] = bwd ? B : F;
          }
          if (s + 1 < P) {
            edge(id(mb, s, false), id(mb, s + 1, false));
            edge(id(mb, s + 1, true), id(mb, s, true));
          } else {
            edge(id(mb, s, false), id(mb, s, true));
          }
        }
      const pw::LowerBound lb = pw::lower_bound(g, lat, P);
      CHECK(lb.tight == (M + P - 1) * (F + B));
      CHECK(lb.value <= lb.tight);
    }
}
