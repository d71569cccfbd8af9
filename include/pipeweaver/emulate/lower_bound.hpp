#pragma once
// Lower bounds on the step time of every plan over one stage graph (one partition, one
// sub-microbatch split). Two are computed:
//
// The classic bound (LowerBound::value):
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
// Transfers are left out of L by default. With a fixed partition every cross-rank edge is a
// transfer in every lowered plan, so LowerBoundOptions::count_transfers = true (adding
// transfer_time(edge bytes) at zero link contention on each cross-rank edge of the chain) is
// still valid for plans lowered by schedule/lowering.hpp from this graph; but it relies on that
// lowering contract (one message per edge, the sizes of edge_bytes) rather than on the
// dependency structure alone. ceil(W / P) ignores that the work is already placed on ranks and
// that a pipeline must fill and drain, which is why it sits well below the plans of a step
// with few microbatches per rank.
//
// The tight bound (LowerBound::tight): a one-machine relaxation per rank with heads and tails.
// For a stage j with latency p_j on rank r(j):
//   head(j) = max over inputs i of head(i) + p_i + x(i, j)     (0 without inputs)
//   tail(j) = max over outputs o of x(j, o) + p_o + tail(o)    (0 without outputs)
// where x(i, j) is transfer_time(edge_bytes(i, j)) when i and j are on different ranks, else 0.
//   tight = max over ranks r of  OPT_r,
//   OPT_r = min over preemptive schedules of r's stages on one machine, stage j released at
//           head(j), of max_j (C_j + tail(j)),
// computed exactly by Jackson's preemptive rule (at every release or completion run the
// released, unfinished stage with the largest tail; optimal for 1 | r_j, pmtn | max(C_j + q_j)).
// Proof that tight <= the step time T of every plan lowered from this graph:
//  1. start(j) >= head(j). By induction in topological order: j starts after every input i has
//     ended and, across ranks, after i's message has arrived; a message on a link takes at least
//     transfer_time(bytes) from its issue at end(i) (the emulator's and every executor's link:
//     arrival = max(end, link free) + transfer_time >= end + transfer_time), so
//     start(j) >= end(i) + x(i, j) >= head(i) + p_i + x(i, j).
//  2. T >= end(j) + tail(j). By induction in reverse topological order: an output o starts no
//     earlier than end(j) + x(j, o) and the step lasts until o has ended, at least
//     end(o) + tail(o) >= end(j) + x(j, o) + p_o + tail(o).
//  3. A rank runs its stages on one compute stream, one at a time, each without interruption for
//     p_j (or longer: see below). So the stages of rank r, with their actual start times, are a
//     feasible non-preemptive one-machine schedule with releases head(j) (by 1), and its
//     objective max_j (end(j) + tail(j)) is <= T (by 2). A non-preemptive schedule is also a
//     preemptive one, so OPT_r <= T, for every r.
//  4. Latencies are taken at MemoryStrategy{} (fastest): a plan's recompute or offload makes
//     some p_j longer, which can only raise head, tail and OPT_r (a schedule for longer stages
//     contains one for shorter stages by leaving the difference idle), so the bound computed at
//     the fastest strategy holds for every strategy assignment.
// With one stage per rank-job list, OPT_r >= head(j) + p_j + tail(j) (the longest chain through
// j, transfers included) and OPT_r >= Σ p_j of rank r >= W / P on the busiest rank, so
// tight >= value: it accounts for where the work is placed, for the pipeline's fill (heads) and
// drain (tails), and for transfers. A 1F1B pipeline of P ranks, M microbatches of identical
// forward F and backward B per stage and no transfer time has step (M + P − 1)(F + B); the last
// rank's relaxation gives (P − 1)F + M(F + B) + (P − 1)B: the bound is exact there.
// Validity rests on the lowering contract (each cross-rank edge one message of edge_bytes);
// LowerBoundOptions::tight_transfers = false drops x(i, j) for plans outside it (still valid:
// then only dependencies and ranks are used). Split graphs (backward_input / backward_weight
// nodes, LowerBoundOptions::split_backward, detected from a plan's actions) are bounded like
// any graph: every node is a job of its rank.
//
// max_rank_work (the busiest rank's work under this partition) is reported for information.
// std-only (the Plan/cost forms need build_stage_graph).
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <queue>
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
  Nanoseconds value{0};          ///< the classic bound: max(work_bound, critical_path)
  Nanoseconds total_work{0};     ///< W
  Nanoseconds work_bound{0};     ///< ceil(W / P)
  Nanoseconds critical_path{0};  ///< L (with transfers only when counted)
  Nanoseconds max_rank_work{0};  ///< busiest rank's work (informational, see header comment)
  Nanoseconds tight{0};          ///< the per-rank relaxation with heads and tails (header comment); >= value
};

