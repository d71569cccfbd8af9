#pragma once
// The machinery every baseline builder shares:
//  * StaticBaseline: what a baseline fixes once per (model, dataset, setup): its layout
//    (partition + which range schedules each chunk) and its per-rank order rule;
//  * schedule_step: one step's sub-microbatches, stage graph and schedule under that baseline,
//    with the cheapest uniform recompute setting (none, then selective, then full) whose peak
//    memory fits on every rank; a step where even full recompute does not fit keeps full and is
//    marked fits_memory = false (it is still emulated and reported, never dropped);
//  * build_baseline_plan: the lowered Plan and its emulation;
//  * the choice of a static split on the profile ("average") steps: min-max DP over per-layer
//    costs, then a first-improvement hill climb over neighboring splits scored by emulation.
//
// Memory accounting (schedule_peak_memory) is the emulator's (emulate/emulator.hpp): static =
// Σ chunk_state_bytes of the rank's chunks, plus the running sum of held activations under the
// rule of schedule/activation_memory.hpp (a forward's bytes held until the last backward part
// of its stage ends; only while it runs when the stage has none), events on a rank in list order.
// std-only.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/emulate/schedule_emulator.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/pipeline_orders.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

/// How a baseline orders each rank's stages.
enum class BaselineOrder : std::uint8_t {
  gpipe,        ///< PipelineOrder::gpipe over the layout's units
  one_f_one_b,  ///< PipelineOrder::one_f_one_b
  interleaved,  ///< PipelineOrder::interleaved (Megatron's virtual pipeline)
  bubble_fill,  ///< interleaved order for ranged chunks, filler chunks (range -1) in its bubbles (Optimus)
  zero_bubble,  ///< 1F1B order with split backwards, weight parts in the bubbles (ZB-H1, zero_bubble.hpp)
};

/// Whether a baseline's stage graph has split backwards (backward_input + backward_weight).
[[nodiscard]] constexpr bool splits_backward(BaselineOrder order) noexcept { return order == BaselineOrder::zero_bubble; }

/// What a baseline fixes once per (model, dataset, setup).
struct StaticBaseline {
  std::string name{};              ///< "gpipe", "1f1b", "interleaved-1f1b", "megatron", "optimus", "zero-bubble"
  PipelineLayout layout{};         ///< partition (its name = `name`) and the range of each chunk
  std::vector<ModuleId> chain{};   ///< every module, in chain order (orders stages inside a unit)
  BaselineOrder order = BaselineOrder::one_f_one_b;
  std::string description{};       ///< what was chosen, for reports: "v=2, ranges 0|12|...|77"
  /// bubble_fill only: forward fillers this many microbatches ahead of the pipeline are due
  /// (run before main stages); -1: fillers run in bubbles only.
  int filler_lookahead = -1;
};

/// Knobs of the static search.
struct BaselineOptions {
  std::vector<int> virtual_stages{2, 4};  ///< v tried by interleaved-1f1b and optimus (megatron: v = 1 or 2, its own rules)
  int refine_evaluations = 12;            ///< neighboring splits emulated per family (hill climb)
};

/// Model, setup, cost model and a stage-cost cache shared by everything a comparison builds
/// (spatial and temporal reuse of stage costs). Not thread-safe (the cache is not).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
class BaselineContext {
 public:
  BaselineContext(const ModelSpec& model, const Setup& setup, const C& cost, StageCostCacheOptions cache_options = {})
      : model_(&model), setup_(&setup), cache_(cost, model, cache_options), capacity_(memory_capacity(setup)) {}
  [[nodiscard]] const ModelSpec& model() const noexcept { return *model_; }
  [[nodiscard]] const Setup& setup() const noexcept { return *setup_; }
  [[nodiscard]] const C& cost() const noexcept { return cache_.cost(); }
  [[nodiscard]] StageCostCache<C>& cache() noexcept { return cache_; }
  [[nodiscard]] Bytes capacity() const noexcept { return capacity_; }

 private:
  const ModelSpec* model_;
  const Setup* setup_;
  StageCostCache<C> cache_;
  Bytes capacity_;
};

// --- per-node costs ---------------------------------------------------------------------------------

namespace detail {

template <class C>
[[nodiscard]] StageCost node_cost(BaselineContext<C>& ctx, const Partition& partition,
                                  std::span<const SubMicrobatchSpec> smbs, const StageNode& node, const MemoryStrategy& st) {
  const StageRef& s = node.stage;
  return ctx.cache().stage_cost(StageSpec::of(partition, s.module, s.chunk, s.pass), smbs[s.sub_microbatch.index()], st);
}

}  // namespace detail

