// The fake device keeps CUDA's and NCCL's documented rules, each checked here against what the
// vendors' documentation says a program observes:
//  * streams run in issue order (CUDA: a stream is a sequence of operations in issue order);
//  * cudaEventRecord captures the stream's work at the call, cudaStreamWaitEvent waits for the
//    last record before it, and an event never recorded is complete and an empty wait;
//  * ncclSend/ncclRecv "is blocking for the GPU": a send completes only once its receive runs;
//    operations that must progress together need a group, which joins its streams;
//  * all operations of one communicator execute in issue order, whatever the stream;
//  * a full launch queue blocks the launching host thread;
//  * ncclCommRevoke stops in-flight work (in progress until quiescent), ncclCommAbort is local;
//  * non-blocking ncclCommInitRankConfig is in progress until every rank has joined;
//  * a failing kernel makes every later query of the device report the error (sticky).
// And chaos: random per-stream delays make a missing event visible; the happens-before
// checker reports one exactly, without delays.
#include <doctest/doctest.h>

#include "backends/cuda_fake/fake_support.hpp"

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/cuda/fake/fake_device_api.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using fake_support::eventually;
using fake_support::Gate;
using namespace std::chrono_literals;

namespace {

// Two ranks of one communicator (devices 0 and 1), both ready.
struct Pair {
  cu::FakeDeviceApi a, b;
  cu::FakeDeviceApi::comm ca, cb;
  explicit Pair(cu::FakeSystem& sys) : a(sys, 0), b(sys, 1) {
    const cu::UniqueId id = a.unique_id();
    ca = a.comm_init(id, 2, 0);
    cb = b.comm_init(id, 2, 1);
    REQUIRE(a.comm_status(ca).state == cu::CommState::ready);
  }
};

std::vector<std::byte> bytes(std::size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((static_cast<int>(i) * 7 + seed) & 0xff);
  return v;
}

}  // namespace

TEST_CASE("fake device: a stream runs its tasks in issue order, under chaos too") {
  cu::FakeOptions o;
  o.chaos = {.seed = 5, .max_delay = 100us, .probability = 0.5};
  cu::FakeSystem sys(o);
  cu::FakeDeviceApi api(sys, 0);
  auto s = api.stream_create(false);
  std::vector<int> seen;  // written only by the stream's worker
  for (int i = 0; i < 200; ++i) api.host_func(s, [&seen, i] { seen.push_back(i); });
  auto e = api.event_create();
  api.event_record(e, s);
  REQUIRE(eventually([&] { return api.event_done(e); }));
  std::vector<int> want(200);
  std::iota(want.begin(), want.end(), 0);
  CHECK(seen == want);
}

TEST_CASE("fake device: events capture the stream at record time, and an unrecorded event is an empty wait") {
  cu::FakeSystem sys;
  cu::FakeDeviceApi api(sys, 0);
  auto s1 = api.stream_create(false), s2 = api.stream_create(false);

  SUBCASE("never recorded: complete, and waiting on it waits for nothing") {
    auto e = api.event_create();
    CHECK(api.event_done(e));
    Gate g;
    api.host_func(s1, g.task());  // s1 busy: had e captured s1, s2 would block
    std::atomic<bool> ran{false};
    api.stream_wait(s2, e);
    api.host_func(s2, [&] { ran = true; });
    CHECK(eventually([&] { return ran.load(); }));
    g.open();
    auto drained = api.event_create();  // the gate must outlive the task that waits on it
    api.event_record(drained, s1);
    CHECK(eventually([&] { return api.event_done(drained); }));
  }
  SUBCASE("a wait keeps the state of the record before it; a later record does not move it") {
    Gate first, second;
    auto e = api.event_create();
    api.host_func(s1, first.task());
    api.event_record(e, s1);
    api.stream_wait(s2, e);
    std::atomic<bool> ran{false};
    api.host_func(s2, [&] { ran = true; });
    api.host_func(s1, second.task());
    api.event_record(e, s1);  // re-recorded behind the second gate
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(ran.load());  // s2 waits for the first gate
    CHECK_FALSE(api.event_done(e));
    first.open();
    CHECK(eventually([&] { return ran.load(); }));  // though the second gate is still closed
    CHECK_FALSE(api.event_done(e));                  // e now stands for the second record
    second.open();
    CHECK(eventually([&] { return api.event_done(e); }));
  }
}

