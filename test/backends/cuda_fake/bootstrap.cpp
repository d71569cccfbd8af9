// One rank per "process" (threads that share nothing but a broadcast function, an abort
// channel and the fake machine): NCCL unique ids travel over a BroadcastFunction, every rank
// makes and preconnects its communicators, a rank that never joins makes the others give up at
// their deadline, and an abort crosses processes through the abort channel (or, without one,
// the peers stop at their own deadline instead of hanging).
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"

#include <pipeweaver/cuda/bootstrap.hpp>
#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/cuda/runtime.hpp>
#include <pipeweaver/cuda/watchdog.hpp>
#include <pipeweaver/execute/executor.hpp>
#include <pipeweaver/host/broadcast.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using FakeRuntime = cu::CudaRuntimeT<cu::FakeDeviceApi>;
using namespace std::chrono_literals;

TEST_CASE("cuda bootstrap (fake): unique ids travel over a broadcast function and every rank connects") {
  for (const auto topology : {cu::CommTopology::per_edge, cu::CommTopology::single}) {
    CAPTURE(static_cast<int>(topology));
    constexpr int P = 4;
    cu::FakeSystem sys;
    pw::host::InProcessBroadcast bcast(P, 5s);
    std::vector<std::vector<cu::UniqueId>> ids(P);
    std::vector<std::exception_ptr> errors(P);
    std::vector<std::thread> procs;
    for (int r = 0; r < P; ++r)
      procs.emplace_back([&, r] {
        try {
          cu::RuntimeOptions o;
          o.topology = topology;
          o.timeout = 5s;
          cu::World<cu::FakeDeviceApi> world(P, o);  // this process's view: one rank
          FakeRuntime rt(world, pw::RankId{r}, cu::FakeDeviceApi(sys, r));
          ids[static_cast<std::size_t>(r)] = cu::exchange_unique_ids(rt.api(), bcast, pw::RankId{r}, pw::RankId{1}, P, topology);
          cu::connect(rt, ids[static_cast<std::size_t>(r)]);
          CHECK(rt.has_comms());
        } catch (...) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
        }
      });
    for (auto& t : procs) t.join();
    for (const auto& e : errors) REQUIRE_FALSE(e);
    CHECK(ids[0].size() == cu::comm_count(topology, P));
    for (int r = 1; r < P; ++r) CHECK(ids[static_cast<std::size_t>(r)] == ids[0]);
    // Per edge: each rank is in the 2(P-1) communicators of its links; single: in one.
    for (int d = 0; d < P; ++d) CHECK(sys.comm_logs(d).size() == (topology == cu::CommTopology::single ? 1u : 2u * (P - 1)));
  }
}

TEST_CASE("cuda bootstrap (fake): a rank that never joins makes the others give up at their deadline") {
  cu::FakeSystem sys;
  cu::RuntimeOptions o;
  o.timeout = 200ms;
  cu::World<cu::FakeDeviceApi> world(2, o);
  FakeRuntime rt(world, pw::RankId{0}, cu::FakeDeviceApi(sys, 0));
  const auto ids = cu::make_unique_ids(rt.api(), o.topology, 2);
  const auto start = std::chrono::steady_clock::now();
  try {
    cu::connect(rt, ids);
    FAIL("no error");
  } catch (const pw::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == pw::ErrorKind::execution);
    CHECK(std::string(e.what()).find("did not initialize within 200 ms") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < 200ms + 1s);
  CHECK_FALSE(rt.has_comms());
  for (const auto& log : sys.comm_logs(0)) CHECK(log == std::vector<std::string>{"init", "abort"});
}

namespace {

// Rank 0 throws in its first forward, whose output rank 1 needs.
struct ThrowOnRank0 {
  bool thrown = false;  // rank 0's process only
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) {
    if (s.rank().value() == 0 && !thrown) {
      thrown = true;
      throw std::runtime_error("injected failure");
    }
  }
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

struct Ended {
  std::optional<pw::ErrorKind> kind;
  std::string what;
  std::chrono::steady_clock::duration took{};
};

// One "process" running rank r of a 2-rank plan: its own world, runtime, executor and watchdog.
Ended run_process(int r, const pw::Plan& plan, const pw::ModelSpec& model, cu::FakeSystem& sys, pw::host::InProcessBroadcast& bcast,
                  cu::InProcessAbortChannel* channel, std::chrono::milliseconds timeout) {
  Ended out;
  cu::RuntimeOptions o;
  o.timeout = timeout;
  cu::World<cu::FakeDeviceApi> world(2, o);
  if (channel != nullptr) world.connect(*channel);
  FakeRuntime rt(world, pw::RankId{r}, cu::FakeDeviceApi(sys, r));
  cu::nccl_bootstrap(rt, bcast);
  cu::Watchdog<cu::FakeDeviceApi> watchdog(world);
  pw::Executor<FakeRuntime> ex(rt);
  ThrowOnRank0 cb;
  const auto start = std::chrono::steady_clock::now();
  try {
    auto step = rt.step(plan.transfers.size());
    ex.prepare(plan, model);
    ex.run(cb);
  } catch (const pw::Error& e) {
    out.kind = e.kind();
    out.what = e.what();
  }
  out.took = std::chrono::steady_clock::now() - start;
  return out;
}

}  // namespace

TEST_CASE("cuda bootstrap (fake): an abort crosses processes through the abort channel, and without it peers stop at their deadline") {
  const auto model = test_plans::tiny_vlm();
  pw::Batch batch;
  for (int mb = 0; mb < 3; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{10, {pw::SampleItems{"image", {8, 12}}}});
    batch.microbatches.push_back(m);
  }
  const pw::Partition two{"two", 2, {test_plans::placement({2, 2}, {0, 1}, 0), test_plans::placement({4, 4}, {0, 1}, 0)}};
  const auto plan = test_plans::make_plan(model, two, batch);
  for (const bool with_channel : {true, false}) {
    CAPTURE(with_channel);
    cu::FakeSystem sys;
    pw::host::InProcessBroadcast bcast(2, 5s);
    cu::InProcessAbortChannel channel;
    const auto timeout = with_channel ? 5000ms : 300ms;
    Ended ended[2];
    std::thread p0([&] { ended[0] = run_process(0, plan, model, sys, bcast, with_channel ? &channel : nullptr, timeout); });
    std::thread p1([&] { ended[1] = run_process(1, plan, model, sys, bcast, with_channel ? &channel : nullptr, timeout); });
    p0.join();
    p1.join();
    MESSAGE("rank 0: " << ended[0].what);
    MESSAGE("rank 1: " << ended[1].what);
    CHECK(ended[0].kind == pw::ErrorKind::execution);
    CHECK(ended[0].what.find("forward callback threw: injected failure") != std::string::npos);
    if (with_channel) {
      CHECK(ended[1].kind == pw::ErrorKind::cancelled);
      CHECK(ended[1].what.find("stopped because rank 0 failed") != std::string::npos);
      CHECK(ended[1].took < 2s);  // long before its own 5 s deadline
    } else {
      // Rank 0 aborted its communicators; nobody told rank 1, whose messages from rank 0 never
      // come: it fails at its own deadline rather than hanging.
      CHECK(ended[1].kind == pw::ErrorKind::execution);
      CHECK(ended[1].what.find("did not finish within 300 ms") != std::string::npos);
      CHECK(ended[1].took >= 300ms);
      CHECK(ended[1].took < 300ms + 1500ms);
    }
  }
}