/// Per-rank peak memory of a schedule (static state + activations, see the header comment).
template <class C>
[[nodiscard]] std::vector<Bytes> schedule_peak_memory(BaselineContext<C>& ctx, const Partition& partition,
                                                      std::span<const SubMicrobatchSpec> smbs, const StageGraph& graph,
                                                      const Schedule& schedule) {
  std::vector<Bytes> peak(schedule.ranks.size(), Bytes{0});  // static state first
  for (std::size_t m = 0; m < partition.modules.size(); ++m)
    for (const Chunk& ch : partition.modules[m].chunks)
      peak.at(ch.rank.index()) += chunk_state_bytes(ctx.model(), ModuleId{static_cast<ModuleId::rep>(m)}, ctx.setup(),
                                                    ch.first_layer, ch.layer_count);
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
    const auto& list = schedule.ranks[r];
    std::vector<StageRef> stages;
    stages.reserve(list.size());
    for (const ScheduledStage& st : list) stages.push_back(graph.nodes[static_cast<std::size_t>(st.node)].stage);
    peak[r] = rank_peak_memory(stages, activation_release_positions(stages), peak[r], [&](std::size_t i) {
      return detail::node_cost(ctx, partition, smbs, graph.nodes[static_cast<std::size_t>(list[i].node)], list[i].strategy).activation;
    });
  }
  return peak;
}

// --- Optimus' bubble filling ------------------------------------------------------------------------

namespace detail {

/// Where a rank's next stage under bubble filling comes from.
enum class FillQueue : std::uint8_t { main, backward_filler, forward_filler };

/// A rank's next stage under bubble filling: when it can start, the node (-1: none) and its queue.
struct FillChoice {
  Nanoseconds start = Nanoseconds::max();
  NodeIndex node = -1;
  FillQueue queue = FillQueue::main;
};

/// The list scheduler of bubble_fill_schedule, phase by phase: the filler queues, the nodes'
/// strategies and latencies, the filler memory budget, the just-in-time frontier, then repeated
/// choose (per rank) and commit (the earliest start over all ranks).
template <class C>
class BubbleFill {
 public:
  BubbleFill(BaselineContext<C>& ctx, const PipelineLayout& layout, std::span<const ModuleId> chain, const StageGraph& graph,
             std::span<const SubMicrobatchSpec> smbs, UniformRecompute recompute, int lookahead)
      : ctx_(ctx), layout_(layout), graph_(graph), smbs_(smbs), lookahead_(lookahead), P_(layout.ranks()),
        main_(pipeline_schedule_checked(graph, smbs, layout, chain, PipelineOrder::interleaved, recompute)) {
    build_filler_queues(chain);
    price_nodes(recompute);
    prepare_filler_budget();
    find_filler_consumers();
    cur_.assign(static_cast<std::size_t>(P_), Cursor{});
  }

  /// Commits stages in order of start time (ties: lower rank) until every stage is scheduled.
  Schedule run() {
    Schedule out;
    out.ranks.assign(static_cast<std::size_t>(P_), {});
    std::size_t left = 0;
    for (std::size_t r = 0; r < static_cast<std::size_t>(P_); ++r) left += main_.ranks[r].size() + fill_f_[r].size() + fill_b_[r].size();
    bool strict = true;
    while (left > 0) {
      int best_rank = -1;
      FillChoice best;
      for (int r = 0; r < P_; ++r) {
        const FillChoice c = choose(r, strict);
        if (c.node >= 0 && (best_rank < 0 || c.start < best.start)) {
          best = c;
          best_rank = r;
        }
      }
      if (best_rank < 0 && strict) {
        strict = false;  // nothing can start within the filler budget: lift it for one stage
        continue;
      }
      strict = true;
      if (best_rank < 0)
        throw invalid_plan_error("bubble-filling schedule deadlocks", {.path = "optimus", .expected = "a main order that never waits for its own rank's fillers"});
      commit(best_rank, best, out);
      --left;
    }
    return out;
  }

 private:
  struct Cursor {
    std::size_t main = 0, f = 0, b = 0;
    Nanoseconds free{0};
  };
  static constexpr Nanoseconds never = Nanoseconds::max();

