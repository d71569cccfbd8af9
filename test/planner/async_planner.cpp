// AsyncPlanner against fake planners whose search takes a controlled time and honours its
// SearchControl. Batches carry their id as the first sample's text tokens, plans carry it in
// Plan::microbatches, so every returned plan can be checked against the batch it was asked for.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"
#include "pipeweaver/planner/plan_result.hpp"

namespace pw = pipeweaver;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

pw::Batch make_batch(int id) {
  pw::Sample s;
  s.text = id;
  pw::Microbatch mb;
  mb.samples.push_back(s);
  pw::Batch b;
  b.microbatches.push_back(mb);
  return b;
}
int batch_id(const pw::Batch& b) { return static_cast<int>(b.microbatches.at(0).samples.at(0).text); }

// A small but non-trivial plan (two ranks, one transfer) so that the binary round trip has
// something to carry.
pw::Plan make_plan(int id, const std::string& name) {
  pw::Plan p;
  p.name = name;
  p.model = "fake-model";
  p.setup = "fake-setup";
  p.microbatches = id;
  p.partition.name = name;
  p.partition.ranks = 2;
  pw::Forward f;
  f.sub_microbatch = pw::SubMicrobatchId{id};
  pw::Transfer t;
  t.from = pw::RankId{0};
  t.to = pw::RankId{1};
  t.bytes = pw::Bytes{1000 + id};
  p.transfers.push_back(t);
  p.ranks = {{f, pw::Send{pw::TransferId{0}}}, {pw::Recv{pw::TransferId{0}}, pw::Wait{pw::TransferId{0}}}};
  return p;
}

pw::PlanResult make_result(int id, const std::string& source, std::int64_t iterations) {
  pw::PlanResult r;
  r.plan = make_plan(id, source);
  r.step_time = pw::Nanoseconds{1000 * id};
  r.iterations = iterations;
  r.source = source;
  return r;
}

// What the fake planners did, shared between the test and the planner copies.
struct Script {
  std::chrono::nanoseconds default_time = 10ms;
  std::map<int, std::chrono::nanoseconds> plan_time;  // per batch id, else default_time
  std::map<int, std::chrono::nanoseconds> linger;     // per batch id: wind-down after a stop
  std::set<int> plan_throws_runtime, plan_throws_error, fallback_throws;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> started, completed, stopped;  // stopped: returned early on a stop request
  std::map<int, bool> stopped_by_cancel;         // id -> control.cancelled() when it stopped
  int running = 0, max_running = 0;
  int fallback_calls = 0;

  template <class Pred>
  bool wait_for(Pred pred, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, timeout, pred);
  }
};

struct FakePlanner {
  std::shared_ptr<Script> s;

  pw::PlanResult plan(const pw::Batch& batch, const pw::SearchControl& control) const {
    const int id = batch_id(batch);
    std::chrono::nanoseconds t;
    {
      std::lock_guard lk(s->mu);
      s->started.push_back(id);
      s->max_running = std::max(s->max_running, ++s->running);
      auto it = s->plan_time.find(id);
      t = it == s->plan_time.end() ? s->default_time : it->second;
      s->cv.notify_all();
    }
    const bool full = control.sleep_for(t);
    if (!full && s->linger.count(id)) std::this_thread::sleep_for(s->linger.at(id));
    std::lock_guard lk(s->mu);
    --s->running;
    s->cv.notify_all();
    if (!full) {
      s->stopped.push_back(id);
      s->stopped_by_cancel[id] = control.cancelled();
      return make_result(id, "searched", 1);  // best so far
    }
    s->completed.push_back(id);
    if (s->plan_throws_runtime.count(id)) throw std::runtime_error("boom " + std::to_string(id));
    if (s->plan_throws_error.count(id))
      throw pw::infeasible_error("does not fit " + std::to_string(id), {.file = "setup.json", .path = "/memory_gib", .expected = "more memory"});
    return make_result(id, "searched", 100);
  }