TEST_CASE("fake device: a full launch queue blocks the issuing host thread until a task finishes") {
  cu::FakeOptions o;
  o.queue_capacity = 2;
  cu::FakeSystem sys(o);
  cu::FakeDeviceApi api(sys, 0);
  auto s = api.stream_create(false);
  Gate g;
  api.host_func(s, g.task());  // running, still holds its slot
  api.host_func(s, [] {});      // the queue is full now
  std::atomic<bool> issued{false};
  std::thread issuer([&] {
    api.host_func(s, [] {});
    issued = true;
  });
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(issued.load());
  g.open();
  issuer.join();
  CHECK(issued.load());
}

TEST_CASE("fake device: a send completes only when its receive is posted, and carries the bytes") {
  cu::FakeSystem sys;
  Pair p(sys);
  auto sa = p.a.stream_create(true), sb = p.b.stream_create(true);
  const auto src = bytes(64, 3);
  std::vector<std::byte> dst(64);
  auto ea = p.a.event_create(), eb = p.b.event_create();
  p.a.send(src.data(), src.size(), 1, p.ca, sa);
  p.a.event_record(ea, sa);
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(p.a.event_done(ea));  // no buffering: the sender waits for the receiver
  p.b.recv(dst.data(), dst.size(), 0, p.cb, sb);
  p.b.event_record(eb, sb);
  CHECK(eventually([&] { return p.a.event_done(ea) && p.b.event_done(eb); }));
  CHECK(dst == src);
}

TEST_CASE("fake device: one communicator's operations run in issue order, whatever their streams") {
  cu::FakeSystem sys;
  for (const bool one_comm : {true, false}) {
    CAPTURE(one_comm);
    // Rank 0 first receives from rank 1 on stream A, then sends to rank 2 on stream B; rank 2
    // has posted its receive. On one communicator the send waits for the earlier receive; on
    // separate communicators (the control) it does not.
    std::array<cu::FakeDeviceApi, 3> api{cu::FakeDeviceApi(sys, 0), cu::FakeDeviceApi(sys, 1), cu::FakeDeviceApi(sys, 2)};
    std::array<cu::FakeDeviceApi::comm, 3> c01{}, c02{};
    const cu::UniqueId id1 = api[0].unique_id();
    const cu::UniqueId id2 = one_comm ? id1 : api[0].unique_id();
    if (one_comm) {
      for (int r = 0; r < 3; ++r) c01[static_cast<std::size_t>(r)] = c02[static_cast<std::size_t>(r)] = api[static_cast<std::size_t>(r)].comm_init(id1, 3, r);
    } else {
      c01[0] = api[0].comm_init(id1, 2, 0);
      c01[1] = api[1].comm_init(id1, 2, 1);
      c02[0] = api[0].comm_init(id2, 2, 0);
      c02[2] = api[2].comm_init(id2, 2, 1);
    }
    const int peer1 = 1, peer2 = one_comm ? 2 : 1;  // rank 0 is rank 0 of every communicator here
    auto sa = api[0].stream_create(true), sb = api[0].stream_create(true), s1 = api[1].stream_create(true), s2 = api[2].stream_create(true);
    std::array<std::byte, 4> from1{}, to2{}, got2{}, src1{};
    api[0].recv(from1.data(), 4, peer1, c01[0], sa);
    api[0].send(to2.data(), 4, peer2, c02[0], sb);
    auto eb = api[0].event_create();
    api[0].event_record(eb, sb);
    api[2].recv(got2.data(), 4, 0, c02[2], s2);
    std::this_thread::sleep_for(30ms);
    CHECK(api[0].event_done(eb) == !one_comm);
    api[1].send(src1.data(), 4, 0, c01[1], s1);
    CHECK(eventually([&] { return api[0].event_done(eb); }));
    auto ea = api[0].event_create();  // the buffers must outlive the copies into them
    api[0].event_record(ea, sa);
    CHECK(eventually([&] { return api[0].event_done(ea); }));
  }
}

