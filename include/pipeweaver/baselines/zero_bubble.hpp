#pragma once
// Zero-bubble baseline (ZB-H1): the 1F1B schedule with every backward split into its
// input-gradient part B and its weight-gradient part W, W deferred into the bubbles.
//
// Layout: the whole chain split into P contiguous ranges (v = 1), the split chosen on the profile
// steps exactly as 1F1B's (min-max DP on per-layer costs, then neighboring splits emulated) but
// scored under this schedule, and whole microbatches. Its stage graph has split backwards
// (StageGraphOptions::split_backward).
//
// Order of rank r (zero_bubble_schedule): the forwards and input parts keep the 1F1B order of the
// layout (warm-up, steady 1F1B, cool-down); the weight parts are placed by a list scheduler over
// all ranks (stages committed in order of start time, ties to the lower rank):
//  * a rank free at t runs its next F or B if it is ready by t; otherwise it runs its oldest
//    pending W (a W is pending once its B ran), filling the bubble; otherwise it waits;
//  * memory: a microbatch's activations on a rank stay from its first forward there to its last
//    W (schedule/activation_memory.hpp). As in ZB-H1, no rank holds more microbatches at once
//    than the 1F1B order holds on its busiest rank (min(P, M), on rank 0): a forward that would
//    bring one more into flight runs the oldest pending W first. Peak activation memory, in
//    microbatches, is then 1F1B's peak over ranks (later ranks hold more than under 1F1B);
//  * once its F and B are done, the rank runs its remaining Ws.
// In steady state this is ZB-H1's F-B-W pattern; the bubbles of the warm-up and the cool-down
// are filled with Ws. With F = B = W per rank and no communication the step is
// M(F + B + W) + (P − 1)(F + B − W), ZB-H1's closed form (1F1B: (M + P − 1)(F + B + W)).
// Uniform recompute per step: the cheapest that fits (baselines/builder.hpp).
// std-only.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/emulate/schedule_emulator.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/pipeline_orders.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

namespace detail {

/// The list scheduler of zero_bubble_schedule, phase by phase: the main order (1F1B's, the
/// weight parts taken out), the per-rank cap on microbatches in flight, the nodes' latencies,
/// then repeated choose (per rank) and commit (the earliest start over all ranks).
template <class C>
class ZeroBubbleH1 {
 public:
  ZeroBubbleH1(BaselineContext<C>& ctx, const PipelineLayout& layout, std::span<const ModuleId> chain, const StageGraph& graph,
               std::span<const SubMicrobatchSpec> smbs, UniformRecompute recompute)
      : ctx_(ctx), layout_(layout), graph_(graph), smbs_(smbs), P_(static_cast<std::size_t>(layout.ranks())) {
    if (layout.virtual_stages != 1)
      throw input_error("zero-bubble schedule over " + std::to_string(layout.virtual_stages) + " virtual stages per rank",
                        {.path = "zero-bubble", .expected = "one virtual stage per rank (a 1F1B layout)"});
    const Schedule full = pipeline_schedule_checked(graph, smbs, layout, chain, PipelineOrder::one_f_one_b, recompute);
    number_units();
    take_out_weight_parts(full);
    cap_in_flight(full);
    price_nodes(recompute);
  }

  /// Commits stages in order of start time (ties: lower rank) until every stage is scheduled.
  Schedule run() {
    Schedule out;
    out.ranks.assign(P_, {});
    std::size_t left = graph_.nodes.size();
    while (left > 0) {
      std::size_t best_rank = P_;
      Choice best;
      for (std::size_t r = 0; r < P_; ++r) {
        const Choice c = choose(r);
        if (c.node >= 0 && (best_rank == P_ || c.start < best.start)) {
          best = c;
          best_rank = r;
        }
      }
      if (best_rank == P_)
        throw invalid_plan_error("zero-bubble schedule deadlocks", {.path = "zero-bubble", .expected = "a 1F1B order whose stages can all start"});
      commit(best_rank, best, out);
      --left;
    }
    return out;
  }