  pw::PlanResult fallback(const pw::Batch& batch) const {
    const int id = batch_id(batch);
    {
      std::lock_guard lk(s->mu);
      ++s->fallback_calls;
      if (s->fallback_throws.count(id)) throw std::logic_error("no baseline fits " + std::to_string(id));
    }
    return make_result(id, "fallback", 0);
  }
};

// Concept checks: a satisfying type and types missing one requirement each.
struct NoControl {  // the synchronous facade's signature, without SearchControl
  pw::PlanResult plan(const pw::Batch&) const { return {}; }
  pw::PlanResult fallback(const pw::Batch&) const { return {}; }
};
struct NoFallback {
  pw::PlanResult plan(const pw::Batch&, const pw::SearchControl&) const { return {}; }
};
struct MutatingPlan {  // plan() not callable on a const planner
  pw::PlanResult plan(const pw::Batch&, const pw::SearchControl&) { return {}; }
  pw::PlanResult fallback(const pw::Batch&) const { return {}; }
};
struct WrongResult {
  int plan(const pw::Batch&, const pw::SearchControl&) const { return 0; }
  pw::PlanResult fallback(const pw::Batch&) const { return {}; }
};
static_assert(pw::BatchPlanner<FakePlanner>);
static_assert(pw::SearchingPlanner<FakePlanner> && pw::FallbackPlanner<FakePlanner>);
static_assert(!pw::SearchingPlanner<NoControl> && pw::FallbackPlanner<NoControl> && !pw::BatchPlanner<NoControl>);
static_assert(pw::SearchingPlanner<NoFallback> && !pw::FallbackPlanner<NoFallback> && !pw::BatchPlanner<NoFallback>);
static_assert(!pw::SearchingPlanner<MutatingPlan> && !pw::BatchPlanner<MutatingPlan>);
static_assert(!pw::SearchingPlanner<WrongResult> && !pw::BatchPlanner<WrongResult>);

pw::AsyncPlannerOptions options(int threads, int lookahead, std::chrono::nanoseconds grace) {
  pw::AsyncPlannerOptions o;
  o.threads = threads;
  o.lookahead = lookahead;
  o.grace = grace;
  return o;
}

pw::Nanoseconds ns(std::chrono::nanoseconds d) { return pw::Nanoseconds{d.count()}; }

template <class F>
std::chrono::milliseconds time_of(F&& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

/// The kind of the pw::Error that f() throws; nothing when it returns normally.
template <class F>
std::optional<pw::ErrorKind> error_kind(F&& f) {
  try {
    f();
  } catch (const pw::Error& e) {
    return e.kind();
  }
  return std::nullopt;
}

}  // namespace

TEST_SUITE("async planner") {

TEST_CASE("plans come back in submission order even when searches finish out of order") {
  auto s = std::make_shared<Script>();
  // Earlier batches search longer, so with two threads later ones finish first.
  for (int id = 0; id < 12; ++id) s->plan_time[id] = std::chrono::milliseconds(5 + 7 * ((12 - id) % 4));
  pw::AsyncPlanner planner{FakePlanner{s}, options(2, 4, pw::AsyncPlannerOptions::wait_forever)};
  int next_submit = 0;
  for (int expected = 0; expected < 12; ++expected) {
    while (next_submit < 12 && planner.outstanding() < 4) {
      CHECK(planner.submit(make_batch(next_submit)) == next_submit);
      ++next_submit;
    }
    const pw::PlanResult r = planner.next();
    CHECK(r.plan.microbatches == expected);
    CHECK(r.plan == make_plan(expected, "searched"));
    CHECK_FALSE(r.fallback);
    CHECK(r.source == "searched");
    CHECK(r.iterations == 100);
  }
  const auto st = planner.stats();
  CHECK(st.submitted == 12);
  CHECK(st.plans_ready_in_time + st.plans_after_wait == 12);
  CHECK(st.fallbacks == 0);
  CHECK(st.failures == 0);
  std::lock_guard lk(s->mu);
  CHECK(s->fallback_calls == 0);
  CHECK(s->max_running <= 2);  // never more searches at once than threads
  CHECK(s->max_running == 2);  // ... and both threads were used
  // Some search finished before an earlier-submitted one: ordering was really exercised.
  CHECK_FALSE(std::is_sorted(s->completed.begin(), s->completed.end()));
}

TEST_CASE("overlap: with planning shorter than a step, no step waits for its plan over 20 steps") {
  auto s = std::make_shared<Script>();
  s->default_time = 10ms;
  constexpr auto step_time = 50ms;  // the executing step, simulated by a sleep
  constexpr int steps = 20;
  // grace 0: any plan not ready when its step starts is replaced by the fallback at once.
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, std::chrono::nanoseconds{0})};
  planner.submit(make_batch(0));
  std::this_thread::sleep_for(step_time);  // initialization, during which step 0 is planned
  for (int k = 0; k < steps; ++k) {
    if (k + 1 < steps) planner.submit(make_batch(k + 1));  // planned while step k runs
    const pw::PlanResult r = planner.next();
    CHECK(r.plan.microbatches == k);
    CHECK_FALSE(r.fallback);
    CHECK(planner.stats().last_wait == pw::Nanoseconds{0});
    std::this_thread::sleep_for(step_time);
  }
  const auto st = planner.stats();
  CHECK(st.plans_ready_in_time == steps);
  CHECK(st.plans_after_wait == 0);
  CHECK(st.fallbacks == 0);
  CHECK(st.waited == pw::Nanoseconds{0});
}

