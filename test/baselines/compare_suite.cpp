// The lower bounds that `compare` reports never exceed any baseline plan's emulated step time,
// on every case of the reference suite (examples/workloads/suite.json), for several seeds and
// steps: the tight one (the smallest per-graph tight bound) and the classic one (at most the
// tight one and the partition-independent bound). Independent of how the bounds are assembled,
// each plan's own tight bound, recomputed from the lowered plan (emulate/lower_bound.hpp), must
// be valid for that plan and at least its classic bound.
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
        CHECK(r.classic_lower_bound > Nanoseconds{0});
        CHECK(r.classic_lower_bound <= partition_independent_lower_bound(w.model, w.setup, cost,
                                                                         sample_step(w.model, w.dataset, w.setup, seed, step)));
        CHECK(r.classic_lower_bound <= r.lower_bound);  // every graph's tight bound is at least its classic one
        for (const PlanComparison& p : r.plans) {
          CAPTURE(p.name);
          CHECK(r.lower_bound <= p.step_time);
          const LowerBound own = lower_bound(p.plan, w.model, cost);
          CHECK(own.tight <= p.step_time);  // the tight bound, valid for this plan
          CHECK(own.value <= own.tight);
          CHECK(r.lower_bound <= own.tight);
          ++checked;
        }
      }
  }
  CHECK(checked == static_cast<int>(suite.cases.size()) * 3 * 2 * static_cast<int>(baseline_names.size()));
}
