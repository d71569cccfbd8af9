#pragma once
// Scores a segment-unit order (the inner two phases of the search):
//   order -> priorities -> dual-queue interleaving -> per-rank memory optimization -> fast
//   emulation (emulate_schedule) -> step time; score = lower_bound / step_time in (0, 1].
//
// StepTables holds everything the cost model says about one step (read-only once built, shared
// by every search worker): per forward/backward stage pair its candidate strategies (shared by
// pairs with the same module, layer count, position class and sub-microbatch shape, through a
// StageCostCache that the caller may keep across steps), the per-pass latency of every
// candidate, per-edge transfer times, static memory and budgets, and the lower bound.
//
// The interleaver runs with every pair at a base strategy — the most frugal (as the DIP paper does:
// it keeps more work in flight, and the optimizer then buys time back with the memory left) and,
// with try_both_bases, also the fastest (no recompute at all when that fits) — and the better
// outcome is kept. The interleaver's admission groups are microbatches, so memory pausing never
// deadlocks when one microbatch fits. An order whose schedule cannot fit memory even at the
// most frugal strategies scores feasible = false (score 0.01 · lower_bound / step_time, so
// infeasible orders still rank among themselves but below every feasible one).
// ScheduleEvaluator is one worker's scratch (not thread-safe; one per thread).
#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/schedule_emulator.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/dual_queue_interleaver.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/search/memory_optimizer.hpp"
#include "pipeweaver/search/segments.hpp"

namespace pipeweaver {

/// What a schedule that does not fit memory scores, as a factor of lower bound / step time (so
/// that any fitting schedule outranks it); the planner divides it out again for its search trace.
inline constexpr double infeasible_score_factor = 0.01;

struct StepTablesOptions {
  CandidateOptions candidates{.max_candidates = 10, .selective = true, .offload = true, .max_evaluations = 120};
  /// Ablations and comparisons: when set, every stage pair gets this single strategy (given
  /// its chunk's layer count) instead of candidate_strategies, so there is nothing to optimize
  /// and the memory optimizer only checks that it fits (e.g. a uniform recompute setting).
  std::function<MemoryStrategy(int layers)> fixed_strategy;
};

/// Read-only description of one step for the search (see the header comment).
struct StepTables {
  const StageGraph* graph = nullptr;
  const SegmentUnits* units = nullptr;
  int ranks = 1;
  std::vector<std::int32_t> pair_of_node{};       ///< per node: its stage pair
  std::vector<NodeIndex> forward_of_pair{};       ///< per pair
  std::vector<std::int32_t> list_of_pair{};       ///< per pair: index into candidate_lists
  std::vector<std::vector<StrategyCandidate>> candidate_lists{};  ///< fastest first
  /// [list][candidate][pass]: latency of the pair's stage in each pass under that candidate.
  std::vector<std::vector<std::array<Nanoseconds, 4>>> pass_latency{};
  std::vector<std::int32_t> microbatch_of_node{};
  std::vector<std::vector<Nanoseconds>> out_transfer{};  ///< parallel to graph->nodes[u].outputs
  std::vector<Bytes> static_memory;   ///< per rank
  Bytes capacity{0};
  std::vector<Bytes> activation_budget;  ///< per rank: capacity − static (may be negative)
  LowerBound bound{};                   ///< at MemoryStrategy{} (emulate/lower_bound.hpp)