 private:
  static constexpr Nanoseconds never = Nanoseconds::max();
  /// A rank's next stage: when it can start, the node (-1: none), and whether it is a pending W.
  struct Choice {
    Nanoseconds start = never;
    NodeIndex node = -1;
    bool weight = false;
  };
  struct RankState {
    std::vector<NodeIndex> main{};  ///< forwards and input parts, 1F1B order
    std::size_t next = 0;           ///< position in main
    std::deque<NodeIndex> pending{};  ///< weight parts whose input part ran, oldest first
    Nanoseconds free{0};
    int in_flight = 0;  ///< microbatches whose activations the rank holds
    int cap = 0;        ///< the most it may hold (cap_in_flight)
  };

  /// Units: (microbatch) per rank, the grain 1F1B counts in flight; per unit, the nodes that free
  /// some forward's activations (schedule/activation_memory.hpp) still to run.
  void number_units() {
    const std::size_t N = graph_.nodes.size();
    const int M = microbatch_count(smbs_);
    unit_.resize(N);
    for (std::size_t n = 0; n < N; ++n)
      unit_[n] = graph_.nodes[n].rank.value() * M + smbs_[graph_.nodes[n].stage.sub_microbatch.index()].microbatch().value();
    release_ = activation_release_nodes(graph_);
    releases_left_.assign(P_ * static_cast<std::size_t>(M), 0);
    frees_.assign(N, 0);
    for (std::size_t f = 0; f < N; ++f) {
      if (release_[f] < 0) continue;
      const auto r = static_cast<std::size_t>(release_[f]);
      if (!frees_[r]) ++releases_left_[static_cast<std::size_t>(unit_[r])];
      frees_[r] = 1;
    }
    started_.assign(releases_left_.size(), 0);
  }

  /// Per rank, the 1F1B order without its weight parts.
  void take_out_weight_parts(const Schedule& full) {
    ranks_.assign(P_, RankState{});
    for (std::size_t r = 0; r < P_; ++r)
      for (const ScheduledStage& st : full.ranks[r])
        if (graph_.nodes[static_cast<std::size_t>(st.node)].stage.pass != Pass::backward_weight) ranks_[r].main.push_back(st.node);
  }

  /// The largest number of microbatches in flight on any rank along the 1F1B order (each weight
  /// part right after its input part, as an unsplit backward): min(P, M) on a chain. Every
  /// rank's cap.
  void cap_in_flight(const Schedule& full) {
    std::vector<int> left = releases_left_;
    std::vector<char> started(left.size(), 0);
    int cap = 1;
    for (std::size_t r = 0; r < P_; ++r) {
      int held = 0, most = 0;
      for (const ScheduledStage& st : full.ranks[r]) {
        const auto n = static_cast<std::size_t>(st.node);
        const auto u = static_cast<std::size_t>(unit_[n]);
        if (graph_.nodes[n].stage.pass == Pass::forward && left[u] > 0 && !started[u]) {
          started[u] = 1;
          most = std::max(most, ++held);
        }
        if (frees_[n] && --left[u] == 0) --held;
      }
      cap = std::max(cap, most);
    }
    for (RankState& rs : ranks_) rs.cap = cap;
  }

  /// Every node's strategy (the uniform setting) and latency; nothing is ready yet.
  void price_nodes(UniformRecompute recompute) {
    const std::size_t N = graph_.nodes.size();
    strategy_.resize(N);
    latency_.resize(N);
    pending_inputs_.resize(N);
    ready_.assign(N, Nanoseconds{0});
    for (std::size_t n = 0; n < N; ++n) {
      strategy_[n] = node_strategy(graph_, layout_.partition, static_cast<NodeIndex>(n), recompute);
      latency_[n] = node_cost(ctx_, layout_.partition, smbs_, graph_.nodes[n], strategy_[n]).latency;
      pending_inputs_[n] = static_cast<int>(graph_.nodes[n].inputs.size());
    }
  }

  [[nodiscard]] Nanoseconds ready_at(NodeIndex n) const {
    return pending_inputs_[static_cast<std::size_t>(n)] > 0 ? never : ready_[static_cast<std::size_t>(n)];
  }
  /// Whether main node n is a forward that would bring one more microbatch into flight.
  [[nodiscard]] bool opens_unit(NodeIndex n) const {
    const auto u = static_cast<std::size_t>(unit_[static_cast<std::size_t>(n)]);
    return graph_.nodes[static_cast<std::size_t>(n)].stage.pass == Pass::forward && releases_left_[u] > 0 && !started_[u];
  }

