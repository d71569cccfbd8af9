#pragma once
// The stage dependency graph of one multimodal training step:
//  * forward chains across a module's chunks, for each of its sub-microbatches;
//  * every encoder sub-microbatch of a microbatch feeds the backbone's first chunk of that
//    microbatch (and a generator's first chunk is fed by the backbone's last chunk of its
//    microbatch);
//  * backwards mirror forwards: Backward(m, c, s) needs Backward(m, c+1, s) (or, on a module's
//    last chunk, the backwards of the first chunks it fed, and its own loss) and Forward(m, c, s);
//  * a frozen module (trainable = false) has backward stages only when a trainable module
//    upstream of it needs input gradients through it.
// Precisely (implementation below):
//  * the loss: a module with a vocabulary (the backbone) or a generator has its loss on its last
//    chunk, so its last-chunk backward needs only its own last-chunk forward there;
//  * gradient flow: a module gets gradients if it has a loss or feeds a module that gets them;
//    it has backward stages iff it gets gradients and it, or a module upstream (transitively
//    feeding it), is trainable;
//  * feeding is per sample: feeder sub-microbatch a and fed sub-microbatch b of one microbatch
//    are linked when they share a sample (ItemRef::sample), or always when either lacks item
//    origins. With one fed sub-microbatch per microbatch this is "all of the microbatch";
//  * split backward: backward_input nodes carry every dependency above (and feed the upstream
//    chunks); backward_weight(m, c, s) needs only backward_input(m, c, s) and feeds nothing. A
//    frozen module has no weight gradient: only its backward_input nodes exist;
//  * nodes are ordered by (sub-microbatch, pass, chunk); inputs and outputs ascending.
// Size: the node count is computed before anything is allocated and refused above
// limits::max_stages_per_step (Error{invalid_plan}); the feeding links of a microbatch are found
// through an index sample -> sub-microbatches, so building costs O(nodes + links) up to a log
// factor, never the product of the feeding and fed sub-microbatch counts.
// std-only (compiles under nvcc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/sub_microbatch_index.hpp"

namespace pipeweaver {

using NodeIndex = std::int32_t;

struct StageNode {
  StageRef stage{};                  ///< module, chunk, sub-microbatch, pass
  RankId rank{0};                  ///< rank that runs it (from the partition)
  std::vector<NodeIndex> inputs{};   ///< nodes that must finish (their output arrive) before this one starts
  std::vector<NodeIndex> outputs{};  ///< nodes that consume this node's output (inverse of inputs)
};

/// Nodes of one step in a deterministic order: by sub-microbatch, then pass (forwards before
/// backwards), then chunk. Node indices are stable for identical inputs.
struct StageGraph {
  std::vector<StageNode> nodes{};
  /// Lookup table filled by build_stage_graph (find is O(1) with it; a graph assembled by hand
  /// without it falls back to a linear scan): sub-microbatch s owns the slots
  /// [lookup_offsets[s], lookup_offsets[s+1]) = 4 passes x its module's chunks, slot
  /// offset + pass * chunks + chunk holding the node index or -1.
  std::vector<std::int64_t> lookup_offsets{};
  std::vector<NodeIndex> lookup{};
  /// Index of a stage's node, or -1 if the step has no such stage.
  [[nodiscard]] NodeIndex find(const StageRef& s) const noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return nodes.size(); }
};

/// Options for graph construction.
struct StageGraphOptions {
  bool split_backward = false;  ///< backward_input + backward_weight nodes instead of one backward
};

/// Builds the graph. Throws Error{invalid_plan} if the partition does not cover every layer of
/// every module exactly once, a sub-microbatch names a module the model lacks, or the graph
/// would have more than limits::max_stages_per_step nodes.
[[nodiscard]] inline StageGraph build_stage_graph(const ModelSpec& model, const Partition& partition,
                                                  std::span<const SubMicrobatchSpec> sub_microbatches,
                                                  const StageGraphOptions& options = {});

/// Throws Error{invalid_plan} naming the module and chunk unless the partition has one
/// placement per module of `model`, at least one rank, and every module's chunks cover its
/// layers 0..L-1 exactly once, in order, each on a rank in [0, ranks).
inline void check_partition(const ModelSpec& model, const Partition& partition);

/// A schedule before communication lowering: per rank, the order in which it runs its stage
/// nodes and the memory strategy of each. Builders (baselines, dual-queue interleaver) produce
/// it; lowering (schedule/lowering.hpp) turns it into a Plan.
struct ScheduledStage {
  NodeIndex node = 0;
  MemoryStrategy strategy{};
  friend bool operator==(const ScheduledStage&, const ScheduledStage&) = default;
};
struct Schedule {
  std::vector<std::vector<ScheduledStage>> ranks{};  ///< ranks[r]: stages of rank r in execution order
};