struct LowerBoundOptions {
  bool count_transfers = false;  ///< add zero-contention transfer times to the classic chain (see header comment)
  bool split_backward = false;   ///< graph with backward_input/backward_weight nodes (match the plans bounded)
  bool tight_transfers = true;   ///< heads and tails of the tight bound count zero-contention transfer times
};

namespace detail {

/// A stage as a job of the one-machine relaxation: released at its head, runs for its latency,
/// and the step lasts at least its tail after it ends.
struct OneMachineJob {
  Nanoseconds release{0};
  Nanoseconds processing{0};
  Nanoseconds tail{0};
};

/// Optimum of 1 | r_j, pmtn | max(C_j + q_j) by Jackson's preemptive rule: at every release or
/// completion, run the released unfinished job with the largest tail. O(n log n). Reorders `jobs`.
[[nodiscard]] inline Nanoseconds preemptive_one_machine(std::vector<OneMachineJob>& jobs) {
  std::sort(jobs.begin(), jobs.end(), [](const OneMachineJob& a, const OneMachineJob& b) { return a.release < b.release; });
  std::vector<Nanoseconds> left(jobs.size());
  std::priority_queue<std::pair<Nanoseconds, std::size_t>> ready;  // (tail, job): largest tail on top
  Nanoseconds t{0}, best{0};
  std::size_t next = 0;
  while (next < jobs.size() || !ready.empty()) {
    if (ready.empty()) t = std::max(t, jobs[next].release);
    for (; next < jobs.size() && jobs[next].release <= t; ++next) {
      left[next] = jobs[next].processing;
      ready.emplace(jobs[next].tail, next);
    }
    const std::size_t j = ready.top().second;
    // Run j until it finishes or the next release preempts it (no release left: to the end).
    const Nanoseconds run = next < jobs.size() ? std::min(left[j], jobs[next].release - t) : left[j];
    t += run;
    left[j] -= run;
    if (left[j] == Nanoseconds{0}) {
      best = std::max(best, t + jobs[j].tail);
      ready.pop();
    }
  }
  return best;
}

/// A topological order of the graph (Kahn's; node indices are not topological: an encoder's
/// backward follows the backbone's). Throws Error{invalid_plan} on a cycle.
[[nodiscard]] inline std::vector<NodeIndex> topological_order(const StageGraph& graph) {
  const std::size_t N = graph.nodes.size();
  std::vector<std::int32_t> indegree(N);
  std::vector<NodeIndex> order;
  order.reserve(N);
  for (std::size_t n = 0; n < N; ++n)
    if ((indegree[n] = static_cast<std::int32_t>(graph.nodes[n].inputs.size())) == 0) order.push_back(static_cast<NodeIndex>(n));
  for (std::size_t k = 0; k < order.size(); ++k)
    for (const NodeIndex o : graph.nodes[static_cast<std::size_t>(order[k])].outputs)
      if (--indegree[static_cast<std::size_t>(o)] == 0) order.push_back(o);
  if (order.size() != N)
    throw invalid_plan_error("the stage graph has a dependency cycle", {.expected = "an acyclic stage graph"});
  return order;
}

}  // namespace detail

/// Heads and tails of every node (header comment): head(j) the earliest start any plan can give
/// j, tail(j) the least time any plan needs after j ends. `transfer_time` (NodeIndex producer,
/// NodeIndex consumer) -> Nanoseconds is called for cross-rank edges only.
struct HeadsTails {
  std::vector<Nanoseconds> head{};
  std::vector<Nanoseconds> tail{};
};

