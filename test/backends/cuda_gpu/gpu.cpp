// The GPU suite (CTest label "gpu"; the test preset and CI exclude it): the CUDA runtime on a
// real device. Every case fails loudly when there is no usable GPU (never skips): run it with
// backends/cuda/gpu_suite.sh on a machine with one.
//  * smoke: the device, its SMs and stream priorities, the CUDA and NCCL versions;
//  * gradients: the small CUDA MLP model (examples/cuda) pipelined over 4 rank threads on one
//    GPU (local transport) equals the sequential single-stream step within 1e-5 relative, for
//    the planner's (dip) plan and every baseline;
//  * nccl: the same over NCCL per-edge communicators where the machine has a GPU per rank;
//    otherwise a one-rank communicator smoke (non-blocking init, grouped self send and
//    receive, revoke, abort) and a message saying cross-rank NCCL is not testable here;
//  * faults: a throwing callback and a dropped transfer end every rank within the timeout;
//  * overhead: host time per action with empty callbacks (reported, never asserted);
//  * overlap: spin-kernel stages with small and large transfers, timed with CUDA events.
#include <doctest/doctest.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <pipeweaver/cuda.hpp>

#include "mlp_model.hpp"
#include "mlp_plans.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using namespace std::chrono_literals;

namespace {

constexpr int hidden = 16;
constexpr float loss_scale = 1e-2f;

// The workloads folder: PIPEWEAVER_WORKLOADS from the environment when set (the suite's
// binaries run on another machine, in another checkout), else the build's source tree.
const mlp_cuda::Workload& workload() {
  static const mlp_cuda::Workload w = [] {
    const char* env = std::getenv("PIPEWEAVER_WORKLOADS");
    return mlp_cuda::tiny_vlm(env != nullptr && *env != '\0' ? std::string(env) : std::string(PIPEWEAVER_WORKLOADS_DIR));
  }();
  return w;
}

int devices() {
  const int n = cu::CudaApi::device_count();  // throws Error(infeasible) without a driver
  REQUIRE_MESSAGE(n >= 1, "no CUDA device: the GPU suite needs one");
  return n;
}

std::string version(int code) {
  return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." + std::to_string(code % 100);
}

cu::CudaExecutor<cu::CudaApi>::ApiFactory on_devices(int count) {
  return [count](pw::RankId r) { return cu::CudaApi{r.value() % count}; };
}

/// Gradients of `plan` pipelined (all ranks on the devices of `make_api`) against the
/// sequential step on one stream.
void check_gradients(const pw::Plan& plan, cu::CudaRunOptions o, const cu::CudaExecutor<cu::CudaApi>::ApiFactory& make_api) {
  const auto& w = workload();
  CHECK(cudaSetDevice(0) == cudaSuccess);
  mlp_cuda::Model seq(w.model, hidden, 42), pipe(w.model, hidden, 42);
  cudaStream_t s{};
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  const double loss_seq = mlp_cuda::reference_step(seq, plan, loss_scale, s);
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
  mlp_cuda::Callbacks cb(pipe, plan.rank_count(), 4096, loss_scale);
  o.executor.sizes = cb.sizes();
  o.runtime.timeout = 30s;
  cu::CudaExecutor<cu::CudaApi> ex(make_api, o);
  ex.run(plan, w.model, cb);
  const auto g_seq = seq.gradients(), g_pipe = pipe.gradients();
  double norm = 0;
  for (float v : g_seq) norm = std::max(norm, static_cast<double>(v < 0 ? -v : v));
  REQUIRE(norm > 0);
  const double err = mlp_cuda::max_relative_difference(g_seq, g_pipe);
  MESSAGE("plan " << plan.name << ": max relative gradient error " << err << ", loss " << cb.loss() << " vs " << loss_seq);
  CHECK(err <= 1e-5);
  CHECK(cb.loss() == doctest::Approx(loss_seq).epsilon(1e-5));
}

struct Empty {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

/// Stages that spin `ns` on the device, each timed with a pair of CUDA timing events.
struct Spin {
  std::uint64_t ns = 100'000;
  std::vector<std::vector<std::pair<cudaEvent_t, cudaEvent_t>>> marks;  // per rank
  explicit Spin(int ranks) : marks(static_cast<std::size_t>(ranks)) {}
  ~Spin() {
    for (auto& r : marks)
      for (auto& [a, b] : r) {
        (void)cudaEventDestroy(a);
        (void)cudaEventDestroy(b);
      }
  }
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO& io) { stage(io); }
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO& io) { stage(io); }
  void stage(pw::StageIO& io) {
    auto s = static_cast<cudaStream_t>(io.queue);
    cudaEvent_t a{}, b{};
    cu::check_cuda(cudaEventCreate(&a), "cudaEventCreate");
    cu::check_cuda(cudaEventCreate(&b), "cudaEventCreate");
    cu::check_cuda(cudaEventRecord(a, s), "cudaEventRecord");
    cu::check_cuda(cu::builtin_kernels().spin(ns, s), "spin");
    cu::check_cuda(cudaEventRecord(b, s), "cudaEventRecord");
    marks[io.rank.index()].emplace_back(a, b);
  }
  /// Busy time of the compute streams (sum over ranks) and the span from the first stage's
  /// start to the last stage's end, in ms.
  [[nodiscard]] std::pair<double, double> busy_and_span() const {
    double busy = 0, first = 1e300, last = -1e300;
    const cudaEvent_t origin = marks[0].front().first;
    for (const auto& r : marks)
      for (const auto& [a, b] : r) {
        float t0 = 0, t1 = 0, d = 0;
        cu::check_cuda(cudaEventElapsedTime(&t0, origin, a), "cudaEventElapsedTime");
        cu::check_cuda(cudaEventElapsedTime(&t1, origin, b), "cudaEventElapsedTime");
        cu::check_cuda(cudaEventElapsedTime(&d, a, b), "cudaEventElapsedTime");
        busy += d;
        first = std::min(first, static_cast<double>(t0));
        last = std::max(last, static_cast<double>(t1));
      }
    return {busy, last - first};
  }
};

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: smoke: device and SMs and stream priorities and the CUDA and NCCL versions") {
    const int n = devices();
    for (int d = 0; d < n; ++d) {
      cudaDeviceProp p{};
      REQUIRE(cudaGetDeviceProperties(&p, d) == cudaSuccess);
      MESSAGE("device " << d << ": " << p.name << ", " << p.multiProcessorCount << " SMs, sm_" << p.major << p.minor << ", "
                        << p.totalGlobalMem / (1 << 20) << " MiB");
      CHECK(p.multiProcessorCount > 0);
    }
    int least = 0, greatest = 0, driver = 0, runtime = 0;
    REQUIRE(cudaSetDevice(0) == cudaSuccess);
    REQUIRE(cudaDeviceGetStreamPriorityRange(&least, &greatest) == cudaSuccess);
    REQUIRE(cudaDriverGetVersion(&driver) == cudaSuccess);
    REQUIRE(cudaRuntimeGetVersion(&runtime) == cudaSuccess);
    MESSAGE("stream priorities " << least << " (least) to " << greatest << " (greatest); CUDA driver " << driver << ", runtime " << runtime);
    CHECK(greatest <= least);
    const int nccl = cu::CudaApi::nccl_version();
    MESSAGE("NCCL library " << version(nccl) << ", header " << version(NCCL_VERSION_CODE));
    CHECK(nccl >= 22800);  // ncclCommRevoke and non-blocking init as the backend uses them
  }

  TEST_CASE("gpu: gradients: the CUDA MLP model pipelined on one GPU equals the sequential step (dip and every baseline)") {
    (void)devices();
    const auto plans = mlp_cuda::all_plans(workload(), mlp_cuda::make_batch(11));
    REQUIRE(plans.size() == 1 + pw::baseline_names.size());
    cu::CudaRunOptions o;
    o.runtime.transport = cu::Transport::local;
    for (const auto& [name, plan] : plans) {
      CAPTURE(name);
      check_gradients(plan, o, [](pw::RankId) { return cu::CudaApi{0}; });
    }
  }

  TEST_CASE("gpu: nccl: transfers over NCCL where the machine allows them (else a one-rank smoke)") {
    const int n = devices();
    const int nccl = cu::CudaApi::nccl_version();
    if (n >= 4) {
      const auto plans = mlp_cuda::all_plans(workload(), mlp_cuda::make_batch(12));
      for (const auto topology : {cu::CommTopology::per_edge, cu::CommTopology::single}) {
        cu::CudaRunOptions o;
        o.runtime.transport = cu::Transport::nccl;
        o.runtime.topology = topology;
        check_gradients(plans.front().second, o, on_devices(n));
      }
      return;
    }
    MESSAGE("cross-rank NCCL point-to-point is not testable here: " << n << " GPU(s) for 4 ranks, NCCL " << version(nccl)
                                                                    << " (two ranks on one GPU need NCCL >= 2.30 and NCCL_MULTI_RANK_GPU_ENABLE=1)");
    cu::CudaApi api{0};
    api.activate();
    const cu::UniqueId id = api.unique_id();
    auto comm = api.comm_init(id, 1, 0);
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (api.comm_status(comm).state == cu::CommState::in_progress) REQUIRE(std::chrono::steady_clock::now() < until);
    REQUIRE(api.comm_status(comm).state == cu::CommState::ready);
    const auto s = api.stream_create(true);
    std::byte* buf = api.alloc(2 * 4096);
    std::vector<unsigned char> host(4096, 0x5a), back(4096, 0);
    REQUIRE(cudaMemcpy(buf, host.data(), 4096, cudaMemcpyHostToDevice) == cudaSuccess);
    api.group_start();
    api.send(buf, 4096, 0, comm, s);
    api.recv(buf + 4096, 4096, 0, comm, s);
    api.group_end();
    const auto e = api.event_create();
    api.event_record(e, s);
    while (!api.event_done(e)) REQUIRE(std::chrono::steady_clock::now() < until);
    REQUIRE(cudaMemcpy(back.data(), buf + 4096, 4096, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(back == host);  // the self send/receive moved the bytes
    api.comm_revoke(comm);
    while (api.comm_status(comm).state == cu::CommState::in_progress) REQUIRE(std::chrono::steady_clock::now() < until);
    api.comm_abort(comm);
    api.event_destroy(e);
    api.release(buf);
    api.stream_destroy(s);
  }

  TEST_CASE("gpu: faults: a throwing callback and a lost message end every rank within the timeout") {
    (void)devices();
    const auto& w = workload();
    const auto plans = mlp_cuda::all_plans(w, mlp_cuda::make_batch(13));
    const pw::Plan& plan = plans.front().second;
    SUBCASE("a callback throws on rank 2") {
      struct Thrower {
        void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
        void backward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) {
          if (s.rank().value() == 2) throw std::runtime_error("injected failure");
        }
      } cb;
      cu::CudaRunOptions o;
      o.runtime.transport = cu::Transport::local;
      o.runtime.timeout = 10s;
      o.runtime.abort_grace = 2s;
      cu::CudaExecutor<cu::CudaApi> ex([](pw::RankId) { return cu::CudaApi{0}; }, o);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_THROWS_AS(ex.run(plan, w.model, cb), pw::Error);
      CHECK(std::chrono::steady_clock::now() - t0 < 10s);
      for (int r = 0; r < 4; ++r) {
        CAPTURE(r);
        const auto& out = ex.outcomes()[static_cast<std::size_t>(r)];
        CHECK(!out.ok);
        CHECK(out.kind == (r == 2 ? pw::ErrorKind::execution : pw::ErrorKind::cancelled));
      }
    }
    SUBCASE("transfer 0 is dropped") {
      Empty cb;
      cu::CudaRunOptions o;
      o.runtime.transport = cu::Transport::local;
      o.runtime.timeout = 3s;
      o.runtime.abort_grace = 2s;
      o.runtime.drop_transfer = pw::TransferId{0};
      cu::CudaExecutor<cu::CudaApi> ex([](pw::RankId) { return cu::CudaApi{0}; }, o);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_THROWS_AS(ex.run(plan, w.model, cb), pw::Error);
      CHECK(std::chrono::steady_clock::now() - t0 < 3s + 2 * 2s + 2s);
      int executions = 0;
      for (const auto& out : ex.outcomes()) {
        CHECK(!out.ok);
        executions += out.kind == pw::ErrorKind::execution ? 1 : 0;
      }
      CHECK(executions >= 1);
    }
  }

  TEST_CASE("gpu: overhead: host time per action of the runtime with empty callbacks") {
    (void)devices();
    const auto& w = workload();
    const auto plans = mlp_cuda::all_plans(w, mlp_cuda::make_batch(14, 16));
    const pw::Plan& plan = plans.front().second;
    long actions = 0;
    for (const auto& r : plan.ranks) actions += static_cast<long>(r.size());
    cu::CudaRunOptions o;
    o.runtime.transport = cu::Transport::local;
    o.executor.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) { return std::size_t{256}; };
    cu::CudaExecutor<cu::CudaApi> ex([](pw::RankId) { return cu::CudaApi{0}; }, o);
    Empty cb;
    ex.run(plan, w.model, cb);  // streams, events, arena made once
    constexpr int steps = 20;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) ex.run(plan, w.model, cb);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / steps;
    // Wall time of a step over its actions (all ranks, 4 host threads): an upper bound of each
    // rank thread's host time per action, the figure the <= 5 us goal is about.
    MESSAGE("local transport: " << actions << " actions per step, " << us << " us per step, " << us / static_cast<double>(actions) * 4
                                << " us per action per rank thread");
    CHECK(us > 0);
  }

  TEST_CASE("gpu: overlap: transfers hidden behind spinning stages (timed with CUDA events)") {
    (void)devices();
    const auto& w = workload();
    const auto plans = mlp_cuda::all_plans(w, mlp_cuda::make_batch(15));
    const pw::Plan& plan = plans.front().second;
    std::pair<double, double> small{}, large{};
    for (const std::size_t item_bytes : {std::size_t{256}, std::size_t{32} << 20}) {
      cu::CudaRunOptions o;
      o.runtime.transport = cu::Transport::local;
      o.executor.sizes.item_output_bytes = [item_bytes](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) { return item_bytes; };
      cu::CudaExecutor<cu::CudaApi> ex([](pw::RankId) { return cu::CudaApi{0}; }, o);
      Spin warm(4);
      ex.run(plan, w.model, warm);
      Spin cb(4);
      ex.run(plan, w.model, cb);
      (item_bytes == 256 ? small : large) = cb.busy_and_span();
    }
    // The copies alone: every transfer's bytes (32 MiB per item of its producer's
    // sub-microbatch) copied device to device in 32 MiB pieces, timed on one stream.
    std::size_t bytes = 0;
    for (const auto& t : plan.transfers) bytes += plan.sub_microbatch(t.producer.sub_microbatch).item_tokens().size() * (std::size_t{32} << 20);
    cudaStream_t s{};
    REQUIRE(cudaSetDevice(0) == cudaSuccess);
    REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
    void *a = nullptr, *b = nullptr;
    REQUIRE(cudaMalloc(&a, std::size_t{32} << 20) == cudaSuccess);
    REQUIRE(cudaMalloc(&b, std::size_t{32} << 20) == cudaSuccess);
    cudaEvent_t e0{}, e1{};
    REQUIRE(cudaEventCreate(&e0) == cudaSuccess);
    REQUIRE(cudaEventCreate(&e1) == cudaSuccess);
    REQUIRE(cudaEventRecord(e0, s) == cudaSuccess);
    for (std::size_t done = 0; done < bytes; done += std::size_t{32} << 20)
      REQUIRE(cudaMemcpyAsync(b, a, std::size_t{32} << 20, cudaMemcpyDeviceToDevice, s) == cudaSuccess);
    REQUIRE(cudaEventRecord(e1, s) == cudaSuccess);
    REQUIRE(cudaEventSynchronize(e1) == cudaSuccess);
    float copy_ms = 0;
    REQUIRE(cudaEventElapsedTime(&copy_ms, e0, e1) == cudaSuccess);
    (void)cudaFree(a), (void)cudaFree(b), (void)cudaEventDestroy(e0), (void)cudaEventDestroy(e1), (void)cudaStreamDestroy(s);
    const double extra = large.second - small.second;
    const double hidden_fraction = copy_ms > 0 ? std::clamp(1.0 - extra / copy_ms, 0.0, 1.0) : 0.0;
    MESSAGE("compute busy " << small.first << " ms; step span " << small.second << " ms with 256-byte items, " << large.second
                            << " ms with 32 MiB items; copies alone " << copy_ms << " ms; hidden fraction " << hidden_fraction);
    CHECK(small.second > 0);
    CHECK(large.second > 0);
  }
}
