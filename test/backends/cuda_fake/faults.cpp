// The abort path of the CUDA runtime on the fake device: a throwing callback, a lost message,
// a communicator's asynchronous error, a device fault and a rank whose host thread stops; each
// ends every rank within its timeout, with Error(execution) naming the rank, the action and the
// cause on the failing rank and Error(cancelled) elsewhere; communicators are revoked before
// they are aborted and never used after; a stuck rank reaches the last-resort hook.
#include <doctest/doctest.h>

#include "backends/cuda_fake/fake_support.hpp"
#include "backends/fault_fixtures.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/cuda/fake/fake_device_api.hpp>
#include <pipeweaver/cuda/run_step.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using namespace std::chrono_literals;

using test_faults::contains;
using test_faults::expect_failure;
using test_faults::NoOp;
using test_faults::small_batch;
using test_faults::ThrowOnRank;
using fake_support::on;

namespace {

// Every communicator endpoint ever made on the four devices was revoked, then aborted, once.
void check_revoked_then_aborted(cu::FakeSystem& sys) {
  for (int d = 0; d < 4; ++d) {
    CAPTURE(d);
    const auto logs = sys.comm_logs(d);
    CHECK_FALSE(logs.empty());
    for (const auto& log : logs) CHECK(log == std::vector<std::string>{"init", "revoke", "abort"});
  }
}

}  // namespace

TEST_CASE("cuda faults (fake): a throwing callback on rank 2 stops all four ranks with an error naming it") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  for (const auto transport : {cu::Transport::nccl, cu::Transport::local}) {
    CAPTURE(static_cast<int>(transport));
    cu::FakeSystem sys;
    cu::CudaRunOptions o;
    o.runtime.transport = transport;
    o.runtime.timeout = 3s;
    cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
    ThrowOnRank cb{2};
    const auto start = std::chrono::steady_clock::now();
    const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank 2, action ");
    INFO(f.what);
    CHECK(contains(f.path, "(Backward"));
    CHECK(contains(f.what, "backward callback threw: injected failure"));
    CHECK(std::chrono::steady_clock::now() - start < 2s);  // the abort woke everyone: no timeout
    REQUIRE(ex.outcomes().size() == 4);
    for (int r = 0; r < 4; ++r) {
      CAPTURE(r);
      CHECK_FALSE(ex.outcomes()[static_cast<std::size_t>(r)].ok);
      CHECK(ex.outcomes()[static_cast<std::size_t>(r)].kind == (r == 2 ? pw::ErrorKind::execution : pw::ErrorKind::cancelled));
    }
    if (transport == cu::Transport::nccl) check_revoked_then_aborted(sys);
    NoOp ok;  // the next step runs, over new communicators
    CHECK_NOTHROW(ex.run(plan, model, ok));
  }
}

TEST_CASE("cuda faults (fake): a lost message stops its receiver within the timeout, naming the transfer") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  // The last transfer of the plan on some link: no later message can take its place.
  std::size_t lost = plan.transfers.size();
  for (std::size_t t = plan.transfers.size(); t-- > 0 && lost == plan.transfers.size();) {
    bool later = false;
    for (std::size_t u = t + 1; u < plan.transfers.size(); ++u)
      later = later || (plan.transfers[u].from == plan.transfers[t].from && plan.transfers[u].to == plan.transfers[t].to);
    if (!later) lost = t;
  }
  REQUIRE(lost < plan.transfers.size());
  const auto dropped = plan.transfers[lost];
  for (const auto transport : {cu::Transport::nccl, cu::Transport::local}) {
    CAPTURE(static_cast<int>(transport));
    cu::FakeSystem sys;
    cu::CudaRunOptions o;
    o.runtime.transport = transport;
    o.runtime.timeout = 300ms;
    o.runtime.drop_transfer = pw::TransferId{static_cast<pw::TransferId::rep>(lost)};
    cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
    NoOp cb;
    const auto start = std::chrono::steady_clock::now();
    const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank " + std::to_string(dropped.to.value()) + ", ");
    INFO(f.what);
    CHECK(contains(f.what, "transfer " + std::to_string(lost) + " from rank " + std::to_string(dropped.from.value()) + " did not arrive"));
    CHECK(std::chrono::steady_clock::now() - start < 300ms + 1500ms);
    for (std::size_t r = 0; r < ex.outcomes().size(); ++r) {
      const auto& out = ex.outcomes()[r];
      if (r == dropped.to.index()) CHECK((!out.ok && out.kind == pw::ErrorKind::execution));
      else CHECK((out.ok || out.kind == pw::ErrorKind::cancelled));
    }
  }
}

