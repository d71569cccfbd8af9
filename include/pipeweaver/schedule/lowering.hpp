#pragma once
// Communication lowering: a Schedule (per rank, the order of its stage
// nodes and their memory strategies) becomes a Plan with Send / Recv / Wait actions.
//
// All scheduled stages are walked in ONE global order consistent with every rank's order (a
// topological merge): repeatedly, among the ranks whose next stage has all its inputs placed,
// take the one whose estimated start is earliest (ties: lower rank). Estimated start =
// max(end of the rank's previous stage, arrival of each input), arrival = producer's end, plus
// cost.transfer_time(bytes) across ranks; stage time = cost.latency. Any choice among ready
// stages gives a valid plan; the estimate only makes Recvs appear near where they are needed.
// For the stage placed (node n on rank r):
//  1. a Wait on r for every input of n on another rank (its Recv is already on r);
//  2. the Forward / Backward;
//  3. for every output o of n on another rank, in StageNode::outputs order: a new Transfer,
//     its Send appended to r and its Recv appended to o's rank at the same moment, so every
//     rank pair sees one global order of messages (deadlock-free without NCCL buffering).
// Edges between stages on the same rank get no transfer. An output consumed by several stages
// on one remote rank gets one transfer per consumer (simple; a plan may be a little chattier).
//
// Transfer sizes (transfer_bytes): a forward edge p -> n carries p's output,
// cost.output_bytes(stage p, sub-microbatch of p); a backward edge p -> n carries the gradient
// of n's forward output, cost.output_bytes(forward stage of n, sub-microbatch of n).
// std-only (nvcc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

/// Bytes a transfer from `producer` to `consumer` carries (see the header comment).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Bytes transfer_bytes(const Partition& partition, std::span<const SubMicrobatchSpec> sub_microbatches,
                                   const StageRef& producer, const StageRef& consumer, const C& cost) {
  if (producer.pass == Pass::forward)
    return cost.output_bytes(StageSpec::of(partition, producer.module, producer.chunk, Pass::forward),
                             sub_microbatches[producer.sub_microbatch.index()]);
  return cost.output_bytes(StageSpec::of(partition, consumer.module, consumer.chunk, Pass::forward),
                           sub_microbatches[consumer.sub_microbatch.index()]);
}

namespace detail {

[[nodiscard]] inline std::string at(std::size_t rank, std::size_t position, const char* what = "position") {
  return "rank " + std::to_string(rank) + ", " + what + " " + std::to_string(position);
}

}  // namespace detail

