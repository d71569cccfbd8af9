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

/// Where each node runs in the schedule and under which strategy.
struct ScheduledPositions {
  static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
  std::vector<std::size_t> position{};      ///< per node: its position in its rank's list
  std::vector<MemoryStrategy> strategy{};   ///< per node
};

/// Checks that `schedule` runs every node of `graph` exactly once on its own rank, and that every
/// backward part has its forward's strategy; returns the positions and strategies.
[[nodiscard]] inline ScheduledPositions check_schedule(const ModelSpec& model, const StageGraph& graph, const Schedule& schedule,
                                                      std::span<const SubMicrobatchSpec> sub_microbatches) {
  const std::size_t N = graph.nodes.size();
  ScheduledPositions out;
  out.position.assign(N, ScheduledPositions::none);
  out.strategy.resize(N);
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
    for (std::size_t i = 0; i < schedule.ranks[r].size(); ++i) {
      const NodeIndex n = schedule.ranks[r][i].node;
      if (n < 0 || static_cast<std::size_t>(n) >= N)
        throw invalid_plan_error("schedule names node " + std::to_string(n), {.path = at(r, i), .expected = "a node index below " + std::to_string(N)});
      const auto nu = static_cast<std::size_t>(n);
      const StageNode& node = graph.nodes[nu];
      const std::string label = describe_stage(model, node.stage);
      if (node.stage.sub_microbatch.value() < 0 || node.stage.sub_microbatch.index() >= sub_microbatches.size() ||
          sub_microbatches[node.stage.sub_microbatch.index()].module() != node.stage.module)
        throw invalid_plan_error(label + " does not match the sub-microbatches given",
                                 {.path = at(r, i), .expected = "the graph built from these sub-microbatches"});
      if (node.rank.index() != r)
        throw invalid_plan_error(label + " is scheduled on rank " + std::to_string(r),
                                 {.path = at(r, i), .expected = "rank " + std::to_string(node.rank.value()) + " (the partition's)"});
      if (out.position[nu] != ScheduledPositions::none)
        throw invalid_plan_error(label + " is scheduled twice (first at position " + std::to_string(out.position[nu]) + ")",
                                 {.path = at(r, i), .expected = "every stage exactly once"});
      out.position[nu] = i;
      out.strategy[nu] = schedule.ranks[r][i].strategy;
    }
  }
  for (std::size_t n = 0; n < N; ++n)
    if (out.position[n] == ScheduledPositions::none)
      throw invalid_plan_error(describe_stage(model, graph.nodes[n].stage) + " is never scheduled",
                               {.path = "rank " + std::to_string(graph.nodes[n].rank.value()), .expected = "every stage exactly once"});
  for (std::size_t n = 0; n < N; ++n) {
    const StageRef& st = graph.nodes[n].stage;
    if (st.pass == Pass::forward) continue;
    const NodeIndex f = graph.find(StageRef{st.module, st.chunk, st.sub_microbatch, Pass::forward});
    if (f >= 0 && !(out.strategy[static_cast<std::size_t>(f)] == out.strategy[n]))
      throw invalid_plan_error(describe_stage(model, st) + " has strategy '" + to_string(out.strategy[n]) + "' but its forward has '" +
                                   to_string(out.strategy[static_cast<std::size_t>(f)]) + "'",
                               {.path = at(graph.nodes[n].rank.index(), out.position[n]), .expected = "a backward's strategy equal to its forward's"});
  }
  return out;
}

/// The walk of lowering: every scheduled stage in one global order consistent with every rank's
/// order, each appended to the plan with its Waits before and its Sends (and the peers' Recvs)
/// after it (see the header comment).
template <class C>
class LoweringWalk {
 public:
  LoweringWalk(const ModelSpec& model, const Partition& partition, std::span<const SubMicrobatchSpec> smbs, const StageGraph& graph,
               const Schedule& schedule, const ScheduledPositions& positions, const C& cost, Plan& plan)
      : model_(model), partition_(partition), smbs_(smbs), graph_(graph), schedule_(schedule), positions_(positions), cost_(cost),
        plan_(plan), P_(schedule.ranks.size()), pending_(graph.nodes.size()), arrival_(graph.nodes.size(), Nanoseconds{0}),
        inbound_(graph.nodes.size()), head_(P_, 0), rank_free_(P_, Nanoseconds{0}) {
    for (std::size_t n = 0; n < graph.nodes.size(); ++n) pending_[n] = static_cast<std::int32_t>(graph.nodes[n].inputs.size());
  }

  void run() {
    for (std::size_t placed = 0; placed < graph_.nodes.size(); ++placed) {
      const auto [r, start] = next_rank();
      if (r == P_) throw_cycle();
      place(r, start);
    }
  }

 private:
  /// Among the ranks whose next stage has all its inputs placed, the one whose estimated start
  /// is earliest (ties: lower rank); P_ when none.
  [[nodiscard]] std::pair<std::size_t, Nanoseconds> next_rank() const {
    std::size_t best = P_;
    Nanoseconds best_start{0};
    for (std::size_t r = 0; r < P_; ++r) {
      if (head_[r] >= schedule_.ranks[r].size()) continue;
      const auto n = static_cast<std::size_t>(schedule_.ranks[r][head_[r]].node);
      if (pending_[n] > 0) continue;
      const Nanoseconds start = std::max(rank_free_[r], arrival_[n]);
      if (best == P_ || start < best_start) {
        best = r;
        best_start = start;
      }
    }
    return {best, best_start};
  }

