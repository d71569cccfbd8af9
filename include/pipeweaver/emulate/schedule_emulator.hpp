#pragma once
// The search's fast path: emulates a Schedule over its StageGraph directly, without lowering it
// to a Plan first. It gives the same start and end of every stage, and the same step time, as
// emulate() on the plan that schedule/lowering.hpp makes of the schedule (test/emulate checks
// this), because it applies the same rules:
//  * a rank runs its stages in schedule order: start(n) = max(end of the rank's previous stage,
//    arrival of every input of n);
//  * an input on the same rank arrives when it ends; an input p on another rank arrives by a
//    transfer on the directed link (rank p, rank n) issued when p ends; transfers on a link run
//    one at a time in the order the sending rank issues them: the order its stages run, and for
//    one stage the order of StageNode::outputs (the order lowering inserts the sends);
//  * step time = the latest end of any stage or transfer.
// O(nodes + edges) per call, no allocation after the first call when the caller keeps its
// ScheduleTiming and ScheduleWorkspace. A schedule that cannot run (a stage before its input on
// the same rank, or a cycle through ranks) throws Error{invalid_plan} naming the stuck ranks.
// std-only.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

/// Timing of a schedule: per node start and end (-1 for nodes the schedule does not run), per
/// rank busy time, and the step time.
struct ScheduleTiming {
  Nanoseconds step_time{0};
  std::vector<Nanoseconds> start{};
  std::vector<Nanoseconds> end{};
  std::vector<Nanoseconds> busy{};
};

/// Scratch buffers of emulate_schedule, kept by a caller that emulates many schedules.
struct ScheduleWorkspace {
  std::vector<std::int32_t> pending{};
  std::vector<Nanoseconds> ready_at{};
  std::vector<Nanoseconds> link_free{};
  std::vector<Nanoseconds> now{};
  std::vector<std::size_t> pos{};
  std::vector<NodeIndex> blocked_on{};
  std::vector<std::uint8_t> scheduled{};
  std::vector<int> worklist{};
};

namespace detail {
template <class L>
[[nodiscard]] Nanoseconds node_latency(const L& latency, NodeIndex n) {
  if constexpr (std::is_invocable_r_v<Nanoseconds, const L&, NodeIndex>) return latency(n);
  else return latency[static_cast<std::size_t>(n)];
}
}  // namespace detail

/// Emulates `schedule` into `out`. `latency`: a span/vector of Nanoseconds indexed by NodeIndex,
/// or a callable (NodeIndex) -> Nanoseconds; `transfer_time`: a callable
/// (NodeIndex producer, NodeIndex consumer) -> Nanoseconds, called for cross-rank edges only.
template <class Latency, class TransferTime>
  requires std::is_invocable_r_v<Nanoseconds, const TransferTime&, NodeIndex, NodeIndex>