TEST_CASE("fake device: sends and receives that must progress together need a group, which joins its streams") {
  cu::FakeSystem sys;
  Pair p(sys);
  auto a1 = p.a.stream_create(true), a2 = p.a.stream_create(true), b1 = p.b.stream_create(true), b2 = p.b.stream_create(true);
  std::array<std::byte, 8> x{}, y{}, rx{}, ry{};

  SUBCASE("without a group, both ranks sending first on one communicator wait for each other") {
    p.a.send(x.data(), 8, 1, p.ca, a1);
    p.a.recv(rx.data(), 8, 1, p.ca, a2);
    p.b.send(y.data(), 8, 0, p.cb, b1);
    p.b.recv(ry.data(), 8, 0, p.cb, b2);
    auto e = p.a.event_create();
    p.a.event_record(e, a2);
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(p.a.event_done(e));  // the receives queue behind the sends: a deadlock
    p.a.comm_abort(p.ca);  // abort is local: each rank ends its own pending work
    p.b.comm_abort(p.cb);
    CHECK(eventually([&] { return p.a.event_done(e); }));
  }
  SUBCASE("in a group they progress independently; the group starts when all its streams reach it") {
    Gate g;
    p.a.host_func(a1, g.task());  // earlier work on one of the group's streams
    p.a.group_start();
    p.a.send(x.data(), 8, 1, p.ca, a1);
    p.a.recv(rx.data(), 8, 1, p.ca, a2);
    p.a.group_end();
    auto ea2 = p.a.event_create();
    p.a.event_record(ea2, a2);
    p.b.group_start();
    p.b.send(y.data(), 8, 0, p.cb, b1);
    p.b.recv(ry.data(), 8, 0, p.cb, b2);
    p.b.group_end();
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(p.a.event_done(ea2));  // the receive's stream joined the gated one
    g.open();
    CHECK(eventually([&] { return p.a.event_done(ea2); }));
  }
}

TEST_CASE("fake device: revoke and abort end this rank's pending work at once and leave the peer's pending") {
  cu::FakeSystem sys;
  Pair p(sys);
  auto sa = p.a.stream_create(true), sb = p.b.stream_create(true);
  std::array<std::byte, 4> x{}, y{};
  p.a.send(x.data(), 4, 1, p.ca, sa);  // rank 1 never receives it
  p.b.send(y.data(), 4, 0, p.cb, sb);  // rank 0 never receives it
  auto ea = p.a.event_create(), eb = p.b.event_create();
  p.a.event_record(ea, sa);
  p.b.event_record(eb, sb);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(p.a.event_done(ea));
  p.a.comm_revoke(p.ca);
  CHECK(eventually([&] { return p.a.event_done(ea); }));  // rank 0's stream drained
  CHECK(eventually([&] { return p.a.comm_status(p.ca).state == cu::CommState::ready; }));  // quiescent after revoke
  CHECK_THROWS_AS(p.a.send(x.data(), 4, 1, p.ca, sa), pw::Error);  // no new work on a revoked communicator
  p.a.comm_abort(p.ca);
  CHECK_THROWS_AS((void)p.a.comm_status(p.ca), pw::Error);  // freed: any use is a bug
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(p.b.event_done(eb));  // the peer is not told: its send stays pending
  p.b.comm_abort(p.cb);
  CHECK(eventually([&] { return p.b.event_done(eb); }));
  const auto logs = sys.comm_logs(0);
  REQUIRE(logs.size() == 1);
  CHECK(logs[0] == std::vector<std::string>{"init", "revoke", "abort"});
}

TEST_CASE("fake device: a non-blocking communicator is in progress until every rank joins") {
  cu::FakeSystem sys;
  cu::FakeDeviceApi a(sys, 0), b(sys, 1);
  const cu::UniqueId id = a.unique_id();
  auto ca = a.comm_init(id, 2, 0);
  CHECK(a.comm_status(ca).state == cu::CommState::in_progress);
  CHECK_THROWS_AS((void)b.comm_init(id, 2, 0), pw::Error);  // rank 0 twice
  CHECK_THROWS_AS((void)b.comm_init(id, 3, 1), pw::Error);  // another size
  cu::UniqueId unknown{};
  CHECK_THROWS_AS((void)b.comm_init(unknown, 2, 1), pw::Error);
  auto cb = b.comm_init(id, 2, 1);
  CHECK(a.comm_status(ca).state == cu::CommState::ready);
  CHECK(b.comm_status(cb).state == cu::CommState::ready);
  sys.fail_comms(1, "injected network failure");
  const cu::CommStatus s = b.comm_status(cb);
  CHECK(s.state == cu::CommState::failed);
  CHECK(s.message == "injected network failure");
  CHECK(a.comm_status(ca).state == cu::CommState::ready);
}

