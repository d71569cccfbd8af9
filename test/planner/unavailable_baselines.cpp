// A baseline that cannot place the model (optimus needs a backbone layer per pipeline stage) is
// reported as unavailable with its reason, while the other baselines are compared and the
// planner still plans (dip and the baselines that exist).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <pipeweaver/pipeweaver.hpp>

namespace pw = pipeweaver;

TEST_CASE("optimus cannot place tiny-vlm on 10 ranks, the others and dip still run") {
  const std::string w = PIPEWEAVER_WORKLOADS_DIR;
  const pw::ModelSpec model = pw::io::read_model(w + "/models/tiny-vlm.json");  // vit 4 + llm 8 layers
  pw::Setup setup = pw::io::read_setup(w + "/setups/cpu-pp4.json");
  setup.pipeline_stages = 10;  // 12 layers in all (gpipe, 1f1b fit), 8 in the backbone (optimus does not)
  const pw::DatasetSpec dataset = pw::io::read_dataset(w + "/datasets/vlm-captions.json");
  const pw::AnalyticCostModel cost(model, setup);
  pw::PlannerOptions po;
  po.budget = std::chrono::nanoseconds{0};
  po.iterations = 4;
  const pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, dataset, po);
  const auto& gone = planner.unavailable_baselines();
  REQUIRE(std::any_of(gone.begin(), gone.end(), [](const pw::UnavailableBaseline& u) { return u.name == "optimus"; }));
  for (const auto& u : gone) {
    INFO(u.name << ": " << u.reason);
    CHECK_FALSE(u.reason.empty());
    if (u.name == "optimus") CHECK(u.reason.find("backbone layers for 10 pipeline stages") != std::string::npos);
  }
  std::vector<std::string> names;
  for (const auto& b : planner.baselines()) names.push_back(b.baseline.name);
  CHECK(std::find(names.begin(), names.end(), "gpipe") != names.end());
  CHECK(names.size() + gone.size() == pw::baseline_names.size());  // every baseline is either prepared or reported

  const pw::Batch batch = pw::sample_step(model, dataset, setup, 3, 0);
  const pw::PlanResult r = planner.plan(batch);
  CHECK_NOTHROW(pw::validate(r.plan, model, setup, cost));
  pw::BaselineComparison cmp(model, setup, cost, planner.baselines(), {}, gone);
  const pw::StepComparison c = cmp.compare(batch);
  CHECK(c.plans.size() == names.size());
  CHECK(cmp.unavailable().size() == gone.size());
}
