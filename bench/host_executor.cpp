// The host executor's per-action overhead: whole steps of a lowered tiny-vlm plan
// (P = 4 rank threads, or P = 1) with empty stage callbacks, so that all the time goes to the
// executor (compiling the rank's list, pooling buffers) and the runtime (thread start and
// join, channel copies and hand-offs between rank threads).
// Counters: actions/s = plan actions (all ranks) executed per second of wall time;
// ns/action = its inverse. "prepare" is the compilation of one rank's list alone.
#include <benchmark/benchmark.h>

#include <pipeweaver/execute.hpp>
#include <pipeweaver/host.hpp>

#include "backends/host/plans.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

const pw::ModelSpec& model() {
  static const pw::ModelSpec m = test_plans::tiny_vlm();
  return m;
}

// 16 microbatches of 4 samples (two images each); ViT 4 chunks, LLM 8 chunks (one layer each,
// chunk c on rank c mod P), one item per sub-microbatch: a few thousand actions. Built as the
// host backend's tests build theirs (test/backends/host/plans.hpp: dual-queue order, unit costs).
pw::Plan make_plan(int ranks) {
  pw::Batch batch;
  for (int mb = 0; mb < 16; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 4; ++s) m.samples.push_back(pw::Sample{12, {pw::SampleItems{"image", {16, 8}}}});
    batch.microbatches.push_back(m);
  }
  const auto spread = [ranks](int chunks) {
    std::vector<int> r;
    for (int c = 0; c < chunks; ++c) r.push_back(c % ranks);
    return r;
  };
  const pw::Partition partition{"dip", ranks,
                                {test_plans::placement(std::vector<int>(4, 1), spread(4), 1),
                                 test_plans::placement(std::vector<int>(8, 1), spread(8), 1)}};
  return test_plans::make_plan(model(), partition, batch);
}

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
