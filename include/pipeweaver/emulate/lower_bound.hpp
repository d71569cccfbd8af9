#pragma once
// Lower bound on the step time of every plan over one stage graph:
//
//   LB = max( ceil(W / P), L )
//   W = Σ over all stages of latency(stage, smb, MemoryStrategy{})   (total work, fastest strategy)
//   L = longest dependency chain through the stage graph, weighted by the same latencies
//
// Why it holds for any plan over this graph (partition + sub-microbatches): each stage runs on
// its rank's single compute stream, so the step takes at least the busiest rank's work, which is
// at least the average W / P (an integer, hence the ceiling); and a stage starts only after its
// inputs end, so the step takes at least the longest chain. Both use MemoryStrategy{} (no
// recompute, no offload), assumed the fastest strategy of every stage: a plan's recompute or
// offload choices only add time. The bound is defined PER GRAPH: stage latencies depend on the
// chunk layer ranges (embedding/head, per-chunk fixed costs), so plans with different
// partitions have different bounds; a bound valid for a set of plans with different partitions
// is the minimum of their bounds (what `compare` reports).
//
// Transfers are left out of L by default. With a fixed partition every cross-rank edge is a
// transfer in every lowered plan, so LowerBoundOptions::count_transfers = true (adding
// transfer_time(edge bytes) at zero link contention on each cross-rank edge of the chain) is
// still valid for plans lowered by schedule/lowering.hpp from this graph; but it relies on that
// lowering contract (one message per edge, the sizes of edge_bytes) rather than on the
// dependency structure alone, so the always-valid form without transfers is the default.
//
// max_rank_work (the busiest rank's work under this partition) is reported for information: it
// is also a valid per-partition bound and tighter than W / P, but it is not part of `value`,
// which follows the definition. std-only (the Plan/cost forms need build_stage_graph).
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/emulate/schedule_emulator.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

struct LowerBound {
  Nanoseconds value{0};          ///< max(work_bound, critical_path)
  Nanoseconds total_work{0};     ///< W
  Nanoseconds work_bound{0};     ///< ceil(W / P)
  Nanoseconds critical_path{0};  ///< L (with transfers only when counted)
  Nanoseconds max_rank_work{0};  ///< busiest rank's work (informational, see header comment)
};

struct LowerBoundOptions {
  bool count_transfers = false;  ///< add zero-contention transfer times to the chain (see header comment)
  bool split_backward = false;   ///< graph with backward_input/backward_weight nodes (match the plans bounded)
};

/// The bound from per-node latencies (at MemoryStrategy{}) and, optionally, a per-edge transfer
/// time callable (NodeIndex producer, NodeIndex consumer) -> Nanoseconds used on cross-rank
/// edges. Throws Error{invalid_plan} if the graph has a cycle.
template <class TransferTime>
  requires std::is_invocable_r_v<Nanoseconds, const TransferTime&, NodeIndex, NodeIndex>
