// Planner::update_cost and what PlanResult reports, against independent truths:
//  * after an update naming what changed, the next plan is the one a planner that dropped every
//    cached cost makes, its step time is the plain emulation under the new model (no stale
//    entry), and it evaluates fewer stages than that planner (the unchanged entries are reused);
//  * a search in flight finishes with the model it started with, later ones use the new model,
//    also while another thread keeps updating (each result agrees with its own version's model);
//  * per-rank peak memory is the plan's emulation's; the search trace's best step time never
//    gets worse, and its last point is the searched schedule's.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "planner/planner_cases.hpp"

using namespace pipeweaver;

namespace {

using planner_test::Case;
using planner_test::load;
using planner_test::W;

PlannerOptions quick(std::int64_t iterations = 2) { return planner_test::quick_options(iterations, 5); }

/// The analytic model with one (module, pass)'s latencies scaled by `factor`; counts latency calls.
struct Scaled {
  AnalyticCostModel base;
  ModuleId module{0};
  Pass pass = Pass::forward;
  double factor = 1;
  std::shared_ptr<std::atomic<long>> calls = std::make_shared<std::atomic<long>>(0);

  template <class S, class M>
  [[nodiscard]] Nanoseconds latency(const S& s, const M& m, const MemoryStrategy& st) const {
    calls->fetch_add(1, std::memory_order_relaxed);
    const Nanoseconds t = base.latency(s, m, st);
    return s.module() == module && s.pass() == pass ? round_ns(static_cast<double>(t.count()) * factor) : t;
  }
  template <class S, class M>
  [[nodiscard]] Bytes activation_bytes(const S& s, const M& m, const MemoryStrategy& st) const {
    return base.activation_bytes(s, m, st);
  }
  template <class S, class M>
  [[nodiscard]] Bytes output_bytes(const S& s, const M& m) const {
    return base.output_bytes(s, m);
  }
  [[nodiscard]] Nanoseconds transfer_time(Bytes b) const { return base.transfer_time(b); }

  [[nodiscard]] Scaled with(double f) const {
    Scaled s = *this;
    s.factor = f;
    return s;
  }
  [[nodiscard]] CostChange change() const {
    CostChange c;
    c.add(module, pass);
    return c;
  }
};
static_assert(CostModel<Scaled, StageSpec, SubMicrobatchSpec>);

}  // namespace

TEST_CASE("planner: an update drops exactly the changed stage costs, and plans as if it had dropped all") {
  const Case c = load("vlm-s", "vlm-docs", "h800-tp4-pp4");
  const Scaled before{AnalyticCostModel(c.model, c.setup), ModuleId{0}, Pass::forward, 1.0};
  const Scaled after = before.with(1.6);
  Planner<Scaled> exact(c.model, c.setup, before, c.dataset, quick());
  Planner<Scaled> all(c.model, c.setup, before, c.dataset, quick());
  const Batch b0 = sample_step(c.model, c.dataset, c.setup, 2, 0);
  const Batch b1 = sample_step(c.model, c.dataset, c.setup, 2, 1);
  (void)exact.plan(b0);
  (void)all.plan(b0);
  CHECK(exact.cost_version() == 0);
  CHECK(exact.update_cost(after, after.change()) == 1);
  CHECK(all.update_cost(after, CostChange::everything()) == 1);
  CHECK(exact.cost()->factor == 1.6);
  // The batch planned before the update again (its stage costs are cached), then a new one.
  for (const Batch* b : {&b0, &b1}) {
    const auto exact0 = exact.cache_stats(), all0 = all.cache_stats();
    const PlanResult re = exact.plan(*b);
    const PlanResult ra = all.plan(*b);
    const auto exact1 = exact.cache_stats(), all1 = all.cache_stats();
    CHECK(re.cost_version == 1);
    CHECK(re.plan == ra.plan);
    CHECK(re.step_time == ra.step_time);
    CHECK(re.step_time == emulate(re.plan, c.model, c.setup, after).step_time);   // no stale entry was used
    CHECK(emulate(re.plan, c.model, c.setup, before).step_time != re.step_time);  // and the update mattered
    CHECK(exact1.invalidated > 0);
    CHECK(exact1.invalidated < all1.invalidated);
    const std::string which = b == &b0 ? "the batch planned before the update" : "a new batch";
    MESSAGE(which << ": entries dropped " << exact1.invalidated << " (exact) vs " << all1.invalidated << " (everything); stage evaluations "
                  << exact1.misses - exact0.misses << " vs " << all1.misses - all0.misses);
    // The unchanged entries were reused (a new batch's shapes are new to both planners).
    if (b == &b0) CHECK(exact1.misses - exact0.misses < all1.misses - all0.misses);
    else CHECK(exact1.misses - exact0.misses <= all1.misses - all0.misses);
  }
}

