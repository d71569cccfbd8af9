#pragma once
// The per-rank memory problem in its plain form, for tests and benchmarks (the library's search
// builds the compressed form directly, search/schedule_evaluator.hpp):
//  * RankMemoryProblem: one vector of alive pairs per point, solved by optimize_rank_memory
//    (the library's branch-and-bound, search/memory_optimizer.hpp);
//  * demand_range: the worst point under the most frugal and under the fastest choices;
//  * rank_pairs + alive_points: a rank's pairs and alive sets from its scheduled order, under the
//    activation-memory rule of schedule/activation_memory.hpp;
//  * require_feasible: an infeasible assignment as an Error.
// No test framework here: bench/ includes it too.
#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/schedule/activation_memory.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>
#include <pipeweaver/search/memory_optimizer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pwtest {
namespace pw = pipeweaver;

/// One rank's problem. `candidates[i]`: the candidates of pair i (any order; dominated ones are
/// ignored; the storage is the caller's). `points[p]`: the pairs alive at the p-th forward start
/// of the rank (including the pair whose forward starts there).
struct RankMemoryProblem {
  std::vector<std::span<const pw::StrategyCandidate>> candidates;
  std::vector<std::vector<std::int32_t>> points;
  pw::Bytes static_bytes{0};
  pw::Bytes capacity{0};
};

/// Chooses one candidate per pair with the library's branch-and-bound. Never throws on an
/// infeasible problem: it returns feasible = false with the violating point.
[[nodiscard]] inline pw::MemoryAssignment optimize_rank_memory(const RankMemoryProblem& problem,
                                                               const pw::MemoryOptimizerOptions& options = {}) {
  if (!(options.gap >= 0))
    throw pw::input_error("negative optimality gap", {.path = "MemoryOptimizerOptions::gap", .expected = ">= 0"});
  std::vector<std::int32_t> begin{0}, pairs;
  for (const auto& pt : problem.points) {
    pairs.insert(pairs.end(), pt.begin(), pt.end());
    begin.push_back(static_cast<std::int32_t>(pairs.size()));
  }
  const pw::detail::RankMemoryView view{problem.candidates, begin, pairs, problem.static_bytes, problem.capacity};
  pw::MemoryAssignment res;
  pw::detail::MemoryBranchAndBound{}.solve(view, options, res);
  return res;
}

/// Throws Error{infeasible} naming the rank, the point, its bytes and the capacity when `a` is infeasible.
inline void require_feasible(const pw::MemoryAssignment& a, int rank, pw::Bytes capacity) {
  if (a.feasible) return;
  throw pw::infeasible_error("activations do not fit even with every stage at its most frugal memory strategy: " +
                                 std::to_string(pw::to_gib(a.violating_bytes)) + " GiB needed at the start of forward " +
                                 std::to_string(a.violating_point) + ", capacity " + std::to_string(pw::to_gib(capacity)) + " GiB",
                             {.path = "rank " + std::to_string(rank) + ", forward " + std::to_string(a.violating_point),
                              .expected = "fewer stages in flight, more pipeline ranks or more device memory"});
}

/// The range a rank's activation demand can span: the largest alive bytes over the points
/// (static bytes excluded) when every pair takes its most frugal candidate, and when every pair
/// takes its fastest one (ties: fewer bytes).
struct DemandRange {
  pw::Bytes frugal{0};
  pw::Bytes fastest{0};
};

