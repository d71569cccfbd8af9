#pragma once
// A greedy list scheduler shared by tests and benchmarks (a realistic pipeline for pictures,
// bound checks and emulation throughput), independent of the library's own interleaver.
// No test framework here: bench/ includes it too.
#include <pipeweaver/core/memory_strategy.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

namespace pwtest {
namespace pw = pipeweaver;

/// Greedy list schedule (a realistic pipeline for pictures and bound checks): repeatedly run,
/// over all ranks, the ready stage that can start earliest (ties: backward first, then the
/// earliest-ready in discovery order), using the cost model's latencies and transfer times.
template <class C>
pw::Schedule greedy_schedule(const pw::StageGraph& g, const pw::Partition& part, std::span<const pw::SubMicrobatchSpec> smbs,
                             const C& cost) {
  const std::size_t N = g.size();
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(part.ranks));
  std::vector<int> pending(N);
  std::vector<pw::Nanoseconds> ready(N, pw::Nanoseconds{0});
  std::vector<pw::Nanoseconds> rank_free(static_cast<std::size_t>(part.ranks), pw::Nanoseconds{0});
  std::vector<std::size_t> frontier;
  for (std::size_t n = 0; n < N; ++n)
    if ((pending[n] = static_cast<int>(g.nodes[n].inputs.size())) == 0) frontier.push_back(n);
  while (!frontier.empty()) {
    std::size_t bi = 0;
    pw::Nanoseconds best_start{0};
    for (std::size_t i = 0; i < frontier.size(); ++i) {
      const std::size_t n = frontier[i];
      const auto start = std::max(ready[n], rank_free[g.nodes[n].rank.index()]);
      const bool bwd = g.nodes[n].stage.pass != pw::Pass::forward;
      if (i == 0 || start < best_start ||
          (start == best_start && bwd && g.nodes[frontier[bi]].stage.pass == pw::Pass::forward)) {
        bi = i;
        best_start = start;
      }
    }
    const std::size_t best = frontier[bi];
    frontier.erase(frontier.begin() + static_cast<std::ptrdiff_t>(bi));
    const auto& node = g.nodes[best];
    s.ranks[node.rank.index()].push_back(pw::ScheduledStage{static_cast<pw::NodeIndex>(best), {}});
    const auto end = best_start + cost.latency(pw::StageSpec::of(part, node.stage.module, node.stage.chunk, node.stage.pass),
                                               smbs[node.stage.sub_microbatch.index()], pw::MemoryStrategy{});
    rank_free[node.rank.index()] = end;
    for (auto o : node.outputs) {
      const auto ou = static_cast<std::size_t>(o);
      auto arrive = end;
      if (g.nodes[ou].rank != node.rank)
        arrive += cost.transfer_time(pw::transfer_bytes(part, smbs, node.stage, g.nodes[ou].stage, cost));
      ready[ou] = std::max(ready[ou], arrive);
      if (--pending[ou] == 0) frontier.push_back(ou);
    }
  }
  return s;
}

}  // namespace pwtest
