// The Planner facade (plan/planner.hpp), checked against independent truths:
//  * every plan it returns passes the validator (structure and memory) and its reported step
//    time is the full emulation of that plan;
//  * it is never slower than any baseline that fits memory, each baseline built independently
//    through BaselineComparison, on sampled steps of every suite case;
//  * the lower bound it reports does not exceed its own or any baseline's step time;
//  * identical inputs, seed, iteration budget and threads give identical plans (== and binary);
//  * concurrent plan() calls give what sequential ones give, and a repeated batch is planned
//    from the cache alone (temporal reuse: no new cost-model evaluations);
//  * the placement is the best-scoring fitting candidate, the baselines' own placements are
//    among the candidates, and each candidate's score is an independent search on that
//    partition (adding the baselines' placements leaves DIP's candidates' scores unchanged);
//  * static memory that cannot fit gives Error{infeasible} naming a rank;
//  * cancellation through SearchControl ends a long search promptly;
//  * it works unchanged with a user's own cost model type (no base class, no registration).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/ir/plan_binary.hpp"
#include "pipeweaver/schedule/validator.hpp"
#include "planner/planner_cases.hpp"

using namespace pipeweaver;

namespace {

using planner_test::Case;
using planner_test::load;
using planner_test::W;

/// Small, reproducible search budgets so the tests stay fast.
PlannerOptions quick(std::int64_t iterations = 2, int threads = 1) { return planner_test::quick_options(iterations, 11, threads); }

/// A user's own cost model, as a trainer would write it: per-module tables of measured
/// per-layer costs (a fixed launch cost, a cost per token and per squared token of each item),
/// simple memory formulas, and a link. No base class, nothing registered.
class TableLikeCost {
 public:
  TableLikeCost(const ModelSpec& model, const Setup&) {
    for (const auto& m : model.modules) {
      const double h = static_cast<double>(m.hidden);
      rows_.push_back(Row{20'000.0 + h, h * h * 2e-5, h * 1e-6, 34.0 * h, 2.0 * h, h * 2.0});
    }
  }
  template <class S, class M>
  [[nodiscard]] Nanoseconds latency(const S& s, const M& m, const MemoryStrategy& st) const {
    const Row& r = rows_.at(s.module().index());
    double tokens = 0, square = 0;
    for (auto t : m.item_tokens()) {
      tokens += static_cast<double>(t);
      square += static_cast<double>(t) * static_cast<double>(t);
    }
    for (auto t : m.context_tokens()) tokens += static_cast<double>(t);
    const double fwd = r.launch + r.per_token * tokens + r.per_square * square;  // one layer
    const double L = s.layer_count();
    double t = fwd * L;
    if (s.pass() != Pass::forward) {
      t *= s.pass() == Pass::backward ? 2.0 : 1.0;
      t += fwd * st.full_recompute + 0.3 * fwd * st.selective_recompute + 0.2 * fwd * st.offload;
    }
    return Nanoseconds{static_cast<std::int64_t>(t)};
  }
  template <class S, class M>
  [[nodiscard]] Bytes activation_bytes(const S& s, const M& m, const MemoryStrategy& st) const {
    const Row& r = rows_.at(s.module().index());
    double tokens = 0;
    for (auto t : m.item_tokens()) tokens += static_cast<double>(t);
    const int kept = s.layer_count() - st.full_recompute - st.selective_recompute - st.offload;
    const double per_layer = r.bytes_per_token * tokens;
    const double b = per_layer * kept + r.recompute_bytes_per_token * tokens * st.full_recompute +
                     0.7 * per_layer * st.selective_recompute;
    return Bytes{static_cast<std::int64_t>(b)};
  }
  template <class S, class M>
  [[nodiscard]] Bytes output_bytes(const S& s, const M& m) const {
    double tokens = 0;
    for (auto t : m.item_tokens()) tokens += static_cast<double>(t);
    return Bytes{static_cast<std::int64_t>(rows_.at(s.module().index()).output_bytes_per_token * tokens)};
  }
  [[nodiscard]] Nanoseconds transfer_time(Bytes b) const { return Nanoseconds{10'000 + b.count() / 25}; }

 private:
  struct Row {
    double launch, per_token, per_square, bytes_per_token, recompute_bytes_per_token, output_bytes_per_token;
  };
  std::vector<Row> rows_;
};

static_assert(CostModel<TableLikeCost, StageSpec, SubMicrobatchSpec>);
static_assert(BatchPlanner<Planner<AnalyticCostModel>>);
static_assert(BatchPlanner<Planner<TableLikeCost>>);

template <class C>
void check_result(const PlanResult& r, const Case& c, const C& cost) {
  CHECK_NOTHROW(validate(r.plan, c.model, c.setup, cost));
  const EmulationResult e = emulate(r.plan, c.model, c.setup, cost);
  CHECK(e.step_time == r.step_time);
  CHECK(e.fits_memory());
  CHECK(r.lower_bound > Nanoseconds{0});
  CHECK(r.lower_bound <= r.step_time);
  CHECK(r.lower_bound <= plan_lower_bound(r.plan, c.model, cost));
}

}  // namespace

TEST_CASE("planner: validated plans, never slower than a fitting baseline, on every suite case") {
  const io::Suite suite = io::read_suite(W + "/suite.json");
  REQUIRE(suite.cases.size() >= 7);
  for (const io::SuiteCase& sc : suite.cases) {
    CAPTURE(sc.name);
    const io::Workload w = io::read_case(sc);
    const Case c{w.model, w.setup, w.dataset};
    const AnalyticCostModel cost(c.model, c.setup);
    const Planner planner(c.model, c.setup, cost, c.dataset, quick());
    CHECK(planner.placement_ready());
    CHECK(planner.baselines().size() == baseline_names.size());
    // The baselines again, independently, with the same static choices (same profile).
    const auto profile = profile_batches(c.model, c.dataset, c.setup, quick().compare);
    BaselineComparison cmp(c.model, c.setup, cost, profile, quick().compare);
    const Batch batch = sample_step(c.model, c.dataset, c.setup, 3, 1);
    const PlanResult r = planner.plan(batch);
    check_result(r, c, cost);
    CHECK(r.iterations == 2);
    CHECK(r.search_time > Nanoseconds{0});
    const StepComparison base = cmp.compare(batch, 1);
    for (const PlanComparison& p : base.plans) {
      CAPTURE(p.name);
      if (p.fits_memory) CHECK(r.step_time <= p.step_time);
      CHECK(r.lower_bound <= p.step_time);
    }
    // The source is the searched plan or a baseline, and the plan is that one.
    const bool known = r.source == "dip" || std::find(baseline_names.begin(), baseline_names.end(), r.source) != baseline_names.end();
    CHECK(known);
    CHECK(r.plan.name == r.source);
    MESSAGE(sc.name, ": ", to_ms(r.step_time), " ms by ", r.source, ", lower bound ", to_ms(r.lower_bound), " ms");
  }
}

TEST_CASE("planner: fallback is the best fitting baseline") {
  const Case c = load("vlm-s", "vlm-docs", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  const Planner planner(c.model, c.setup, cost, c.dataset, quick());
  const Batch batch = sample_step(c.model, c.dataset, c.setup, 2, 0);
  const PlanResult f = planner.fallback(batch);
  check_result(f, c, cost);
  CHECK(f.iterations == 0);
  BaselineComparison cmp(c.model, c.setup, cost, profile_batches(c.model, c.dataset, c.setup, quick().compare), quick().compare);
  const StepComparison base = cmp.compare(batch, 0);
  Nanoseconds best = Nanoseconds::max();
  std::string best_name;
  for (const PlanComparison& p : base.plans)
    if (p.fits_memory && p.step_time < best) {
      best = p.step_time;
      best_name = p.name;
    }
  CHECK(f.step_time == best);
  CHECK(f.source == best_name);
  CHECK(planner.plan(batch).step_time <= f.step_time);

  // A comparison over the planner's own baselines (what `pipeweaver compare` does, instead of
  // choosing the static splits twice) reports the same figures as the independent one.
  BaselineComparison reused(c.model, c.setup, cost, planner.baselines(), quick().compare);
  const StepComparison again = reused.compare(batch, 0);
  REQUIRE(again.plans.size() == base.plans.size());
  CHECK(again.lower_bound == base.lower_bound);
  for (std::size_t i = 0; i < base.plans.size(); ++i) {
    CAPTURE(base.plans[i].name);
    CHECK(again.plans[i].name == base.plans[i].name);
    CHECK(again.plans[i].step_time == base.plans[i].step_time);
    CHECK(again.plans[i].fits_memory == base.plans[i].fits_memory);
  }
  // No baselines at all (every one unavailable): nothing is compared, and the lower bound is
  // the partition-independent one, which is at least the minimum over it and every plan's bound.
  BaselineComparison none(c.model, c.setup, cost, std::vector<PreparedBaseline>{}, quick().compare);
  const StepComparison alone = none.compare(batch, 0);
  CHECK(alone.plans.empty());
  CHECK(alone.lower_bound >= base.lower_bound);
  CHECK(alone.lower_bound > Nanoseconds{0});
}

TEST_CASE("planner: the placement is the best of DIP's candidates and the baselines' placements") {
  const Case c = load("vlm-s", "vlm-web-mix", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  PlannerOptions o = quick();
  const Planner with(c.model, c.setup, cost, c.dataset, o);
  o.baseline_placements = false;
  const Planner without(c.model, c.setup, cost, c.dataset, o);
  const auto& sw = with.placement_scores();
  const auto& so = without.placement_scores();
  REQUIRE(so.size() >= 1);
  REQUIRE(sw.size() > so.size());
  for (std::size_t i = 0; i < so.size(); ++i) {  // DIP's candidates first, scored the same
    CHECK(sw[i].name == so[i].name);
    CHECK(sw[i].fits == so[i].fits);
    CHECK(sw[i].total_step_time == so[i].total_step_time);
  }
  for (std::size_t i = so.size(); i < sw.size(); ++i) CHECK(sw[i].name.rfind("baseline ", 0) == 0);
  // Every complete baseline layout's chunks are among the candidates: the chosen partition or a scored one.
  for (const PreparedBaseline& pb : with.baselines()) {
    CAPTURE(pb.baseline.name);
    const std::string name = "baseline " + pb.baseline.name;
    const bool scored = std::any_of(sw.begin(), sw.end(), [&](const PlacementScore& x) { return x.name == name; });
    // A layout equal to an earlier baseline's is scored once, under the earlier name.
    bool duplicate = false;
    for (const PreparedBaseline& q : with.baselines()) {
      if (&q == &pb) break;
      duplicate = duplicate || q.baseline.layout.partition.modules == pb.baseline.layout.partition.modules;
    }
    if (!duplicate) CHECK(scored);
  }
  // The kept placement: the first fitting candidate with the least total step time.
  std::size_t best = 0;
  for (std::size_t i = 1; i < sw.size(); ++i)
    if ((sw[i].fits && !sw[best].fits) || (sw[i].fits == sw[best].fits && sw[i].total_step_time < sw[best].total_step_time))
      best = i;
  CHECK(sw[best].fits);
  CHECK(with.partition().name == sw[best].name);
  CHECK(sw[best].total_step_time <= so.front().total_step_time);  // never worse than DIP's own on the profile
  // The chosen placement's score, recomputed independently with the same search budget.
  const Batch profile = profile_batches(c.model, c.dataset, c.setup, o.compare).front();
  const auto smbs = split(c.model, with.partition(), profile);
  const StageGraph graph = build_stage_graph(c.model, with.partition(), smbs);
  StageCostCache<AnalyticCostModel> cache(cost, c.model);
  ScheduleSearchOptions search = o.search;
  search.mcts.seed = o.seed;
  search.mcts.threads = o.threads;
  search.mcts.max_iterations = o.partition_iterations;
  search.mcts.time_budget = std::chrono::nanoseconds{0};
  search.mcts.record_trace = false;
  const ScheduleSearchResult r = search_schedule(c.model, c.setup, with.partition(), smbs, graph, cache, search);
  CHECK(r.feasible);
  CHECK(r.step_time == sw[best].total_step_time);
  // Whatever the placement, the planner's plans stay valid and at least as good as the baselines'.
  const Batch batch = sample_step(c.model, c.dataset, c.setup, 5, 0);
  const PlanResult pr = with.plan(batch);
  check_result(pr, c, cost);
  CHECK(pr.step_time <= with.fallback(batch).step_time);
}

TEST_CASE("planner: reproducible plans (same inputs, seed, iterations, threads)") {
  const Case c = load("vlm-s", "vlm-web-mix", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  const Batch batch = sample_step(c.model, c.dataset, c.setup, 9, 2);
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    PlannerOptions o = quick(3, threads);
    o.consider_baselines = false;  // the searched plan itself must be reproducible
    const Planner a(c.model, c.setup, cost, c.dataset, o);
    const Planner b(c.model, c.setup, cost, c.dataset, o);
    CHECK(a.partition() == b.partition());
    const PlanResult ra = a.plan(batch);
    const PlanResult rb = b.plan(batch);
    CHECK(ra.source == "dip");
    CHECK(ra.plan == rb.plan);
    CHECK(to_binary(ra.plan) == to_binary(rb.plan));
    CHECK(ra.step_time == rb.step_time);
    CHECK(ra.iterations == rb.iterations);
    // A different seed is a different search (the plan may or may not differ; it must still be valid).
    o.seed = 12;
    const Planner d(c.model, c.setup, cost, c.dataset, o);
    check_result(d.plan(batch), c, cost);
  }
}

TEST_CASE("planner: concurrent plan() calls match sequential ones - a repeated batch hits the cache only") {
  const Case c = load("vlm-s", "vlm-docs", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  const Planner planner(c.model, c.setup, cost, c.dataset, quick(2, 2));
  const Batch b0 = sample_step(c.model, c.dataset, c.setup, 4, 0);
  const Batch b1 = sample_step(c.model, c.dataset, c.setup, 4, 1);
  const PlanResult s0 = planner.plan(b0);
  const PlanResult s1 = planner.plan(b1);
  const auto before = planner.cache_stats();
  const PlanResult again = planner.plan(b0);
  const auto after = planner.cache_stats();
  CHECK(again.plan == s0.plan);
  CHECK(after.misses == before.misses);  // temporal reuse: nothing new to evaluate
  CHECK(after.hits > before.hits);

  const Planner copy = planner;  // copies share the placement and the pool
  auto f0 = std::async(std::launch::async, [&] { return planner.plan(b0); });
  auto f1 = std::async(std::launch::async, [&] { return copy.plan(b1); });
  auto f2 = std::async(std::launch::async, [&] { return copy.fallback(b1); });
  const PlanResult c0 = f0.get(), c1 = f1.get(), c2 = f2.get();
  CHECK(c0.plan == s0.plan);
  CHECK(c1.plan == s1.plan);
  CHECK(c2.step_time >= s1.step_time);
}

TEST_CASE("planner: lazy placement on the first batch, and through an AsyncPlanner") {
  const Case c = load("tiny-vlm", "vlm-captions", "cpu-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  Planner planner(c.model, c.setup, cost, quick());
  CHECK_FALSE(planner.placement_ready());
  CHECK_THROWS_AS((void)planner.partition(), Error);
  const Batch b0 = sample_step(c.model, c.dataset, c.setup, 1, 0);
  const PlanResult r = planner.plan(b0);
  check_result(r, c, cost);
  CHECK(planner.placement_ready());
  // DIP's formula on that batch.
  CHECK(planner.partition() == dip_partition(c.model, c.setup, cost, b0).partition);

  AsyncPlannerOptions ao;
  ao.threads = 2;
  ao.lookahead = 3;
  ao.grace = AsyncPlannerOptions::wait_forever;
  AsyncPlanner async(planner, ao);
  for (int k = 0; k < 3; ++k) async.submit(sample_step(c.model, c.dataset, c.setup, 1, k));
  for (int k = 0; k < 3; ++k) {
    const PlanResult a = async.next();
    CHECK_FALSE(a.fallback);
    CHECK(a.plan == planner.plan(sample_step(c.model, c.dataset, c.setup, 1, k)).plan);
  }
}

TEST_CASE("planner: static memory that cannot fit is Error{infeasible} naming a rank") {
  Case c = load("vlm-s", "vlm-web-mix", "h800-tp4-pp4");
  c.setup.device.memory_gib = c.setup.device.reserved_gib + 1;  // 1 GiB for a 13B model over 4 ranks
  const AnalyticCostModel cost(c.model, c.setup);
  auto check = [](auto&& make) {
    try {
      make();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::infeasible);
      CHECK(std::string(e.what()).find("rank") != std::string::npos);
      CHECK(std::string(e.what()).find("GiB") != std::string::npos);
    }
  };
  check([&] { Planner p(c.model, c.setup, cost, quick()); });
  check([&] { Planner p(c.model, c.setup, cost, c.dataset, quick()); });
}

TEST_CASE("planner: bad options and batches are Error{input} - cancellation ends a search promptly") {
  const Case c = load("tiny-vlm", "vlm-captions", "cpu-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  PlannerOptions none = quick();
  none.iterations = 0;
  CHECK_THROWS_AS(Planner(c.model, c.setup, cost, none), Error);
  PlannerOptions threads = quick();
  threads.threads = 0;
  CHECK_THROWS_AS(Planner(c.model, c.setup, cost, threads), Error);
  CHECK_THROWS_AS(Planner(c.model, c.setup, cost, std::vector<Batch>{}, quick()), Error);

  PlannerOptions endless = quick();
  endless.iterations = 1'000'000'000;  // only the control can end it
  const Planner planner(c.model, c.setup, cost, c.dataset, endless);
  CHECK_THROWS_AS((void)planner.plan(Batch{}), Error);

  const Batch batch = sample_step(c.model, c.dataset, c.setup, 1, 0);
  std::stop_source stop;
  stop.request_stop();
  try {
    (void)planner.plan(batch, {.stop = stop.get_token()});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::cancelled);
  }

  std::stop_source later;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    later.request_stop();
  });
  const PlanResult r = planner.plan(batch, {.stop = later.get_token()});
  canceller.join();
  const auto took = std::chrono::steady_clock::now() - t0;
  check_result(r, c, cost);
  CHECK(r.iterations > 0);
  CHECK(took < std::chrono::seconds(20));

  // A deadline alone ends it too.
  const PlanResult d = planner.plan(batch, {.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100)});
  check_result(d, c, cost);
}

TEST_CASE_TEMPLATE("planner: generic over the cost model type", C, AnalyticCostModel, TableLikeCost) {
  const Case c = load("tiny-vlm", "vlm-captions", "cpu-pp4");
  const C cost(c.model, c.setup);
  const Planner<C> planner(c.model, c.setup, cost, c.dataset, quick(2));
  for (int step = 0; step < 2; ++step) {
    CAPTURE(step);
    const Batch batch = sample_step(c.model, c.dataset, c.setup, 5, step);
    const PlanResult r = planner.plan(batch);
    check_result(r, c, cost);
    CHECK(r.step_time <= planner.fallback(batch).step_time);
  }
  CHECK(planner.cache_stats().hits > 0);
}
