// Every baseline builder on real workloads: its plans pass the validator (structure, and memory
// whenever the plan reports that it fits), have the shape the baseline promises (chain ranges
// round-robin, Optimus' encoders spread one chunk per rank, whole-microbatch sub-microbatches),
// and the static choice is made once (same partition on every step). Also M not divisible by P.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/schedule/validator.hpp"

using namespace pipeweaver;

namespace {

struct Workload {
  std::string model, dataset, setup;
  int microbatches = 0;  ///< 0: the setup's
};

void check_workload(const Workload& w) {
  const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
  const ModelSpec model = io::read_model(dir + "/models/" + w.model + ".json");
  Setup setup = io::read_setup(dir + "/setups/" + w.setup + ".json");
  if (w.microbatches > 0) setup.microbatches_per_step = w.microbatches;
  const DatasetSpec dataset = io::read_dataset(dir + "/datasets/" + w.dataset + ".json");
  const AnalyticCostModel cost(model, setup);
  CompareOptions options;
  options.profile_steps = 1;
  const auto profile = profile_batches(model, dataset, setup, options);
  BaselineComparison cmp(model, setup, cost, profile, options);
  REQUIRE(cmp.baselines().size() == baseline_names.size());
  const int P = setup.pipeline_stages;
  for (int step = 0; step < 2; ++step) {
    const Batch batch = sample_step(model, dataset, setup, 7, step);
    const StepComparison r = cmp.compare(batch, step);
    REQUIRE(r.plans.size() == baseline_names.size());
    for (std::size_t i = 0; i < r.plans.size(); ++i) {
      const PlanComparison& p = r.plans[i];
      CAPTURE(p.name);
      CAPTURE(step);
      CHECK(p.name == baseline_names[i]);
      CHECK(p.plan.name == p.name);
      CHECK(p.plan.partition == cmp.baselines()[i].baseline.layout.partition);  // static: same every step
      CHECK(p.plan.microbatches == setup.microbatches_per_step);
      CHECK_NOTHROW(validate(p.plan, model));
      if (p.fits_memory) CHECK_NOTHROW(validate(p.plan, model, setup, cost));
      CHECK(p.step_time >= r.lower_bound);
      CHECK(p.peak_memory == p.emulation.peak_memory());
      for (const auto& m : p.plan.partition.modules) CHECK(m.sub_microbatch_items == 0);
      // Each microbatch has at most one sub-microbatch per module (whole microbatches).
      std::vector<std::vector<int>> count(static_cast<std::size_t>(setup.microbatches_per_step),
                                          std::vector<int>(model.modules.size(), 0));
      for (const auto& s : p.plan.sub_microbatches) CHECK(++count[s.microbatch().index()][s.module().index()] == 1);
      const auto& layout = cmp.baselines()[i].baseline.layout;
      for (std::size_t m = 0; m < model.modules.size(); ++m)
        for (std::size_t c = 0; c < layout.range_of_chunk[m].size(); ++c) {
          const int j = layout.range_of_chunk[m][c];
          const Chunk& ch = layout.partition.modules[m].chunks[c];
          if (j >= 0) {
            CHECK(ch.rank.value() == j % P);
          } else {  // Optimus' encoders: chunk c on rank c
            CHECK(p.name == "optimus");
            CHECK(model.modules[m].role == ModuleRole::encoder);
            CHECK(ch.rank.value() == static_cast<int>(c));
          }
        }
    }
    // GPipe and 1F1B share nothing but the split rule; 1F1B never holds more activations than GPipe
    // on the same split, so where GPipe fits without recompute 1F1B does too.
    if (r.plans[0].fits_memory && r.plans[0].recompute == UniformRecompute::none) CHECK(r.plans[1].fits_memory);
  }
  // megatron as deployed: every encoder whole on rank 0 in its first virtual stage (range 0), and
  // on a vision-language model every other rank holds the same number of backbone layers.
  const auto& mega = cmp.baselines()[3].baseline;
  REQUIRE(mega.name == "megatron");
  bool has_generator = false;
  for (const auto& m : model.modules) has_generator = has_generator || m.role == ModuleRole::generator;
  for (std::size_t m = 0; m < model.modules.size(); ++m) {
    const auto& chunks = mega.layout.partition.modules[m].chunks;
    if (model.modules[m].role == ModuleRole::encoder) {
      REQUIRE(chunks.size() == 1);
      CHECK(chunks[0].rank == RankId{0});
      CHECK(mega.layout.range_of_chunk[m][0] == 0);
    }
    if (model.modules[m].role == ModuleRole::backbone && !has_generator && P > 1) {
      std::vector<int> per_rank(static_cast<std::size_t>(P), 0);
      for (const Chunk& ch : chunks) per_rank[ch.rank.index()] += ch.layer_count;
      for (int r = 2; r < P; ++r) CHECK(per_rank[static_cast<std::size_t>(r)] == per_rank[1]);
      CHECK((model.modules[m].layers - per_rank[0]) % (P - 1) == 0);
    }
  }
}

}  // namespace

TEST_CASE("baselines on vlm-s / web-mix (encoder + backbone)") { check_workload({"vlm-s", "vlm-web-mix", "h800-tp4-pp4", 0}); }
TEST_CASE("baselines on t2v-s / clips (backbone + generator)") { check_workload({"t2v-s", "t2v-clips", "t2v-h800-tp4-pp4", 0}); }
TEST_CASE("baselines with M not divisible by P (tiny-vlm, P = 4, M = 6 and 9)") {
  check_workload({"tiny-vlm", "vlm-captions", "cpu-pp4", 6});
  check_workload({"tiny-vlm", "vlm-web-mix", "cpu-pp4", 9});
}
TEST_CASE("baselines with fewer microbatches than ranks (vlm-s, M = 3)") { check_workload({"vlm-s", "vlm-docs", "h800-tp4-pp4", 3}); }