  [[nodiscard]] Nanoseconds transfer(NodeIndex u, NodeIndex v) const {
    const auto& outs = graph->nodes[static_cast<std::size_t>(u)].outputs;
    for (std::size_t i = 0; i < outs.size(); ++i)
      if (outs[i] == v) return out_transfer[static_cast<std::size_t>(u)][i];
    return Nanoseconds{0};
  }
};

/// Builds the tables. Throws Error{infeasible} when the partition's static memory exceeds the
/// capacity on some rank (check_static_memory).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] StepTables build_step_tables(const ModelSpec& model, const Setup& setup, const Partition& partition,
                                           std::span<const SubMicrobatchSpec> smbs, const StageGraph& graph,
                                           const SegmentUnits& units, StageCostCache<C>& cache,
                                           const StepTablesOptions& options = {}) {
  check_static_memory(model, setup, partition);
  StepTables t;
  t.graph = &graph;
  t.units = &units;
  t.ranks = partition.ranks;
  const std::size_t n = graph.nodes.size();
  // Pairs: one per forward; backwards join their forward's pair (module, chunk, smb).
  std::map<std::tuple<int, int, int>, std::int32_t> pair_by_stage;
  t.pair_of_node.assign(n, -1);
  for (std::size_t v = 0; v < n; ++v) {
    const StageRef& s = graph.nodes[v].stage;
    if (s.pass != Pass::forward) continue;
    const auto p = static_cast<std::int32_t>(t.forward_of_pair.size());
    pair_by_stage[{s.module.value(), s.chunk, s.sub_microbatch.value()}] = p;
    t.forward_of_pair.push_back(static_cast<NodeIndex>(v));
    t.pair_of_node[v] = p;
  }
  std::vector<std::vector<NodeIndex>> backwards_of_pair(t.forward_of_pair.size());
  for (std::size_t v = 0; v < n; ++v) {
    const StageRef& s = graph.nodes[v].stage;
    if (s.pass == Pass::forward) continue;
    auto it = pair_by_stage.find({s.module.value(), s.chunk, s.sub_microbatch.value()});
    if (it == pair_by_stage.end())
      throw invalid_plan_error("backward stage node " + std::to_string(v) + " has no forward", {.path = "node " + std::to_string(v), .expected = "a forward node for every backward stage"});
    t.pair_of_node[v] = it->second;
    backwards_of_pair[static_cast<std::size_t>(it->second)].push_back(static_cast<NodeIndex>(v));
  }
  // Candidate lists, shared by pairs with the same cache key.
  std::vector<ShapeId> shape(smbs.size(), -1);
  std::map<std::tuple<int, int, int, int, ShapeId, int>, std::int32_t> list_by_key;
  t.list_of_pair.assign(t.forward_of_pair.size(), -1);
  for (std::size_t p = 0; p < t.forward_of_pair.size(); ++p) {
    const StageRef& s = graph.nodes[static_cast<std::size_t>(t.forward_of_pair[p])].stage;
    const auto si = s.sub_microbatch.index();
    if (shape[si] < 0) shape[si] = cache.intern(smbs[si]);
    const Chunk& ch = partition.chunk(s.module, s.chunk);
    const int L = model.module(s.module).layers;
    const int pos = (ch.first_layer == 0 ? 1 : 0) + (ch.first_layer + ch.layer_count >= L ? 2 : 0);
    int passes = 0;  // bit set of the backward passes the pair has
    for (NodeIndex b : backwards_of_pair[p]) passes |= 1 << static_cast<int>(graph.nodes[static_cast<std::size_t>(b)].stage.pass);
    const auto key = std::tuple{s.module.value(), ch.layer_count, pos, ch.first_layer * (cache.uniform_layers() ? 0 : 1), shape[si], passes};
    auto it = list_by_key.find(key);
    if (it != list_by_key.end()) {
      t.list_of_pair[p] = it->second;
      continue;
    }
    const auto id = static_cast<std::int32_t>(t.candidate_lists.size());
    list_by_key.emplace(key, id);
    t.list_of_pair[p] = id;
    auto stage = [&](Pass pass) { return StageSpec::of(partition, s.module, s.chunk, pass); };
    auto eval = [&](const MemoryStrategy& st) {
      StrategyCost c;
      const StageCost f = cache.stage_cost(stage(Pass::forward), smbs[si], shape[si], st);
      c.time = f.latency;
      c.bytes = f.activation;
      for (int q = 1; q < 4; ++q)
        if (passes & (1 << q)) c.time += cache.stage_cost(stage(static_cast<Pass>(q)), smbs[si], shape[si], st).latency;
      return c;
    };
    std::vector<StrategyCandidate> list;
    if (passes == 0) {  // no backward: nothing to trade, the forward keeps nothing
      const StrategyCost c = eval(MemoryStrategy{});
      list.push_back({MemoryStrategy{}, c.time, c.bytes});
    } else if (options.fixed_strategy) {
      const MemoryStrategy st = options.fixed_strategy(ch.layer_count);
      const StrategyCost c = eval(st);
      list.push_back({st, c.time, c.bytes});
    } else {
      list = candidate_strategies(ch.layer_count, eval, options.candidates);
    }
    std::vector<std::array<Nanoseconds, 4>> lat(list.size());
    for (std::size_t k = 0; k < list.size(); ++k)
      for (int q = 0; q < 4; ++q)
        if (q == 0 || (passes & (1 << q)))
          lat[k][static_cast<std::size_t>(q)] = cache.stage_cost(stage(static_cast<Pass>(q)), smbs[si], shape[si], list[k].strategy).latency;
    t.candidate_lists.push_back(std::move(list));
    t.pass_latency.push_back(std::move(lat));
  }
  t.microbatch_of_node.resize(n);
  for (std::size_t v = 0; v < n; ++v)
    t.microbatch_of_node[v] = smbs[graph.nodes[v].stage.sub_microbatch.index()].microbatch().value();
  t.out_transfer.resize(n);
  for (std::size_t u = 0; u < n; ++u) {
    const auto& nu = graph.nodes[u];
    t.out_transfer[u].resize(nu.outputs.size());
    for (std::size_t i = 0; i < nu.outputs.size(); ++i) {
      const auto& nv = graph.nodes[static_cast<std::size_t>(nu.outputs[i])];
      t.out_transfer[u][i] = nv.rank == nu.rank ? Nanoseconds{0} : cache.cost().transfer_time(edge_bytes(cache.cost(), partition, smbs, nu, nv));
    }
  }
  t.static_memory = static_memory_per_rank(model, setup, partition);
  t.capacity = memory_capacity(setup);
  for (Bytes s : t.static_memory) t.activation_budget.push_back(t.capacity - s);
  t.bound = lower_bound(graph, partition, smbs, cache);
  return t;
}

