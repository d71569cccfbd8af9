#pragma once
// What the planner tests share: a workload of the suite (model, setup, dataset) read by name, and
// small, reproducible search budgets so the tests stay fast.
#include <chrono>
#include <cstdint>
#include <string>

#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/planner/planner.hpp"

namespace planner_test {

inline const std::string W = PIPEWEAVER_WORKLOADS_DIR;

struct Case {
  pipeweaver::ModelSpec model;
  pipeweaver::Setup setup;
  pipeweaver::DatasetSpec dataset;
};

inline Case load(const std::string& model, const std::string& dataset, const std::string& setup) {
  return {pipeweaver::io::read_model(W + "/models/" + model + ".json"),
          pipeweaver::io::read_setup(W + "/setups/" + setup + ".json"),
          pipeweaver::io::read_dataset(W + "/datasets/" + dataset + ".json")};
}

/// An iteration budget only (no time budget), one partition step and one profile step.
inline pipeweaver::PlannerOptions quick_options(std::int64_t iterations, std::uint64_t seed, int threads = 1) {
  pipeweaver::PlannerOptions o;
  o.budget = std::chrono::nanoseconds{0};
  o.iterations = iterations;
  o.threads = threads;
  o.seed = seed;
  o.partition_steps = 1;
  o.partition_iterations = 1;
  o.compare.profile_steps = 1;
  return o;
}

}  // namespace planner_test
