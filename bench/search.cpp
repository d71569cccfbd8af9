// The schedule search's pieces on a realistic step: vlm-l / vlm-web-mix / h800-tp8-pp8, step 0
// of seed 1 (64 microbatches, P = 8), DIP partition and sub-microbatches, AnalyticCostModel.
//  * the dual-queue interleaver (one call) vs a plain in-order list schedule (Kahn's algorithm
//    with one global priority heap, no queues per rank, no memory accounting);
//  * one MCTS rollout (random completion of an order + interleaving at both base strategies +
//    memory optimization + emulation) vs the same rollout without memory optimization;
//  * the per-rank memory optimizer (branch-and-bound, 5% gap) vs its greedy warm start alone
//    and vs the exact search (gap 0), on the rank with the most memory pressure;
//  * a full search with a fixed iteration budget on 1 and 2 threads (same result on both).
// Counters carry the quality next to the time (step time / lower bound, chosen total time).
#include <benchmark/benchmark.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/emulate/schedule_emulator.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/search/schedule_search.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <queue>
#include <string>
#include <vector>

#include "support/memory_reference.hpp"

namespace pw = pipeweaver;

namespace {

struct Fixture {
  pw::ModelSpec model;
  pw::Setup setup;
  pw::AnalyticCostModel cost;
  pw::Partition partition;
  std::vector<pw::SubMicrobatchSpec> smbs;
  pw::StageGraph graph;
  pw::SegmentUnits units;
  pw::StageCostCache<pw::AnalyticCostModel> cache;
  pw::StepTables tables;
  std::vector<pw::SeedOrder> seeds;
  // Base-strategy inputs of the interleaver (most frugal, as the evaluator's first base).
  std::vector<pw::Nanoseconds> latency;
  std::vector<pw::Bytes> bytes;
  std::vector<std::int64_t> unit_priority, node_priority;
  // The memory problem of the most loaded rank of the frugal interleaving of the first seed.
  std::vector<std::vector<pw::StrategyCandidate>> mem_store;
  pwtest::RankMemoryProblem mem;
  int mem_rank = -1;

  static Fixture& get() {
    static Fixture f;
    return f;
  }

  Fixture()
      : model(pw::io::read_model(dir() + "/models/vlm-l.json")),
        setup(pw::io::read_setup(dir() + "/setups/h800-tp8-pp8.json")),
        cost(model, setup),
        cache(cost, model) {
    const auto dataset = pw::io::read_dataset(dir() + "/datasets/vlm-web-mix.json");
    const pw::Batch batch = pw::sample_step(model, dataset, setup, 1, 0);
    partition = pw::dip_partition(model, setup, cost, batch).partition;
    smbs = pw::split(model, partition, batch);
    graph = pw::build_stage_graph(model, partition, smbs);
    units = pw::segment_units(graph, smbs, partition.ranks);
    tables = pw::build_step_tables(model, setup, partition, smbs, graph, units, cache);
    seeds = pw::seed_orders(model, units, partition.ranks);
    const std::size_t n = graph.nodes.size();
    latency.resize(n);
    bytes.resize(n);
    for (std::size_t v = 0; v < n; ++v) {
      const auto p = static_cast<std::size_t>(tables.pair_of_node[v]);
      const auto l = static_cast<std::size_t>(tables.list_of_pair[p]);
      const std::size_t k = tables.candidate_lists[l].size() - 1;
      const auto pass = graph.nodes[v].stage.pass;
      latency[v] = tables.pass_latency[l][k][static_cast<std::size_t>(pass)];
      bytes[v] = pass == pw::Pass::forward ? tables.candidate_lists[l][k].bytes : pw::Bytes{0};
    }
    pw::priorities_from_sequence(units, seeds[0].sequence, unit_priority, node_priority);
    // The memory problem: the rank whose all-fastest assignment overflows the most.
    pw::DualQueueInterleaver dq;
    const auto res = dq.run(graph, input(), [&](pw::NodeIndex u, pw::NodeIndex v) { return tables.transfer(u, v); });
    std::int64_t worst = std::numeric_limits<std::int64_t>::min();
    for (std::size_t r = 0; r < res.schedule.ranks.size(); ++r) {
      const auto rp = pwtest::rank_pairs(graph, res.schedule.ranks[r]);
      pwtest::RankMemoryProblem pb;
      std::vector<std::vector<pw::StrategyCandidate>> store;
      for (pw::NodeIndex fw : rp.forward) {
        const auto p = static_cast<std::size_t>(tables.pair_of_node[static_cast<std::size_t>(fw)]);
        store.push_back(tables.candidate_lists[static_cast<std::size_t>(tables.list_of_pair[p])]);
      }
      pb.points = pwtest::alive_points(rp.order, static_cast<std::int32_t>(rp.forward.size()));
      std::int64_t over = 0;
      for (const auto& pt : pb.points) {
        std::int64_t load = 0;
        for (auto i : pt) load += store[static_cast<std::size_t>(i)].front().bytes.count();
        over = std::max(over, load - tables.activation_budget[r].count());
      }
      if (over > worst) {
        worst = over;
        mem_rank = static_cast<int>(r);
        mem_store = std::move(store);
        mem = std::move(pb);
        mem.static_bytes = tables.static_memory[r];
        mem.capacity = tables.capacity;
      }
    }
    mem.candidates.clear();
    for (const auto& s : mem_store) mem.candidates.push_back(s);
  }

