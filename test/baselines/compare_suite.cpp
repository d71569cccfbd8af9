// The lower bound that `compare` reports never exceeds any baseline plan's emulated step time,
// on every case of the reference suite (examples/workloads/suite.json), for several seeds and
// steps. Independent of how the bound is assembled, it is also checked against each plan's own
// per-graph bound recomputed from the lowered plan (emulate/lower_bound.hpp), which must be
// valid for that plan.
#include <doctest/doctest.h>

#include <string>

#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/baselines/compare.hpp"

using namespace pipeweaver;

TEST_CASE("suite: lower bound <= every baseline's emulated step time, several seeds") {
  const io::Suite suite = io::read_suite(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/suite.json");
  REQUIRE(suite.cases.size() >= 7);
  int checked = 0;
  for (const io::SuiteCase& c : suite.cases) {
    CAPTURE(c.name);
    const io::Workload w = io::read_case(c);
    const AnalyticCostModel cost(w.model, w.setup);
    CompareOptions options;
    options.profile_steps = 1;
    const auto profile = profile_batches(w.model, w.dataset, w.setup, options);
    BaselineComparison cmp(w.model, w.setup, cost, profile, options);
    for (std::uint64_t seed : {1u, 2u, 3u})
      for (int step = 0; step < 2; ++step) {
        CAPTURE(seed);
        CAPTURE(step);
        const StepComparison r = cmp.compare(sample_step(w.model, w.dataset, w.setup, seed, step), step);
        CHECK(r.lower_bound > Nanoseconds{0});
        CHECK(r.lower_bound <= partition_independent_lower_bound(w.model, w.setup, cost,
                                                                 sample_step(w.model, w.dataset, w.setup, seed, step)));
        for (const PlanComparison& p : r.plans) {
          CAPTURE(p.name);
          CHECK(r.lower_bound <= p.step_time);
          CHECK(plan_lower_bound(p.plan, w.model, cost) <= p.step_time);
          ++checked;
        }
      }
  }
  CHECK(checked == static_cast<int>(suite.cases.size()) * 3 * 2 * static_cast<int>(baseline_names.size()));
}