/// Lowers `schedule` (over `graph`, built from `sub_microbatches` and `partition`) to a Plan.
/// Throws Error{invalid_plan} naming the rank and position when the schedule does not run
/// every node exactly once on its own rank, a backward's strategy differs from its forward's,
/// or the ranks' orders and the dependencies form a cycle.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Plan lower(const ModelSpec& model, const Partition& partition, std::vector<SubMicrobatchSpec> sub_microbatches,
                         const StageGraph& graph, const Schedule& schedule, const C& cost, std::string name,
                         std::string setup_name) {
  const std::size_t N = graph.nodes.size();
  const std::size_t P = static_cast<std::size_t>(partition.ranks);
  if (schedule.ranks.size() != P)
    throw invalid_plan_error("schedule has " + std::to_string(schedule.ranks.size()) + " ranks", {.path = "schedule", .expected = std::to_string(P) + " (the partition's ranks)"});

  // Every node once, on its own rank; strategies per node.
  constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
  std::vector<std::size_t> position(N, none);
  std::vector<MemoryStrategy> strategy(N);
  for (std::size_t r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < schedule.ranks[r].size(); ++i) {
      const NodeIndex n = schedule.ranks[r][i].node;
      if (n < 0 || static_cast<std::size_t>(n) >= N)
        throw invalid_plan_error("schedule names node " + std::to_string(n), {.path = detail::at(r, i), .expected = "a node index below " + std::to_string(N)});
      const auto nu = static_cast<std::size_t>(n);
      const StageNode& node = graph.nodes[nu];
      const std::string label = describe_stage(model, node.stage);
      if (node.stage.sub_microbatch.value() < 0 || node.stage.sub_microbatch.index() >= sub_microbatches.size() ||
          sub_microbatches[node.stage.sub_microbatch.index()].module() != node.stage.module)
        throw invalid_plan_error(label + " does not match the sub-microbatches given", {.path = detail::at(r, i), .expected = "the graph built from these sub-microbatches"});
      if (node.rank.index() != r)
        throw invalid_plan_error(label + " is scheduled on rank " + std::to_string(r), {.path = detail::at(r, i), .expected = "rank " + std::to_string(node.rank.value()) + " (the partition's)"});
      if (position[nu] != none)
        throw invalid_plan_error(label + " is scheduled twice (first at position " + std::to_string(position[nu]) + ")", {.path = detail::at(r, i), .expected = "every stage exactly once"});
      position[nu] = i;
      strategy[nu] = schedule.ranks[r][i].strategy;
    }
  }
  for (std::size_t n = 0; n < N; ++n)
    if (position[n] == none)
      throw invalid_plan_error(describe_stage(model, graph.nodes[n].stage) + " is never scheduled", {.path = "rank " + std::to_string(graph.nodes[n].rank.value()), .expected = "every stage exactly once"});
  for (std::size_t n = 0; n < N; ++n) {
    const StageRef& st = graph.nodes[n].stage;
    if (st.pass == Pass::forward) continue;
    const NodeIndex f = graph.find(StageRef{st.module, st.chunk, st.sub_microbatch, Pass::forward});
    if (f >= 0 && !(strategy[static_cast<std::size_t>(f)] == strategy[n]))
      throw invalid_plan_error(describe_stage(model, st) + " has strategy '" + to_string(strategy[n]) + "' but its forward has '" +
                      to_string(strategy[static_cast<std::size_t>(f)]) + "'", {.path = detail::at(graph.nodes[n].rank.index(), position[n]), .expected = "a backward's strategy equal to its forward's"});
  }

  // Topological merge with estimated times.
  std::vector<std::int32_t> pending(N);
  std::vector<Nanoseconds> arrival(N, Nanoseconds{0});
  for (std::size_t n = 0; n < N; ++n) pending[n] = static_cast<std::int32_t>(graph.nodes[n].inputs.size());
  std::vector<std::vector<TransferId>> inbound(N);  // transfers destined to a node, in creation order
  std::vector<std::size_t> head(P, 0);
  std::vector<Nanoseconds> rank_free(P, Nanoseconds{0});

  Plan plan;
  plan.name = std::move(name);
  plan.model = model.name;
  plan.setup = std::move(setup_name);
  plan.partition = partition;
  plan.ranks.assign(P, {});
  for (const auto& s : sub_microbatches) plan.microbatches = std::max(plan.microbatches, s.microbatch().value() + 1);

  auto stage_of = [&](const StageRef& s) { return StageSpec::of(partition, s.module, s.chunk, s.pass); };
  for (std::size_t placed = 0; placed < N; ++placed) {
    std::size_t best = P;
    Nanoseconds best_start{0};
    for (std::size_t r = 0; r < P; ++r) {
      if (head[r] >= schedule.ranks[r].size()) continue;
      const auto n = static_cast<std::size_t>(schedule.ranks[r][head[r]].node);
      if (pending[n] > 0) continue;
      const Nanoseconds start = std::max(rank_free[r], arrival[n]);
      if (best == P || start < best_start) {
        best = r;
        best_start = start;
      }
    }
    if (best == P) {
      // Stuck: follow "head waits for an unplaced input on rank r'" from the lowest stuck rank
      // until a rank repeats; that rank's head is on the cycle and is the one reported.
      auto first_unplaced = [&](std::size_t n) {
        for (NodeIndex i : graph.nodes[n].inputs)
          if (pending[static_cast<std::size_t>(i)] >= 0) return static_cast<std::size_t>(i);  // placed nodes have -1
        return n;
      };
      std::size_t r = 0;
      while (head[r] >= schedule.ranks[r].size()) ++r;
      std::vector<char> visited(P, 0);
      while (!visited[r]) {
        visited[r] = 1;
        r = graph.nodes[first_unplaced(static_cast<std::size_t>(schedule.ranks[r][head[r]].node))].rank.index();
      }
      const auto n = static_cast<std::size_t>(schedule.ranks[r][head[r]].node);
      const auto i = first_unplaced(n);
      throw invalid_plan_error(describe_stage(model, graph.nodes[n].stage) + " can never start: its input " +
                      describe_stage(model, graph.nodes[i].stage) + " (rank " + std::to_string(graph.nodes[i].rank.value()) +
                      ", position " + std::to_string(position[i]) +
                      ") cannot run before it (the ranks' orders and the dependencies form a cycle)", {.path = detail::at(r, head[r]), .expected = "per-rank orders consistent with the dependencies"});
    }
    const std::size_t r = best;
    const auto n = static_cast<std::size_t>(schedule.ranks[r][head[r]].node);
    ++head[r];
    pending[n] = -1;
    const StageNode& node = graph.nodes[n];
    const StageRef& st = node.stage;
    const SubMicrobatchSpec& smb = sub_microbatches[st.sub_microbatch.index()];
    const Nanoseconds end = best_start + cost.latency(stage_of(st), smb, strategy[n]);
    rank_free[r] = end;

    auto& actions = plan.ranks[r];
    for (TransferId t : inbound[n]) actions.push_back(Wait{t});
    if (st.pass == Pass::forward) actions.push_back(Forward{st.module, st.chunk, st.sub_microbatch, strategy[n]});
    else actions.push_back(Backward{st.module, st.chunk, st.sub_microbatch, strategy[n], st.pass});

    for (NodeIndex o : node.outputs) {
      const auto ou = static_cast<std::size_t>(o);
      const StageNode& out = graph.nodes[ou];
      Nanoseconds arrive = end;
      if (out.rank != node.rank) {
        const Bytes bytes = transfer_bytes(partition, sub_microbatches, st, out.stage, cost);
        const TransferId t{static_cast<TransferId::rep>(plan.transfers.size())};
        plan.transfers.push_back(Transfer{node.rank, out.rank, st, out.stage, bytes});
        actions.push_back(Send{t});
        plan.ranks[out.rank.index()].push_back(Recv{t});
        inbound[ou].push_back(t);
        arrive = end + cost.transfer_time(bytes);
      }
      arrival[ou] = std::max(arrival[ou], arrive);
      --pending[ou];
    }
  }
  plan.sub_microbatches = std::move(sub_microbatches);
  return plan;
}

}  // namespace pipeweaver
