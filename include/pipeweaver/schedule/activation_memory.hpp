#pragma once
// The activation-memory rule, stated once for every component that decides whether a plan fits
// in device memory (the emulator, the validator, the baselines, the search's evaluator and the
// dual-queue interleaver):
//
//   A forward's activation bytes are held from its start to the end of the last backward part
//   of the same stage (module, chunk, sub-microbatch): the whole backward; or, when the backward
//   is split, the weight part; or the input part when there is no weight part (a frozen
//   module). A forward with no backward part holds them only while it runs.
//
// Static memory (the chunk state of a rank) is held all the time, so a rank's peak is its static
// bytes plus the largest running sum of held activation bytes, which is reached at a forward's
// start. Three forms of the rule:
//  (a) activation_release_nodes: per forward node of a StageGraph, the node that frees its bytes;
//  (b) activation_release_positions: per forward of one rank's ordered stages, the position that
//      frees its bytes;
//  (c) rank_peak_memory: the walk of one rank's peak over such an ordered list.
// std-only (compiles under nvcc).
#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

/// Which part of a stage frees its forward's activations: among the stage's backward parts,
/// the one of highest precedence (a stage has either a whole backward, or an input part and,
/// unless frozen, a weight part). 0 for a forward, which frees nothing.
[[nodiscard]] constexpr int release_precedence(Pass p) noexcept {
  switch (p) {
    case Pass::forward: return 0;
    case Pass::backward_input: return 1;   // frees them only when there is no weight part
    case Pass::backward_weight: return 2;  // the last part of a split backward
    case Pass::backward: return 3;
  }
  return 0;
}

/// A position of an ordered list that frees nothing / a forward with nothing freeing it.
inline constexpr std::size_t no_release = std::numeric_limits<std::size_t>::max();

namespace detail {

/// A stage part's sort key: entries of one stage are adjacent, forwards first, the part that
/// frees the activations last.
struct ReleaseKey {
  std::int32_t module = 0, chunk = 0, sub_microbatch = 0;
  int precedence = 0;     ///< release_precedence of the entry's pass
  std::size_t index = 0;  ///< the entry's position
  friend auto operator<=>(const ReleaseKey&, const ReleaseKey&) = default;
  [[nodiscard]] bool same_stage(const ReleaseKey& o) const noexcept {
    return module == o.module && chunk == o.chunk && sub_microbatch == o.sub_microbatch;
  }
};

/// Per entry of `stages`: for a forward, the index of the entry that frees its activations
/// (the backward part of highest release_precedence of the same stage; the later entry on a
/// tie), or no_release; no_release for every other entry. O(n log n).
[[nodiscard]] inline std::vector<std::size_t> release_indices(std::span<const StageRef> stages) {
  std::vector<ReleaseKey> keys;
  keys.reserve(stages.size());
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const StageRef& s = stages[i];
    keys.push_back({s.module.value(), s.chunk, s.sub_microbatch.value(), release_precedence(s.pass), i});
  }
  std::sort(keys.begin(), keys.end());
  std::vector<std::size_t> out(stages.size(), no_release);
  for (std::size_t first = 0; first < keys.size();) {
    std::size_t end = first + 1;
    while (end < keys.size() && keys[first].same_stage(keys[end])) ++end;
    const ReleaseKey& releaser = keys[end - 1];
    if (releaser.precedence > 0)
      for (std::size_t k = first; k < end && keys[k].precedence == 0; ++k) out[keys[k].index] = releaser.index;
    first = end;
  }
  return out;
}

}  // namespace detail

/// (a) Per node of `graph`: for a forward, the node whose end frees its activations (-1 when the
/// stage has no backward part: the forward holds them only while it runs); -1 for every other
/// node. Needs no lookup table (a graph assembled by hand works too).
[[nodiscard]] inline std::vector<NodeIndex> activation_release_nodes(const StageGraph& graph) {
  std::vector<StageRef> stages;
  stages.reserve(graph.nodes.size());
  for (const StageNode& n : graph.nodes) stages.push_back(n.stage);
  const std::vector<std::size_t> release = detail::release_indices(stages);
  std::vector<NodeIndex> out(release.size(), -1);
  for (std::size_t v = 0; v < release.size(); ++v)
    if (release[v] != no_release) out[v] = static_cast<NodeIndex>(release[v]);
  return out;
}

/// (b) Per position of one rank's stages in execution order: for a forward, the position whose
/// end frees its activations (no_release when the stage has no backward part in the list);
/// no_release for every other position.
[[nodiscard]] inline std::vector<std::size_t> activation_release_positions(std::span<const StageRef> stages) {
  return detail::release_indices(stages);
}

/// A rank_peak_memory hook that does nothing.
struct NoForwardHook {
  constexpr void operator()(std::size_t, Bytes) const noexcept {}
};

/// (c) One rank's peak memory over its stages in execution order: `static_bytes` plus the
/// largest running sum of held activation bytes. `release` = activation_release_positions(
/// stages); `forward_bytes(i)` gives the activation bytes of the forward at position i (asked
/// once per forward); `at_forward(i, held)` is called at each forward's start with the
/// activation bytes held then (its own included). A forward whose releasing part comes before it
/// (an order no valid plan has) holds its bytes only while it runs.
template <class ForwardBytes, class AtForward = NoForwardHook>
[[nodiscard]] Bytes rank_peak_memory(std::span<const StageRef> stages, std::span<const std::size_t> release, Bytes static_bytes,
                                     ForwardBytes&& forward_bytes, AtForward&& at_forward = {}) {
  std::vector<Bytes> freed_at(stages.size(), Bytes{0});  // bytes freed at the end of each position
  Bytes held{0}, peak = static_bytes;
  for (std::size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].pass == Pass::forward) {
      const Bytes bytes = forward_bytes(i);
      held += bytes;
      peak = std::max(peak, static_bytes + held);
      at_forward(i, held);
      if (release[i] == no_release || release[i] < i) held -= bytes;
      else freed_at[release[i]] += bytes;
    }
    held -= freed_at[i];
  }
  return peak;
}

}  // namespace pipeweaver