template <class TransferTime>
  requires std::is_invocable_r_v<Nanoseconds, const TransferTime&, NodeIndex, NodeIndex>
[[nodiscard]] HeadsTails heads_and_tails(const StageGraph& graph, std::span<const Nanoseconds> latency,
                                         const TransferTime& transfer_time) {
  const std::vector<NodeIndex> order = detail::topological_order(graph);
  HeadsTails ht;
  ht.head.assign(graph.nodes.size(), Nanoseconds{0});
  ht.tail.assign(graph.nodes.size(), Nanoseconds{0});
  const auto x = [&](std::size_t from, std::size_t to) {
    return graph.nodes[from].rank != graph.nodes[to].rank ? transfer_time(static_cast<NodeIndex>(from), static_cast<NodeIndex>(to))
                                                          : Nanoseconds{0};
  };
  for (const NodeIndex v : order) {
    const auto n = static_cast<std::size_t>(v);
    for (const NodeIndex o : graph.nodes[n].outputs) {
      const auto ou = static_cast<std::size_t>(o);
      ht.head[ou] = std::max(ht.head[ou], ht.head[n] + latency[n] + x(n, ou));
    }
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const auto n = static_cast<std::size_t>(*it);
    for (const NodeIndex o : graph.nodes[n].outputs) {
      const auto ou = static_cast<std::size_t>(o);
      ht.tail[n] = std::max(ht.tail[n], x(n, ou) + latency[ou] + ht.tail[ou]);
    }
  }
  return ht;
}

/// The tight bound (header comment): the largest over ranks of the optimal preemptive
/// one-machine schedule of the rank's stages with heads as releases and tails as delivery times.
template <class TransferTime>
  requires std::is_invocable_r_v<Nanoseconds, const TransferTime&, NodeIndex, NodeIndex>
[[nodiscard]] Nanoseconds rank_relaxation_bound(const StageGraph& graph, std::span<const Nanoseconds> latency, int ranks,
                                                const TransferTime& transfer_time) {
  const HeadsTails ht = heads_and_tails(graph, latency, transfer_time);
  std::vector<std::vector<detail::OneMachineJob>> jobs(static_cast<std::size_t>(std::max(ranks, 0)));
  for (std::size_t n = 0; n < graph.nodes.size(); ++n) {
    const RankId r = graph.nodes[n].rank;
    if (!r.valid() || r.value() >= ranks)
      throw input_error("node " + std::to_string(n) + " is on rank " + std::to_string(r.value()), {.expected = "a rank below " + std::to_string(ranks)});
    jobs[r.index()].push_back({ht.head[n], latency[n], ht.tail[n]});
  }
  Nanoseconds best{0};
  for (auto& j : jobs) best = std::max(best, detail::preemptive_one_machine(j));
  return best;
}

/// Both bounds from per-node latencies (at MemoryStrategy{}) and a per-edge transfer time
/// callable (NodeIndex producer, NodeIndex consumer) -> Nanoseconds used on cross-rank edges, by
/// the classic chain and by the tight bound's heads and tails alike. Throws Error{invalid_plan}
/// if the graph has a cycle.
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
  lb.tight = std::max(lb.value, rank_relaxation_bound(graph, latency, ranks, transfer_time));
  return lb;
}

/// The form without transfers: chain and heads/tails count stage latencies only.
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
  const auto transfers = [&](NodeIndex p, NodeIndex n) {
    return cache.cost().transfer_time(edge_bytes(cache.cost(), partition, sub_microbatches,
                                                 graph.nodes[static_cast<std::size_t>(p)],
                                                 graph.nodes[static_cast<std::size_t>(n)]));
  };
  LowerBound lb = options.count_transfers ? lower_bound(graph, lat, partition.ranks, transfers) : lower_bound(graph, lat, partition.ranks);
  if (options.tight_transfers && !options.count_transfers)
    lb.tight = std::max(lb.value, rank_relaxation_bound(graph, lat, partition.ranks, transfers));
  else if (!options.tight_transfers && options.count_transfers)
    lb.tight = std::max(lb.value, rank_relaxation_bound(graph, lat, partition.ranks, [](NodeIndex, NodeIndex) { return Nanoseconds{0}; }));
  return lb;
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