TEST_CASE("a search slower than the grace period is replaced by the fallback and cancelled") {
  auto s = std::make_shared<Script>();
  s->plan_time[0] = 60s;  // would never finish on its own within the test
  s->plan_time[1] = 5ms;
  constexpr auto grace = 30ms;
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, grace)};
  planner.submit(make_batch(0));
  planner.submit(make_batch(1));
  REQUIRE(s->wait_for([&] { return !s->started.empty(); }));

  pw::PlanResult r;
  const auto took = time_of([&] { r = planner.next(); });
  CHECK(took >= grace);
  CHECK(took < 5s);
  CHECK(r.fallback);
  CHECK(r.source == "fallback");
  CHECK(r.plan == make_plan(0, "fallback"));
  auto st = planner.stats();
  CHECK(st.fallbacks == 1);
  CHECK(st.plans_ready_in_time == 0);
  CHECK(st.last_wait >= ns(grace));

  // The abandoned search observes the cancellation and returns early.
  REQUIRE(s->wait_for([&] { return s->stopped.size() == 1; }));
  {
    std::lock_guard lk(s->mu);
    CHECK(s->stopped.front() == 0);
    CHECK(s->stopped_by_cancel.at(0));
  }
  // The single thread is free again: the next batch is searched normally.
  const pw::PlanResult r1 = planner.next();
  CHECK(r1.plan == make_plan(1, "searched"));
  CHECK_FALSE(r1.fallback);
  st = planner.stats();
  CHECK(st.fallbacks == 1);
  CHECK(st.plans_ready_in_time + st.plans_after_wait == 1);
}

TEST_CASE("a search that finishes within the grace period is waited for, not replaced") {
  auto s = std::make_shared<Script>();
  s->default_time = 40ms;
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 1, 5s)};
  planner.submit(make_batch(7));
  const pw::PlanResult r = planner.next();
  CHECK_FALSE(r.fallback);
  CHECK(r.plan == make_plan(7, "searched"));
  const auto st = planner.stats();
  CHECK(st.plans_after_wait == 1);
  CHECK(st.plans_ready_in_time == 0);
  CHECK(st.fallbacks == 0);
  CHECK(st.last_wait > pw::Nanoseconds{0});
  CHECK(st.last_wait < ns(5s));
}

TEST_CASE("a fallback for a batch whose search never started skips that search") {
  auto s = std::make_shared<Script>();
  s->plan_time[0] = 60s;
  s->linger[0] = 300ms;  // keeps the only thread busy while next() moves on to batch 1
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 3, std::chrono::nanoseconds{0})};
  planner.submit(make_batch(0));
  REQUIRE(s->wait_for([&] { return s->started.size() == 1; }));
  planner.submit(make_batch(1));  // queued behind the endless search of batch 0
  planner.submit(make_batch(2));
  CHECK(planner.next().plan == make_plan(0, "fallback"));
  CHECK(planner.next().plan == make_plan(1, "fallback"));  // not started yet: fallback at once
  // Batch 1 is never searched; batch 2 is, once batch 0's search stopped.
  REQUIRE(s->wait_for([&] { return std::count(s->completed.begin(), s->completed.end(), 2) == 1; }));
  CHECK(planner.next().plan == make_plan(2, "searched"));
  std::lock_guard lk(s->mu);
  CHECK(s->started == std::vector<int>{0, 2});
}