// ---------------------------------------------------------------------------------------------
// Implementation.

inline NodeIndex StageGraph::find(const StageRef& s) const noexcept {
  if (lookup_offsets.empty()) {
    for (std::size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].stage == s) return static_cast<NodeIndex>(i);
    return -1;
  }
  const auto smb = s.sub_microbatch.value();
  if (smb < 0 || static_cast<std::size_t>(smb) + 1 >= lookup_offsets.size()) return -1;
  const std::int64_t first = lookup_offsets[static_cast<std::size_t>(smb)];
  const std::int64_t chunks = (lookup_offsets[static_cast<std::size_t>(smb) + 1] - first) / 4;
  const auto pass = static_cast<std::int64_t>(s.pass);
  if (s.chunk < 0 || s.chunk >= chunks || pass < 0 || pass > 3) return -1;
  const NodeIndex n = lookup[static_cast<std::size_t>(first + pass * chunks + s.chunk)];
  if (n < 0 || !(nodes[static_cast<std::size_t>(n)].stage == s)) return -1;  // e.g. another module
  return n;
}

inline void check_partition(const ModelSpec& model, const Partition& partition) {
  auto fail = [&](std::string path, std::string message, std::string expected) {
    throw invalid_plan_error(std::move(message), {.path = "partition '" + partition.name + "'" + (path.empty() ? "" : ", " + path), .expected = std::move(expected)});
  };
  if (partition.ranks < 1) fail("", "has " + std::to_string(partition.ranks) + " ranks", "at least 1");
  if (partition.modules.size() != model.modules.size())
    fail("", "places " + std::to_string(partition.modules.size()) + " modules",
         std::to_string(model.modules.size()) + " (one per module of model '" + model.name + "')");
  for (std::size_t m = 0; m < model.modules.size(); ++m) {
    const ModuleSpec& spec = model.modules[m];
    const auto& chunks = partition.modules[m].chunks;
    const std::string mod = "module '" + spec.name + "'";
    if (chunks.empty()) fail(mod, "has no chunks", "chunks covering layers 0.." + std::to_string(spec.layers - 1));
    int next = 0;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const Chunk& ch = chunks[c];
      const std::string where = mod + ", chunk " + std::to_string(c);
      if (ch.first_layer != next)
        fail(where, "starts at layer " + std::to_string(ch.first_layer),
             "layer " + std::to_string(next) + " (chunks cover the layers in order, each exactly once)");
      if (ch.layer_count < 1) fail(where, "holds " + std::to_string(ch.layer_count) + " layers", "at least 1");
      if (ch.rank.value() < 0 || ch.rank.value() >= partition.ranks)
        fail(where, "is placed on rank " + std::to_string(ch.rank.value()), "a rank in 0.." + std::to_string(partition.ranks - 1));
      next += ch.layer_count;
      if (next > spec.layers)
        fail(where, "ends at layer " + std::to_string(next - 1), "at most layer " + std::to_string(spec.layers - 1) + " (the module has " + std::to_string(spec.layers) + " layers)");
    }
    if (next != spec.layers)
      fail(mod + ", chunk " + std::to_string(chunks.size() - 1), "chunks end at layer " + std::to_string(next - 1),
           "chunks covering all " + std::to_string(spec.layers) + " layers");
  }
}