  [[nodiscard]] bool is_filler(const StageRef& s) const {
    return layout_.range_of_chunk.at(s.module.index()).at(static_cast<std::size_t>(s.chunk)) < 0;
  }
  [[nodiscard]] int mb_of(NodeIndex n) const {
    return smbs_[graph_.nodes[static_cast<std::size_t>(n)].stage.sub_microbatch.index()].microbatch().value();
  }
  [[nodiscard]] Nanoseconds ready_at(NodeIndex n) const {
    return pending_[static_cast<std::size_t>(n)] > 0 ? never : ready_[static_cast<std::size_t>(n)];
  }
  /// Activation bytes of forward node f under its strategy.
  [[nodiscard]] Bytes forward_bytes(NodeIndex f) const {
    return node_cost(ctx_, layout_.partition, smbs_, graph_.nodes[static_cast<std::size_t>(f)], strategy_[static_cast<std::size_t>(f)]).activation;
  }

  /// Per rank, the forwards and the backwards of its filler chunks, each in microbatch order
  /// (chain order inside one; backwards in reverse chain and chunk order).
  void build_filler_queues(std::span<const ModuleId> chain) {
    std::vector<int> chain_pos(ctx_.model().modules.size(), 0);
    for (std::size_t i = 0; i < chain.size(); ++i) chain_pos.at(chain[i].index()) = static_cast<int>(i);
    fill_f_.assign(static_cast<std::size_t>(P_), {});
    fill_b_.assign(static_cast<std::size_t>(P_), {});
    for (std::size_t n = 0; n < graph_.nodes.size(); ++n) {
      const StageNode& node = graph_.nodes[n];
      if (!is_filler(node.stage)) continue;
      (is_backward(node.stage.pass) ? fill_b_ : fill_f_)[node.rank.index()].push_back(static_cast<NodeIndex>(n));
    }
    const auto key = [&](NodeIndex n) {
      const StageRef& s = graph_.nodes[static_cast<std::size_t>(n)].stage;
      const int sign = is_backward(s.pass) ? -1 : 1;
      return std::make_tuple(mb_of(n), sign * chain_pos[s.module.index()], sign * s.chunk, s.sub_microbatch.value(),
                             static_cast<int>(s.pass));
    };
    for (auto* q : {&fill_f_, &fill_b_})
      for (auto& list : *q) std::sort(list.begin(), list.end(), [&](NodeIndex a, NodeIndex b) { return key(a) < key(b); });
  }

  /// Every node's strategy (the uniform setting) and latency; nothing is ready yet.
  void price_nodes(UniformRecompute recompute) {
    const std::size_t N = graph_.nodes.size();
    strategy_.resize(N);
    latency_.resize(N);
    pending_.resize(N);
    ready_.assign(N, Nanoseconds{0});
    for (std::size_t n = 0; n < N; ++n) {
      strategy_[n] = node_strategy(graph_, layout_.partition, static_cast<NodeIndex>(n), recompute);
      latency_[n] = node_cost(ctx_, layout_.partition, smbs_, graph_.nodes[n], strategy_[n]).latency;
      pending_[n] = static_cast<int>(graph_.nodes[n].inputs.size());
    }
  }

  /// Per rank, the filler budget: capacity − (static state + peak activations of the main order
  /// alone); and which node frees which forward's activations (schedule/activation_memory.hpp).
  void prepare_filler_budget() {
    budget_ = schedule_peak_memory(ctx_, layout_.partition, smbs_, graph_, main_);
    for (Bytes& b : budget_) b = ctx_.capacity() - b;
    filler_mem_.assign(static_cast<std::size_t>(P_), Bytes{0});
    release_ = activation_release_nodes(graph_);
    holder_.assign(graph_.nodes.size(), -1);
    for (std::size_t f = 0; f < release_.size(); ++f)
      if (release_[f] >= 0) holder_[static_cast<std::size_t>(release_[f])] = static_cast<NodeIndex>(f);
  }

  /// Per microbatch, its main forwards fed by a filler (the pipeline's consumers of filler
  /// outputs), and the oldest microbatch that still has some not started (the frontier).
  void find_filler_consumers() {
    const std::size_t N = graph_.nodes.size();
    consumers_left_.assign(static_cast<std::size_t>(microbatch_count(smbs_)), 0);
    is_consumer_.assign(N, 0);
    for (std::size_t n = 0; n < N; ++n) {
      const StageNode& node = graph_.nodes[n];
      if (node.stage.pass != Pass::forward || is_filler(node.stage)) continue;
      for (NodeIndex i : node.inputs) {
        if (is_filler(graph_.nodes[static_cast<std::size_t>(i)].stage)) {
          is_consumer_[n] = 1;
          ++consumers_left_[static_cast<std::size_t>(mb_of(static_cast<NodeIndex>(n)))];
          break;
        }
      }
    }
    frontier_ = 0;
    advance_frontier();
  }
  void advance_frontier() {
    while (frontier_ < static_cast<int>(consumers_left_.size()) && consumers_left_[static_cast<std::size_t>(frontier_)] == 0) ++frontier_;
  }