TEST_CASE("the search budget reaches the planner as a deadline") {
  auto s = std::make_shared<Script>();
  s->default_time = 60s;
  auto o = options(1, 1, pw::AsyncPlannerOptions::wait_forever);
  o.search_budget = 30ms;
  pw::AsyncPlanner planner{FakePlanner{s}, o};
  planner.submit(make_batch(3));
  pw::PlanResult r;
  const auto took = time_of([&] { r = planner.next(); });
  CHECK(took >= 30ms);
  CHECK(took < 5s);
  CHECK_FALSE(r.fallback);
  CHECK(r.iterations == 1);  // the fake's "stopped early" result
  std::lock_guard lk(s->mu);
  CHECK(s->stopped == std::vector<int>{3});
  CHECK_FALSE(s->stopped_by_cancel.at(3));  // stopped by the deadline, not by a cancellation
}

TEST_CASE("a planner error surfaces at next() for that batch, naming the step - later batches work") {
  auto s = std::make_shared<Script>();
  s->default_time = 2ms;
  s->plan_throws_runtime = {2};
  s->plan_throws_error = {4};
  pw::AsyncPlanner planner{FakePlanner{s}, options(2, 3, pw::AsyncPlannerOptions::wait_forever)};
  int submitted = 0;
  for (int k = 0; k < 7; ++k) {
    while (submitted < 7 && planner.outstanding() < 3) planner.submit(make_batch(submitted++));
    if (k == 2) {
      try {
        (void)planner.next();
        FAIL("expected an error for step 2");
      } catch (const pw::Error& e) {
        CHECK(e.kind() == pw::ErrorKind::execution);
        CHECK(e.context().path == "step 2");
        CHECK(std::string(e.what()).find("boom 2") != std::string::npos);
        CHECK(std::string(e.what()).find("step 2") != std::string::npos);
      }
    } else if (k == 4) {
      try {
        (void)planner.next();
        FAIL("expected an error for step 4");
      } catch (const pw::Error& e) {
        CHECK(e.kind() == pw::ErrorKind::infeasible);  // an Error keeps its kind and context
        CHECK(e.context().file == "setup.json");
        CHECK(e.context().path == "step 4, /memory_gib");
        CHECK(e.context().expected == "more memory");
        CHECK(e.message().find("does not fit 4") != std::string::npos);
      }
    } else {
      const pw::PlanResult r = planner.next();
      CHECK(r.plan == make_plan(k, "searched"));
    }
  }
  const auto st = planner.stats();
  CHECK(st.failures == 2);
  CHECK(st.plans_ready_in_time + st.plans_after_wait == 5);
  CHECK(planner.outstanding() == 0);
}

TEST_CASE("a failing fallback surfaces as an error naming the step") {
  auto s = std::make_shared<Script>();
  s->default_time = 60s;
  s->fallback_throws = {5};
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, std::chrono::nanoseconds{0})};
  planner.submit(make_batch(5));
  planner.submit(make_batch(6));
  try {
    (void)planner.next();
    FAIL("expected an error");
  } catch (const pw::Error& e) {
    CHECK(e.context().path == "step 0");
    CHECK(e.message().find("fallback planner failed") != std::string::npos);
    CHECK(e.message().find("no baseline fits 5") != std::string::npos);
  }
  CHECK(planner.next().plan == make_plan(6, "fallback"));
  CHECK(planner.stats().failures == 1);
  CHECK(planner.stats().fallbacks == 2);
}