TEST_CASE("fake device: a task that throws is a sticky device fault") {
  cu::FakeSystem sys;
  cu::FakeDeviceApi api(sys, 0), other(sys, 1);
  auto s = api.stream_create(false);
  auto e = api.event_create();
  api.host_func(s, [] { throw std::runtime_error("illegal address"); });
  api.event_record(e, s);
  bool threw = false;
  REQUIRE(eventually([&] {
    try {
      (void)api.event_done(e);
      return false;
    } catch (const pw::Error& err) {
      threw = err.kind() == pw::ErrorKind::execution && std::string(err.what()).find("illegal address") != std::string::npos;
      return true;
    }
  }));
  CHECK(threw);
  auto fresh = api.event_create();
  CHECK_THROWS_AS((void)api.event_done(fresh), pw::Error);  // every later query of the device
  CHECK(other.event_done(other.event_create()));          // other devices are fine
}

TEST_CASE("fake device: chaos makes a missing event visible as stale data, and the event fixes it") {
  cu::FakeOptions o;
  o.chaos = {.seed = 17, .max_delay = 2000us, .probability = 1.0};
  cu::FakeSystem sys(o);
  cu::FakeDeviceApi api(sys, 0);
  auto s1 = api.stream_create(false), s2 = api.stream_create(false);
  int stale_without = 0, stale_with = 0;
  for (const bool with_event : {false, true}) {
    for (int trial = 0; trial < 40; ++trial) {
      std::atomic<int> data{0}, read{-1};
      api.host_func(s1, [&] { data = 1; });  // the producer
      if (with_event) {
        auto e = api.event_create();
        api.event_record(e, s1);
        api.stream_wait(s2, e);
      }
      api.host_func(s2, [&] { read = data.load(); });  // the consumer
      auto done = api.event_create();
      api.event_record(done, s2);
      auto done1 = api.event_create();
      api.event_record(done1, s1);
      REQUIRE(eventually([&] { return api.event_done(done) && api.event_done(done1); }));
      (with_event ? stale_with : stale_without) += read.load() == 0 ? 1 : 0;
    }
  }
  MESSAGE("stale reads without the event: " << stale_without << " of 40");
  CHECK(stale_without > 0);
  CHECK(stale_with == 0);
}

// The happens-before checker (fake/happens_before.hpp): accesses of device memory ordered only
// by CUDA's and NCCL's rules, races reported whatever the timing, without chaos.
namespace {

/// Polls `e` on `api` until done or a device fault; the fault's message, or empty.
std::string settle(cu::FakeDeviceApi& api, cu::FakeDeviceApi::event e) {
  try {
    if (!eventually([&] { return api.event_done(e); })) return "the event did not complete";
  } catch (const pw::Error& x) {
    return x.what();
  }
  return {};
}

}  // namespace

TEST_CASE("fake device: the happens-before checker reports a missing wait, every time, and not a correct record/wait pair") {
  for (int trial = 0; trial < 20; ++trial) {
    CAPTURE(trial);
    for (const bool with_event : {false, true}) {
      cu::FakeSystem sys;  // no chaos: the check does not depend on delays
      cu::FakeDeviceApi api(sys, 0);
      auto s1 = api.stream_create(false), s2 = api.stream_create(true);
      std::byte* buf = api.alloc(64);
      std::byte* out = api.alloc(64);
      api.zero_async(buf, 64, s1);  // the producer
      if (with_event) {
        auto e = api.event_create();
        api.event_record(e, s1);
        api.stream_wait(s2, e);
      }
      api.copy_async(out, buf, 64, s2);  // the consumer
      auto done = api.event_create(), done1 = api.event_create();
      api.event_record(done, s2);
      api.event_record(done1, s1);
      const std::string fault = settle(api, done) + settle(api, done1);
      if (with_event) {
        CHECK(fault.empty());
        CHECK(sys.races().empty());
        CHECK(std::to_integer<int>(out[10]) == 0);
      } else {
        REQUIRE(sys.races().size() == 1);
        const std::string race = sys.races()[0];
        CHECK(fault.find("data race") != std::string::npos);
        // Whichever ran first, the second is reported against it: both accesses are named.
        CHECK(race.find("a memset") != std::string::npos);
        CHECK(race.find("a copy (source)") != std::string::npos);
        CHECK(race.find("stream ") != std::string::npos);
      }
      api.release(buf);
      api.release(out);
    }
  }
}

