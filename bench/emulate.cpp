// Emulation throughput (actions per second) on a realistic step, and the stage-cost cache's
// effect: vlm-l / vlm-web-mix / h800-tp8-pp8 (64 microbatches per step, P = 8), every module in
// 8 even chunks, encoder sub-microbatches of 8 images, a greedy list schedule, lowered to a Plan.
#include <benchmark/benchmark.h>

#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>

#include <ctime>
#include <string>
#include <vector>

#include "emulate_support.hpp"

namespace pw = pipeweaver;

namespace {

struct Fixture {
  pw::ModelSpec model;
  pw::DatasetSpec dataset;
  pw::Setup setup;
  pw::AnalyticCostModel cost;
  std::vector<bench::Step> steps;

  static const Fixture& get() {
    static const Fixture f = [] {
      const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
      auto model = pw::io::read_model(dir + "/models/vlm-l.json");
      auto dataset = pw::io::read_dataset(dir + "/datasets/vlm-web-mix.json");
      auto setup = pw::io::read_setup(dir + "/setups/h800-tp8-pp8.json");
      pw::AnalyticCostModel cost(model, setup);
      Fixture fx{model, dataset, setup, cost, {}};
      for (int s = 0; s < 4; ++s) fx.steps.push_back(bench::make_step(fx.model, fx.dataset, fx.setup, fx.cost, 1, s));
      return fx;
    }();
    return f;
  }
};

void report(benchmark::State& state, std::int64_t actions_per_iteration, std::int64_t stages_per_iteration) {
  state.counters["actions/s"] =
      benchmark::Counter(static_cast<double>(actions_per_iteration), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["stages/s"] =
      benchmark::Counter(static_cast<double>(stages_per_iteration), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["actions"] = static_cast<double>(actions_per_iteration);
}

std::int64_t stage_count(const pw::Plan& p) {
  std::int64_t n = 0;
  for (const auto& r : p.ranks)
    for (const auto& a : r) n += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a);
  return n;
}

/// One step's plan; the cache is kept across iterations (the planner's steady state: every
/// rollout and later step finds the shapes it has seen).
void BM_emulate_cache_warm(benchmark::State& state) {
  const auto& f = Fixture::get();
  const auto& plan = f.steps[0].plan;
  pw::StageCostCache<pw::AnalyticCostModel> cache(f.cost, f.model);
  (void)pw::emulate(plan, f.model, f.setup, cache);
  for (auto _ : state) benchmark::DoNotOptimize(pw::emulate(plan, f.model, f.setup, cache).step_time);
  report(state, static_cast<std::int64_t>(pw::emulate(plan, f.model, f.setup, cache).actions), stage_count(plan));
  state.counters["hit_rate"] = cache.stats().hit_rate();
}
BENCHMARK(BM_emulate_cache_warm)->Unit(benchmark::kMicrosecond);

/// A fresh cache per call: spatial reuse within the step only.
void BM_emulate_cache_fresh(benchmark::State& state) {
  const auto& f = Fixture::get();
  const auto& plan = f.steps[0].plan;
  pw::StageCostCacheStats stats;
  for (auto _ : state) {
    const auto r = pw::emulate(plan, f.model, f.setup, f.cost);
    stats = r.cache;
    benchmark::DoNotOptimize(r.step_time);
  }
  report(state, static_cast<std::int64_t>(pw::emulate(plan, f.model, f.setup, f.cost).actions), stage_count(plan));
  state.counters["hit_rate"] = stats.hit_rate();
}
BENCHMARK(BM_emulate_cache_fresh)->Unit(benchmark::kMicrosecond);

/// No cache: every stage evaluates the analytic model.
void BM_emulate_cache_off(benchmark::State& state) {
  const auto& f = Fixture::get();
  const auto& plan = f.steps[0].plan;
  const pw::EmulateOptions off{.record_timeline = false, .cache = {.enabled = false}};
  for (auto _ : state) benchmark::DoNotOptimize(pw::emulate(plan, f.model, f.setup, f.cost, off).step_time);
  report(state, static_cast<std::int64_t>(pw::emulate(plan, f.model, f.setup, f.cost, off).actions), stage_count(plan));
}
BENCHMARK(BM_emulate_cache_off)->Unit(benchmark::kMicrosecond);

/// Same run, cache on vs off: each iteration emulates the 4 steps with a cache shared across
/// steps and iterations (on), and again without a cache (off). Reports off/on time ratios for
/// the warm shared cache and for a fresh per-step cache, and the hit rates.
void BM_cache_effect(benchmark::State& state) {
  const auto& f = Fixture::get();
  // Thread CPU time: the build machine is shared, wall time would measure the neighbors.
  auto now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  };
  pw::StageCostCache<pw::AnalyticCostModel> shared(f.cost, f.model);
  const pw::EmulateOptions off{.record_timeline = false, .cache = {.enabled = false}};
  double t_warm = 0, t_fresh = 0, t_off = 0;
  std::uint64_t fresh_hits = 0, fresh_lookups = 0;
  for (auto _ : state) {
    for (const auto& st : f.steps) {
      const double t0 = now();
      benchmark::DoNotOptimize(pw::emulate(st.plan, f.model, f.setup, shared).step_time);
      const double t1 = now();
      const auto fresh = pw::emulate(st.plan, f.model, f.setup, f.cost);
      benchmark::DoNotOptimize(fresh.step_time);
      const double t2 = now();
      benchmark::DoNotOptimize(pw::emulate(st.plan, f.model, f.setup, f.cost, off).step_time);
      const double t3 = now();
      t_warm += t1 - t0;
      t_fresh += t2 - t1;
      t_off += t3 - t2;
      fresh_hits += fresh.cache.hits;
      fresh_lookups += fresh.cache.hits + fresh.cache.misses;
    }
  }
  state.counters["off/warm"] = t_off / t_warm;
  state.counters["off/fresh"] = t_off / t_fresh;
  state.counters["warm_hit_rate"] = shared.stats().hit_rate();
  state.counters["fresh_hit_rate"] = fresh_lookups ? static_cast<double>(fresh_hits) / static_cast<double>(fresh_lookups) : 0.0;
  state.counters["entries"] = static_cast<double>(shared.stats().entries);
}
BENCHMARK(BM_cache_effect)->Unit(benchmark::kMillisecond);

/// The search's fast path on the same step: precomputed stage latencies and edge transfer times.
void BM_emulate_schedule_fast_path(benchmark::State& state) {
  const auto& f = Fixture::get();
  const auto& st = f.steps[0];
  pw::StageCostCache<pw::AnalyticCostModel> cache(f.cost, f.model);
  const auto lat = pw::node_latencies(st.graph, st.schedule, st.partition, st.smbs, cache);
  std::vector<std::vector<pw::Nanoseconds>> edge(st.graph.size());
  std::int64_t edges = 0;
  for (std::size_t n = 0; n < st.graph.size(); ++n) {
    for (auto o : st.graph.nodes[n].outputs)
      edge[n].push_back(f.cost.transfer_time(
          pw::edge_bytes(f.cost, st.partition, st.smbs, st.graph.nodes[n], st.graph.nodes[static_cast<std::size_t>(o)])));
    edges += static_cast<std::int64_t>(st.graph.nodes[n].outputs.size());
  }
  auto transfer = [&](pw::NodeIndex p, pw::NodeIndex n) {
    const auto& outs = st.graph.nodes[static_cast<std::size_t>(p)].outputs;
    for (std::size_t i = 0; i < outs.size(); ++i)
      if (outs[i] == n) return edge[static_cast<std::size_t>(p)][i];
    return pw::Nanoseconds{0};
  };
  pw::ScheduleTiming timing;
  pw::ScheduleWorkspace ws;
  for (auto _ : state) {
    pw::emulate_schedule(st.graph, st.schedule, lat, transfer, timing, ws);
    benchmark::DoNotOptimize(timing.step_time);
  }
  const auto full = pw::emulate(st.plan, f.model, f.setup, f.cost);
  if (full.step_time != timing.step_time) state.SkipWithError("fast path and emulate() disagree");
  state.counters["stages/s"] = benchmark::Counter(static_cast<double>(st.graph.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["stages"] = static_cast<double>(st.graph.size());
  state.counters["edges"] = static_cast<double>(edges);
}
BENCHMARK(BM_emulate_schedule_fast_path)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
