#pragma once
// Bench helper: a realistic step to emulate. Reads a model/dataset/setup, samples a step,
// places every module in P even chunks (chunk c on rank c), splits it, builds the stage graph,
// orders it with a simple greedy list scheduler (the ready stage that can start earliest,
// backward first on ties) and lowers it to a Plan.
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

template <class C>
pw::Schedule greedy_schedule(const pw::StageGraph& g, const pw::Partition& part, std::span<const pw::SubMicrobatchSpec> smbs,
                             const C& cost) {
  const std::size_t N = g.size();
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(part.ranks));
  std::vector<int> pending(N);
  std::vector<pw::Nanoseconds> ready(N, pw::Nanoseconds{0});
  std::vector<pw::Nanoseconds> rank_free(static_cast<std::size_t>(part.ranks), pw::Nanoseconds{0});
  std::vector<std::size_t> frontier;
  for (std::size_t n = 0; n < N; ++n)
    if ((pending[n] = static_cast<int>(g.nodes[n].inputs.size())) == 0) frontier.push_back(n);
  while (!frontier.empty()) {
    std::size_t bi = 0;
    pw::Nanoseconds best_start{0};
    for (std::size_t i = 0; i < frontier.size(); ++i) {
      const std::size_t n = frontier[i];
      const auto start = std::max(ready[n], rank_free[g.nodes[n].rank.index()]);
      const bool bwd = g.nodes[n].stage.pass != pw::Pass::forward;
      if (i == 0 || start < best_start ||
          (start == best_start && bwd && g.nodes[frontier[bi]].stage.pass == pw::Pass::forward)) {
        bi = i;
        best_start = start;
      }
    }
    const std::size_t best = frontier[bi];
    frontier.erase(frontier.begin() + static_cast<std::ptrdiff_t>(bi));
    const auto& node = g.nodes[best];
    s.ranks[node.rank.index()].push_back(pw::ScheduledStage{static_cast<pw::NodeIndex>(best), {}});
    const auto end = best_start + cost.latency(pw::StageSpec::of(part, node.stage.module, node.stage.chunk, node.stage.pass),
                                               smbs[node.stage.sub_microbatch.index()], pw::MemoryStrategy{});
    rank_free[node.rank.index()] = end;
    for (auto o : node.outputs) {
      const auto ou = static_cast<std::size_t>(o);
      auto arrive = end;
      if (g.nodes[ou].rank != node.rank)
        arrive += cost.transfer_time(pw::transfer_bytes(part, smbs, node.stage, g.nodes[ou].stage, cost));
      ready[ou] = std::max(ready[ou], arrive);
      if (--pending[ou] == 0) frontier.push_back(ou);
    }
  }
  return s;
}

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
