// The host executor's per-action overhead (issue 5): whole steps of a lowered tiny-vlm plan
// (P = 4 rank threads, or P = 1) with empty stage callbacks, so that all the time goes to the
// executor (compiling the rank's list, pooling buffers) and the runtime (thread start and
// join, channel copies and hand-offs between rank threads).
// Counters: actions/s = plan actions (all ranks) executed per second of wall time;
// ns/action = its inverse. "prepare" is the compilation of one rank's list alone.
#include <benchmark/benchmark.h>

#include <pipeweaver/execute.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/dual_queue_interleaver.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

struct UnitCost {  // 1 ms stages, 4 KiB messages: only the plan's shape matters here
  template <class S, class M>
  pw::Nanoseconds latency(const S&, const M&, const pw::MemoryStrategy&) const { return pw::from_ms(1); }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const { return pw::Bytes{0}; }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const { return pw::Bytes{4096}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return pw::Nanoseconds{0}; }
};

const pw::ModelSpec& model() {
  static const pw::ModelSpec m = pw::read_model(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/models/tiny-vlm.json");
  return m;
}

pw::ModulePlacement placement(int chunks, int ranks, std::int64_t items) {
  pw::ModulePlacement p;
  const int layers_each = (chunks == 4 ? 4 : 8) / chunks;
  for (int c = 0; c < chunks; ++c) p.chunks.push_back(pw::Chunk{c * layers_each, layers_each, pw::RankId{c % ranks}});
  p.sub_microbatch_items = items;
  return p;
}

// 16 microbatches of 4 samples (two images each); ViT 4 chunks, LLM 8 chunks, one item per
// sub-microbatch: a few thousand actions.
pw::Plan make_plan(int ranks) {
  pw::Batch batch;
  for (int mb = 0; mb < 16; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 4; ++s) m.samples.push_back(pw::Sample{12, {pw::SampleItems{"image", {16, 8}}}});
    batch.microbatches.push_back(m);
  }
  const pw::Partition partition{"dip", ranks, {placement(4, ranks, 1), placement(8, ranks, 1)}};
  auto smbs = pw::split(model(), partition, batch);
  const auto graph = pw::build_stage_graph(model(), partition, smbs);
  std::vector<std::int64_t> priority(graph.size());
  std::vector<pw::Nanoseconds> latency(graph.size(), pw::from_ms(1));
  for (std::size_t n = 0; n < graph.size(); ++n)
    priority[n] = -static_cast<std::int64_t>(smbs[graph.nodes[n].stage.sub_microbatch.index()].microbatch().value());
  pw::InterleaveInput in;
  in.priority = priority;
  in.latency = latency;
  pw::DualQueueInterleaver interleaver;
  const auto result = interleaver.run(graph, in, [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; });
  return pw::lower(model(), partition, smbs, graph, result.schedule, UnitCost{}, "dip", "cpu-pp4");
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