TEST_CASE("planner: a search in flight keeps its model, the searches after an update use the new one") {
  const Case c = load("tiny-vlm", "vlm-captions", "cpu-pp4");
  const Scaled first{AnalyticCostModel(c.model, c.setup), ModuleId{1}, Pass::backward, 1.0};
  PlannerOptions o = quick();
  o.iterations = 0;
  o.budget = std::chrono::milliseconds(300);  // a search long enough to update during it
  Planner<Scaled> planner(c.model, c.setup, first, c.dataset, o);

  SUBCASE("through an AsyncPlanner") {
    AsyncPlanner<Planner<Scaled>> async(planner, {.threads = 1, .lookahead = 2, .grace = AsyncPlannerOptions::wait_forever});
    first.calls->store(0);
    async.submit(sample_step(c.model, c.dataset, c.setup, 9, 0));
    // The search has borrowed its cache (and so its model) once it evaluates a stage.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (first.calls->load() == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(first.calls->load() > 0);
    const Scaled second = first.with(2.5);
    CHECK(planner.update_cost(second, second.change()) == 1);
    async.submit(sample_step(c.model, c.dataset, c.setup, 9, 1));
    const PlanResult r0 = async.next_when_ready();
    const PlanResult r1 = async.next_when_ready();
    CHECK(r0.cost_version == 0);
    CHECK(r0.step_time == emulate(r0.plan, c.model, c.setup, first).step_time);
    CHECK(r1.cost_version == 1);
    CHECK(r1.step_time == emulate(r1.plan, c.model, c.setup, second).step_time);
  }

  SUBCASE("while another thread keeps updating") {
    const auto factor = [](std::uint64_t version) { return 1.0 + 0.25 * static_cast<double>(version % 5); };
    std::atomic<bool> done{false};
    bool versions_in_order = true;  // read after join
    std::thread updater([&] {
      for (std::uint64_t v = 1; v <= 40 && !done.load(); ++v) {
        const Scaled next = first.with(factor(v));
        versions_in_order = planner.update_cost(next, next.change()) == v && versions_in_order;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    Planner<Scaled> copy = planner;
    std::vector<std::future<std::vector<PlanResult>>> workers;
    for (int t = 0; t < 2; ++t)
      workers.push_back(std::async(std::launch::async, [&, t] {
        std::vector<PlanResult> out;
        for (int k = 0; k < 3; ++k) {
          const Batch b = sample_step(c.model, c.dataset, c.setup, 20 + t, k);
          out.push_back(t == 0 ? planner.plan(b, {.iterations = 2}) : copy.fallback(b));
        }
        return out;
      }));
    std::vector<PlanResult> results;
    for (auto& w : workers)
      for (PlanResult& r : w.get()) results.push_back(std::move(r));
    done.store(true);
    updater.join();
    CHECK(versions_in_order);
    for (const PlanResult& r : results) {
      CAPTURE(r.cost_version);
      CHECK(r.step_time == emulate(r.plan, c.model, c.setup, first.with(factor(r.cost_version))).step_time);
    }
  }
}

TEST_CASE("planner: per-rank peak memory and the search trace in PlanResult") {
  const Case c = load("vlm-s", "vlm-web-mix", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  PlannerOptions o = quick(12);
  o.consider_baselines = false;  // the searched plan: the trace's last point is its schedule
  const Planner<AnalyticCostModel> planner(c.model, c.setup, cost, c.dataset, o);
  const Batch b = sample_step(c.model, c.dataset, c.setup, 1, 0);
  const PlanResult r = planner.plan(b);
  const EmulationResult e = emulate(r.plan, c.model, c.setup, cost);
  REQUIRE(r.peak_memory.size() == e.ranks.size());
  for (std::size_t i = 0; i < e.ranks.size(); ++i) CHECK(r.peak_memory[i] == e.ranks[i].peak_memory);

  REQUIRE(r.search_trace.size() >= 2);  // the seeds, then the rounds
  for (std::size_t i = 1; i < r.search_trace.size(); ++i) {
    const SearchTracePoint& p = r.search_trace[i - 1];
    const SearchTracePoint& q = r.search_trace[i];
    CHECK(q.elapsed >= p.elapsed);
    CHECK(q.rollouts >= p.rollouts);
    if (p.fits_memory && q.fits_memory) CHECK(q.step_time <= p.step_time);
    CHECK((q.fits_memory || !p.fits_memory));
  }
  const SearchTracePoint& last = r.search_trace.back();
  CHECK(last.fits_memory);
  CHECK(last.step_time >= r.lower_bound);
  MESSAGE("trace: " << r.search_trace.size() << " points, " << to_ms(r.search_trace.front().step_time) << " ms -> "
                    << to_ms(last.step_time) << " ms; the lowered plan emulates to " << to_ms(r.step_time) << " ms");
  CHECK(std::abs(static_cast<double>(last.step_time.count() - r.step_time.count())) <= 0.01 * static_cast<double>(r.step_time.count()));

  const PlanResult f = planner.fallback(b);
  CHECK(f.search_trace.empty());
  CHECK(f.peak_memory.size() == e.ranks.size());
}
