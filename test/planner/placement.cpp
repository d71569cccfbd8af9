// The placement choice scores a long profile step on its first PlacementScoring::max_microbatches
// microbatches: the window is the step's prefix, and every candidate's score on the long step is
// exactly its score on that prefix scored whole.
#include <doctest/doctest.h>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <pipeweaver/pipeweaver.hpp>

namespace pw = pipeweaver;

TEST_CASE("a profile step's scoring window is its prefix") {
  pw::Batch step;
  for (int i = 0; i < 10; ++i) step.microbatches.push_back({{pw::Sample{.text = 10 + i, .items = {}}}});
  SUBCASE("a step within the window is scored whole") {
    const pw::Batch w = pw::detail::scoring_window(step, 10);
    REQUIRE(w.microbatches.size() == 10);
    for (std::size_t i = 0; i < 10; ++i) CHECK(w.microbatches[i].samples == step.microbatches[i].samples);
  }
  SUBCASE("a longer step is cut to its first microbatches, in order") {
    const pw::Batch w = pw::detail::scoring_window(step, 4);
    REQUIRE(w.microbatches.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) CHECK(w.microbatches[i].samples == step.microbatches[i].samples);
  }
}

TEST_CASE("each candidate scores the same on a 96-microbatch step as on its first 64 microbatches") {
  const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
  const pw::ModelSpec model = pw::io::read_model(dir + "/models/tiny-vlm.json");
  pw::Setup setup = pw::io::read_setup(dir + "/setups/cpu-pp4.json");
  setup.microbatches_per_step = 96;
  const pw::DatasetSpec dataset = pw::io::read_dataset(dir + "/datasets/vlm-captions.json");
  const pw::AnalyticCostModel cost(model, setup);
  const pw::Batch step = pw::sample_step(model, dataset, setup, 7, 0);
  REQUIRE(step.microbatches.size() == 96);
  pw::Batch prefix;
  prefix.microbatches.assign(step.microbatches.begin(), step.microbatches.begin() + 64);

  const std::vector<pw::Partition> candidates = pw::candidate_partitions(model, setup, cost, step, pw::DipOptions{});
  REQUIRE(candidates.size() > 1);
  pw::PlacementScoring scoring;
  scoring.iterations = 1;
  scoring.steps = 1;
  const auto score = [&](const pw::Partition& c, const pw::Batch& b, std::size_t window) {
    pw::StageCostCache<pw::AnalyticCostModel> cache(cost, model);
    pw::PlacementScoring s = scoring;
    s.max_microbatches = window;
    return pw::detail::score_placement(model, setup, c, std::span<const pw::Batch>(&b, 1), cache, s);
  };
  for (const pw::Partition& c : candidates) {
    CAPTURE(c.name);
    const pw::PlacementScore windowed = score(c, step, 64);
    const pw::PlacementScore on_prefix = score(c, prefix, 1000);
    const pw::PlacementScore whole = score(c, step, 1000);
    CHECK(windowed.fits == on_prefix.fits);
    CHECK(windowed.total_step_time == on_prefix.total_step_time);
    CHECK(whole.total_step_time > windowed.total_step_time);  // the window is what was scored
  }
}