[[nodiscard]] inline DemandRange demand_range(const RankMemoryProblem& problem) {
  const std::size_t n = problem.candidates.size();
  std::vector<std::int64_t> frugal(n, 0), fastest(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& cs = problem.candidates[i];
    if (cs.empty())
      throw pw::input_error("pair " + std::to_string(i) + " has no candidate strategy", {.path = "RankMemoryProblem.candidates", .expected = "at least one candidate per pair"});
    const pw::StrategyCandidate* f = &cs.front();
    const pw::StrategyCandidate* q = &cs.front();
    for (const pw::StrategyCandidate& c : cs) {
      if (c.bytes < f->bytes) f = &c;
      if (c.time < q->time || (c.time == q->time && c.bytes < q->bytes)) q = &c;
    }
    frugal[i] = f->bytes.count();
    fastest[i] = q->bytes.count();
  }
  DemandRange out;
  for (const auto& point : problem.points) {
    std::int64_t a = 0, b = 0;
    for (std::int32_t i : point) {
      if (i < 0 || static_cast<std::size_t>(i) >= n)
        throw pw::input_error("a point names pair " + std::to_string(i), {.path = "RankMemoryProblem.points", .expected = "pairs in 0.." + std::to_string(n) + " (exclusive)"});
      a += frugal[static_cast<std::size_t>(i)];
      b += fastest[static_cast<std::size_t>(i)];
    }
    out.frugal = std::max(out.frugal, pw::Bytes{a});
    out.fastest = std::max(out.fastest, pw::Bytes{b});
  }
  return out;
}

/// The alive sets at each forward start of `order` (a pair is alive from its forward until its
/// release event; a pair without one stays alive to the end).
[[nodiscard]] inline std::vector<std::vector<std::int32_t>> alive_points(std::span<const pw::PairEvent> order, std::int32_t pairs) {
  std::vector<char> alive(static_cast<std::size_t>(std::max<std::int32_t>(pairs, 0)), 0);
  std::vector<std::int32_t> live;  // alive pairs in forward order
  std::vector<std::vector<std::int32_t>> points;
  for (const pw::PairEvent& e : order) {
    if (e.pair < 0 || e.pair >= pairs)
      throw pw::input_error("pair " + std::to_string(e.pair) + " out of range", {.expected = "0 <= pair < " + std::to_string(pairs)});
    auto& a = alive[static_cast<std::size_t>(e.pair)];
    if (e.forward) {
      if (!a) {
        a = 1;
        live.push_back(e.pair);
      }
      points.push_back(live);
    } else if (a) {
      a = 0;
      live.erase(std::find(live.begin(), live.end(), e.pair));
    }
  }
  return points;
}

/// A rank's stage pairs in a schedule, numbered in forward order: pair i is the forward node
/// `forward[i]` with `release[i]`, the node that frees its activations (activation_release_positions
/// over the rank's order; -1 when none follows it on the rank: then the forward holds them only
/// while it runs, and `order` releases it right after its forward).
struct RankPairs {
  std::vector<pw::NodeIndex> forward;
  std::vector<pw::NodeIndex> release;
  std::vector<pw::PairEvent> order;  ///< the rank's forwards and releases in schedule order
};

[[nodiscard]] inline RankPairs rank_pairs(const pw::StageGraph& graph, std::span<const pw::ScheduledStage> order) {
  std::vector<pw::StageRef> stages;
  for (const pw::ScheduledStage& s : order) {
    if (s.node < 0 || static_cast<std::size_t>(s.node) >= graph.nodes.size())
      throw pw::input_error("node " + std::to_string(s.node) + " out of range", {.expected = "0 <= node < " + std::to_string(graph.nodes.size())});
    stages.push_back(graph.nodes[static_cast<std::size_t>(s.node)].stage);
  }
  const std::vector<std::size_t> release = pw::activation_release_positions(stages);
  RankPairs out;
  std::vector<std::int32_t> released_pair(order.size(), -1);  // per position: the pair it releases
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (stages[i].pass != pw::Pass::forward) continue;
    const auto p = static_cast<std::int32_t>(out.forward.size());
    const bool later = release[i] != pw::no_release && release[i] > i;
    out.forward.push_back(order[i].node);
    out.release.push_back(later ? order[release[i]].node : -1);
    if (later) released_pair[release[i]] = p;
  }
  std::int32_t next_forward = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (stages[i].pass == pw::Pass::forward) {
      const std::int32_t p = next_forward++;
      out.order.push_back({p, true});
      if (out.release[static_cast<std::size_t>(p)] < 0) out.order.push_back({p, false});
    } else if (released_pair[i] >= 0) {
      out.order.push_back({released_pair[i], false});
    }
  }
  return out;
}

}  // namespace pwtest