  /// What rank r would run next, and when. At time t the rank takes: a due forward filler if
  /// ready, else main if ready, else a ready backward filler, else a forward one; the earliest t
  /// at which it takes anything is the earliest of the three ready times. A forward filler that
  /// is not due is left out while it would overflow the filler budget (`strict`).
  [[nodiscard]] FillChoice choose(int r, bool strict) const {
    const auto ri = static_cast<std::size_t>(r);
    const Cursor& c = cur_[ri];
    const NodeIndex m = c.main < main_.ranks[ri].size() ? main_.ranks[ri][c.main].node : -1;
    const NodeIndex b = c.b < fill_b_[ri].size() ? fill_b_[ri][c.b] : -1;
    NodeIndex f = c.f < fill_f_[ri].size() ? fill_f_[ri][c.f] : -1;
    const bool due = f >= 0 && lookahead_ >= 0 && mb_of(f) <= frontier_ + lookahead_;
    if (f >= 0 && !due && strict && filler_mem_[ri] + forward_bytes(f) > budget_[ri]) f = -1;
    const Nanoseconds tm = m >= 0 ? ready_at(m) : never, tb = b >= 0 ? ready_at(b) : never,
                      tf = f >= 0 ? ready_at(f) : never;
    const Nanoseconds first = std::min({tm, tb, tf});
    if (first == never) return FillChoice{never, -1, FillQueue::main};
    const Nanoseconds t = std::max(c.free, first);
    if (due && tf <= t) return FillChoice{t, f, FillQueue::forward_filler};
    if (tm <= t) return FillChoice{t, m, FillQueue::main};
    if (tb <= t) return FillChoice{t, b, FillQueue::backward_filler};
    return FillChoice{t, f, FillQueue::forward_filler};
  }

  /// Runs `c` on rank r: advances its queue, the frontier and the filler memory, and makes the
  /// node's outputs ready.
  void commit(int r, const FillChoice& c, Schedule& out) {
    const auto ru = static_cast<std::size_t>(r);
    const auto ni = static_cast<std::size_t>(c.node);
    Cursor& cur = cur_[ru];
    if (c.queue == FillQueue::main) ++cur.main;
    else if (c.queue == FillQueue::backward_filler) ++cur.b;
    else ++cur.f;
    if (is_consumer_[ni]) {
      --consumers_left_[static_cast<std::size_t>(mb_of(c.node))];
      advance_frontier();
    }
    // Filler activations: a forward filler holds its bytes until the node that frees them.
    if (c.queue == FillQueue::backward_filler && holder_[ni] >= 0) filler_mem_[ru] -= forward_bytes(holder_[ni]);
    if (c.queue == FillQueue::forward_filler && release_[ni] >= 0) filler_mem_[ru] += forward_bytes(c.node);
    const Nanoseconds end = c.start + latency_[ni];
    cur.free = end;
    out.ranks[ru].push_back(ScheduledStage{c.node, strategy_[ni]});
    for (NodeIndex o : graph_.nodes[ni].outputs) {
      const auto oi = static_cast<std::size_t>(o);
      Nanoseconds arrive = end;
      if (graph_.nodes[oi].rank != graph_.nodes[ni].rank)
        arrive += ctx_.cost().transfer_time(edge_bytes(ctx_.cost(), layout_.partition, smbs_, graph_.nodes[ni], graph_.nodes[oi]));
      ready_[oi] = std::max(ready_[oi], arrive);
      --pending_[oi];
    }
  }