namespace detail {

/// Which modules have backward stages (see the header comment).
inline std::vector<char> modules_with_backward(const ModelSpec& model) {
  const std::size_t n = model.modules.size();
  for (std::size_t m = 0; m < n; ++m) {
    const auto& f = model.modules[m].feeds;
    if (f && (f->value() < 0 || f->index() >= n || f->index() == m))
      throw invalid_plan_error("module '" + model.modules[m].name + "' feeds module " + std::to_string(f->value()), {.path = "model '" + model.name + "'", .expected = "another module of the model"});
  }
  // gets_gradient follows `feeds` downstream; a chain longer than n is a cycle.
  std::vector<char> gets(n, 0), upstream(n, 0), out(n, 0);
  for (std::size_t m = 0; m < n; ++m) {
    std::size_t cur = m;
    for (std::size_t steps = 0; steps <= n; ++steps) {
      const ModuleSpec& s = model.modules[cur];
      if (s.vocab.has_value() || s.role == ModuleRole::generator) {
        gets[m] = 1;
        break;
      }
      if (!s.feeds) break;
      cur = s.feeds->index();
      if (steps == n)
        throw invalid_plan_error("modules feed each other in a cycle", {.path = "model '" + model.name + "'", .expected = "a DAG"});
    }
  }
  // upstream trainable: some module whose feeds-chain reaches m is trainable.
  for (std::size_t f = 0; f < n; ++f) {
    if (!model.modules[f].trainable) continue;
    auto next = model.modules[f].feeds;
    for (std::size_t steps = 0; next && steps < n; ++steps) {
      upstream[next->index()] = 1;
      next = model.modules[next->index()].feeds;
    }
  }
  for (std::size_t m = 0; m < n; ++m) out[m] = gets[m] && (model.modules[m].trainable || upstream[m]);
  return out;
}

/// Sorted sample ids of a sub-microbatch's items (empty if origins are unknown).
inline std::vector<std::int32_t> samples_of(const SubMicrobatchSpec& s) {
  std::vector<std::int32_t> out;
  for (const ItemRef& r : s.items()) out.push_back(r.sample);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// Passes a module's stages have: forward, then backward (or backward_input), then
/// backward_weight when the backward is split and the module is trainable.
[[nodiscard]] inline int stage_passes(const ModelSpec& model, ModuleId m, const std::vector<char>& with_backward, bool split) {
  if (!with_backward[m.index()]) return 1;
  return split && model.module(m).trainable ? 3 : 2;
}

/// Nodes of the graph (checked against limits::max_stages_per_step before anything is allocated).
inline std::int64_t count_stage_nodes(const ModelSpec& model, const Partition& partition, std::span<const SubMicrobatchSpec> smbs,
                                      const std::vector<char>& with_backward, bool split) {
  std::int64_t nodes = 0;
  for (std::size_t i = 0; i < smbs.size(); ++i) {
    const SubMicrobatchSpec& s = smbs[i];
    if (!s.module().valid() || s.module().index() >= model.modules.size())
      throw invalid_plan_error("sub-microbatch names module " + std::to_string(s.module().value()),
                               {.path = "sub-microbatch " + std::to_string(i), .expected = "a module id below " + std::to_string(model.modules.size())});
    nodes += static_cast<std::int64_t>(partition.chunk_count(s.module())) * stage_passes(model, s.module(), with_backward, split);
    if (nodes > limits::max_stages_per_step)
      throw invalid_plan_error("the step has more than " + std::to_string(limits::max_stages_per_step) + " stages (" +
                                   std::to_string(smbs.size()) + " sub-microbatches over the partition's chunks)",
                               {.path = "partition '" + partition.name + "'",
                                .expected = "at most " + std::to_string(limits::max_stages_per_step) + " stages per step: fewer chunks or sub-microbatches"});
  }
  return nodes;
}

/// Per sub-microbatch b, the sub-microbatches that feed it: those of the same microbatch whose
/// module feeds b's module, sharing a sample with b (or either without item origins: the whole
/// microbatch), ascending. Per microbatch and feeding pair of modules, an index of
/// (sample, feeder) pairs is searched for each of b's samples.
inline std::vector<std::vector<SubMicrobatchId>> feeding_links(const ModelSpec& model, std::span<const SubMicrobatchSpec> smbs,
                                                               const SubMicrobatchIndex& index,
                                                               const std::vector<std::vector<std::int32_t>>& samples) {
  std::vector<std::vector<SubMicrobatchId>> links(smbs.size());
  std::vector<std::pair<std::int32_t, SubMicrobatchId>> by_sample;
  std::vector<SubMicrobatchId> whole;  // feeders without origins: linked to every fed one
  for (int mb = 0; mb < index.microbatches(); ++mb) {
    const MicrobatchId mid{static_cast<MicrobatchId::rep>(mb)};
    for (std::size_t mi = 0; mi < model.modules.size(); ++mi) {
      const ModuleId m{static_cast<ModuleId::rep>(mi)};
      const auto fed = index.of(mid, m);
      if (fed.empty()) continue;
      for (ModuleId f : model.feeders(m)) {
        const auto feeders = index.of(mid, f);
        if (feeders.empty()) continue;
        by_sample.clear();
        whole.clear();
        for (SubMicrobatchId a : feeders) {
          if (samples[a.index()].empty()) whole.push_back(a);
          for (std::int32_t x : samples[a.index()]) by_sample.emplace_back(x, a);
        }
        std::sort(by_sample.begin(), by_sample.end());
        for (SubMicrobatchId b : fed) {
          auto& out = links[b.index()];
          const std::size_t first = out.size();
          if (samples[b.index()].empty()) {
            out.insert(out.end(), feeders.begin(), feeders.end());
          } else {
            out.insert(out.end(), whole.begin(), whole.end());
            for (std::int32_t x : samples[b.index()]) {
              auto it = std::lower_bound(by_sample.begin(), by_sample.end(), std::pair<std::int32_t, SubMicrobatchId>{x, SubMicrobatchId{-1}});
              for (; it != by_sample.end() && it->first == x; ++it) out.push_back(it->second);
            }
          }
          std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
          out.erase(std::unique(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()), out.end());
        }
      }
    }
  }
  return links;
}

}  // namespace detail

inline StageGraph build_stage_graph(const ModelSpec& model, const Partition& partition,
                                    std::span<const SubMicrobatchSpec> sub_microbatches, const StageGraphOptions& options) {
  check_partition(model, partition);
  const auto with_backward = detail::modules_with_backward(model);
  const std::int64_t node_count = detail::count_stage_nodes(model, partition, sub_microbatches, with_backward, options.split_backward);
  const SubMicrobatchIndex index(sub_microbatches, static_cast<int>(model.modules.size()));
  const Pass bwd = options.split_backward ? Pass::backward_input : Pass::backward;

  StageGraph g;
  const std::size_t S = sub_microbatches.size();
  g.nodes.reserve(static_cast<std::size_t>(node_count));
  g.lookup_offsets.assign(S + 1, 0);
  for (std::size_t s = 0; s < S; ++s)
    g.lookup_offsets[s + 1] = g.lookup_offsets[s] + 4 * std::int64_t{partition.chunk_count(sub_microbatches[s].module())};
  g.lookup.assign(static_cast<std::size_t>(g.lookup_offsets[S]), -1);

  auto slot = [&](std::size_t s, ModuleId m, int c, Pass p) {
    return static_cast<std::size_t>(g.lookup_offsets[s] + static_cast<std::int64_t>(p) * partition.chunk_count(m) + c);
  };
  auto add = [&](std::size_t s, ModuleId m, int c, Pass p) {
    const auto id = static_cast<NodeIndex>(g.nodes.size());
    g.nodes.push_back(StageNode{StageRef{m, c, SubMicrobatchId{static_cast<SubMicrobatchId::rep>(s)}, p}, partition.chunk(m, c).rank, {}, {}});
    g.lookup[slot(s, m, c, p)] = id;
  };
  for (std::size_t s = 0; s < S; ++s) {
    const ModuleId m = sub_microbatches[s].module();
    const int C = partition.chunk_count(m);
    for (int c = 0; c < C; ++c) add(s, m, c, Pass::forward);
    if (!with_backward[m.index()]) continue;
    for (int c = 0; c < C; ++c) add(s, m, c, bwd);
    if (options.split_backward && model.module(m).trainable)
      for (int c = 0; c < C; ++c) add(s, m, c, Pass::backward_weight);
  }

  std::vector<std::vector<std::int32_t>> samples(S);
  for (std::size_t s = 0; s < S; ++s) samples[s] = detail::samples_of(sub_microbatches[s]);
  const auto fed_by = detail::feeding_links(model, sub_microbatches, index, samples);  // b <- a
  std::vector<std::vector<SubMicrobatchId>> feeds_into(S);                             // a -> b
  for (std::size_t b = 0; b < S; ++b)
    for (SubMicrobatchId a : fed_by[b]) feeds_into[a.index()].push_back(SubMicrobatchId{static_cast<SubMicrobatchId::rep>(b)});
  auto node = [&](ModuleId m, int c, SubMicrobatchId s, Pass p) { return g.lookup[slot(s.index(), m, c, p)]; };

  for (auto& nd : g.nodes) {
    const StageRef& st = nd.stage;
    const int C = partition.chunk_count(st.module);
    auto& in = nd.inputs;
    if (st.pass == Pass::forward) {
      if (st.chunk > 0) {
        in.push_back(node(st.module, st.chunk - 1, st.sub_microbatch, Pass::forward));
      } else {
        for (SubMicrobatchId a : fed_by[st.sub_microbatch.index()]) {
          const ModuleId f = sub_microbatches[a.index()].module();
          in.push_back(node(f, partition.chunk_count(f) - 1, a, Pass::forward));
        }
      }
    } else if (st.pass == Pass::backward_weight) {
      in.push_back(node(st.module, st.chunk, st.sub_microbatch, Pass::backward_input));
    } else {
      in.push_back(node(st.module, st.chunk, st.sub_microbatch, Pass::forward));
      if (st.chunk + 1 < C) {
        in.push_back(node(st.module, st.chunk + 1, st.sub_microbatch, bwd));
      } else if (const auto& fed = model.module(st.module).feeds; fed && with_backward[fed->index()]) {
        for (SubMicrobatchId b : feeds_into[st.sub_microbatch.index()])
          in.push_back(node(*fed, 0, b, bwd));
      }
    }
    std::sort(in.begin(), in.end());
  }
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    for (NodeIndex i : g.nodes[n].inputs) g.nodes[static_cast<std::size_t>(i)].outputs.push_back(static_cast<NodeIndex>(n));
  // outputs come out ascending: nodes are visited in index order.
  return g;
}

}  // namespace pipeweaver
