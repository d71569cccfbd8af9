#pragma once
// One sampled step of a reference workload under the DIP partition, for the search tests:
// model, setup (optionally with a smaller device), partition, sub-microbatches and stage graph.
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pwtest {

struct SampledStep {
  pipeweaver::ModelSpec model;
  pipeweaver::Setup setup;
  pipeweaver::Partition partition;
  std::vector<pipeweaver::SubMicrobatchSpec> smbs;
  pipeweaver::StageGraph graph;
};

/// Step `step` of `dataset` under sampling seed `seed`; `memory_gib` > 0 replaces the device's
/// memory (to force the memory optimizer and forward-queue pausing into play).
inline SampledStep sampled_step(const std::string& model, const std::string& dataset, const std::string& setup,
                                double memory_gib = 0, std::uint64_t seed = 7, int step = 0) {
  namespace pw = pipeweaver;
  const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
  SampledStep s;
  s.model = pw::io::read_model(dir + "/models/" + model + ".json");
  s.setup = pw::io::read_setup(dir + "/setups/" + setup + ".json");
  if (memory_gib > 0) s.setup.device.memory_gib = memory_gib;
  const auto ds = pw::io::read_dataset(dir + "/datasets/" + dataset + ".json");
  const pw::AnalyticCostModel cost{s.model, s.setup};
  const pw::Batch batch = pw::sample_step(s.model, ds, s.setup, seed, step);
  s.partition = pw::dip_partition(s.model, s.setup, cost, batch).partition;
  s.smbs = pw::split(s.model, s.partition, batch);
  s.graph = pw::build_stage_graph(s.model, s.partition, s.smbs);
  return s;
}

}  // namespace pwtest
