// Host-side overhead per action of the CUDA runtime (CudaRuntimeT) over the fake device API,
// against the host backend's on the same plan in the same run: whole steps of a lowered
// tiny-vlm plan (P = 4 rank threads, or P = 1) with empty stage callbacks and 64-byte items,
// so that all the time goes to the executor and the runtime.
//
// What the fake measures: the runtime's own bookkeeping per call (queue lookup, event pool,
// NCCL grouping, the run-ahead window, the local transport's rendezvous) plus the fake's cost
// of handing each call to a stream worker thread (a mutex and a condition variable), which
// stands in for CUDA's launch and NCCL's enqueue. What it does not: the real API's latencies
// (a kernel launch or cudaEventRecord is about 1 to 5 us, an NCCL launch several us), which
// the GPU suite measures (test/backends/cuda: the "gpu" overhead case). The goal on the real
// API is at most 5 us of host time per action.
// Counters: ns/action = wall time of a step over the plan's actions (all ranks).
#include <benchmark/benchmark.h>

#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/cuda/run_step.hpp>
#include <pipeweaver/host.hpp>

#include "executor_plan.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;

namespace {

using bench_plans::model;

// The executor benchmarks' plan (bench/executor_plan.hpp) on `ranks` ranks, built once.
const pw::Plan& plan_for(int ranks) {
  static std::vector<pw::Plan> plans(9);
  pw::Plan& p = plans[static_cast<std::size_t>(ranks)];
  if (p.ranks.empty()) p = bench_plans::executor_plan(ranks);
  return p;
}

struct Empty {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

std::size_t item64(const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) { return 64; }

void counters(benchmark::State& state, const pw::Plan& plan) {
  std::int64_t actions = 0;
  for (const auto& r : plan.ranks) actions += static_cast<std::int64_t>(r.size());
  state.counters["actions"] = static_cast<double>(actions);
  state.counters["ns/action"] = benchmark::Counter(static_cast<double>(actions) / 1e9,
                                                   benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// The host backend (threads and host channels): the reference of the same run. range(0): ranks.
void BM_HostBackendStep(benchmark::State& state) {
  const pw::Plan& plan = plan_for(static_cast<int>(state.range(0)));
  pw::host::Options options;
  options.executor.sizes.item_output_bytes = item64;
  pw::host::HostExecutor executor(options);
  Empty callbacks;
  for (auto _ : state) executor.run(plan, model(), callbacks);
  counters(state, plan);
}
BENCHMARK(BM_HostBackendStep)->Arg(4)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The CUDA runtime over the fake device. range(0): ranks; range(1): 0 NCCL per-edge grouped,
// 1 NCCL per-edge ungrouped, 2 NCCL single communicator grouped, 3 local device copies.
void BM_CudaRuntimeFakeStep(benchmark::State& state) {
  const pw::Plan& plan = plan_for(static_cast<int>(state.range(0)));
  cu::CudaRunOptions o;
  switch (state.range(1)) {
    case 1: o.runtime.group_transfers = false; break;
    case 2: o.runtime.topology = cu::CommTopology::single; break;
    case 3: o.runtime.transport = cu::Transport::local; break;
    default: break;
  }
  o.executor.sizes.item_output_bytes = item64;
  o.watchdog.enabled = false;
  cu::FakeSystem sys(cu::FakeOptions{.check_races = false});  // the runtime's overhead, not the checker's
  cu::CudaExecutor<cu::FakeDeviceApi> executor([&sys](pw::RankId r) { return cu::FakeDeviceApi(sys, r.value()); }, o);
  Empty callbacks;
  executor.run(plan, model(), callbacks);  // streams, events, arena and communicators made once
  for (auto _ : state) executor.run(plan, model(), callbacks);
  counters(state, plan);
  static const char* const names[] = {"nccl per-edge grouped", "nccl per-edge ungrouped", "nccl single grouped", "local copies"};
  state.SetLabel(names[state.range(1)]);
}
BENCHMARK(BM_CudaRuntimeFakeStep)
    ->Args({4, 0})
    ->Args({4, 1})
    ->Args({4, 2})
    ->Args({4, 3})
    ->Args({1, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
