#pragma once
// Decision units of the segment reordering.
//
// A segment is one pass of one sub-microbatch through P consecutive chunks of a module: the
// chunks k·P .. k·P + P − 1 (virtual index k). Symmetry pruning: the segments of one module in
// one microbatch share a priority and keep their sub-microbatch order (ties in the interleaver
// go to the lower node index, i.e. the earlier sub-microbatch), so the unit the search orders
// is (module, microbatch, k, pass), with pass forward or backward (a split backward's two parts
// belong to the same unit).
//
// A sequence over the units defines priorities: the unit at position i of n gets n − i, and
// every stage node gets its unit's priority. Units form a DAG (a unit depends on the units of
// its nodes' inputs); the search only builds orders that respect it (topological orders).
//
// Seed orders mimic the baselines: 1F1B-like (microbatch order), interleaved-like (Megatron's
// virtual-pipeline order: groups of P microbatches, chunk-major inside a group) and
// encoder-in-bubbles (Optimus: encoder forwards first, encoder backwards last).
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

struct SegmentUnit {
  ModuleId module{0};
  MicrobatchId microbatch{0};
  int k = 0;            ///< virtual index: chunk / P
  bool forward = true;  ///< forward or backward unit
  friend bool operator==(const SegmentUnit&, const SegmentUnit&) = default;
};

/// The units of one step's stage graph and their dependency DAG.
struct SegmentUnits {
  std::vector<SegmentUnit> units{};               ///< sorted by (forward first, module, microbatch, k)
  std::vector<std::int32_t> unit_of_node{};       ///< per stage node
  std::vector<std::vector<std::int32_t>> successors{};  ///< unit DAG (deduplicated, ascending)
  std::vector<std::int32_t> indegree{};           ///< per unit, number of predecessor units
  [[nodiscard]] std::size_t size() const noexcept { return units.size(); }
};

/// Units of `graph` (P = pipeline ranks; `sub_microbatches` indexed by SubMicrobatchId give each
/// node's microbatch). Throws Error{invalid_plan} when the unit graph has a cycle.
[[nodiscard]] inline SegmentUnits segment_units(const StageGraph& graph, std::span<const SubMicrobatchSpec> sub_microbatches,
                                                int ranks) {
  if (ranks < 1)
    throw input_error("pipeline of " + std::to_string(ranks) + " ranks", {.path = "ranks", .expected = ">= 1"});
  SegmentUnits out;
  const std::size_t n = graph.nodes.size();
  using Key = std::tuple<int, int, int, int>;  // (backward?, module, microbatch, k)
  std::vector<std::pair<Key, std::size_t>> keys(n);
  for (std::size_t v = 0; v < n; ++v) {
    const StageRef& s = graph.nodes[v].stage;
    if (s.sub_microbatch.index() >= sub_microbatches.size())
      throw input_error("stage node " + std::to_string(v) + " names sub-microbatch " + std::to_string(s.sub_microbatch.value()), {.path = "node " + std::to_string(v), .expected = "an id below " + std::to_string(sub_microbatches.size())});
    keys[v] = {Key{is_backward(s.pass) ? 1 : 0, s.module.value(), sub_microbatches[s.sub_microbatch.index()].microbatch().value(),
                   s.chunk / ranks},
               v};
  }
  std::sort(keys.begin(), keys.end());
  out.unit_of_node.assign(n, -1);
  for (std::size_t i = 0; i < n; ++i) {
    if (i == 0 || keys[i].first != keys[i - 1].first) {
      const auto& [b, m, mb, k] = keys[i].first;
      out.units.push_back(SegmentUnit{ModuleId{m}, MicrobatchId{mb}, k, b == 0});
    }
    out.unit_of_node[keys[i].second] = static_cast<std::int32_t>(out.units.size() - 1);
  }
  const std::size_t U = out.units.size();
  out.successors.assign(U, {});
  for (std::size_t v = 0; v < n; ++v)
    for (NodeIndex u : graph.nodes[v].inputs) {
      const auto a = out.unit_of_node[static_cast<std::size_t>(u)], b = out.unit_of_node[v];
      if (a != b) out.successors[static_cast<std::size_t>(a)].push_back(b);
    }
  out.indegree.assign(U, 0);
  for (auto& s : out.successors) {
    std::sort(s.begin(), s.end());
    s.erase(std::unique(s.begin(), s.end()), s.end());
    for (auto b : s) ++out.indegree[static_cast<std::size_t>(b)];
  }
  // Cycle check (Kahn).
  std::vector<std::int32_t> deg = out.indegree, queue;
  for (std::size_t u = 0; u < U; ++u)
    if (deg[u] == 0) queue.push_back(static_cast<std::int32_t>(u));
  for (std::size_t i = 0; i < queue.size(); ++i)
    for (auto b : out.successors[static_cast<std::size_t>(queue[i])])
      if (--deg[static_cast<std::size_t>(b)] == 0) queue.push_back(b);
  if (queue.size() != U)
    throw invalid_plan_error("the segment units of the stage graph form a cycle", {.expected = "an acyclic stage graph whose chunks follow the partition (chunk c on rank c mod P)"});
  return out;
}