  BaselineContext<C>& ctx_;
  const PipelineLayout& layout_;
  const StageGraph& graph_;
  std::span<const SubMicrobatchSpec> smbs_;
  int lookahead_;
  int P_;
  Schedule main_;                                    ///< interleaved order of the ranged stages
  std::vector<std::vector<NodeIndex>> fill_f_, fill_b_;  ///< per rank: filler forwards / backwards
  std::vector<MemoryStrategy> strategy_;             ///< per node
  std::vector<Nanoseconds> latency_;                 ///< per node
  std::vector<int> pending_;                         ///< per node: inputs not yet scheduled
  std::vector<Nanoseconds> ready_;                   ///< per node: latest arrival of a scheduled input
  std::vector<Bytes> budget_, filler_mem_;           ///< per rank
  std::vector<NodeIndex> release_, holder_;          ///< activation_release_nodes and its inverse
  std::vector<int> consumers_left_;                  ///< per microbatch
  std::vector<char> is_consumer_;                    ///< per node
  int frontier_ = 0;
  std::vector<Cursor> cur_;                          ///< per rank
};

}  // namespace detail

/// List-scheduled order for a layout with filler chunks (range -1): each rank keeps the pipeline
/// order of its ranged stages (interleaved 1F1B, `main`) and two filler queues: the forwards and
/// the backwards of its filler chunks, each in microbatch order (chain order inside one). Times
/// come from the cost model (latency under `recompute`, transfer_time of each cross-rank edge).
/// Stages are committed in order of start time (ties: lower rank): a rank that is free at t runs
/// its next main stage if that is ready by t; otherwise it fills the bubble with the head of a
/// filler queue that is ready (backward fillers first: they free memory); otherwise it waits for
/// the earliest of those to become ready.
/// Just in time (lookahead L >= 0): the forward fillers of microbatch k are *due* once k <= f + L, f the oldest
/// microbatch whose pipeline stages fed by fillers (the backbone's first chunk) have not all
/// started; a due forward filler that is ready goes before the main stage, so the pipeline never
/// stalls waiting for encoder outputs.
/// Memory: a forward filler that is not due may start only while the rank's filler activations
/// (the bytes of its started forward fillers not yet freed by their releasing backward, under the
/// rule of schedule/activation_memory.hpp) plus its own stay within
///   capacity − (static state + peak activations of the main order alone),
/// so that running encoder work early never crowds out the pipeline. Only when no rank can start
/// anything under that rule is it lifted (the step then needs more recompute, which the caller's
/// memory check finds). Main stages never wait for backward fillers and forward fillers never wait
/// for main stages, so this never deadlocks when `main` itself is deadlock-free with the filler
/// forwards counted as done.
template <class C>
[[nodiscard]] Schedule bubble_fill_schedule(BaselineContext<C>& ctx, const PipelineLayout& layout,
                                            std::span<const ModuleId> chain, const StageGraph& graph,
                                            std::span<const SubMicrobatchSpec> smbs, UniformRecompute recompute,
                                            int lookahead = -1) {
  return detail::BubbleFill<C>(ctx, layout, chain, graph, smbs, recompute, lookahead).run();
}

// --- one step -------------------------------------------------------------------------------------

// The ZB-H1 order, defined in baselines/zero_bubble.hpp (included at the end of this header).
template <class C>
[[nodiscard]] Schedule zero_bubble_schedule(BaselineContext<C>& ctx, const PipelineLayout& layout, std::span<const ModuleId> chain,
                                            const StageGraph& graph, std::span<const SubMicrobatchSpec> smbs,
                                            UniformRecompute recompute);

/// Per-rank order of a baseline for one step with a given uniform recompute setting.
template <class C>
[[nodiscard]] Schedule order_step(BaselineContext<C>& ctx, const StaticBaseline& b, const StageGraph& graph,
                                  std::span<const SubMicrobatchSpec> smbs, UniformRecompute recompute) {
  switch (b.order) {
    case BaselineOrder::gpipe:
      return pipeline_schedule_checked(graph, smbs, b.layout, b.chain, PipelineOrder::gpipe, recompute);
    case BaselineOrder::one_f_one_b:
      return pipeline_schedule_checked(graph, smbs, b.layout, b.chain, PipelineOrder::one_f_one_b, recompute);
    case BaselineOrder::interleaved:
      return pipeline_schedule_checked(graph, smbs, b.layout, b.chain, PipelineOrder::interleaved, recompute);
    case BaselineOrder::bubble_fill:
      return bubble_fill_schedule(ctx, b.layout, b.chain, graph, smbs, recompute, b.filler_lookahead);
    case BaselineOrder::zero_bubble:
      return zero_bubble_schedule(ctx, b.layout, b.chain, graph, smbs, recompute);
  }
  throw input_error("unknown baseline order");
}

