// Training the small CUDA MLP model (mlp_model.hpp) on tiny-vlm through planned pipeline steps.
// Built twice: mpi_train (with MPI, where it is found) and cuda_train (without MPI: --local only,
// so that a machine without Open MPI's libraries can run the single-process mode).
//
//   mpirun -np 4 mpi_train [--steps N]    one pipeline rank per MPI process, each on the GPU
//                                          local rank mod device count; NCCL per-edge
//                                          communicators; NCCL ids and plans over MPI_Bcast
//   mpi_train --local [--steps N]          one process, one thread per rank, device-to-device
//                                          copies between ranks (one GPU runs them all)
//
// PIPEWEAVER_WORKLOADS (environment) overrides the workloads folder compiled in.
//
// (As root: mpirun --allow-run-as-root --oversubscribe.) Rank 0 plans each step (Planner,
// iteration budget) and broadcasts the plan; every rank runs its part with the generic
// Executor over its CudaRuntime, applies SGD to the layers it holds, and the step's loss is
// summed over the ranks. A failure on one rank aborts its communicators; the others stop at
// their own deadline (RuntimeOptions::timeout) and every process exits non-zero.
#ifdef PIPEWEAVER_WITH_MPI
#include <mpi.h>
#endif

#include <pipeweaver/cuda.hpp>
#include <pipeweaver/execute/executor.hpp>
#include <pipeweaver/execute/plan_broadcast.hpp>

#include "mlp_model.hpp"
#include "mlp_plans.hpp"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;

namespace {

constexpr int hidden = 16;
constexpr float loss_scale = 1e-2f;
constexpr float learning_rate = 0.5f;
constexpr int max_rows = 4096;

/// SGD on the layers of `rank`'s chunks.
void update(mlp_cuda::Model& model, const pw::Plan& plan, int rank, void* stream) {
  for (std::size_t m = 0; m < plan.partition.modules.size(); ++m)
    for (const auto& chunk : plan.partition.modules[m].chunks)
      if (chunk.rank.value() == rank) model.sgd(static_cast<int>(m), chunk.first_layer, chunk.layer_count, learning_rate, stream);
}

#ifdef PIPEWEAVER_WITH_MPI
/// BroadcastFunction over MPI_Bcast on MPI_COMM_WORLD: the size, then the bytes.
struct MpiBroadcast {
  void operator()(std::vector<std::byte>& bytes, pw::RankId rank, pw::RankId root) const {
    unsigned long long n = bytes.size();
    MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root.value(), MPI_COMM_WORLD);
    if (n > static_cast<unsigned long long>(INT_MAX))
      throw pw::input_error("a broadcast of " + std::to_string(n) + " bytes", {.expected = "at most INT_MAX bytes (one MPI_Bcast)"});
    if (rank != root) bytes.resize(static_cast<std::size_t>(n));
    MPI_Bcast(bytes.data(), static_cast<int>(n), MPI_BYTE, root.value(), MPI_COMM_WORLD);
  }
};
static_assert(pw::BroadcastFunction<MpiBroadcast>);

