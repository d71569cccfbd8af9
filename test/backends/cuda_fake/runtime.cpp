// CudaRuntimeT over the fake device, driven by the generic Executor on lowered plans of
// tiny-vlm (P = 4): the pattern callbacks check every buffer's route and content (the
// executor's promises), the toy model's gradients equal the host backend's, and the runtime's
// own rules hold (run-ahead window, no allocation inside a step, events and streams reused).
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/cuda_fake/fake_support.hpp"
#include "backends/host/gradients.hpp"
#include "backends/host/plans.hpp"
#include "execute/pattern_callbacks.hpp"

#include <pipeweaver/cuda/comm_links.hpp>
#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/cuda/run_step.hpp>
#include <pipeweaver/cuda/runtime.hpp>
#include <pipeweaver/host.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using FakeRuntime = cu::CudaRuntimeT<cu::FakeDeviceApi>;
using namespace std::chrono_literals;

static_assert(pw::Runtime<FakeRuntime>);
static_assert(!pw::EagerSend<FakeRuntime>);  // a send reads its source later, on the device

namespace {

using fake_support::Config;
using fake_support::on;
const Config configs[] = {fake_support::nccl_configs[0], fake_support::nccl_configs[1], fake_support::nccl_configs[2],
                          fake_support::local_config};

// Every plan of the host backend's routing test, through the fake CUDA runtime; the pattern
// callbacks run on the compute stream and throw (a device fault) on any wrong byte.
void check_routing(const Config& c, std::uint64_t chaos_seed) {
  const auto model = test_plans::tiny_vlm();
  const pw::Batch batch = test_plans::routing_batch();
  for (const auto& k : test_plans::routing_cases()) {
    CAPTURE(k.partition.name);
    CAPTURE(k.split);
    const auto plan = test_plans::make_plan(model, k.partition, batch, {.split_backward = k.split});
    pattern::Callbacks pattern_cb(model, batch, 4);
    pattern_cb.last_chunk_ = k.vit_last_chunk;
    fake_support::OnStream<pattern::Callbacks> cb(pattern_cb);
    cu::FakeOptions fo;
    fo.chaos = {.seed = chaos_seed, .max_delay = 300us, .probability = 0.3};
    fo.queue_capacity = 8;  // small launch queues: hosts block on them often
    cu::FakeSystem sys(fo);
    cu::CudaRunOptions o = fake_support::transport_options(c);
    o.runtime.timeout = fake_support::scaled(20s);
    o.runtime.window = 4;
    o.executor.sizes = pattern_cb.sizes();
    cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
    for (int step = 0; step < 2; ++step) {
      CAPTURE(step);
      CHECK_NOTHROW(ex.run(plan, model, cb));
    }
    long compute = 0;
    for (const auto& list : plan.ranks)
      for (const auto& a : list) compute += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a);
    CHECK(pattern_cb.calls() == 2 * compute);
  }
}

}  // namespace

TEST_CASE("cuda runtime (fake): pairing rounds meet every pair once, one partner per rank and round") {
  for (int P = 1; P <= 9; ++P) {
    CAPTURE(P);
    const auto rounds = cu::pairing_rounds(P);
    CHECK(rounds.size() == static_cast<std::size_t>(P < 2 ? 0 : (P % 2 == 0 ? P - 1 : P)));
    std::set<std::pair<int, int>> met;
    for (const auto& round : rounds) {
      REQUIRE(round.size() == static_cast<std::size_t>(P));
      for (int r = 0; r < P; ++r) {
        const int q = round[static_cast<std::size_t>(r)];
        if (q < 0) continue;
        CHECK(q != r);
        CHECK(round[static_cast<std::size_t>(q)] == r);  // symmetric: one partner
        if (r < q) CHECK(met.insert({r, q}).second);    // never twice
      }
    }
    CHECK(met.size() == static_cast<std::size_t>(P * (P - 1) / 2));
  }
  // edge_index enumerates the P(P-1) directed edges exactly once.
  for (int P = 2; P <= 6; ++P) {
    std::set<std::size_t> seen;
    for (int a = 0; a < P; ++a)
      for (int b = 0; b < P; ++b)
        if (a != b) seen.insert(cu::edge_index(a, b, P));
    CHECK(seen.size() == cu::comm_count(cu::CommTopology::per_edge, P));
    CHECK(*seen.rbegin() == seen.size() - 1);
  }
}

TEST_CASE("cuda runtime (fake): buffers reach the right stage, item and rank with every transport") {
  for (const Config& c : configs) {
    const std::string config = c.name;
    CAPTURE(config);
    check_routing(c, /*chaos_seed=*/0);
  }
}

// Under delays a receive may land, on its receive stream, while the compute stream still
// reads the memory it reuses, unless the executor's program orders it after that reader
// (record/wait events across queues, with nothing else in the runtime to order it).
TEST_CASE("cuda runtime (fake): routing holds under chaos") {
  for (const std::uint64_t seed : {11, 23, 29}) {
    CAPTURE(seed);
    for (const Config& c : configs) {
      const std::string config = c.name;
      CAPTURE(config);
      check_routing(c, seed);
    }
  }
}