/// Per stage node, the priority of its unit: position i of n in `sequence` -> n − i. Units
/// missing from the sequence get priority 0 (lowest).
inline void priorities_from_sequence(const SegmentUnits& su, std::span<const std::int32_t> sequence,
                                     std::vector<std::int64_t>& unit_priority, std::vector<std::int64_t>& node_priority) {
  const auto n = static_cast<std::int64_t>(sequence.size());
  unit_priority.assign(su.size(), 0);
  for (std::size_t i = 0; i < sequence.size(); ++i) unit_priority[static_cast<std::size_t>(sequence[i])] = n - static_cast<std::int64_t>(i);
  node_priority.resize(su.unit_of_node.size());
  for (std::size_t v = 0; v < su.unit_of_node.size(); ++v) node_priority[v] = unit_priority[static_cast<std::size_t>(su.unit_of_node[v])];
}

/// True if `sequence` is a permutation of the units that respects the unit DAG.
[[nodiscard]] inline bool is_topological(const SegmentUnits& su, std::span<const std::int32_t> sequence) {
  if (sequence.size() != su.size()) return false;
  std::vector<std::int32_t> pos(su.size(), -1);
  for (std::size_t i = 0; i < sequence.size(); ++i) {
    const auto u = sequence[i];
    if (u < 0 || static_cast<std::size_t>(u) >= su.size() || pos[static_cast<std::size_t>(u)] >= 0) return false;
    pos[static_cast<std::size_t>(u)] = static_cast<std::int32_t>(i);
  }
  for (std::size_t a = 0; a < su.size(); ++a)
    for (auto b : su.successors[a])
      if (pos[a] > pos[static_cast<std::size_t>(b)]) return false;
  return true;
}

namespace detail {
/// The topological order closest to sorting by `key`: repeatedly the available unit with the
/// smallest key (ties: lower unit index).
template <class KeyFn>
std::vector<std::int32_t> topological_by(const SegmentUnits& su, KeyFn&& key) {
  std::vector<std::int32_t> deg = su.indegree, avail, out;
  for (std::size_t u = 0; u < su.size(); ++u)
    if (deg[u] == 0) avail.push_back(static_cast<std::int32_t>(u));
  while (!avail.empty()) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < avail.size(); ++i) {
      const auto ka = key(avail[i]), kb = key(avail[best]);
      if (ka < kb || (!(kb < ka) && avail[i] < avail[best])) best = i;
    }
    const auto u = avail[best];
    avail.erase(avail.begin() + static_cast<std::ptrdiff_t>(best));
    out.push_back(u);
    for (auto b : su.successors[static_cast<std::size_t>(u)])
      if (--deg[static_cast<std::size_t>(b)] == 0) avail.push_back(b);
  }
  return out;
}
}  // namespace detail

/// A named seed order.
struct SeedOrder {
  std::string name{};
  std::vector<std::int32_t> sequence{};
};

/// Seed orders mimicking the baselines (see the header comment), all topological.
[[nodiscard]] inline std::vector<SeedOrder> seed_orders(const ModelSpec& model, const SegmentUnits& su, int ranks) {
  std::vector<SeedOrder> out;
  const ModuleId backbone = model.backbone();
  auto unit = [&](std::int32_t u) -> const SegmentUnit& { return su.units[static_cast<std::size_t>(u)]; };
  // 1F1B-like: microbatch order; inside a microbatch modules in data-flow order, forwards by k
  // ascending, backwards by k descending.
  out.push_back({"1f1b-like", detail::topological_by(su, [&](std::int32_t u) {
                   const auto& x = unit(u);
                   return std::tuple{x.microbatch.value(), x.forward ? 0 : 1, x.forward ? x.module.value() : -x.module.value(),
                                     x.forward ? x.k : -x.k};
                 })});
  // Interleaved-like: groups of P microbatches, chunk-major inside a group.
  const int P = std::max(ranks, 1);
  out.push_back({"interleaved-like", detail::topological_by(su, [&](std::int32_t u) {
                   const auto& x = unit(u);
                   const int mb = x.microbatch.value();
                   return std::tuple{mb / P, x.forward ? 0 : 1, x.forward ? x.k : -x.k,
                                     x.forward ? x.module.value() : -x.module.value(), mb % P};
                 })});
  // Encoder-in-bubbles: every non-backbone forward first, backbone in microbatch order, every
  // non-backbone backward last.
  out.push_back({"encoder-in-bubbles", detail::topological_by(su, [&](std::int32_t u) {
                   const auto& x = unit(u);
                   const bool bb = x.module == backbone;
                   const int phase = bb ? 1 : (x.forward ? 0 : 2);
                   return std::tuple{phase, x.microbatch.value(), x.forward ? 0 : 1, x.forward ? x.k : -x.k,
                                     x.module.value()};
                 })});
  return out;
}

}  // namespace pipeweaver
