#pragma once
// Test plans for the host executor: the real pipeline (splitter + build_stage_graph + the
// dual-queue interleaver + lowering), with a unit cost model, over two partitions of tiny-vlm
// on P = 4 ranks:
//  * "dip": every module spread over all ranks (chunk c on rank c mod 4; ViT K = 1, LLM K = 2),
//    so encoder outputs cross ranks into the LLM;
//  * "chain": a 1F1B-style contiguous split of the 12-layer chain, which puts the ViT's last
//    layer and the LLM's first layers on the same rank (a local gather).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/dual_queue_interleaver.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>
#include <pipeweaver/schedule/validator.hpp>

namespace test_plans {

namespace pw = pipeweaver;

/// Every stage costs 1 ms, every message 4 KiB, transfers are free.
struct UnitCost {
  template <class S, class M>
  pw::Nanoseconds latency(const S&, const M&, const pw::MemoryStrategy&) const {
    return pw::from_ms(1);
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const {
    return pw::Bytes{0};
  }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const {
    return pw::Bytes{4096};
  }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return pw::Nanoseconds{0}; }
};
static_assert(pw::CostModel<UnitCost, pw::StageSpec, pw::SubMicrobatchSpec>);

inline pw::Setup cpu_pp4() { return pw::io::read_setup(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/setups/cpu-pp4.json"); }
inline pw::ModelSpec tiny_vlm() { return pw::io::read_model(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/models/tiny-vlm.json"); }

/// Module m cut into chunks of `layers_per_chunk[i]` layers placed on `ranks[i]`.
inline pw::ModulePlacement placement(std::vector<int> layers_per_chunk, std::vector<int> ranks, std::int64_t items) {
  pw::ModulePlacement p;
  int first = 0;
  for (std::size_t i = 0; i < layers_per_chunk.size(); ++i) {
    p.chunks.push_back(pw::Chunk{first, layers_per_chunk[i], pw::RankId{ranks[i]}});
    first += layers_per_chunk[i];
  }
  p.sub_microbatch_items = items;
  return p;
}

inline pw::Partition dip_partition(std::int64_t vit_items = 2, std::int64_t llm_items = 1) {
  return pw::Partition{"dip", 4,
                       {placement({1, 1, 1, 1}, {0, 1, 2, 3}, vit_items),
                        placement({1, 1, 1, 1, 1, 1, 1, 1}, {0, 1, 2, 3, 0, 1, 2, 3}, llm_items)}};
}
inline pw::Partition chain_partition() {
  return pw::Partition{"chain", 4, {placement({3, 1}, {0, 1}, 0), placement({2, 3, 3}, {1, 2, 3}, 0)}};
}

/// The dual-queue interleaver's schedule of `graph` over `smbs` with every stage 1 ms and free
/// transfers (priority: earlier microbatch first; with `defer_weight`, a split backward's weight
/// parts fill bubbles).
inline pw::InterleaveResult interleave_by_microbatch(const pw::StageGraph& graph, const std::vector<pw::SubMicrobatchSpec>& smbs,
                                                    bool defer_weight = false) {
  std::vector<std::int64_t> priority(graph.size());
  std::vector<pw::Nanoseconds> latency(graph.size(), pw::from_ms(1));
  for (std::size_t n = 0; n < graph.size(); ++n)
    priority[n] = -static_cast<std::int64_t>(smbs[graph.nodes[n].stage.sub_microbatch.index()].microbatch().value());
  pw::InterleaveInput in;
  in.priority = priority;
  in.latency = latency;
  in.defer_weight = defer_weight;
  return pw::DualQueueInterleaver{}.run(graph, in, [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; });
}

/// The lowered, validated plan of `batch` under `partition`, in interleave_by_microbatch's order.
inline pw::Plan make_plan(const pw::ModelSpec& model, const pw::Partition& partition, const pw::Batch& batch,
                          const pw::StageGraphOptions& graph_options = {}, bool defer_weight = false) {
  auto smbs = pw::split(model, partition, batch);
  const pw::StageGraph graph = pw::build_stage_graph(model, partition, smbs, graph_options);
  const auto result = interleave_by_microbatch(graph, smbs, defer_weight);
  pw::Plan plan = pw::lower(model, partition, smbs, graph, result.schedule, UnitCost{}, partition.name, "cpu-pp4");
  pw::validate(plan, model);
  return plan;
}

/// The routing tests' batch: `microbatches` microbatches of three samples (two with images of
/// several sizes, one text-only), so that items of different sizes cross ranks.
inline pw::Batch routing_batch(int microbatches = 4) {
  pw::Batch batch;
  for (int mb = 0; mb < microbatches; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8, 12, 4}}}});
    m.samples.push_back(pw::Sample{9, {}});
    m.samples.push_back(pw::Sample{5 + mb, {pw::SampleItems{"image", {16, 6}}}});
    batch.microbatches.push_back(m);
  }
  return batch;
}

/// One plan of the routing tests: a partition, the ViT's last chunk (the pattern callbacks'
/// `last_chunk_`) and whether the backward is split.
struct RoutingCase {
  pw::Partition partition{};
  int vit_last_chunk = 0;
  bool split = false;
};

/// Spread whole and split, and the chain split (a local gather on one rank).
inline std::vector<RoutingCase> routing_cases() {
  return {RoutingCase{dip_partition(2, 1), 3, false}, RoutingCase{dip_partition(1, 2), 3, true},
          RoutingCase{chain_partition(), 1, false}};
}

/// Sub-microbatches per module in a plan (to check that the test really pipelines pieces).
inline int count_module(const pw::Plan& plan, pw::ModuleId m) {
  int n = 0;
  for (const auto& s : plan.sub_microbatches) n += s.module() == m ? 1 : 0;
  return n;
}

}  // namespace test_plans