  /// What rank r runs next, and when (see the header comment).
  [[nodiscard]] Choice choose(std::size_t r) const {
    const RankState& rs = ranks_[r];
    const bool has_w = !rs.pending.empty();
    const Choice w{has_w ? std::max(rs.free, ready_[static_cast<std::size_t>(rs.pending.front())]) : never,
                   has_w ? rs.pending.front() : NodeIndex{-1}, true};
    if (rs.next >= rs.main.size()) return w;
    const NodeIndex m = rs.main[rs.next];
    if (has_w && opens_unit(m) && rs.in_flight >= rs.cap) return w;  // memory: the oldest W first
    const Nanoseconds t = ready_at(m);
    if (t <= rs.free || !has_w) return Choice{t == never ? never : std::max(rs.free, t), t == never ? NodeIndex{-1} : m, false};
    return w;  // the next F or B is not ready: fill the bubble
  }

  /// Runs `c` on rank r: its times, its place in the schedule, the rank's microbatches in
  /// flight, and its outputs' readiness (a weight part becomes pending once its input part ran).
  void commit(std::size_t r, const Choice& c, Schedule& out) {
    RankState& rs = ranks_[r];
    const auto n = static_cast<std::size_t>(c.node);
    if (c.weight) rs.pending.pop_front();
    else ++rs.next;
    const auto u = static_cast<std::size_t>(unit_[n]);
    if (!c.weight && opens_unit(c.node)) {
      started_[u] = 1;
      ++rs.in_flight;
    }
    if (frees_[n] && --releases_left_[u] == 0) --rs.in_flight;
    const Nanoseconds end = c.start + latency_[n];
    rs.free = end;
    out.ranks[r].push_back(ScheduledStage{c.node, strategy_[n]});
    for (NodeIndex o : graph_.nodes[n].outputs) {
      const auto oi = static_cast<std::size_t>(o);
      Nanoseconds arrive = end;
      if (graph_.nodes[oi].rank != graph_.nodes[n].rank)
        arrive += ctx_.cost().transfer_time(edge_bytes(ctx_.cost(), layout_.partition, smbs_, graph_.nodes[n], graph_.nodes[oi]));
      ready_[oi] = std::max(ready_[oi], arrive);
      if (--pending_inputs_[oi] == 0 && graph_.nodes[oi].stage.pass == Pass::backward_weight)
        ranks_[graph_.nodes[oi].rank.index()].pending.push_back(o);
    }
  }

  BaselineContext<C>& ctx_;
  const PipelineLayout& layout_;
  const StageGraph& graph_;
  std::span<const SubMicrobatchSpec> smbs_;
  std::size_t P_;
  std::vector<RankState> ranks_;
  std::vector<std::int32_t> unit_;          ///< per node: rank · M + microbatch
  std::vector<NodeIndex> release_;          ///< activation_release_nodes
  std::vector<char> frees_;                 ///< per node: it frees some forward's activations
  std::vector<int> releases_left_;          ///< per unit: freeing nodes not yet run
  std::vector<char> started_;               ///< per unit: its first forward ran
  std::vector<MemoryStrategy> strategy_;    ///< per node
  std::vector<Nanoseconds> latency_;        ///< per node
  std::vector<int> pending_inputs_;         ///< per node: inputs not yet scheduled
  std::vector<Nanoseconds> ready_;          ///< per node: latest arrival of a scheduled input
};

}  // namespace detail

/// The ZB-H1 order of a 1F1B layout over a stage graph with split backwards (see the header
/// comment). Throws Error{input} for a layout with more than one virtual stage per rank.
template <class C>
[[nodiscard]] Schedule zero_bubble_schedule(BaselineContext<C>& ctx, const PipelineLayout& layout, std::span<const ModuleId> chain,
                                            const StageGraph& graph, std::span<const SubMicrobatchSpec> smbs,
                                            UniformRecompute recompute) {
  return detail::ZeroBubbleH1<C>(ctx, layout, chain, graph, smbs, recompute).run();
}

/// The zero-bubble baseline, its split chosen on the profile steps (see the header comment).
template <class C>
[[nodiscard]] PreparedBaseline prepare_zero_bubble(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                                   const BaselineOptions& options = {}) {
  return prepare_chain_baseline(ctx, "zero-bubble", BaselineOrder::zero_bubble, profile, options);
}

}  // namespace pipeweaver