  [[nodiscard]] pw::InterleaveInput input() const {
    return pw::InterleaveInput{node_priority, latency, bytes, tables.activation_budget, {}, tables.microbatch_of_node};
  }

  static std::string dir() { return PIPEWEAVER_WORKLOADS_DIR; }
};

/// A plain in-order list schedule: Kahn's algorithm taking the highest-priority ready stage of
/// the whole graph each time and appending it to its rank's list.
void plain_list_schedule(const pw::StageGraph& g, std::span<const std::int64_t> priority, pw::Schedule& out,
                         std::vector<std::int32_t>& remaining) {
  const std::size_t n = g.nodes.size();
  int P = 0;
  for (const auto& nd : g.nodes) P = std::max(P, nd.rank.value() + 1);
  out.ranks.assign(static_cast<std::size_t>(P), {});
  remaining.resize(n);
  std::priority_queue<std::pair<std::int64_t, std::int64_t>> ready;  // (priority, -node)
  for (std::size_t v = 0; v < n; ++v) {
    remaining[v] = static_cast<std::int32_t>(g.nodes[v].inputs.size());
    if (remaining[v] == 0) ready.push({priority[v], -static_cast<std::int64_t>(v)});
  }
  while (!ready.empty()) {
    const auto v = static_cast<std::size_t>(-ready.top().second);
    ready.pop();
    out.ranks[g.nodes[v].rank.index()].push_back({static_cast<pw::NodeIndex>(v), {}});
    for (pw::NodeIndex u : g.nodes[v].outputs)
      if (--remaining[static_cast<std::size_t>(u)] == 0)
        ready.push({priority[static_cast<std::size_t>(u)], -static_cast<std::int64_t>(u)});
  }
}

void BM_interleaver(benchmark::State& state) {
  auto& f = Fixture::get();
  pw::DualQueueInterleaver dq;
  dq.prepare(f.graph);
  pw::InterleaveResult res;
  const auto in = f.input();
  auto transfer = [&](pw::NodeIndex u, pw::NodeIndex v) { return f.tables.transfer(u, v); };
  for (auto _ : state) {
    dq.run(f.graph, in, transfer, res);
    benchmark::DoNotOptimize(res.step_time);
  }
  state.counters["stages/s"] = benchmark::Counter(static_cast<double>(f.graph.nodes.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["step/LB"] = static_cast<double>(res.step_time.count()) / static_cast<double>(f.tables.bound.value.count());
  state.counters["fits"] = res.memory_respected ? 1 : 0;
}
BENCHMARK(BM_interleaver)->Unit(benchmark::kMicrosecond);

void BM_plain_list_schedule(benchmark::State& state) {
  auto& f = Fixture::get();
  pw::Schedule sched;
  std::vector<std::int32_t> remaining;
  for (auto _ : state) {
    plain_list_schedule(f.graph, f.node_priority, sched, remaining);
    benchmark::DoNotOptimize(sched.ranks.data());
  }
  // Quality of the plain order at the same latencies (emulated once, outside the timing).
  const auto timing = pw::emulate_schedule(f.graph, sched, std::span<const pw::Nanoseconds>(f.latency),
                                           [&](pw::NodeIndex u, pw::NodeIndex v) { return f.tables.transfer(u, v); });
  state.counters["stages/s"] = benchmark::Counter(static_cast<double>(f.graph.nodes.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["step/LB"] = static_cast<double>(timing.step_time.count()) / static_cast<double>(f.tables.bound.value.count());
}
BENCHMARK(BM_plain_list_schedule)->Unit(benchmark::kMicrosecond);

/// One rollout as MCTS runs it: complete a random order (biased to the incumbent, here the
/// first seed) and score it. Arg 1: with memory optimization (the search's default); 0: without.
void BM_rollout(benchmark::State& state) {
  auto& f = Fixture::get();
  pw::ScheduleEvaluatorOptions eo;
  eo.optimize_memory = state.range(0) != 0;
  pw::ScheduleEvaluator ev(f.tables, eo);
  const pw::UnitDag dag{f.units.successors, f.units.indegree};
  std::vector<std::int32_t> guide(f.units.size());
  for (std::size_t i = 0; i < f.seeds[0].sequence.size(); ++i) guide[static_cast<std::size_t>(f.seeds[0].sequence[i])] = static_cast<std::int32_t>(i);
  std::uint64_t j = 0;
  double sum = 0;
  for (auto _ : state) {
    pw::detail::OrderState st(dag);
    pw::Rng rng = pw::Rng::stream(1, j++);
    st.complete(rng, guide, 0.85);
    sum += ev(st.sequence());
  }
  state.counters["rollouts/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["mean_score"] = sum / static_cast<double>(std::max<std::uint64_t>(j, 1));
}
BENCHMARK(BM_rollout)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

/// The memory optimizer on one rank. Arg 0: 0 = branch-and-bound with the default 5% gap,
/// 1 = greedy warm start only (infinite gap: the search stops right after it), 2 = exact (gap 0,
/// default node limit). Arg 1: 0 = the rank as the search sees it (the most loaded rank of the
/// frugal interleaving); 1 = the same rank with the capacity cut to halfway between its
/// most-frugal and its all-fastest peaks (most pairs must trade time for memory).
void BM_memory_optimizer(benchmark::State& state) {
  auto& f = Fixture::get();
  pwtest::RankMemoryProblem pb = f.mem;
  if (state.range(1) == 1) {
    const pwtest::DemandRange d = pwtest::demand_range(pb);
    pb.capacity = pb.static_bytes + pw::Bytes{(d.frugal.count() + d.fastest.count()) / 2};
  }
  pw::MemoryOptimizerOptions o;
  if (state.range(0) == 1) o.gap = std::numeric_limits<double>::infinity();
  if (state.range(0) == 2) o.gap = 0;
  pw::MemoryAssignment a;
  for (auto _ : state) {
    a = pwtest::optimize_rank_memory(pb, o);
    benchmark::DoNotOptimize(a.total_time);
  }
  std::int64_t fastest_sum = 0;
  for (const auto& c : pb.candidates) fastest_sum += c.front().time.count();
  state.counters["pairs"] = static_cast<double>(pb.candidates.size());
  state.counters["points"] = static_cast<double>(pb.points.size());
  state.counters["extra_ms"] = static_cast<double>(a.total_time.count() - fastest_sum) / 1e6;  // chosen time over all-fastest
  state.counters["bound_extra_ms"] = static_cast<double>(a.lower_bound.count() - fastest_sum) / 1e6;  // the solver's lower bound, same scale
  state.counters["nodes"] = static_cast<double>(a.nodes);
  state.counters["proven"] = a.proven ? 1 : 0;
}
BENCHMARK(BM_memory_optimizer)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMicrosecond);

/// A full search with a fixed iteration budget (Arg 0: iterations; Arg 1: threads). The tables
/// are built inside (warm cache: the planner's steady state across steps).
void BM_search(benchmark::State& state) {
  auto& f = Fixture::get();
  pw::ScheduleSearchOptions o;
  o.mcts.max_iterations = state.range(0);
  o.mcts.threads = static_cast<int>(state.range(1));
  o.mcts.seed = 1;
  pw::ScheduleSearchResult r;
  for (auto _ : state) {
    r = pw::search_schedule(f.model, f.setup, f.partition, f.smbs, f.graph, f.cache, o);
    benchmark::DoNotOptimize(r.step_time);
  }
  state.counters["rollouts"] = static_cast<double>(r.search.rollouts);
  state.counters["step_ms"] = pw::to_ms(r.step_time);
  state.counters["step/LB"] = static_cast<double>(r.step_time.count()) / static_cast<double>(r.bound.value.count());
  state.counters["tree_nodes"] = static_cast<double>(r.search.tree_nodes);
}
BENCHMARK(BM_search)->Args({16, 1})->Args({16, 2})->Args({64, 1})->Args({64, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
