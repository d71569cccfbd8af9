// The planner's plans against the exact optimum of their own step (test/support/exact_schedule.hpp)
// on small random steps of the reference shapes (test/support/small_steps.hpp): for the plan's
// partition, sub-microbatches and memory strategies,
//   dip step time >= optimum >= tight bound (emulate/lower_bound.hpp) >= classic bound,
// and the planner's reported lower bound is at most the optimum. The plan's own per-rank orders,
// emulated by the solver's rules, take exactly the plan's emulated step time (the solver and the
// emulator agree).
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/emulate/stage_cost_cache.hpp>
#include <pipeweaver/planner/planner.hpp>

#include <vector>

#include "support/exact_schedule.hpp"
#include "support/small_steps.hpp"

namespace pw = pipeweaver;

TEST_CASE("small steps: dip >= exact optimum >= tight bound >= classic bound") {
  int solved = 0, dip_optimal = 0, cases = 0;
  for (std::uint64_t seed = 1; seed <= 16; ++seed) {
    const pwtest::SmallStep st =
        pwtest::small_step(seed, {.min_ranks = 2, .max_ranks = 3, .min_microbatches = 2, .max_microbatches = 3, .max_layers_per_rank = 1});
    CAPTURE(st.label());
    const pw::AnalyticCostModel cost(st.model, st.setup);
    const pw::Planner<pw::AnalyticCostModel> planner(st.model, st.setup, cost, std::vector<pw::Batch>{st.batch},
                                                     {.budget = std::chrono::nanoseconds{0}, .iterations = 20});
    const pw::PlanResult r = planner.plan(st.batch);
    pw::StageCostCache<pw::AnalyticCostModel> cache(cost, st.model);
    const pwtest::PlanProblem pp = pwtest::plan_problem(r.plan, st.model, cache);
    CHECK(pwtest::exact_problem_step_time(pp.problem, pp.plan_schedule) == r.step_time);
    const pwtest::ExactResult opt = pwtest::solve_exact(pp.problem, {.node_limit = 100'000, .incumbent = pp.plan_schedule});
    const pw::LowerBound lb = pw::lower_bound(r.plan, st.model, cost);
    CHECK(r.step_time >= opt.step_time);
    CHECK(lb.tight <= opt.step_time);
    CHECK(opt.root_bound <= opt.step_time);
    CHECK(lb.value <= lb.tight);
    CHECK(r.lower_bound <= lb.tight);
    CHECK(r.classic_lower_bound <= r.lower_bound);
    ++cases;
    if (opt.optimal) {
      ++solved;
      dip_optimal += opt.step_time == r.step_time ? 1 : 0;
    }
  }
  MESSAGE(solved, " of ", cases, " small steps solved exactly; dip optimal on ", dip_optimal);
  CHECK(solved * 2 >= cases);  // the solver proves at least half of these small steps
}