/// One step of a baseline before lowering.
struct StepSchedule {
  std::vector<SubMicrobatchSpec> sub_microbatches{};
  StageGraph graph{};
  Schedule schedule{};
  UniformRecompute recompute = UniformRecompute::none;
  std::vector<Bytes> peak_memory{};  ///< per rank (schedule_peak_memory)
  bool fits_memory = true;         ///< every rank's peak <= memory_capacity(setup)
};

/// The step's schedule with the cheapest uniform recompute setting that fits memory (full, and
/// fits_memory = false, when none does).
template <class C>
[[nodiscard]] StepSchedule schedule_step(BaselineContext<C>& ctx, const StaticBaseline& b, const Batch& batch) {
  StepSchedule s;
  s.sub_microbatches = split(ctx.model(), b.layout.partition, batch);
  s.graph = build_stage_graph(ctx.model(), b.layout.partition, s.sub_microbatches, {.split_backward = splits_backward(b.order)});
  for (UniformRecompute r : uniform_recompute_settings) {
    s.schedule = order_step(ctx, b, s.graph, s.sub_microbatches, r);
    s.recompute = r;
    s.peak_memory = schedule_peak_memory(ctx, b.layout.partition, s.sub_microbatches, s.graph, s.schedule);
    s.fits_memory = std::all_of(s.peak_memory.begin(), s.peak_memory.end(), [&](Bytes m) { return m <= ctx.capacity(); });
    if (s.fits_memory) break;
  }
  return s;
}

/// A baseline's plan for one step, with its emulation.
struct BaselinePlan {
  Plan plan{};
  UniformRecompute recompute = UniformRecompute::none;
  bool fits_memory = true;  ///< from the emulation: every rank's peak within memory_capacity(setup)
  EmulationResult emulation{};
  StageGraph graph{};  ///< the step's stage graph (for lower bounds)
};

template <class C>
[[nodiscard]] BaselinePlan build_baseline_plan(BaselineContext<C>& ctx, const StaticBaseline& b, const Batch& batch,
                                               const EmulateOptions& options = {}) {
  StepSchedule s = schedule_step(ctx, b, batch);
  BaselinePlan out;
  out.recompute = s.recompute;
  out.plan = lower(ctx.model(), b.layout.partition, s.sub_microbatches, s.graph, s.schedule, ctx.cost(), b.name,
                   ctx.setup().name);
  out.emulation = emulate(out.plan, ctx.model(), ctx.setup(), ctx.cache(), options);
  out.fits_memory = out.emulation.fits_memory();
  out.graph = std::move(s.graph);
  return out;
}

// --- scoring a static choice on the profile steps ------------------------------------------------

/// Score of a static baseline on the profile steps: whether every step fits memory, and the sum
/// of their emulated step times. Fitting beats not fitting; then less time is better.
struct ProfileScore {
  bool fits = false;
  Nanoseconds time = Nanoseconds::max();
  [[nodiscard]] friend bool operator<(const ProfileScore& a, const ProfileScore& b) noexcept {
    if (a.fits != b.fits) return a.fits;
    return a.time < b.time;
  }
};

/// Emulates `b` on every profile step through the schedule fast path (same times as the lowered
/// plan's emulation).
template <class C>
[[nodiscard]] ProfileScore score_on_profile(BaselineContext<C>& ctx, const StaticBaseline& b, std::span<const Batch> profile) {
  ProfileScore score{true, Nanoseconds{0}};
  ScheduleTiming timing;
  ScheduleWorkspace ws;
  for (const Batch& batch : profile) {
    const StepSchedule s = schedule_step(ctx, b, batch);
    const std::vector<Nanoseconds> lat =
        node_latencies(s.graph, s.schedule, b.layout.partition, s.sub_microbatches, ctx.cache());
    emulate_schedule(
        s.graph, s.schedule, lat,
        [&](NodeIndex p, NodeIndex n) {
          return ctx.cost().transfer_time(edge_bytes(ctx.cost(), b.layout.partition, s.sub_microbatches,
                                                     s.graph.nodes[static_cast<std::size_t>(p)],
                                                     s.graph.nodes[static_cast<std::size_t>(n)]));
        },
        timing, ws);
    score.fits = score.fits && s.fits_memory;
    score.time += timing.step_time;
  }
  return score;
}

// --- per-layer costs and split search ----------------------------------------------------------------

