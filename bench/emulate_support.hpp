#pragma once
// Bench helper: a realistic step to emulate. Reads a model/dataset/setup, samples a step,
// places every module in P even chunks (chunk c on rank c), splits it, builds the stage graph,
// orders it with the greedy list scheduler of test/support/greedy_schedule.hpp (the ready stage
// that can start earliest, backward first on ties) and lowers it to a Plan.
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include "support/greedy_schedule.hpp"

#include <string>
#include <vector>

namespace bench {
namespace pw = pipeweaver;

struct Step {
  pw::Partition partition;
  std::vector<pw::SubMicrobatchSpec> smbs;
  pw::StageGraph graph;
  pw::Schedule schedule;
  pw::Plan plan;
};

inline pw::Partition even_partition(const pw::ModelSpec& model, int P) {
  pw::Partition part;
  part.name = "even";
  part.ranks = P;
  for (const auto& m : model.modules) {
    pw::ModulePlacement mp;
    for (int c = 0; c < P; ++c)
      mp.chunks.push_back(pw::Chunk{m.layers * c / P, m.layers * (c + 1) / P - m.layers * c / P, pw::RankId{c}});
    mp.sub_microbatch_items = m.role == pw::ModuleRole::backbone ? 0 : 8;
    part.modules.push_back(mp);
  }
  return part;
}

using pwtest::greedy_schedule;

template <class C>
Step make_step(const pw::ModelSpec& model, const pw::DatasetSpec& dataset, const pw::Setup& setup, const C& cost,
               std::uint64_t seed, int step) {
  Step st;
  st.partition = even_partition(model, setup.pipeline_stages);
  const pw::Batch batch = pw::sample_step(model, dataset, setup, seed, step);
  st.smbs = pw::split(model, st.partition, batch);
  st.graph = pw::build_stage_graph(model, st.partition, st.smbs);
  st.schedule = greedy_schedule(st.graph, st.partition, st.smbs, cost);
  st.plan = pw::lower(model, st.partition, st.smbs, st.graph, st.schedule, cost, "greedy", setup.name);
  return st;
}

}  // namespace bench