TEST_CASE("fake device: the checker's event captures the stream at record time: a wait on an earlier record does not order a later write") {
  cu::FakeSystem sys;
  cu::FakeDeviceApi api(sys, 0);
  auto s1 = api.stream_create(false), s2 = api.stream_create(false);
  std::byte* buf = api.alloc(32);
  std::byte* src = api.alloc(32);
  std::byte* out = api.alloc(32);
  Gate gate;
  api.host_func(s2, gate.task());
  api.zero_async(buf, 32, s1);
  api.zero_async(src, 32, s1);
  auto e = api.event_create();
  api.event_record(e, s1);           // before the write below
  api.copy_async(buf, src, 32, s1);  // the write the event does not cover
  api.stream_wait(s2, e);
  api.copy_async(out, buf, 32, s2);  // reads buf
  auto done1 = api.event_create();
  api.event_record(done1, s1);
  CHECK(settle(api, done1).empty());  // the write has finished before the read runs: still a race
  gate.open();
  auto done2 = api.event_create();
  api.event_record(done2, s2);
  const std::string fault = settle(api, done2);
  REQUIRE(sys.races().size() == 1);
  CHECK(fault.find("data race") != std::string::npos);
  CHECK(sys.races()[0].find("read by a copy (source)") != std::string::npos);
  CHECK(sys.races()[0].find("write by a copy (destination)") != std::string::npos);
}

TEST_CASE("fake device: the checker orders work the host enqueues after it saw an event done") {
  cu::FakeSystem sys;
  cu::FakeDeviceApi api(sys, 0);
  auto s1 = api.stream_create(false), s2 = api.stream_create(true);
  std::byte* x = api.alloc(16);
  api.zero_async(x, 16, s1);
  auto e = api.event_create();
  api.event_record(e, s1);
  CHECK(settle(api, e).empty());
  api.zero_async(x, 16, s2);  // no stream wait: the host's synchronisation orders it
  auto d = api.event_create();
  api.event_record(d, s2);
  CHECK(settle(api, d).empty());
  CHECK(sys.races().empty());
}

TEST_CASE("fake device: the checker orders a receive after its send, and a read of the received bytes only through an event") {
  for (const bool wait_for_receive : {true, false}) {
    CAPTURE(wait_for_receive);
    cu::FakeSystem sys;
    Pair p(sys);
    auto a_compute = p.a.stream_create(false), a_send = p.a.stream_create(true);
    auto b_recv = p.b.stream_create(true), b_compute = p.b.stream_create(false);
    std::byte* x = p.a.alloc(16);
    std::byte* y = p.b.alloc(16);
    std::byte* z = p.b.alloc(16);
    p.a.zero_async(x, 16, a_compute);
    auto ready = p.a.event_create();
    p.a.event_record(ready, a_compute);
    p.a.stream_wait(a_send, ready);
    p.a.send(x, 16, 1, p.ca, a_send);
    p.b.recv(y, 16, 0, p.cb, b_recv);
    if (wait_for_receive) {
      auto got = p.b.event_create();
      p.b.event_record(got, b_recv);
      p.b.stream_wait(b_compute, got);
    }
    auto sent = p.a.event_create();
    p.a.event_record(sent, a_send);
    CHECK(settle(p.a, sent).empty());  // the receive has run: the bytes are there before the read
    p.b.copy_async(z, y, 16, b_compute);
    auto d = p.b.event_create();
    p.b.event_record(d, b_compute);
    const std::string fault = settle(p.b, d);
    if (wait_for_receive) {
      CHECK(fault.empty());
      CHECK(sys.races().empty());
    } else {
      REQUIRE(sys.races().size() == 1);
      CHECK(fault.find("data race") != std::string::npos);
      CHECK(sys.races()[0].find("the receive of rank 0 to rank 1") != std::string::npos);
      CHECK(sys.races()[0].find("read by a copy (source)") != std::string::npos);
    }
  }
}