TEST_CASE("misuse is rejected with clear errors") {
  auto s = std::make_shared<Script>();
  s->default_time = 1ms;
  SUBCASE("bad options") {
    CHECK_THROWS_AS(pw::AsyncPlanner(FakePlanner{s}, options(0, 2, std::chrono::nanoseconds{0})), pw::Error);
    CHECK_THROWS_AS(pw::AsyncPlanner(FakePlanner{s}, options(1, 0, std::chrono::nanoseconds{0})), pw::Error);
    CHECK_THROWS_AS(pw::AsyncPlanner(FakePlanner{s}, options(1, 1, std::chrono::nanoseconds{-1})), pw::Error);
  }
  SUBCASE("submitting beyond the lookahead throws instead of blocking") {
    pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, pw::AsyncPlannerOptions::wait_forever)};
    planner.submit(make_batch(0));
    planner.submit(make_batch(1));
    try {
      planner.submit(make_batch(2));
      FAIL("expected an error");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(e.context().expected.find("lookahead = 2") != std::string::npos);
    }
    CHECK(planner.next().plan.microbatches == 0);
    CHECK(planner.submit(make_batch(2)) == 2);  // a slot is free again
    CHECK(planner.next().plan.microbatches == 1);
    CHECK(planner.next().plan.microbatches == 2);
  }
  SUBCASE("next() with nothing outstanding throws") {
    pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, std::chrono::nanoseconds{0})};
    CHECK_THROWS_AS((void)planner.next(), pw::Error);
  }
  SUBCASE("use after cancel() throws Error(cancelled)") {
    pw::AsyncPlanner planner{FakePlanner{s}, options(1, 2, std::chrono::nanoseconds{0})};
    planner.submit(make_batch(0));
    planner.cancel();
    planner.cancel();  // idempotent
    CHECK(planner.outstanding() == 0);
    CHECK(error_kind([&] { planner.submit(make_batch(1)); }) == pw::ErrorKind::cancelled);
    CHECK(error_kind([&] { (void)planner.next(); }) == pw::ErrorKind::cancelled);
  }
}

TEST_CASE("destruction with outstanding work stops the searches and returns promptly") {
  auto s = std::make_shared<Script>();
  s->default_time = 60s;
  std::chrono::milliseconds took{};
  {
    auto planner = std::make_unique<pw::AsyncPlanner<FakePlanner>>(FakePlanner{s}, options(2, 4, std::chrono::nanoseconds{0}));
    for (int id = 0; id < 4; ++id) planner->submit(make_batch(id));
    REQUIRE(s->wait_for([&] { return s->started.size() == 2; }));
    took = time_of([&] { planner.reset(); });
  }
  CHECK(took < 2s);
  std::lock_guard lk(s->mu);
  CHECK(s->running == 0);
  CHECK(s->started.size() == 2);  // the two queued batches were never searched
  CHECK(s->stopped.size() == 2);
  for (int id : s->stopped) CHECK(s->stopped_by_cancel.at(id));
}

TEST_CASE("cancel() from another thread wakes a next() that waits forever") {
  auto s = std::make_shared<Script>();
  s->default_time = 60s;
  pw::AsyncPlanner planner{FakePlanner{s}, options(1, 1, pw::AsyncPlannerOptions::wait_forever)};
  planner.submit(make_batch(0));
  REQUIRE(s->wait_for([&] { return s->started.size() == 1; }));
  std::thread canceller([&] {
    std::this_thread::sleep_for(20ms);
    planner.cancel();
  });
  std::optional<pw::ErrorKind> kind;
  const auto took = time_of([&] { kind = error_kind([&] { (void)planner.next(); }); });
  canceller.join();
  CHECK(kind == pw::ErrorKind::cancelled);
  CHECK(took < 5s);
}