  /// Appends the head of rank r: its Waits, the stage, and a Transfer (Send here, Recv on the
  /// peer) for each output on another rank.
  void place(std::size_t r, Nanoseconds start) {
    const auto n = static_cast<std::size_t>(schedule_.ranks[r][head_[r]].node);
    ++head_[r];
    pending_[n] = -1;
    const StageNode& node = graph_.nodes[n];
    const StageRef& st = node.stage;
    const MemoryStrategy& strategy = positions_.strategy[n];
    const Nanoseconds end =
        start + cost_.latency(StageSpec::of(partition_, st.module, st.chunk, st.pass), smbs_[st.sub_microbatch.index()], strategy);
    rank_free_[r] = end;
    auto& actions = plan_.ranks[r];
    for (TransferId t : inbound_[n]) actions.push_back(Wait{t});
    if (st.pass == Pass::forward) actions.push_back(Forward{st.module, st.chunk, st.sub_microbatch, strategy});
    else actions.push_back(Backward{st.module, st.chunk, st.sub_microbatch, strategy, st.pass});
    for (NodeIndex o : node.outputs) {
      const auto ou = static_cast<std::size_t>(o);
      const StageNode& out = graph_.nodes[ou];
      Nanoseconds arrive = end;
      if (out.rank != node.rank) {
        const Bytes bytes = transfer_bytes(partition_, smbs_, st, out.stage, cost_);
        const TransferId t{static_cast<TransferId::rep>(plan_.transfers.size())};
        plan_.transfers.push_back(Transfer{node.rank, out.rank, st, out.stage, bytes});
        actions.push_back(Send{t});
        plan_.ranks[out.rank.index()].push_back(Recv{t});
        inbound_[ou].push_back(t);
        arrive = end + cost_.transfer_time(bytes);
      }
      arrival_[ou] = std::max(arrival_[ou], arrive);
      --pending_[ou];
    }
  }

  /// No rank can go on: follow "head waits for an unplaced input on rank r'" from the lowest
  /// stuck rank until a rank repeats; that rank's head is on the cycle and is the one reported.
  [[noreturn]] void throw_cycle() const {
    auto first_unplaced = [&](std::size_t n) {
      for (NodeIndex i : graph_.nodes[n].inputs)
        if (pending_[static_cast<std::size_t>(i)] >= 0) return static_cast<std::size_t>(i);  // placed nodes have -1
      return n;
    };
    std::size_t r = 0;
    while (head_[r] >= schedule_.ranks[r].size()) ++r;
    std::vector<char> visited(P_, 0);
    while (!visited[r]) {
      visited[r] = 1;
      r = graph_.nodes[first_unplaced(static_cast<std::size_t>(schedule_.ranks[r][head_[r]].node))].rank.index();
    }
    const auto n = static_cast<std::size_t>(schedule_.ranks[r][head_[r]].node);
    const auto i = first_unplaced(n);
    throw invalid_plan_error(describe_stage(model_, graph_.nodes[n].stage) + " can never start: its input " +
                                 describe_stage(model_, graph_.nodes[i].stage) + " (rank " + std::to_string(graph_.nodes[i].rank.value()) +
                                 ", position " + std::to_string(positions_.position[i]) +
                                 ") cannot run before it (the ranks' orders and the dependencies form a cycle)",
                             {.path = at(r, head_[r]), .expected = "per-rank orders consistent with the dependencies"});
  }

  const ModelSpec& model_;
  const Partition& partition_;
  std::span<const SubMicrobatchSpec> smbs_;
  const StageGraph& graph_;
  const Schedule& schedule_;
  const ScheduledPositions& positions_;
  const C& cost_;
  Plan& plan_;
  std::size_t P_;
  std::vector<std::int32_t> pending_;         ///< per node: inputs not yet placed (-1 once placed)
  std::vector<Nanoseconds> arrival_;          ///< per node: estimated arrival of its last input
  std::vector<std::vector<TransferId>> inbound_;  ///< per node: transfers destined to it, in creation order
  std::vector<std::size_t> head_;             ///< per rank: next position to place
  std::vector<Nanoseconds> rank_free_;        ///< per rank: estimated end of its last placed stage
};

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
  const std::size_t P = static_cast<std::size_t>(partition.ranks);
  if (schedule.ranks.size() != P)
    throw invalid_plan_error("schedule has " + std::to_string(schedule.ranks.size()) + " ranks",
                             {.path = "schedule", .expected = std::to_string(P) + " (the partition's ranks)"});
  const detail::ScheduledPositions positions = detail::check_schedule(model, graph, schedule, sub_microbatches);
  Plan plan;
  plan.name = std::move(name);
  plan.model = model.name;
  plan.setup = std::move(setup_name);
  plan.partition = partition;
  plan.ranks.assign(P, {});
  for (const auto& s : sub_microbatches) plan.microbatches = std::max(plan.microbatches, s.microbatch().value() + 1);
  detail::LoweringWalk<C>(model, partition, sub_microbatches, graph, schedule, positions, cost, plan).run();
  plan.sub_microbatches = std::move(sub_microbatches);
  return plan;
}

}  // namespace pipeweaver