/// A partition that gives each module one chunk on rank 0 and whole-microbatch sub-microbatches
/// (the split that every baseline uses; the chunks do not change it).
[[nodiscard]] inline Partition whole_module_partition(const ModelSpec& model, int ranks, std::string name = "whole") {
  Partition p;
  p.name = std::move(name);
  p.ranks = ranks;
  for (const auto& m : model.modules) p.modules.push_back(ModulePlacement{{Chunk{0, m.layers, RankId{0}}}, 0});
  return p;
}

/// Cost of each layer of the chain on the average profile microbatch: for every layer,
/// Σ over profile microbatches of (forward + backward latency of that layer alone, no
/// recompute; forward only for a frozen module) / number of profile microbatches. A layer's
/// cost includes the embedding (first backbone layer) and the vocabulary head (last).
template <class C>
[[nodiscard]] std::vector<std::int64_t> chain_layer_costs(BaselineContext<C>& ctx, std::span<const ModuleId> chain,
                                                          std::span<const Batch> profile) {
  const ModelSpec& model = ctx.model();
  const Partition whole = whole_module_partition(model, ctx.setup().pipeline_stages);
  std::vector<std::vector<std::int64_t>> per_module(model.modules.size());
  for (std::size_t m = 0; m < model.modules.size(); ++m) per_module[m].assign(static_cast<std::size_t>(model.modules[m].layers), 0);
  std::int64_t microbatches = 0;
  for (const Batch& batch : profile) {
    microbatches += static_cast<std::int64_t>(batch.microbatches.size());
    for (const SubMicrobatchSpec& smb : split(model, whole, batch)) {
      const ModuleId m = smb.module();
      const ModuleSpec& spec = model.module(m);
      // Layers are identical except the first and the last (embedding / head): cost those
      // separately and one inner layer for the rest.
      const auto layer_cost = [&](int l) {
        std::int64_t t = ctx.cache().stage_cost(StageSpec{m, 0, RankId{0}, Pass::forward, l, 1}, smb, MemoryStrategy{}).latency.count();
        if (spec.trainable)
          t += ctx.cache().stage_cost(StageSpec{m, 0, RankId{0}, Pass::backward, l, 1}, smb, MemoryStrategy{}).latency.count();
        return t;
      };
      const int L = spec.layers;
      const std::int64_t first = layer_cost(0);
      const std::int64_t last = L > 1 ? layer_cost(L - 1) : first;
      const std::int64_t inner = L > 2 ? layer_cost(1) : first;
      auto& acc = per_module[m.index()];
      for (int l = 0; l < L; ++l) acc[static_cast<std::size_t>(l)] += l == 0 ? first : l == L - 1 ? last : inner;
    }
  }
  std::vector<std::int64_t> out;
  for (ModuleId m : chain)
    for (std::int64_t c : per_module[m.index()]) out.push_back(microbatches > 0 ? std::max<std::int64_t>(1, c / microbatches) : 1);
  return out;
}