TEST_CASE("cuda runtime (fake): toy_vlm gradients equal the host backend's") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const auto cfg = toy_vlm::Config::from(spec);
  toy_vlm::DatasetOptions o;
  o.microbatches = 3;
  o.samples_per_microbatch = 3;
  o.max_images = 2;
  const toy_vlm::ToyBatch batch = toy_vlm::make_batch(cfg, 77, o);
  for (const auto& partition : {test_plans::dip_partition(2, 1), test_plans::chain_partition()}) {
    CAPTURE(partition.name);
    const pw::Plan plan = test_plans::make_plan(spec, partition, batch.meta);
    toy_vlm::Model<float> on_host(cfg, 42), on_fake(cfg, 42);
    toy_vlm::Callbacks host_cb(on_host, batch, 4), fake_cb(on_fake, batch, 4);
    pw::host::Options ho;
    ho.executor.sizes = host_cb.sizes();
    pw::host::run_step(plan, spec, host_cb, ho);
    for (const Config& c : configs) {
      const std::string config = c.name;
    CAPTURE(config);
      on_fake.zero_grad();
      fake_cb.reset_loss();
      fake_support::OnStream<toy_vlm::Callbacks> cb(fake_cb);
      cu::FakeOptions fo;
      fo.chaos = {.seed = 3, .max_delay = 100us, .probability = 0.3};
      cu::FakeSystem sys(fo);
      cu::CudaRunOptions ro = fake_support::transport_options(c);
      ro.executor.sizes = fake_cb.sizes();
      cu::run_step<cu::FakeDeviceApi>(plan, spec, cb, on(sys), ro);
      REQUIRE(test_plans::gradient_norm(on_host) > 0);
      // The same program in the same order: the same floating-point operations.
      CHECK(test_plans::max_relative_gradient_error(on_host, on_fake) == 0.0);
      CHECK(fake_cb.loss() == host_cb.loss());
    }
  }
}

namespace {

// Counts, per rank, stage launches issued on the host and finished on the device, and keeps
// the largest difference seen when a launch is issued.
struct WindowProbe {
  std::atomic<int> issued[4] = {}, finished[4] = {};
  std::atomic<int> most_ahead{0};
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO& io) { stage(io); }
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO& io) { stage(io); }
  void stage(pw::StageIO& io) {
    const auto r = io.rank.index();
    const int ahead = ++issued[r] - finished[r].load();
    int m = most_ahead.load();
    while (ahead > m && !most_ahead.compare_exchange_weak(m, ahead)) {
    }
    cu::FakeDeviceApi::host_func(io.queue, [this, r] {
      std::this_thread::sleep_for(300us);  // a slow device: the host runs ahead
      ++finished[r];
    });
  }
};

}  // namespace

TEST_CASE("cuda runtime (fake): the host runs at most `window` stage launches ahead of the device") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), test_plans::routing_batch());
  for (const std::size_t window : {std::size_t{2}, std::size_t{5}}) {
    CAPTURE(window);
    cu::FakeSystem sys;
    cu::CudaRunOptions o;
    o.runtime.window = window;
    WindowProbe probe;
    cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
    ex.run(plan, model, probe);
    // Launching stage k waits for stage k - window: at most `window` (k included) in flight,
    // and a slow device makes the host use all of them.
    CHECK(probe.most_ahead.load() == static_cast<int>(window));
  }
}

TEST_CASE("cuda runtime (fake): a steady step allocates nothing and creates no events or streams") {
  const auto model = test_plans::tiny_vlm();
  const pw::Batch batch = test_plans::routing_batch();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), batch);
  for (const Config& c : configs) {
    const std::string config = c.name;
    CAPTURE(config);
    cu::FakeSystem sys;
    cu::CudaRunOptions o = fake_support::transport_options(c);
    pattern::Callbacks pattern_cb(model, batch, 4);
    pattern_cb.last_chunk_ = 3;
    o.executor.sizes = pattern_cb.sizes();
    fake_support::OnStream<pattern::Callbacks> cb(pattern_cb);
    cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
    ex.run(plan, model, cb);
    const auto allocs = sys.allocations(), events = sys.events_created(), streams = sys.streams_created();
    CHECK(streams == 4 * (1 + 2 * 3));  // per rank: compute, and a send and a receive stream per peer
    ex.run(plan, model, cb);
    CHECK(sys.allocations() == allocs);
    CHECK(sys.events_created() == events);
    CHECK(sys.streams_created() == streams);
    CHECK(ex.executor(pw::RankId{0}).pool_bytes() <= ex.runtime(pw::RankId{0}).arena_capacity());
  }
}

TEST_CASE("cuda runtime (fake): the arena grows only before a step's first device work") {
  cu::FakeSystem sys;
  cu::RuntimeOptions o;
  o.transport = cu::Transport::local;
  cu::World<cu::FakeDeviceApi> world(1, o);
  FakeRuntime rt(world, pw::RankId{0}, cu::FakeDeviceApi(sys, 0));
  rt.reserve(1000);
  const auto allocs = sys.allocations();
  {
    auto step = rt.step(0);
    CHECK(rt.arena(1000).size() == 1000);  // reserved ahead: no allocation
    CHECK(sys.allocations() == allocs);
    CHECK(rt.arena(1200).size() == 1200);  // no device work yet: may still grow
    CHECK(rt.arena_capacity() >= 1500);    // geometrically
    auto span = rt.arena(16);
    rt.fill_zero(rt.compute_queue(), span);
    CHECK_THROWS_AS((void)rt.arena(10'000), pw::Error);  // inside the step: refused
    rt.synchronize(rt.compute_queue());
  }
  CHECK(sys.allocations() == allocs + 1);
}

TEST_CASE("cuda runtime (fake): constructing on a device that does not exist is infeasible") {
  cu::FakeOptions fo;
  fo.devices = 1;
  cu::FakeSystem sys(fo);
  cu::World<cu::FakeDeviceApi> world(2, {});
  try {
    FakeRuntime rt(world, pw::RankId{1}, cu::FakeDeviceApi(sys, 1));
    FAIL("no error");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::infeasible);
    CHECK(std::string(e.what()).find("no usable CUDA device") != std::string::npos);
  }
}