[[nodiscard]] LowerBound lower_bound(const StageGraph& graph, std::span<const Nanoseconds> latency, int ranks,
                                     const TransferTime& transfer_time) {
  const std::size_t N = graph.nodes.size();
  if (latency.size() != N || ranks < 1)
    throw input_error("lower_bound got " + std::to_string(latency.size()) + " latencies for " + std::to_string(N) +
                    " nodes over " + std::to_string(ranks) + " ranks", {.expected = "one latency per node and at least one rank"});
  LowerBound lb;
  std::vector<Nanoseconds> per_rank(static_cast<std::size_t>(ranks), Nanoseconds{0});
  std::vector<std::int32_t> indegree(N);
  std::vector<NodeIndex> order;
  order.reserve(N);
  for (std::size_t n = 0; n < N; ++n) {
    lb.total_work += latency[n];
    const RankId r = graph.nodes[n].rank;
    if (!r.valid() || r.value() >= ranks)
      throw input_error("node " + std::to_string(n) + " is on rank " + std::to_string(r.value()), {.expected = "a rank below " + std::to_string(ranks)});
    per_rank[r.index()] += latency[n];
    indegree[n] = static_cast<std::int32_t>(graph.nodes[n].inputs.size());
    if (indegree[n] == 0) order.push_back(static_cast<NodeIndex>(n));
  }
  // Kahn's order: node indices are not topological (an encoder's backward follows the backbone's).
  std::vector<Nanoseconds> finish(N, Nanoseconds{0});
  std::vector<Nanoseconds> ready(N, Nanoseconds{0});
  for (std::size_t k = 0; k < order.size(); ++k) {
    const auto n = static_cast<std::size_t>(order[k]);
    finish[n] = ready[n] + latency[n];
    lb.critical_path = std::max(lb.critical_path, finish[n]);
    for (const NodeIndex o : graph.nodes[n].outputs) {
      const auto ou = static_cast<std::size_t>(o);
      Nanoseconds arrival = finish[n];
      if (graph.nodes[ou].rank != graph.nodes[n].rank) arrival += transfer_time(order[k], o);
      ready[ou] = std::max(ready[ou], arrival);
      lb.critical_path = std::max(lb.critical_path, arrival);
      if (--indegree[ou] == 0) order.push_back(o);
    }
  }
  if (order.size() != N)
    throw invalid_plan_error("the stage graph has a dependency cycle", {.expected = "an acyclic stage graph"});
  lb.work_bound = Nanoseconds{(lb.total_work.count() + ranks - 1) / ranks};
  lb.max_rank_work = *std::max_element(per_rank.begin(), per_rank.end());
  lb.value = std::max(lb.work_bound, lb.critical_path);
  return lb;
}

/// The always-valid form: the chain counts stage latencies only.
[[nodiscard]] inline LowerBound lower_bound(const StageGraph& graph, std::span<const Nanoseconds> latency, int ranks) {
  return lower_bound(graph, latency, ranks, [](NodeIndex, NodeIndex) { return Nanoseconds{0}; });
}

/// The bound of a graph with latencies at MemoryStrategy{} from `cache`.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] LowerBound lower_bound(const StageGraph& graph, const Partition& partition,
                                     std::span<const SubMicrobatchSpec> sub_microbatches, StageCostCache<C>& cache,
                                     const LowerBoundOptions& options = {}) {
  const std::vector<Nanoseconds> lat = node_latencies(graph, Schedule{}, partition, sub_microbatches, cache);
  if (!options.count_transfers) return lower_bound(graph, lat, partition.ranks);
  return lower_bound(graph, lat, partition.ranks, [&](NodeIndex p, NodeIndex n) {
    return cache.cost().transfer_time(edge_bytes(cache.cost(), partition, sub_microbatches,
                                                 graph.nodes[static_cast<std::size_t>(p)],
                                                 graph.nodes[static_cast<std::size_t>(n)]));
  });
}

/// The bound of the step `partition` + `sub_microbatches` (builds the stage graph).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] LowerBound lower_bound(const ModelSpec& model, const Partition& partition,
                                     std::span<const SubMicrobatchSpec> sub_microbatches, const C& cost,
                                     const LowerBoundOptions& options = {}) {
  StageCostCache<C> cache(cost, model);
  const StageGraph graph =
      build_stage_graph(model, partition, sub_microbatches, StageGraphOptions{.split_backward = options.split_backward});
  return lower_bound(graph, partition, sub_microbatches, cache, options);
}

/// The bound for every plan with `plan`'s partition and sub-microbatches (split backward is
/// detected from the plan's actions).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] LowerBound lower_bound(const Plan& plan, const ModelSpec& model, const C& cost,
                                     LowerBoundOptions options = {}) {
  options.split_backward = false;
  for (const auto& list : plan.ranks)
    for (const auto& a : list)
      if (const auto* b = std::get_if<Backward>(&a); b && b->pass != Pass::backward) options.split_backward = true;
  return lower_bound(model, plan.partition, plan.sub_microbatches, cost, options);
}

}  // namespace pipeweaver