/// Hill climb over splits around `start`: boundaries next to the heaviest ranges (by `weights`)
/// first, each moved by one layer toward the heavier side and then the other way; the first move
/// that improves the profile score is kept and the scan restarts; stops when a full scan finds
/// no improvement or after `evaluations` emulated candidates. `make` turns a split into the
/// baseline to score. Deterministic.
template <class C, class Make>
[[nodiscard]] std::pair<StaticBaseline, ProfileScore> refine_split(BaselineContext<C>& ctx, const ChainSplit& start,
                                                                   std::span<const std::int64_t> weights, const Make& make,
                                                                   std::span<const Batch> profile, int evaluations) {
  ChainSplit best_split = start;
  StaticBaseline best = make(best_split);
  ProfileScore best_score = score_on_profile(ctx, best, profile);
  std::map<std::vector<int>, bool> seen{{best_split.bounds, true}};
  int used = 0;
  const int R = start.range_count();
  const auto range_sum = [&](const ChainSplit& s, int j) {
    std::int64_t t = 0;
    for (int i = s.bounds[static_cast<std::size_t>(j)]; i < s.bounds[static_cast<std::size_t>(j) + 1]; ++i) t += weights[static_cast<std::size_t>(i)];
    return t;
  };
  bool improved = true;
  while (improved && used < evaluations) {
    improved = false;
    std::vector<std::tuple<std::int64_t, int, int>> moves;  // (-heaviness, boundary, delta)
    for (int i = 1; i < R; ++i) {
      const std::int64_t left = range_sum(best_split, i - 1), right = range_sum(best_split, i);
      const int toward_heavier = left > right ? -1 : 1;  // shrink the heavier neighbor
      moves.emplace_back(-std::max(left, right), i, toward_heavier);
      moves.emplace_back(-std::max(left, right), i, -toward_heavier);
    }
    std::stable_sort(moves.begin(), moves.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    for (const auto& [h, i, d] : moves) {
      (void)h;
      if (used >= evaluations) break;
      ChainSplit cand = best_split;
      cand.bounds[static_cast<std::size_t>(i)] += d;
      if (cand.bounds[static_cast<std::size_t>(i)] <= cand.bounds[static_cast<std::size_t>(i) - 1] ||
          cand.bounds[static_cast<std::size_t>(i)] >= cand.bounds[static_cast<std::size_t>(i) + 1])
        continue;
      if (!seen.emplace(cand.bounds, true).second) continue;
      ++used;
      StaticBaseline b = make(cand);
      const ProfileScore sc = score_on_profile(ctx, b, profile);
      if (sc < best_score) {
        best_split = std::move(cand);
        best = std::move(b);
        best_score = sc;
        improved = true;
        break;
      }
    }
  }
  return {std::move(best), best_score};
}

/// A static baseline chosen on the profile steps, with its profile score.
struct PreparedBaseline {
  StaticBaseline baseline{};
  ProfileScore score{};
};

/// "0|12|24|...": a split's bounds for reports.
[[nodiscard]] inline std::string describe_bounds(const ChainSplit& s) {
  std::string out;
  for (std::size_t i = 0; i < s.bounds.size(); ++i) {
    if (i > 0) out += '|';  // not (i ? "|" : "") + ...: g++ 12 -O3 warns falsely (-Wrestrict) on that form
    out += std::to_string(s.bounds[i]);
  }
  return out;
}

/// The best contiguous split of the whole chain (all modules) into P·v ranges for `order`:
/// min-max DP on the average per-layer costs, then refine_split. Returns nothing (an empty
/// name) when the chain has fewer layers than ranges.
template <class C>
[[nodiscard]] std::pair<StaticBaseline, ProfileScore> best_chain_baseline(BaselineContext<C>& ctx, std::string name,
                                                                          BaselineOrder order, int virtual_stages,
                                                                          std::span<const Batch> profile,
                                                                          const BaselineOptions& options,
                                                                          std::span<const std::int64_t> weights) {
  const ModelSpec& model = ctx.model();
  const std::vector<ModuleId> chain = chain_modules(model);
  const int P = ctx.setup().pipeline_stages;
  const int R = P * virtual_stages;
  if (static_cast<int>(weights.size()) < R) return {StaticBaseline{}, ProfileScore{}};
  ChainSplit start{P, virtual_stages, min_max_split(weights, R)};
  const auto make = [&](const ChainSplit& s) {
    StaticBaseline b;
    b.name = name;
    b.layout = chain_layout(model, chain, s, name);
    b.chain = chain;
    b.order = order;
    b.description = "v=" + std::to_string(s.virtual_stages) + ", chain ranges " + describe_bounds(s);
    return b;
  };
  return refine_split(ctx, start, weights, make, profile, options.refine_evaluations);
}

/// A baseline over the whole chain split into P ranges (one virtual stage per rank) under
/// `order` (GPipe or 1F1B), its split chosen on the profile steps by best_chain_baseline.
/// Throws Error{infeasible} when the chain has fewer layers than pipeline stages.
template <class C>
[[nodiscard]] PreparedBaseline prepare_chain_baseline(BaselineContext<C>& ctx, const std::string& name, BaselineOrder order,
                                                      std::span<const Batch> profile, const BaselineOptions& options) {
  const auto chain = chain_modules(ctx.model());
  const auto weights = chain_layer_costs(ctx, chain, profile);
  if (static_cast<int>(weights.size()) < ctx.setup().pipeline_stages)
    throw infeasible_error("model '" + ctx.model().name + "' has " + std::to_string(weights.size()) + " layers for " +
                    std::to_string(ctx.setup().pipeline_stages) + " pipeline stages", {.path = name, .expected = "at least one layer per pipeline stage"});
  auto [b, score] = best_chain_baseline(ctx, name, order, 1, profile, options, weights);
  return {std::move(b), score};
}

}  // namespace pipeweaver

// The ZB-H1 order that order_step dispatches to (it includes this header first).
#include "pipeweaver/baselines/zero_bubble.hpp"  // IWYU pragma: export