int run_mpi(const mlp_cuda::Workload& w, int steps) {
  int me = 0, P = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &local);
  int local_rank = 0;
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);
  if (P != w.setup.pipeline_stages)
    throw pw::input_error("mpirun with " + std::to_string(P) + " processes", {.expected = std::to_string(w.setup.pipeline_stages) + " processes, one per pipeline rank"});
  const int device = local_rank % cu::CudaApi::device_count();
  cu::RuntimeOptions ro;
  ro.timeout = std::chrono::seconds(60);
  cu::World<cu::CudaApi> world(P, ro);
  cu::Watchdog<cu::CudaApi> watchdog(world);
  cu::CudaRuntime rt(world, pw::RankId{me}, cu::CudaApi{device});
  MpiBroadcast bc;
  cu::nccl_bootstrap(rt, bc);
  mlp_cuda::Model model(w.model, hidden, 42);
  mlp_cuda::Callbacks callbacks(model, P, max_rows, loss_scale);
  pw::ExecutorOptions eo;
  eo.sizes = callbacks.sizes();
  pw::Executor<cu::CudaRuntime> executor(rt, eo);
  const pw::AnalyticCostModel cost(w.model, w.setup);
  std::optional<pw::Planner<pw::AnalyticCostModel>> planner;
  if (me == 0) planner.emplace(w.model, w.setup, cost, std::vector<pw::Batch>{mlp_cuda::make_batch(1)}, mlp_cuda::small_search());
  for (int step = 0; step < steps; ++step) {
    pw::Plan planned;
    if (me == 0) planned = planner->plan(mlp_cuda::make_batch(static_cast<std::uint64_t>(step) + 1)).plan;
    const pw::Plan plan = pw::broadcast_plan(bc, pw::RankId{me}, pw::RankId{0}, me == 0 ? &planned : nullptr);
    model.zero_grad();
    callbacks.reset_loss();
    world.reset();
    {
      auto guard = rt.step(plan.transfers.size());
      executor.prepare(plan, w.model);
      executor.run(callbacks, step);
    }
    update(model, plan, me, rt.native_handle(rt.compute_queue()));
    double loss = callbacks.loss(), total = 0;  // loss() synchronizes the device
    MPI_Reduce(&loss, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (me == 0) std::printf("step %d (%s): loss %.6f\n", step, plan.name.c_str(), total);
  }
  return 0;
}

#endif

int run_local(const mlp_cuda::Workload& w, int steps) {
  const int P = w.setup.pipeline_stages;
  cu::CudaRunOptions o;
  o.runtime.transport = cu::Transport::local;
  o.runtime.timeout = std::chrono::seconds(60);
  mlp_cuda::Model model(w.model, hidden, 42);
  mlp_cuda::Callbacks callbacks(model, P, max_rows, loss_scale);
  o.executor.sizes = callbacks.sizes();
  cu::CudaExecutor<cu::CudaApi> executor([](pw::RankId) { return cu::CudaApi{0}; }, o);
  const pw::AnalyticCostModel cost(w.model, w.setup);
  const pw::Planner<pw::AnalyticCostModel> planner(w.model, w.setup, cost, std::vector<pw::Batch>{mlp_cuda::make_batch(1)}, mlp_cuda::small_search());
  for (int step = 0; step < steps; ++step) {
    const pw::Plan plan = planner.plan(mlp_cuda::make_batch(static_cast<std::uint64_t>(step) + 1)).plan;
    model.zero_grad();
    callbacks.reset_loss();
    executor.run(plan, w.model, callbacks);
    for (int r = 0; r < P; ++r) update(model, plan, r, executor.runtime(pw::RankId{r}).native_handle(executor.runtime(pw::RankId{r}).compute_queue()));
    std::printf("step %d (%s): loss %.6f\n", step, plan.name.c_str(), callbacks.loss());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool local = false;
  int steps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--local") == 0) local = true;
    else if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--local] [--steps N]\n", argv[0]);
      return 2;
    }
  }
  const char* env = std::getenv("PIPEWEAVER_WORKLOADS");  // another checkout than the build's
  const auto w = mlp_cuda::tiny_vlm(env != nullptr && *env != '\0' ? std::string(env) : std::string(PIPEWEAVER_EXAMPLE_WORKLOADS));
  if (local) {
    try {
      return run_local(w, steps);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpi_train --local: %s\n", e.what());
      return 1;
    }
  }
#ifndef PIPEWEAVER_WITH_MPI
  std::fprintf(stderr, "%s was built without MPI: run it with --local, or use mpi_train\n", argv[0]);
  return 2;
#else
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    rc = run_mpi(w, steps);
  } catch (const std::exception& e) {
    int me = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    std::fprintf(stderr, "mpi_train rank %d: %s\n", me, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);  // the other processes may wait in a collective
  }
  MPI_Finalize();
  return rc;
#endif
}
