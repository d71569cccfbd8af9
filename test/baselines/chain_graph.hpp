#pragma once
// Test helpers for the baseline tests: a homogeneous single-module chain (a backbone of identical
// layers; ToyCost ignores the vocabulary, which only gives it a loss) and a hand-built stage graph of it, independent of build_stage_graph.
#include <cstdint>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/schedule/pipeline_orders.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "support/chain_model.hpp"

namespace pwtest {

using namespace pipeweaver;

/// With a vocabulary: the loss (a module without one gets no backward stages).
inline ModelSpec chain_model(int layers) { return tiny_chain_model(layers, 512); }

/// One sub-microbatch per microbatch, all of module 0.
inline std::vector<SubMicrobatchSpec> chain_sub_microbatches(int microbatches, std::int64_t tokens = 128) {
  std::vector<SubMicrobatchSpec> out;
  for (int mb = 0; mb < microbatches; ++mb)
    out.emplace_back(ModuleId{0}, MicrobatchId{mb}, std::vector<std::int64_t>{tokens});
  return out;
}

/// The stage graph of a single-module chain under `partition` (independent of build_stage_graph):
/// F(c, s) <- F(c-1, s); B(last, s) <- F(last, s); B(c, s) <- B(c+1, s), F(c, s).
inline StageGraph chain_graph(const Partition& partition, int microbatches) {
  StageGraph g;
  const int C = partition.chunk_count(ModuleId{0});
  const auto fwd = [&](int s, int c) { return static_cast<NodeIndex>(s * 2 * C + c); };
  const auto bwd = [&](int s, int c) { return static_cast<NodeIndex>(s * 2 * C + C + c); };
  g.nodes.resize(static_cast<std::size_t>(microbatches * 2 * C));
  for (int s = 0; s < microbatches; ++s)
    for (int c = 0; c < C; ++c) {
      const RankId r = partition.chunk(ModuleId{0}, c).rank;
      auto& f = g.nodes[static_cast<std::size_t>(fwd(s, c))];
      f.stage = StageRef{ModuleId{0}, c, SubMicrobatchId{s}, Pass::forward};
      f.rank = r;
      if (c > 0) f.inputs.push_back(fwd(s, c - 1));
      auto& b = g.nodes[static_cast<std::size_t>(bwd(s, c))];
      b.stage = StageRef{ModuleId{0}, c, SubMicrobatchId{s}, Pass::backward};
      b.rank = r;
      if (c + 1 < C) b.inputs.push_back(bwd(s, c + 1));
      b.inputs.push_back(fwd(s, c));
    }
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    for (NodeIndex i : g.nodes[n].inputs) g.nodes[static_cast<std::size_t>(i)].outputs.push_back(static_cast<NodeIndex>(n));
  return g;
}

/// Constant per-layer cost: forward f ns, backward b ns per layer (+ recompute), activation a
/// bytes per layer per token-free microbatch, no communication cost.
struct ToyCost {
  std::int64_t f = 1000, b = 2000, a = 1 << 20;
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Nanoseconds latency(const S& s, const M&, const MemoryStrategy& st) const {
    if (s.pass() == Pass::forward) return Nanoseconds{f * s.layer_count()};
    return Nanoseconds{b * s.layer_count() + f * st.full_recompute + (f / 4) * st.selective_recompute};
  }
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes activation_bytes(const S& s, const M&, const MemoryStrategy& st) const {
    if (s.pass() != Pass::forward) return Bytes{0};
    return Bytes{a * (s.layer_count() - st.full_recompute - st.selective_recompute) + (a / 16) * st.full_recompute +
                 (a / 2) * st.selective_recompute};
  }
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes output_bytes(const S&, const M&) const { return Bytes{0}; }
  [[nodiscard]] Nanoseconds transfer_time(Bytes) const { return Nanoseconds{0}; }
};
static_assert(CostModel<ToyCost, StageSpec, SubMicrobatchSpec>);

}  // namespace pwtest