struct ScheduleEvaluatorOptions {
  bool optimize_memory = true;  ///< run the per-rank memory optimizer (off: base strategies stay)
  bool try_both_bases = true;   ///< interleave at the most frugal and at the fastest strategies
  /// On a graph with split backwards: the interleaver defers the weight parts into bubbles
  /// (InterleaveInput::defer_weight) at the fastest base, or at the frugal base when it is the
  /// only one. No effect on a graph without them.
  bool defer_weight = true;
  /// Per rollout the branch-and-bound gets a small node budget: the greedy warm start is
  /// usually within the gap already, and a rollout must stay cheap.
  MemoryOptimizerOptions memory{.gap = 0.05, .node_limit = 2000};
};

struct Evaluation {
  bool feasible = false;
  Nanoseconds step_time{0};
  Schedule schedule{};
  double score = 0;
};

/// The base strategy every pair takes before the memory optimizer runs (see the header comment).
enum class BaseStrategy : std::uint8_t {
  frugal,   ///< the most frugal candidate (the last of each list)
  fastest,  ///< the fastest candidate (the first of each list)
};

class ScheduleEvaluator {
 public:
  explicit ScheduleEvaluator(const StepTables& tables, ScheduleEvaluatorOptions options = {})
      : t_(&tables), opt_(options) {
    const std::size_t n = tables.graph->nodes.size();
    for (BaseStrategy base : {BaseStrategy::frugal, BaseStrategy::fastest}) {
      BaseTables& b = base_[static_cast<std::size_t>(base)];
      b.latency.resize(n);
      b.bytes.resize(n);
      b.strategy.resize(n);
      for (std::size_t v = 0; v < n; ++v) {
        const auto p = static_cast<std::size_t>(tables.pair_of_node[v]);
        const auto l = static_cast<std::size_t>(tables.list_of_pair[p]);
        const std::size_t k = base == BaseStrategy::frugal ? tables.candidate_lists[l].size() - 1 : 0;
        const Pass pass = tables.graph->nodes[v].stage.pass;
        b.latency[v] = tables.pass_latency[l][k][static_cast<std::size_t>(pass)];
        b.bytes[v] = pass == Pass::forward ? tables.candidate_lists[l][k].bytes : Bytes{0};
        b.strategy[v] = tables.candidate_lists[l][k].strategy;
      }
    }
    if (!(opt_.memory.gap >= 0))
      throw input_error("negative optimality gap", {.path = "MemoryOptimizerOptions::gap", .expected = ">= 0"});
    // The fastest candidate of each list, as the solver orders them (time, then bytes, then index).
    for (const auto& list : tables.candidate_lists) {
      std::size_t f = 0;
      for (std::size_t k = 1; k < list.size(); ++k)
        if (list[k].time < list[f].time || (list[k].time == list[f].time && list[k].bytes < list[f].bytes)) f = k;
      fastest_.push_back(static_cast<std::int32_t>(f));
      list_span_.emplace_back(list);
    }
    const std::size_t pairs = tables.forward_of_pair.size();
    fastest_bytes_.resize(pairs);
    for (std::size_t p = 0; p < pairs; ++p) {
      const auto l = static_cast<std::size_t>(tables.list_of_pair[p]);
      fastest_bytes_[p] = tables.candidate_lists[l][static_cast<std::size_t>(fastest_[l])].bytes.count();
    }
    // Which node frees each pair's activations (schedule/activation_memory.hpp).
    const std::vector<NodeIndex> release = activation_release_nodes(*tables.graph);
    pair_releases_.assign(pairs, 0);
    releases_pair_.assign(n, 0);
    for (std::size_t p = 0; p < pairs; ++p) {
      const NodeIndex r = release[static_cast<std::size_t>(tables.forward_of_pair[p])];
      if (r < 0) continue;
      pair_releases_[p] = 1;
      releases_pair_[static_cast<std::size_t>(r)] = 1;
    }
    local_of_pair_.assign(pairs, -1);
    dq_.prepare(*tables.graph);
    // Per node, its smallest latency over its pair's candidates (a bound for any choice).
    min_latency_.resize(n);
    for (std::size_t v = 0; v < n; ++v) {
      const auto l = static_cast<std::size_t>(tables.list_of_pair[static_cast<std::size_t>(tables.pair_of_node[v])]);
      const auto q = static_cast<std::size_t>(tables.graph->nodes[v].stage.pass);
      Nanoseconds m = tables.pass_latency[l][0][q];
      for (const auto& c : tables.pass_latency[l]) m = std::min(m, c[q]);
      min_latency_[v] = m;
    }
  }

