// Execution correctness of split backwards and of re-packed steps, on tiny-vlm with real float32
// math over four host threads (P = 4):
//  * a plan whose backwards are split into input and weight parts (the weight parts deferred by
//    the interleaver, by the planner's split search, and by the zero-bubble baseline) gives the
//    gradients of the same samples run sequentially without a pipeline;
//  * a step whose samples are regrouped into other microbatches (repack(), and the Planner with
//    PlannerOptions::repack, fed through PlanResult::sample_origin) gives the gradients and the
//    loss of the un-repacked step.
// Gradients agree within 1e-5 relative error (each item's float math is the same wherever it
// runs; only the order of the double-precision accumulation differs).
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/host/gradients.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/baselines/compare.hpp>
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>
#include <pipeweaver/planner/repacking.hpp>
#include <pipeweaver/search/schedule_search.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

using test_plans::gradient_norm;
using test_plans::max_relative_gradient_error;

using test_plans::cpu_pp4;

int weight_parts(const pw::Plan& plan) {
  int n = 0;
  for (const auto& actions : plan.ranks)
    for (const auto& a : actions)
      if (const auto* b = std::get_if<pw::Backward>(&a)) n += b->pass == pw::Pass::backward_weight ? 1 : 0;
  return n;
}

using test_plans::check_sequential_gradients;

toy_vlm::ToyBatch uneven_batch(const toy_vlm::Config& cfg, std::uint64_t seed) {
  toy_vlm::DatasetOptions o;
  o.microbatches = 4;
  o.samples_per_microbatch = 3;
  o.max_images = 2;
  return toy_vlm::make_batch(cfg, seed, o);
}

}  // namespace

TEST_CASE("host: plans with split backwards give the sequential gradients") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const pw::Setup setup = cpu_pp4();
  const auto cfg = toy_vlm::Config::from(spec);
  const toy_vlm::ToyBatch batch = uneven_batch(cfg, 77);

  SUBCASE("the interleaver's deferred weight parts, on both test partitions") {
    for (const pw::Partition& partition : {test_plans::dip_partition(2, 1), test_plans::chain_partition()}) {
      CAPTURE(partition.name);
      const pw::Plan plan = test_plans::make_plan(spec, partition, batch.meta, {.split_backward = true}, true);
      CHECK(weight_parts(plan) > 0);
      check_sequential_gradients(spec, batch, batch, plan);
    }
  }
  SUBCASE("the split search the planner runs") {
    const pw::AnalyticCostModel cost(spec, setup);
    pw::PlannerOptions po;
    po.budget = std::chrono::nanoseconds{0};
    po.iterations = 2;
    po.partition_steps = 0;
    po.consider_baselines = false;
    po.split_backward = true;
    const pw::Planner<pw::AnalyticCostModel> planner(spec, setup, cost, std::vector<pw::Batch>{batch.meta}, po);
    // The split search itself, on the planner's partition (whichever plan the planner keeps).
    const auto smbs = pw::split(spec, planner.partition(), batch.meta);
    const auto graph = pw::build_stage_graph(spec, planner.partition(), smbs, {.split_backward = true});
    pw::StageCostCache<pw::AnalyticCostModel> cache(cost, spec);
    pw::ScheduleSearchOptions so;
    so.mcts.max_iterations = 2;
    const auto res = pw::search_schedule(spec, setup, planner.partition(), smbs, graph, cache, so);
    const pw::Plan plan = pw::lower(spec, planner.partition(), smbs, graph, res.schedule, cost, "dip", setup.name);
    pw::validate(plan, spec, setup, cost);
    CHECK(weight_parts(plan) > 0);
    check_sequential_gradients(spec, batch, batch, plan);
    // And the planner's own choice.
    const pw::PlanResult r = planner.plan(batch.meta);
    MESSAGE("planner kept " << (pw::has_split_backward(r.plan) ? "the split" : "the unsplit") << " plan");
    check_sequential_gradients(spec, batch, batch, r.plan);
  }
  SUBCASE("the zero-bubble baseline") {
    const pw::AnalyticCostModel cost(spec, setup);
    pw::BaselineContext<pw::AnalyticCostModel> ctx(spec, setup, cost);
    const std::vector<pw::Batch> profile{batch.meta};
    const pw::PreparedBaseline zb = pw::prepare_zero_bubble(ctx, profile);
    const pw::BaselinePlan b = pw::build_baseline_plan(ctx, zb.baseline, batch.meta);
    CHECK(weight_parts(b.plan) > 0);
    check_sequential_gradients(spec, batch, batch, b.plan);
  }
}

TEST_CASE("host: a re-packed step gives the un-repacked step's gradients") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const pw::Setup setup = cpu_pp4();
  const auto cfg = toy_vlm::Config::from(spec);
  const pw::AnalyticCostModel cost(spec, setup);

  SUBCASE("repack(), then a plan of the regrouped step") {
    const toy_vlm::ToyBatch batch = uneven_batch(cfg, 91);
    const pw::Repacking r = pw::repack(spec, setup, cost, batch.meta);
    REQUIRE(r.changed);
    const toy_vlm::ToyBatch regrouped = toy_vlm::regroup(batch, r.origin);
    CHECK(regrouped.meta.microbatches.size() == batch.meta.microbatches.size());
    bool moved = false;
    for (std::size_t mb = 0; mb < r.origin.size(); ++mb)
      for (std::size_t s = 0; s < r.origin[mb].size(); ++s)
        moved = moved || r.origin[mb][s].microbatch != static_cast<std::int32_t>(mb);
    CHECK(moved);
    for (const pw::Partition& partition : {test_plans::dip_partition(2, 1), test_plans::chain_partition()}) {
      CAPTURE(partition.name);
      check_sequential_gradients(spec, batch, regrouped, test_plans::make_plan(spec, partition, regrouped.meta));
    }
  }
  SUBCASE("the planner with re-packing, fed through sample_origin") {
    pw::PlannerOptions po;
    po.budget = std::chrono::nanoseconds{0};
    po.iterations = 2;
    po.partition_steps = 0;
    po.consider_baselines = false;
    po.repack = true;
    po.split_backward = true;
    int repacked = 0;
    for (std::uint64_t seed = 100; seed < 106; ++seed) {
      CAPTURE(seed);
      const toy_vlm::ToyBatch batch = uneven_batch(cfg, seed);
      const pw::Planner<pw::AnalyticCostModel> planner(spec, setup, cost, std::vector<pw::Batch>{batch.meta}, po);
      const pw::PlanResult r = planner.plan(batch.meta);
      repacked += r.repacked ? 1 : 0;
      check_sequential_gradients(spec, batch, toy_vlm::regroup(batch, r.sample_origin), r.plan);
    }
    MESSAGE(repacked << " of 6 steps were planned repacked");
    CHECK(repacked > 0);
  }
}
