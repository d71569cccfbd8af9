// Execution correctness through the planner: for tiny-vlm on
// cpu-pp4 (P = 4), the gradients of one pipelined step equal those of the same samples run
// sequentially (examples/toy_vlm's reference) within 1e-5 relative error, for the searched
// (dip) plan from Planner::plan and for every baseline of BaselineComparison; and SGD through
// steps planned by an AsyncPlanner lowers the loss over 50 steps.
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/host/gradients.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/async_planner.hpp>
#include <pipeweaver/baselines/compare.hpp>
#include <pipeweaver/planner/planner.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

using test_plans::cpu_pp4;

using test_plans::gradient_norm;
using test_plans::max_relative_gradient_error;

/// A search-only planner with an iteration budget (reproducible).
pw::PlannerOptions small_search() {
  pw::PlannerOptions o;
  o.budget = std::chrono::nanoseconds{0};
  o.iterations = 3;
  o.partition_iterations = 1;
  o.consider_baselines = false;  // the result is the searched plan, never a baseline's
  return o;
}

/// Sub-microbatches of module m in microbatch mb.
int pieces(const pw::Plan& plan, pw::ModuleId m, int mb) {
  int n = 0;
  for (const auto& s : plan.sub_microbatches) n += s.module() == m && s.microbatch().value() == mb ? 1 : 0;
  return n;
}

/// The step's gradients through `plan` on four host threads against the sequential reference.
void check_plan_gradients(const pw::ModelSpec& spec, const toy_vlm::ToyBatch& batch, const pw::Plan& plan) {
  REQUIRE(plan.rank_count() == 4);
  test_plans::check_sequential_gradients(spec, batch, batch, plan);
}

}  // namespace

TEST_CASE("host: planned tiny-vlm steps (dip and every baseline) give the sequential gradients") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const pw::Setup setup = cpu_pp4();
  const auto cfg = toy_vlm::Config::from(spec);
  const pw::AnalyticCostModel cost(spec, setup);
  const toy_vlm::ToyBatch batch = test_plans::varied_batch(cfg);

  SUBCASE("the searched plan") {
    // DIP's own placement (partition_steps = 0: no scoring against the baselines' layouts, which
    // keep whole microbatches), so the ViT's images are cut into sub-microbatches of B items.
    // On the toy CPU device the analytic model's efficiency keeps rising up to a whole
    // microbatch of this small batch, so the default 95% threshold picks B >= the images of a
    // microbatch; a lower threshold makes DIP cut them (B = 2).
    pw::PlannerOptions po = small_search();
    po.partition_steps = 0;
    po.dip.efficiency_threshold = 0.3;
    const pw::Planner<pw::AnalyticCostModel> planner(spec, setup, cost, std::vector<pw::Batch>{batch.meta}, po);
    const pw::PlanResult r = planner.plan(batch.meta);
    CHECK(r.source == "dip");
    // Several sub-microbatches per module: the ViT's work of a microbatch is cut into several
    // pieces; the backbone keeps one per microbatch (DIP's B = 0 for it) over the four
    // microbatches; both modules are spread over all four ranks.
    for (pw::ModuleId m : {cfg.vit_module, cfg.llm_module}) {
      CAPTURE(spec.module(m).name);
      int most = 0, total = 0;
      for (int mb = 0; mb < r.plan.microbatches; ++mb) {
        most = std::max(most, pieces(r.plan, m, mb));
        total += pieces(r.plan, m, mb);
      }
      CHECK(most >= (m == cfg.vit_module ? 2 : 1));
      CHECK(total >= 4);
      std::vector<int> ranks;
      for (const auto& ch : r.plan.partition.modules[m.index()].chunks) ranks.push_back(ch.rank.value());
      std::sort(ranks.begin(), ranks.end());
      ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
      CHECK(ranks.size() == 4);
    }
    check_plan_gradients(spec, batch, r.plan);
  }

  SUBCASE("every baseline") {
    const std::vector<pw::Batch> profile{batch.meta};
    pw::BaselineComparison<pw::AnalyticCostModel> cmp(spec, setup, cost, profile);
    const pw::StepComparison step = cmp.compare(batch.meta);
    REQUIRE(step.plans.size() == pw::baseline_names.size());
    for (std::size_t i = 0; i < step.plans.size(); ++i) {
      CAPTURE(step.plans[i].name);
      CHECK(step.plans[i].name == pw::baseline_names[i]);
      check_plan_gradients(spec, batch, step.plans[i].plan);
    }
  }
}

TEST_CASE("host: SGD through steps planned by an AsyncPlanner lowers the loss over 50 steps") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const pw::Setup setup = cpu_pp4();
  const auto cfg = toy_vlm::Config::from(spec);
  const pw::AnalyticCostModel cost(spec, setup);
  toy_vlm::DatasetOptions o;
  o.microbatches = 2;
  o.samples_per_microbatch = 3;
  o.min_text = 5;
  o.max_text = 8;
  o.min_image_tokens = 4;
  o.max_image_tokens = 10;
  // A pool of four batches seen in turn (different shapes, so every step gets its own plan).
  std::vector<toy_vlm::ToyBatch> pool;
  for (std::uint64_t s = 0; s < 4; ++s) pool.push_back(toy_vlm::make_batch(cfg, 500 + s, o));
  std::vector<pw::Batch> metas;
  for (const auto& b : pool) metas.push_back(b.meta);
  pw::PlannerOptions po = small_search();
  po.iterations = 2;
  const pw::Planner<pw::AnalyticCostModel> planner(spec, setup, cost, metas, po);
  pw::AsyncPlannerOptions ao;
  ao.lookahead = 2;
  ao.grace = pw::AsyncPlannerOptions::wait_forever;  // deterministic: never falls back
  pw::AsyncPlanner<pw::Planner<pw::AnalyticCostModel>> async(planner, ao);

  toy_vlm::Model<float> model(cfg, 7);
  pw::host::Options options;
  options.timeout = std::chrono::seconds(60);
  options.executor.sizes = toy_vlm::Callbacks(model, pool[0], 4).sizes();  // depends on the model only
  pw::host::HostExecutor executor(options);
  const int steps = 50;
  async.submit(pool[0].meta);
  std::vector<double> losses;
  for (int k = 0; k < steps; ++k) {
    if (k + 1 < steps) async.submit(pool[static_cast<std::size_t>((k + 1) % 4)].meta);  // searched during step k
    const pw::PlanResult r = async.next();
    CHECK_FALSE(r.fallback);
    const toy_vlm::ToyBatch& batch = pool[static_cast<std::size_t>(k % 4)];
    toy_vlm::Callbacks callbacks(model, batch, 4);
    model.zero_grad();
    executor.run(r.plan, spec, callbacks);
    losses.push_back(callbacks.loss());
    model.sgd(0.05);
  }
  const auto mean = [&](int from) { return std::accumulate(losses.begin() + from, losses.begin() + from + 4, 0.0) / 4; };
  MESSAGE("loss: first 4 steps " << mean(0) << ", steps 24-27 " << mean(24) << ", last 4 " << mean(steps - 4));
  CHECK(mean(0) == doctest::Approx(std::log(512.0)).epsilon(0.2));  // about uniform at the start
  CHECK(mean(24) < mean(0));
  CHECK(mean(steps - 4) < mean(24));
  CHECK(mean(steps - 4) < 0.5 * mean(0));
  CHECK(async.stats().fallbacks == 0);
  CHECK(async.stats().failures == 0);
}