  /// Score of an order (see the header comment).
  double operator()(std::span<const std::int32_t> order) { return evaluate(order, nullptr).score; }

  /// Full evaluation; with `out`, the winning schedule is stored there.
  Evaluation evaluate(std::span<const std::int32_t> order) {
    Evaluation e;
    (void)evaluate(order, &e);
    return e;
  }

  /// Per rank, the peak memory of `schedule` (a schedule of the tables' graph) as this evaluator
  /// accounts it for the memory optimizer: static memory plus the largest sum of the activation
  /// bytes alive at a forward's start, from the same per-rank events. `forward_bytes(node,
  /// strategy) -> Bytes` gives each forward's bytes under its scheduled strategy.
  template <class ForwardBytes>
  [[nodiscard]] std::vector<Bytes> peak_memory(const Schedule& schedule, ForwardBytes&& forward_bytes) {
    const StepTables& t = *t_;
    std::vector<Bytes> peak(schedule.ranks.size(), Bytes{0});
    std::vector<Bytes> bytes;  // per local pair
    for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
      const auto& list = schedule.ranks[r];
      collect_rank_events(list);
      bytes.clear();
      for (const ScheduledStage& st : list)
        if (t.graph->nodes[static_cast<std::size_t>(st.node)].stage.pass == Pass::forward) bytes.push_back(forward_bytes(st.node, st.strategy));
      alive_.assign(rank_pair_.size(), 0);
      Bytes load{0}, top{0};
      for (const PairEvent& e : events_) {
        const auto lp = static_cast<std::size_t>(e.pair);
        if (e.forward) {
          if (!alive_[lp]) {
            alive_[lp] = 1;
            load += bytes[lp];
          }
          top = std::max(top, load);
        } else if (alive_[lp]) {
          alive_[lp] = 0;
          load -= bytes[lp];
        }
      }
      peak[r] = (r < t.static_memory.size() ? t.static_memory[r] : Bytes{0}) + top;
      forget_rank_pairs();
    }
    return peak;
  }

 private:
  /// Per base strategy: every node's latency, activation bytes (forwards) and strategy.
  struct BaseTables {
    std::vector<Nanoseconds> latency;
    std::vector<Bytes> bytes;
    std::vector<MemoryStrategy> strategy;
  };

  // The fastest base runs first when both are tried. The frugal base then only wins with a
  // step time <= the fastest base's (ties go to the frugal base, as when it ran first), and
  // whatever strategies the optimizer picks, its step time is at least that of its schedule
  // emulated at each node's smallest candidate latency (the emulation is monotone in the
  // latencies: fixed orders on ranks and links). When that bound already exceeds a feasible
  // fastest-base result, the frugal base's memory optimization and emulation are skipped:
  // the result is the same, for about a third of the cost of a rollout.
  Evaluation evaluate(std::span<const std::int32_t> order, Evaluation* out) {
    const StepTables& t = *t_;
    priorities_from_sequence(*t.units, order, unit_prio_, node_prio_);
    auto transfer = [&](NodeIndex u, NodeIndex v) { return t.transfer(u, v); };
    Evaluation best;
    best.step_time = Nanoseconds::max();
    bool fast_ran = false;
    if (opt_.try_both_bases && run_base(BaseStrategy::fastest, transfer)) {
      fast_ran = true;
      best.feasible = base_feasible_;
      best.step_time = timing_.step_time;
      if (out) best.schedule = inter_.schedule;
    }
    const bool prune = fast_ran && best.feasible && opt_.optimize_memory;
    if (run_base(BaseStrategy::frugal, transfer, prune ? best.step_time : Nanoseconds::max())) {
      const bool feasible = base_feasible_;
      const Nanoseconds step = timing_.step_time;
      // The frugal base wins unless the fastest one is strictly better (it ran first before).
      const bool fast_better = fast_ran && ((best.feasible && !feasible) || (best.feasible == feasible && best.step_time < step));
      if (!fast_better) {
        best.feasible = feasible;
        best.step_time = step;
        if (out) best.schedule = inter_.schedule;
      }
    }
    if (best.step_time == Nanoseconds::max()) {
      best.step_time = Nanoseconds{0};
      best.score = 0;
    } else {
      const double s = static_cast<double>(t.bound.value.count()) / static_cast<double>(std::max<std::int64_t>(best.step_time.count(), 1));
      best.score = best.feasible ? std::min(s, 1.0) : infeasible_score_factor * std::min(s, 1.0);
    }
    if (out) *out = std::move(best);
    return best;
  }

  // Interleaves at base `base`, optimizes memory and emulates into inter_/timing_/base_feasible_.
  // False when the interleaving is incomplete, or when the schedule at its smallest latencies
  // already takes longer than `beat` (the base cannot win; see evaluate).
  template <class Transfer>
  bool run_base(BaseStrategy base, const Transfer& transfer, Nanoseconds beat = Nanoseconds::max()) {
    const StepTables& t = *t_;
    const BaseTables& b = base_[static_cast<std::size_t>(base)];
    // Weight parts are deferred at the fastest base only (or at the only base): at the frugal
    // base, deferring them would hold the memory the optimizer buys time back with.
    const bool defer = opt_.defer_weight && (base == BaseStrategy::fastest || !opt_.try_both_bases);
    InterleaveInput in{node_prio_, b.latency, b.bytes, t.activation_budget, b.strategy, t.microbatch_of_node, defer};
    dq_.run(*t.graph, in, transfer, inter_);
    if (!inter_.complete) return false;
    if (beat != Nanoseconds::max()) {
      emulate_schedule(*t.graph, inter_.schedule, std::span<const Nanoseconds>(min_latency_), transfer, timing_, timing_ws_);
      if (timing_.step_time > beat) return false;
    }
    base_feasible_ = inter_.memory_respected;
    lat_.assign(b.latency.begin(), b.latency.end());
    if (opt_.optimize_memory) base_feasible_ = choose_memory_strategies(inter_.schedule);
    emulate_schedule(*t.graph, inter_.schedule, std::span<const Nanoseconds>(lat_), transfer, timing_, timing_ws_);
    return true;
  }

  // A rank's events in schedule order into events_, its pairs numbered locally in forward order
  // (as rank_pairs does) into rank_pair_ and local_of_pair_: a pair is alive from its forward to
  // the node that frees its activations, or only at its forward when none does.
  void collect_rank_events(std::span<const ScheduledStage> list) {
    const StepTables& t = *t_;
    rank_pair_.clear();
    events_.clear();
    for (const ScheduledStage& st : list) {
      const auto v = static_cast<std::size_t>(st.node);
      const auto gp = static_cast<std::size_t>(t.pair_of_node[v]);
      if (t.graph->nodes[v].stage.pass == Pass::forward) {
        const auto lp = static_cast<std::int32_t>(rank_pair_.size());
        local_of_pair_[gp] = lp;
        rank_pair_.push_back(static_cast<std::int32_t>(gp));
        events_.push_back({lp, true});
        if (!pair_releases_[gp]) events_.push_back({lp, false});
      } else if (releases_pair_[v] && local_of_pair_[gp] >= 0) {
        events_.push_back({local_of_pair_[gp], false});
      }
    }
  }
  // Clears local_of_pair_ for the rank collect_rank_events last saw.
  void forget_rank_pairs() {
    for (std::int32_t gp : rank_pair_) local_of_pair_[static_cast<std::size_t>(gp)] = -1;
  }

  // Does every pair of the rank at its fastest candidate fit at every forward start?
  [[nodiscard]] bool fastest_fits(std::size_t r) {
    const std::int64_t budget = t_->activation_budget[r].count();
    alive_.assign(rank_pair_.size(), 0);
    std::int64_t load = 0;
    for (const PairEvent& e : events_) {
      const auto lp = static_cast<std::size_t>(e.pair);
      const std::int64_t b = fastest_bytes_[static_cast<std::size_t>(rank_pair_[lp])];
      if (e.forward) {
        if (!alive_[lp]) {
          alive_[lp] = 1;
          load += b;
        }
        if (load > budget) return false;
      } else if (alive_[lp]) {
        alive_[lp] = 0;
        load -= b;
      }
    }
    return true;
  }

  // The pairs alive at each forward start (alive_points), compressed into point_begin_ and
  // point_pairs_.
  void collect_alive_points() {
    alive_.assign(rank_pair_.size(), 0);
    live_.clear();
    point_begin_.assign(1, 0);
    point_pairs_.clear();
    for (const PairEvent& e : events_) {
      const auto lp = static_cast<std::size_t>(e.pair);
      if (e.forward) {
        if (!alive_[lp]) {
          alive_[lp] = 1;
          live_.push_back(e.pair);
        }
        point_pairs_.insert(point_pairs_.end(), live_.begin(), live_.end());
        point_begin_.push_back(static_cast<std::int32_t>(point_pairs_.size()));
      } else if (alive_[lp]) {
        alive_[lp] = 0;
        live_.erase(std::find(live_.begin(), live_.end(), e.pair));
      }
    }
  }

  // Per rank: choose candidates under the memory limit, write strategies into the schedule and
  // latencies into lat_. Returns false if some rank cannot fit. Equivalent to rank_pairs +
  // alive_points + optimize_rank_memory per rank (test/support), with two shortcuts that do not
  // change the result: the events come from the tables (no key sorting), and a rank on which
  // every pair at its fastest candidate fits at every forward start takes the fastest everywhere
  // without the solver (the solver's greedy start is then already feasible and optimal).
  bool choose_memory_strategies(Schedule& schedule) {
    const StepTables& t = *t_;
    bool ok = true;
    for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
      auto& list = schedule.ranks[r];
      collect_rank_events(list);
      const std::size_t np = rank_pair_.size();
      const bool fastest = fastest_fits(r);
      choice_.assign(np, 0);
      if (fastest) {
        for (std::size_t i = 0; i < np; ++i) choice_[i] = fastest_[static_cast<std::size_t>(t.list_of_pair[static_cast<std::size_t>(rank_pair_[i])])];
      } else {
        collect_alive_points();
        cands_.clear();
        for (std::int32_t gp : rank_pair_) cands_.push_back(list_span_[static_cast<std::size_t>(t.list_of_pair[static_cast<std::size_t>(gp)])]);
        const detail::RankMemoryView view{cands_, point_begin_, point_pairs_, t.static_memory[r], t.capacity};
        bnb_.solve(view, opt_.memory, assignment_);
        if (!assignment_.feasible) ok = false;  // keep the base strategies on this rank
        else choice_ = assignment_.choice;
      }
      if (fastest || assignment_.feasible) apply_choice(list);
      forget_rank_pairs();
    }
    return ok;
  }

  // Writes choice_ (per local pair) into the rank's schedule and its nodes' latencies into lat_.
  void apply_choice(std::vector<ScheduledStage>& list) {
    const StepTables& t = *t_;
    for (auto& st : list) {
      const auto v = static_cast<std::size_t>(st.node);
      const auto p = static_cast<std::size_t>(t.pair_of_node[v]);
      const std::int32_t lp = local_of_pair_[p];
      if (lp < 0) continue;
      const auto k = static_cast<std::size_t>(choice_[static_cast<std::size_t>(lp)]);
      const auto l = static_cast<std::size_t>(t.list_of_pair[p]);
      st.strategy = t.candidate_lists[l][k].strategy;
      lat_[v] = t.pass_latency[l][k][static_cast<std::size_t>(t.graph->nodes[v].stage.pass)];
    }
  }

  const StepTables* t_;
  ScheduleEvaluatorOptions opt_;
  BaseTables base_[2];  ///< indexed by BaseStrategy
  std::vector<std::int64_t> unit_prio_, node_prio_;
  DualQueueInterleaver dq_;
  InterleaveResult inter_;
  std::vector<Nanoseconds> lat_;
  std::vector<Nanoseconds> min_latency_;
  bool base_feasible_ = false;
  // Tables derived once per evaluator (see choose_memory_strategies).
  std::vector<char> pair_releases_;                       ///< per pair: some node frees its activations
  std::vector<char> releases_pair_;                       ///< per node: it frees its pair's activations
  std::vector<std::int64_t> fastest_bytes_;               ///< per pair: bytes of its fastest candidate
  std::vector<std::int32_t> fastest_;                     ///< per list: index of its fastest candidate
  std::vector<std::span<const StrategyCandidate>> list_span_;
  // Per-rank scratch.
  std::vector<std::int32_t> local_of_pair_;  ///< global pair -> local index on the rank being optimized, else -1
  std::vector<std::int32_t> rank_pair_, choice_, live_, point_begin_, point_pairs_;
  std::vector<PairEvent> events_;
  std::vector<char> alive_;
  std::vector<std::span<const StrategyCandidate>> cands_;
  detail::MemoryBranchAndBound bnb_;
  MemoryAssignment assignment_;
  ScheduleTiming timing_;
  ScheduleWorkspace timing_ws_;
};

}  // namespace pipeweaver