TEST_CASE("plans reach every rank through the in-process broadcast, and so do planning failures") {
  constexpr int ranks = 4;
  constexpr int steps = 5;
  auto s = std::make_shared<Script>();
  s->default_time = 3ms;
  s->plan_throws_runtime = {2};
  pw::host::InProcessBroadcast bc(ranks, std::chrono::milliseconds(10000));

  // received[r][k]: the plan rank r got for step k, or the error text.
  std::vector<std::vector<pw::Plan>> received(ranks, std::vector<pw::Plan>(steps));
  std::vector<std::vector<std::string>> errors(ranks, std::vector<std::string>(steps));
  std::vector<std::thread> others;
  for (int r = 1; r < ranks; ++r)
    others.emplace_back([&, r] {
      const pw::BroadcastHook hook = pw::bind_broadcast(bc, pw::RankId{r}, pw::RankId{0});
      for (int k = 0; k < steps; ++k) {
        try {
          received[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)] = pw::receive_plan(hook);
        } catch (const pw::Error& e) {
          errors[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)] = e.what();
        }
      }
    });

  auto o = options(2, 2, pw::AsyncPlannerOptions::wait_forever);
  o.broadcast = pw::bind_broadcast(bc, pw::RankId{0}, pw::RankId{0});
  {
    pw::AsyncPlanner planner{FakePlanner{s}, o};
    planner.submit(make_batch(0));
    for (int k = 0; k < steps; ++k) {
      if (k + 1 < steps) planner.submit(make_batch(k + 1));
      try {
        received[0][static_cast<std::size_t>(k)] = planner.next().plan;
      } catch (const pw::Error& e) {
        errors[0][static_cast<std::size_t>(k)] = e.what();
      }
    }
  }
  for (auto& t : others) t.join();

  for (int k = 0; k < steps; ++k) {
    const auto kk = static_cast<std::size_t>(k);
    if (k == 2) {
      CHECK(errors[0][kk].find("step 2") != std::string::npos);
      for (int r = 1; r < ranks; ++r)
        CHECK(errors[static_cast<std::size_t>(r)][kk].find("failed to plan") != std::string::npos);
      continue;
    }
    CHECK(received[0][kk] == make_plan(k, "searched"));
    for (int r = 0; r < ranks; ++r) {
      CHECK(errors[static_cast<std::size_t>(r)][kk].empty());
      CHECK(received[static_cast<std::size_t>(r)][kk] == received[0][kk]);
    }
  }
}

TEST_CASE("a next() that fails before there is a plan still tells the other ranks") {
  // Misuse (no batch outstanding) and cancellation both throw on the root; the other ranks must
  // get a failure notice at once rather than wait out the broadcast's timeout.
  auto s = std::make_shared<Script>();
  s->default_time = 1ms;
  pw::host::InProcessBroadcast bc(2, std::chrono::milliseconds(60000));
  auto o = options(1, 1, pw::AsyncPlannerOptions::wait_forever);
  o.broadcast = pw::bind_broadcast(bc, pw::RankId{0}, pw::RankId{0});
  std::vector<std::string> seen;
  std::thread other([&] {
    const pw::BroadcastHook hook = pw::bind_broadcast(bc, pw::RankId{1}, pw::RankId{0});
    for (int k = 0; k < 2; ++k) {
      try {
        (void)pw::receive_plan(hook);
        seen.emplace_back("a plan");
      } catch (const pw::Error& e) {
        seen.emplace_back(e.what());
      }
    }
  });
  std::optional<pw::ErrorKind> misuse, cancelled;
  const auto took = time_of([&] {
    pw::AsyncPlanner planner{FakePlanner{s}, o};
    misuse = error_kind([&] { (void)planner.next(); });  // nothing submitted
    planner.cancel();
    cancelled = error_kind([&] { (void)planner.next(); });
    other.join();
  });
  CHECK(misuse == pw::ErrorKind::input);
  CHECK(cancelled == pw::ErrorKind::cancelled);
  REQUIRE(seen.size() == 2);
  for (const auto& m : seen) CHECK(m.find("failed to plan") != std::string::npos);
  CHECK(took < 30s);  // far below the broadcast's 60 s timeout
}

