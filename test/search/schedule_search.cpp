// The whole schedule search on real workloads: the found schedule is never worse than the seed
// orders, lowers to a plan that passes the validator (memory included), emulates to the same
// step time, respects the lower bound, and is reproducible across thread counts; over a graph
// with split backwards, the units are the same and a given seed order is never beaten.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/validator.hpp>
#include <pipeweaver/search/schedule_search.hpp>

#include "sampled_step.hpp"

#include <cstdint>
#include <utility>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

using Step = pwtest::SampledStep;
using pwtest::sampled_step;

void check_search(const Step& s, int iterations) {
  const pw::AnalyticCostModel cost{s.model, s.setup};
  pw::StageCostCache<pw::AnalyticCostModel> cache(cost, s.model);
  pw::ScheduleSearchOptions opt;
  opt.mcts.max_iterations = iterations;
  opt.mcts.seed = 5;
  const auto res = pw::search_schedule(s.model, s.setup, s.partition, s.smbs, s.graph, cache, opt);
  REQUIRE(res.feasible);
  CHECK(res.step_time >= res.bound.value);

  // Never worse than any seed order under the same evaluation.
  const auto units = pw::segment_units(s.graph, s.smbs, s.partition.ranks);
  const auto tables = pw::build_step_tables(s.model, s.setup, s.partition, s.smbs, s.graph, units, cache);
  pw::ScheduleEvaluator ev(tables);
  for (const auto& seed : pw::seed_orders(s.model, units, s.partition.ranks)) {
    CAPTURE(seed.name);
    CHECK(pw::is_topological(units, seed.sequence));
    const auto e = ev.evaluate(seed.sequence);
    if (e.feasible) CHECK(res.step_time <= e.step_time);
  }
  CHECK(pw::is_topological(units, res.search.best_sequence));

  // Lowers to a plan that passes the validator (memory included) and whose full emulation agrees.
  const pw::Plan plan = pw::lower(s.model, s.partition, s.smbs, s.graph, res.schedule, cost, "dip", s.setup.name);
  CHECK_NOTHROW(pw::validate(plan, s.model, s.setup, cost));
  const auto emu = pw::emulate(plan, s.model, s.setup, cache);
  CHECK(emu.step_time == res.step_time);

  // Same plan with two threads.
  opt.mcts.threads = 2;
  const auto res2 = pw::search_schedule(s.model, s.setup, s.partition, s.smbs, s.graph, cache, opt);
  CHECK(res2.search.best_sequence == res.search.best_sequence);
  CHECK(res2.step_time == res.step_time);
  for (std::size_t r = 0; r < res.schedule.ranks.size(); ++r) CHECK(res2.schedule.ranks[r] == res.schedule.ranks[r]);
  MESSAGE("step ", pw::to_ms(res.step_time), " ms, bound ", pw::to_ms(res.bound.value), " ms, found by ", res.found_by,
          ", rollouts ", res.search.rollouts);
}

}  // namespace

TEST_CASE("schedule search on tiny-vlm / cpu-pp4") {
  check_search(sampled_step("tiny-vlm", "vlm-captions", "cpu-pp4"), 6);
}

TEST_CASE("schedule search on vlm-s / web-mix") {
  check_search(sampled_step("vlm-s", "vlm-web-mix", "h800-tp4-pp4"), 4);
}

TEST_CASE("schedule search under tight memory still fits (memory optimization and pausing)") {
  // Shrink the device until the fastest strategies no longer fit everything in flight.
  check_search(sampled_step("vlm-s", "vlm-web-mix", "h800-tp4-pp4", 30), 4);
}

TEST_CASE("schedule search over split backwards: the same units, seeded with the unsplit search's best order") {
  for (const auto& [step, memory] : {std::pair{sampled_step("tiny-vlm", "vlm-captions", "cpu-pp4"), false},
                                     std::pair{sampled_step("vlm-s", "vlm-web-mix", "h800-tp4-pp4", 30), true}}) {
    CAPTURE(step.model.name);
    CAPTURE(memory);
    Step split = step;
    split.graph = pw::build_stage_graph(split.model, split.partition, split.smbs, {.split_backward = true});
    REQUIRE(split.graph.size() > step.graph.size());
    // A backward's two parts belong to one unit: the unit DAGs are identical.
    const auto units = pw::segment_units(step.graph, step.smbs, step.partition.ranks);
    const auto split_units = pw::segment_units(split.graph, split.smbs, split.partition.ranks);
    CHECK(units.units == split_units.units);
    CHECK(units.successors == split_units.successors);

    const pw::AnalyticCostModel cost{step.model, step.setup};
    pw::StageCostCache<pw::AnalyticCostModel> cache(cost, step.model);
    pw::ScheduleSearchOptions opt;
    opt.mcts.max_iterations = 3;
    const auto plain = pw::search_schedule(step.model, step.setup, step.partition, step.smbs, step.graph, cache, opt);
    opt.seeds.push_back(plain.search.best_sequence);
    const auto res = pw::search_schedule(split.model, split.setup, split.partition, split.smbs, split.graph, cache, opt);
    REQUIRE(res.feasible);
    // Never worse than the given seed under the split graph's own evaluation.
    const auto tables = pw::build_step_tables(split.model, split.setup, split.partition, split.smbs, split.graph, split_units, cache);
    pw::ScheduleEvaluator ev(tables);
    const auto seeded = ev.evaluate(plain.search.best_sequence);
    if (seeded.feasible) CHECK(res.step_time <= seeded.step_time);
    // Lowers to a valid plan with split backwards whose emulation agrees.
    const pw::Plan plan = pw::lower(split.model, split.partition, split.smbs, split.graph, res.schedule, cost, "dip", split.setup.name);
    CHECK_NOTHROW(pw::validate(plan, split.model, split.setup, cost));
    CHECK(pw::emulate(plan, split.model, split.setup, cache).step_time == res.step_time);
    int weight_parts = 0;
    for (const auto& actions : plan.ranks)
      for (const auto& a : actions)
        if (const auto* b = std::get_if<pw::Backward>(&a)) weight_parts += b->pass == pw::Pass::backward_weight ? 1 : 0;
    CHECK(weight_parts > 0);
    MESSAGE("unsplit " << pw::to_ms(plain.step_time) << " ms, split " << pw::to_ms(res.step_time) << " ms (found by " << res.found_by << ")");

    // A seed that is not an order of the units is refused.
    pw::ScheduleSearchOptions bad = opt;
    bad.seeds = {std::vector<std::int32_t>{0}};
    CHECK_THROWS_AS((void)pw::search_schedule(split.model, split.setup, split.partition, split.smbs, split.graph, cache, bad), pw::Error);
  }
}
