// The host executor's per-action overhead: whole steps of a lowered tiny-vlm plan
// (P = 4 rank threads, or P = 1) with empty stage callbacks, so that all the time goes to the
// executor (compiling the rank's list, pooling buffers) and the runtime (thread start and
// join, channel copies and hand-offs between rank threads).
// Counters: actions/s = plan actions (all ranks) executed per second of wall time;
// ns/action = its inverse. "prepare" is the compilation of one rank's list alone.
#include <benchmark/benchmark.h>

#include <pipeweaver/execute.hpp>
#include <pipeweaver/host.hpp>

#include "executor_plan.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

using bench_plans::model;

pw::Plan make_plan(int ranks) { return bench_plans::executor_plan(ranks); }

struct Empty {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

std::int64_t action_count(const pw::Plan& plan) {
  std::int64_t n = 0;
  for (const auto& r : plan.ranks) n += static_cast<std::int64_t>(r.size());
  return n;
}

// range(0): ranks; range(1): bytes per item of every stage output (0: the plan's 4 KiB).
void BM_HostStep(benchmark::State& state) {
  const pw::Plan plan = make_plan(static_cast<int>(state.range(0)));
  const auto item_bytes = static_cast<std::size_t>(state.range(1));
  pw::host::Options options;
  if (item_bytes > 0)
    options.executor.sizes.item_output_bytes = [item_bytes](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) {
      return item_bytes;
    };
  pw::host::HostExecutor executor(options);
  Empty callbacks;
  for (auto _ : state) executor.run(plan, model(), callbacks);
  const auto actions = action_count(plan);
  state.counters["actions"] = static_cast<double>(actions);
  state.counters["transfers"] = static_cast<double>(plan.transfers.size());
  state.counters["actions/s"] = benchmark::Counter(static_cast<double>(actions), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ns/action"] = benchmark::Counter(static_cast<double>(actions) / 1e9,
                                                   benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_HostStep)->Args({4, 0})->Args({4, 64})->Args({4, 65536})->Args({1, 0})->Unit(benchmark::kMillisecond)->UseRealTime();

// Compilation of rank 0's list (prepare) alone, on one thread.
void BM_Prepare(benchmark::State& state) {
  const pw::Plan plan = make_plan(4);
  pw::host::World world(4, {});
  pw::host::HostRuntime rt(world, pw::RankId{0});
  pw::Executor<pw::host::HostRuntime> ex(rt);
  for (auto _ : state) ex.prepare(plan, model());
  const auto actions = static_cast<double>(plan.ranks[0].size());
  state.counters["actions/s"] = benchmark::Counter(actions, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ns/action"] = benchmark::Counter(actions / 1e9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Prepare)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