void emulate_schedule(const StageGraph& graph, const Schedule& schedule, const Latency& latency,
                      const TransferTime& transfer_time, ScheduleTiming& out, ScheduleWorkspace& ws) {
  const std::size_t N = graph.nodes.size();
  const std::size_t P = schedule.ranks.size();
  constexpr Nanoseconds unset{-1};
  out.step_time = Nanoseconds{0};
  out.start.assign(N, unset);
  out.end.assign(N, unset);
  out.busy.assign(P, Nanoseconds{0});
  ws.pending.resize(N);
  ws.ready_at.assign(N, Nanoseconds{0});
  ws.scheduled.assign(N, 0);
  ws.link_free.assign(P * P, Nanoseconds{0});
  ws.now.assign(P, Nanoseconds{0});
  ws.pos.assign(P, 0);
  ws.blocked_on.assign(P, -1);
  for (std::size_t n = 0; n < N; ++n) ws.pending[n] = static_cast<std::int32_t>(graph.nodes[n].inputs.size());
  for (std::size_t r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < schedule.ranks[r].size(); ++i) {
      const NodeIndex n = schedule.ranks[r][i].node;
      auto where = [&] { return "rank " + std::to_string(r) + ", position " + std::to_string(i); };
      if (n < 0 || static_cast<std::size_t>(n) >= N)
        throw invalid_plan_error("schedule names node " + std::to_string(n), {.path = where(), .expected = "a node index below " + std::to_string(N)});
      const auto& node = graph.nodes[static_cast<std::size_t>(n)];
      if (node.rank.index() != r || ws.scheduled[static_cast<std::size_t>(n)])
        throw invalid_plan_error("node " + std::to_string(n) + (ws.scheduled[static_cast<std::size_t>(n)] ? " is scheduled twice" : " belongs to rank " + std::to_string(node.rank.value())), {.path = where(), .expected = "every node once, on its own rank"});
      ws.scheduled[static_cast<std::size_t>(n)] = 1;
    }
  }

  ws.worklist.clear();
  for (std::size_t r = P; r-- > 0;) ws.worklist.push_back(static_cast<int>(r));
  while (!ws.worklist.empty()) {
    const auto r = static_cast<std::size_t>(ws.worklist.back());
    ws.worklist.pop_back();
    const auto& list = schedule.ranks[r];
    Nanoseconds t = ws.now[r];
    std::size_t i = ws.pos[r];
    for (; i < list.size(); ++i) {
      const NodeIndex n = list[i].node;
      const auto nu = static_cast<std::size_t>(n);
      if (ws.pending[nu] > 0) {
        ws.blocked_on[r] = n;
        break;
      }
      const Nanoseconds lat = detail::node_latency(latency, n);
      const Nanoseconds s = std::max(t, ws.ready_at[nu]);
      const Nanoseconds e = s + lat;
      out.start[nu] = s;
      out.end[nu] = e;
      out.busy[r] += lat;
      t = e;
      for (const NodeIndex o : graph.nodes[nu].outputs) {
        const auto ou = static_cast<std::size_t>(o);
        const std::size_t to = graph.nodes[ou].rank.index();
        Nanoseconds arrival = e;
        if (to != r) {
          auto& link = ws.link_free[r * P + to];
          link = std::max(e, link) + transfer_time(n, o);
          arrival = link;
          out.step_time = std::max(out.step_time, arrival);
        }
        ws.ready_at[ou] = std::max(ws.ready_at[ou], arrival);
        if (--ws.pending[ou] == 0 && to != r && ws.blocked_on[to] == o) {
          ws.blocked_on[to] = -1;
          ws.worklist.push_back(static_cast<int>(to));
        }
      }
    }
    ws.now[r] = t;
    ws.pos[r] = i;
    out.step_time = std::max(out.step_time, t);
  }

  std::string stuck;
  std::string first;
  for (std::size_t r = 0; r < P; ++r) {
    if (ws.pos[r] == schedule.ranks[r].size()) continue;
    const std::string where = "rank " + std::to_string(r) + ", position " + std::to_string(ws.pos[r]);
    if (first.empty()) first = where;
    if (!stuck.empty()) stuck += "; ";
    stuck += where + " waits for the inputs of node " + std::to_string(schedule.ranks[r][ws.pos[r]].node);
  }
  if (!first.empty())
    throw invalid_plan_error("deadlock: no rank can make progress: " + stuck, {.path = first, .expected = "every stage's inputs scheduled, and before it on its own rank"});
}

/// Convenience form returning a fresh ScheduleTiming.
template <class Latency, class TransferTime>
  requires std::is_invocable_r_v<Nanoseconds, const TransferTime&, NodeIndex, NodeIndex>
[[nodiscard]] ScheduleTiming emulate_schedule(const StageGraph& graph, const Schedule& schedule, const Latency& latency,
                                              const TransferTime& transfer_time) {
  ScheduleTiming out;
  ScheduleWorkspace ws;
  emulate_schedule(graph, schedule, latency, transfer_time, out, ws);
  return out;
}

/// Bytes that the edge producer -> consumer carries: what lowering puts on the transfer of that
/// edge (transfer_bytes, schedule/lowering.hpp).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Bytes edge_bytes(const C& cost, const Partition& partition,
                               std::span<const SubMicrobatchSpec> sub_microbatches, const StageNode& producer,
                               const StageNode& consumer) {
  return transfer_bytes(partition, sub_microbatches, producer.stage, consumer.stage, cost);
}

/// Latency of every node of `graph` under the strategies `schedule` gives them (nodes the
/// schedule does not run: MemoryStrategy{}), through `cache`.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] std::vector<Nanoseconds> node_latencies(const StageGraph& graph, const Schedule& schedule,
                                                      const Partition& partition,
                                                      std::span<const SubMicrobatchSpec> sub_microbatches,
                                                      StageCostCache<C>& cache) {
  std::vector<MemoryStrategy> strategy(graph.nodes.size());
  for (const auto& list : schedule.ranks)
    for (const auto& s : list)
      if (s.node >= 0 && static_cast<std::size_t>(s.node) < strategy.size()) strategy[static_cast<std::size_t>(s.node)] = s.strategy;
  std::vector<ShapeId> shape(sub_microbatches.size(), ShapeId{-1});
  std::vector<Nanoseconds> out(graph.nodes.size());
  for (std::size_t n = 0; n < graph.nodes.size(); ++n) {
    const StageRef& st = graph.nodes[n].stage;
    const auto s = st.sub_microbatch.index();
    if (cache.enabled() && shape[s] < 0) shape[s] = cache.intern(sub_microbatches[s]);
    out[n] = cache.stage_cost(StageSpec::of(partition, st.module, st.chunk, st.pass), sub_microbatches[s],
                              std::max(shape[s], ShapeId{0}), strategy[n]).latency;
  }
  return out;
}

}  // namespace pipeweaver