TEST_CASE("the documented trainer loop: with steps longer than a search, no fallback after step 0") {
  // The loop of async_planner.hpp's header comment and of the README, with grace 0 (a plan not
  // ready when its step is due is replaced at once). A "step" lasts until the search of the next
  // batch has finished (ready()): longer than any search, without a clock in the test.
  auto s = std::make_shared<Script>();
  constexpr int steps = 6;
  pw::AsyncPlanner async{FakePlanner{s}, options(1, 2, 0ns)};
  for (int k = 0; k < 2 && k < steps; ++k) async.submit(make_batch(k));
  std::vector<int> got;
  for (int k = 0; k < steps; ++k) {
    const pw::PlanResult r = k == 0 ? async.next_when_ready() : async.next();
    if (k + 2 < steps) async.submit(make_batch(k + 2));
    got.push_back(r.plan.microbatches);
    CHECK_FALSE(r.fallback);
    if (k + 1 < steps) {  // the step: runs until the next step's search is done
      const auto give_up = Clock::now() + 60s;
      while (!async.ready() && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
      REQUIRE(async.ready());
    }
  }
  CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5});
  const auto st = async.stats();
  CHECK(st.fallbacks == 0);
  CHECK(st.plans_ready_in_time + st.plans_after_wait == steps);
  CHECK(st.plans_ready_in_time >= steps - 1);  // every step after 0 found its plan ready
  CHECK_FALSE(async.ready());  // nothing outstanding
  CHECK(s->fallback_calls == 0);
}

TEST_CASE("next_when_ready waits for a search however long it takes, next() with grace 0 does not") {
  auto s = std::make_shared<Script>();
  s->plan_time[0] = 100ms;
  s->plan_time[1] = 60s;  // until the fallback cancels it
  pw::AsyncPlanner async{FakePlanner{s}, options(1, 2, 0ns)};
  async.submit(make_batch(0));
  async.submit(make_batch(1));
  const pw::PlanResult first = async.next_when_ready();
  CHECK_FALSE(first.fallback);
  CHECK(first.plan.microbatches == 0);
  const pw::PlanResult second = async.next();  // its search has barely started: fallback
  CHECK(second.fallback);
  CHECK(second.plan.microbatches == 1);
}

struct CheckingFake : FakePlanner {
  void check(const pw::Batch& b) const {
    if (batch_id(b) == 13) throw pw::input_error("unlucky batch", {.path = "/microbatches/0/0/text", .expected = "not 13"});
  }
};
static_assert(pw::CheckingPlanner<CheckingFake> && !pw::CheckingPlanner<FakePlanner>);

TEST_CASE("submit() refuses, in the caller's thread, a batch the planner's check refuses") {
  auto s = std::make_shared<Script>();
  pw::AsyncPlanner async{CheckingFake{{s}}, options(1, 2, pw::AsyncPlannerOptions::wait_forever)};
  async.submit(make_batch(1));
  try {
    async.submit(make_batch(13));
    FAIL("submit accepted a batch the planner refuses");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::input);
    CHECK(e.context().path == "/microbatches/0/0/text");
  }
  CHECK(async.outstanding() == 1);
  CHECK(async.next().plan.microbatches == 1);
  CHECK(async.stats().submitted == 1);
}

TEST_CASE("receive_plan and send_plan reject an empty hook") {
  CHECK_THROWS_AS((void)pw::receive_plan(pw::BroadcastHook{}), pw::Error);
  CHECK_THROWS_AS(pw::send_plan(pw::BroadcastHook{}, make_plan(0, "x")), pw::Error);
}

TEST_CASE("SearchControl: default never stops - sleep_for wakes on cancellation") {
  const pw::SearchControl none;
  CHECK_FALSE(none.stop_requested());
  CHECK(none.sleep_for(1ms));

  std::stop_source src;
  const pw::SearchControl c{.stop = src.get_token(), .step = 9};
  std::thread stopper([&] {
    std::this_thread::sleep_for(20ms);
    src.request_stop();
  });
  bool full = true;
  const auto took = time_of([&] { full = c.sleep_for(60s); });
  stopper.join();
  CHECK_FALSE(full);
  CHECK(c.cancelled());
  CHECK_FALSE(c.deadline_passed());
  CHECK(took < 5s);

  const pw::SearchControl past{.deadline = pw::SearchControl::clock::now()};
  CHECK(past.deadline_passed());
  CHECK(past.stop_requested());
  CHECK_FALSE(past.sleep_for(60s));
}

}  // TEST_SUITE