namespace {

// Rank 1 reports an asynchronous communicator error (what a dead peer or a network failure
// makes NCCL report) from inside its third stage callback.
struct FailComms {
  cu::FakeSystem* sys;
  int calls = 0;  // rank 1's thread only
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) { maybe(s); }
  void backward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) { maybe(s); }
  void maybe(const pw::StageSpec& s) {
    if (s.rank().value() == 1 && ++calls == 3) sys->fail_comms(1, "injected: remote peer vanished");
  }
};

}  // namespace

TEST_CASE("cuda faults (fake): a communicator's asynchronous error stops every rank") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  cu::FakeSystem sys;
  cu::CudaRunOptions o;
  o.runtime.timeout = 5s;
  cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
  FailComms cb{&sys};
  const auto start = std::chrono::steady_clock::now();
  const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank 1, ");
  INFO(f.what);
  CHECK(contains(f.what, "asynchronous error: injected: remote peer vanished"));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  for (int r = 0; r < 4; ++r) {
    CAPTURE(r);
    const auto& out = ex.outcomes()[static_cast<std::size_t>(r)];
    CHECK(out.kind == (r == 1 ? pw::ErrorKind::execution : pw::ErrorKind::cancelled));
  }
  check_revoked_then_aborted(sys);
}

namespace {

// A kernel that fails on rank 3's device (a stream task that throws).
struct DeviceFault {
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO& io) {
    if (s.rank().value() == 3) cu::FakeDeviceApi::host_func(io.queue, [] { throw std::runtime_error("illegal memory access"); });
  }
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

}  // namespace

TEST_CASE("cuda faults (fake): a device fault fails its rank with the device's error") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  cu::FakeSystem sys;
  cu::CudaRunOptions o;
  o.runtime.timeout = 5s;
  o.runtime.abort_grace = 300ms;
  std::atomic<int> stuck{0};
  o.watchdog.on_stuck = [&](const std::string&) { ++stuck; };
  cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
  DeviceFault cb;
  const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank 3, ");
  INFO(f.what);
  CHECK(contains(f.what, "device fault on fake device 3: illegal memory access"));
  // The others stop (cancelled), or finish when their work did not need rank 3's after the fault
  // (the fake's streams go on after a fault, so rank 3's messages may still be delivered).
  for (int r = 0; r < 3; ++r) {
    const auto& out = ex.outcomes()[static_cast<std::size_t>(r)];
    CAPTURE(out.message);
    CHECK((out.ok || out.kind == pw::ErrorKind::cancelled));
  }
  CHECK(stuck.load() == 0);  // every rank came back in time
  // The fault is sticky, as CUDA's: the rank's memory cannot be trusted for another step.
  NoOp ok;
  CHECK_THROWS_AS(ex.run(plan, model, ok), pw::Error);
}

namespace {

// Rank 3's forward blocks on the host until the gate opens (a callback that hangs).
struct HangOnRank3 {
  fake_support::Gate* gate;
  bool hung = false;  // rank 3's thread only
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) {
    if (s.rank().value() == 3 && !hung) {
      hung = true;
      gate->pass();
    }
  }
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

}  // namespace

TEST_CASE("cuda faults (fake): a rank whose host thread stops is aborted by the watchdog, and the last resort runs") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  cu::FakeSystem sys;
  fake_support::Gate gate;
  std::mutex mu;
  std::vector<std::string> stuck;
  cu::CudaRunOptions o;
  o.runtime.timeout = 2s;
  o.runtime.host_timeout = 200ms;
  o.runtime.abort_grace = 300ms;
  o.watchdog.on_stuck = [&](const std::string& why) {
    {
      std::lock_guard lk(mu);
      stuck.push_back(why);
    }
    gate.open();  // what a real hook cannot do; here it lets the test finish
  };
  cu::CudaExecutor<cu::FakeDeviceApi> ex(on(sys), o);
  HangOnRank3 cb{&gate};
  const auto start = std::chrono::steady_clock::now();
  const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank 3, action ");
  INFO(f.what);
  CHECK(contains(f.what, "rank 3's host thread stayed outside the runtime for more than 200 ms"));
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < 2s);  // before any rank's own timeout
  for (int r = 0; r < 3; ++r) {
    CAPTURE(r);
    CAPTURE(ex.outcomes()[static_cast<std::size_t>(r)].message);
    CHECK(ex.outcomes()[static_cast<std::size_t>(r)].kind == pw::ErrorKind::cancelled);
  }
  std::lock_guard lk(mu);
  REQUIRE(stuck.size() == 1);
  CHECK(contains(stuck[0], "rank(s) 3 did not stop within 600 ms"));  // twice the grace
}
