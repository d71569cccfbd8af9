#pragma once
// Batches and plans for the CUDA MLP model on tiny-vlm (P = 4, setup cpu-pp4): a seeded batch
// of samples with zero to two images each, the planner's (dip) plan and every baseline's plan
// of it. Shared by the MPI example and the GPU suite.
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <pipeweaver/baselines/compare.hpp>
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>

namespace mlp_cuda {

namespace pw = pipeweaver;

/// `microbatches` microbatches of 3 samples: 8 to 24 text tokens, 0 to 2 images of 8 to 16
/// tokens; every microbatch has at least one image.
inline pw::Batch make_batch(std::uint64_t seed, int microbatches = 4) {
  std::mt19937_64 rng(seed);
  const auto pick = [&rng](int lo, int hi) { return lo + static_cast<int>(rng() % static_cast<std::uint64_t>(hi - lo + 1)); };
  pw::Batch batch;
  for (int mb = 0; mb < microbatches; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 3; ++s) {
      pw::Sample sample{pick(8, 24), {}};
      const int images = s == 0 ? 1 + pick(0, 1) : pick(0, 2);
      std::vector<std::int64_t> tokens;
      for (int i = 0; i < images; ++i) tokens.push_back(pick(8, 16));
      if (!tokens.empty()) sample.items.push_back(pw::SampleItems{"image", tokens});
      m.samples.push_back(sample);
    }
    batch.microbatches.push_back(m);
  }
  return batch;
}

struct Workload {
  pw::ModelSpec model{};
  pw::Setup setup{};
};

inline Workload tiny_vlm(const std::string& workloads_dir) {
  return {pw::io::read_model(workloads_dir + "/models/tiny-vlm.json"), pw::io::read_setup(workloads_dir + "/setups/cpu-pp4.json")};
}

/// A search-only planner with an iteration budget (reproducible), DIP's own placement.
inline pw::PlannerOptions small_search() {
  pw::PlannerOptions o;
  o.budget = std::chrono::nanoseconds{0};
  o.iterations = 3;
  o.partition_iterations = 1;
  o.partition_steps = 0;
  o.dip.efficiency_threshold = 0.3;
  return o;
}

/// The searched (dip) plan and every baseline's plan of `batch`, with their names.
inline std::vector<std::pair<std::string, pw::Plan>> all_plans(const Workload& w, const pw::Batch& batch) {
  const pw::AnalyticCostModel cost(w.model, w.setup);
  std::vector<std::pair<std::string, pw::Plan>> out;
  pw::PlannerOptions o = small_search();
  o.consider_baselines = false;
  const pw::Planner<pw::AnalyticCostModel> planner(w.model, w.setup, cost, std::vector<pw::Batch>{batch}, o);
  out.emplace_back("dip", planner.plan(batch).plan);
  pw::BaselineComparison<pw::AnalyticCostModel> cmp(w.model, w.setup, cost, std::vector<pw::Batch>{batch});
  for (auto& p : cmp.compare(batch).plans) out.emplace_back(p.name, std::move(p.plan));
  return out;
}

}  // namespace mlp_cuda
