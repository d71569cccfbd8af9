#pragma once
// Shared pieces of the baseline plan builders: the "one chain" layout of all
// modules' layers, contiguous splits of it into pipeline ranges, the per-rank orders of the
// classic schedules (GPipe, 1F1B, Megatron's interleaved 1F1B), uniform recompute settings and
// a deadlock check of a per-rank order. std-only (compiles under nvcc).
//
// Vocabulary.
//  * The chain: the layers of every module laid end to end in data-flow order: encoders (in
//    module order) first, then the backbone, then generators. Megatron-style baselines treat it
//    as one deep network.
//  * A ChainSplit cuts the chain into R = P·v contiguous, non-empty ranges; range j lives on rank
//    j mod P as that rank's local virtual stage j / P (v = 1: plain 1F1B / GPipe; v > 1:
//    Megatron's virtual pipeline). A range that spans two modules becomes one chunk of each.
//  * A unit is the work of one range on one microbatch in one direction: the forward (or
//    backward) stages of every chunk of that range for every sub-microbatch of that microbatch.
//    Forward units run their stages in chain order, backward units in reverse chain order.
//    A microbatch without items of an encoder's modality simply has no stages of that encoder.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

// --- uniform recompute -------------------------------------------------------------------------

/// The uniform recompute settings a baseline may take, cheapest in time first.
enum class UniformRecompute : std::uint8_t { none, selective, full };

inline constexpr std::array<UniformRecompute, 3> uniform_recompute_settings{
    UniformRecompute::none, UniformRecompute::selective, UniformRecompute::full};

[[nodiscard]] constexpr std::string_view to_string(UniformRecompute r) noexcept {
  switch (r) {
    case UniformRecompute::none: return "none";
    case UniformRecompute::selective: return "selective";
    case UniformRecompute::full: return "full";
  }
  return "?";
}

/// The strategy of a chunk of `layers` layers under a uniform setting.
[[nodiscard]] constexpr MemoryStrategy uniform_strategy(UniformRecompute r, int layers) noexcept {
  switch (r) {
    case UniformRecompute::none: return MemoryStrategy{};
    case UniformRecompute::selective: return MemoryStrategy::selective(layers);
    case UniformRecompute::full: return MemoryStrategy::full(layers);
  }
  return MemoryStrategy{};
}

// --- the chain ---------------------------------------------------------------------------------

/// Modules in chain order: encoders (module order), the backbone, generators (module order).
[[nodiscard]] inline std::vector<ModuleId> chain_modules(const ModelSpec& model) {
  std::vector<ModuleId> out;
  for (ModuleRole role : {ModuleRole::encoder, ModuleRole::backbone, ModuleRole::generator})
    for (std::size_t i = 0; i < model.modules.size(); ++i)
      if (model.modules[i].role == role) out.push_back(ModuleId{static_cast<ModuleId::rep>(i)});
  return out;
}

/// Total layers of the given modules.
[[nodiscard]] inline int chain_layer_count(const ModelSpec& model, std::span<const ModuleId> chain) {
  int n = 0;
  for (ModuleId m : chain) n += model.module(m).layers;
  return n;
}

/// A contiguous split of a chain into ranks·virtual_stages non-empty ranges; range j runs on
/// rank j mod P as local virtual stage j / P.
struct ChainSplit {
  int ranks = 1;
  int virtual_stages = 1;
  std::vector<int> bounds{};  ///< range j = chain layers [bounds[j], bounds[j+1]); size R + 1
  [[nodiscard]] int range_count() const noexcept { return ranks * virtual_stages; }
  friend bool operator==(const ChainSplit&, const ChainSplit&) = default;
};

/// Throws Error{input} unless `s` cuts a chain of `layers` layers into R non-empty ranges.
inline void check_split(const ChainSplit& s, int layers) {
  const int R = s.range_count();
  bool ok = s.ranks >= 1 && s.virtual_stages >= 1 && static_cast<int>(s.bounds.size()) == R + 1 &&
            s.bounds.front() == 0 && s.bounds.back() == layers;
  for (int j = 0; ok && j < R; ++j) ok = s.bounds[static_cast<std::size_t>(j)] < s.bounds[static_cast<std::size_t>(j) + 1];
  if (!ok)
    throw input_error("bad chain split", {.path = "ChainSplit", .expected = std::to_string(R + 1) + " strictly increasing bounds from 0 to " + std::to_string(layers)});
}

/// A static pipeline layout: the partition, and for every chunk the range (virtual stage j) whose
/// units schedule it, or -1 for a chunk scheduled outside the pipeline order (Optimus' encoders).
struct PipelineLayout {
  Partition partition{};
  int virtual_stages = 1;
  std::vector<std::vector<int>> range_of_chunk{};  ///< [module][chunk] -> range index or -1
  [[nodiscard]] int ranks() const noexcept { return partition.ranks; }
};

/// The layout of `split` over `chain` (the modules of the chain, in chain order). Modules of the
/// model that are not in `chain` get no chunks (the caller places them, e.g. as fillers).
[[nodiscard]] inline PipelineLayout chain_layout(const ModelSpec& model, std::span<const ModuleId> chain,
                                                 const ChainSplit& split, std::string name) {
  const int total = chain_layer_count(model, chain);
  check_split(split, total);
  PipelineLayout out;
  out.partition.name = std::move(name);
  out.partition.ranks = split.ranks;
  out.partition.modules.assign(model.modules.size(), ModulePlacement{});
  out.virtual_stages = split.virtual_stages;
  out.range_of_chunk.assign(model.modules.size(), {});
  int offset = 0;  // chain position of the module's layer 0
  for (ModuleId m : chain) {
    const int L = model.module(m).layers;
    for (int j = 0; j < split.range_count(); ++j) {
      const int lo = std::max(split.bounds[static_cast<std::size_t>(j)], offset);
      const int hi = std::min(split.bounds[static_cast<std::size_t>(j) + 1], offset + L);
      if (lo >= hi) continue;
      out.partition.modules[m.index()].chunks.push_back(Chunk{lo - offset, hi - lo, RankId{j % split.ranks}});
      out.range_of_chunk[m.index()].push_back(j);
    }
    offset += L;
  }
  return out;
}

/// Splits `layers` consecutive layers into `parts` near-equal contiguous pieces (the first
/// `layers mod parts` pieces one layer longer); returns the piece sizes, dropping empty pieces.
[[nodiscard]] inline std::vector<int> even_layer_counts(int layers, int parts) {
  std::vector<int> out;
  for (int i = 0; i < parts; ++i) {
    const int n = layers / parts + (i < layers % parts ? 1 : 0);
    if (n > 0) out.push_back(n);
  }
  return out;
}

// --- min-max contiguous partition ----------------------------------------------------------------

/// Bounds of the split of `weights` into `parts` non-empty contiguous ranges that minimizes the
/// largest range sum (exact DP, O(parts · n²)); among those, the one with the smallest sum of
/// squared range sums (so the ranges that do not set the maximum are balanced too, instead of
/// being left tiny next to a heavy vocabulary head); remaining ties go to the lexicographically
/// smallest bounds. Requires 1 <= parts <= weights.size().
[[nodiscard]] inline std::vector<int> min_max_split(std::span<const std::int64_t> weights, int parts) {
  const int n = static_cast<int>(weights.size());
  if (parts < 1 || parts > n)
    throw input_error("cannot split " + std::to_string(n) + " layers into " + std::to_string(parts) + " ranges", {.path = "min_max_split", .expected = "1 <= ranges <= layers"});
  std::vector<std::int64_t> prefix(static_cast<std::size_t>(n) + 1, 0);
  for (int i = 0; i < n; ++i) prefix[static_cast<std::size_t>(i) + 1] = prefix[static_cast<std::size_t>(i)] + weights[static_cast<std::size_t>(i)];
  const auto sum = [&](int i, int e) { return prefix[static_cast<std::size_t>(e)] - prefix[static_cast<std::size_t>(i)]; };
  const auto idx = [n](int k, int i) { return static_cast<std::size_t>(k) * static_cast<std::size_t>(n + 1) + static_cast<std::size_t>(i); };
  const std::size_t cells = static_cast<std::size_t>(parts + 1) * static_cast<std::size_t>(n + 1);
  // Phase 1. best[k][i]: the smallest possible largest sum when the last n - i layers form k ranges.
  constexpr std::int64_t inf = std::numeric_limits<std::int64_t>::max();
  std::vector<std::int64_t> best(cells, inf);
  best[idx(0, n)] = 0;
  for (int k = 1; k <= parts; ++k)
    for (int i = n - k; i >= 0; --i)
      for (int e = i + 1; e <= n - (k - 1); ++e)
        if (best[idx(k - 1, e)] != inf) best[idx(k, i)] = std::min(best[idx(k, i)], std::max(sum(i, e), best[idx(k - 1, e)]));
  const std::int64_t target = best[idx(parts, 0)];
  // Phase 2. sq[k][i]: the smallest Σ (range sum)² over such splits with every range <= target.
  constexpr double dinf = std::numeric_limits<double>::infinity();
  std::vector<double> sq(cells, dinf);
  sq[idx(0, n)] = 0;
  const auto square = [&](int i, int e) { const double x = static_cast<double>(sum(i, e)); return x * x; };
  for (int k = 1; k <= parts; ++k)
    for (int i = n - k; i >= 0; --i)
      for (int e = i + 1; e <= n - (k - 1) && sum(i, e) <= target; ++e)
        if (sq[idx(k - 1, e)] != dinf) sq[idx(k, i)] = std::min(sq[idx(k, i)], square(i, e) + sq[idx(k - 1, e)]);
  std::vector<int> bounds{0};
  int i = 0;
  for (int k = parts; k >= 1; --k) {
    for (int e = i + 1; e <= n - (k - 1) && sum(i, e) <= target; ++e)
      if (sq[idx(k - 1, e)] != dinf && square(i, e) + sq[idx(k - 1, e)] == sq[idx(k, i)]) {
        bounds.push_back(e);
        i = e;
        break;
      }
  }
  return bounds;
}

// --- per-rank unit orders -------------------------------------------------------------------------

enum class PipelineOrder : std::uint8_t {
  gpipe,        ///< all forwards, then all backwards (microbatch order)
  one_f_one_b,  ///< Megatron 1F1B: warm-up min(P−r−1, M) forwards, steady 1F1B, cool-down
  interleaved,  ///< Megatron's virtual-pipeline 1F1B over v local stages
};

/// One unit in a rank's order: local virtual stage (range j = local·P + rank), microbatch, direction.
struct UnitRef {
  int local_stage = 0;
  int microbatch = 0;
  bool backward = false;
  friend bool operator==(const UnitRef&, const UnitRef&) = default;
};

/// Size of the largest microbatch group of the interleaved order: P, or P + (M mod P) when M is
/// not a multiple of P and M > P (the remainder joins the last group), or M when M < P.
[[nodiscard]] constexpr int interleaved_group(int P, int M) noexcept {
  if (M < P) return M;
  return P + M % P;
}

namespace detail {
/// The k-th forward (or backward) unit of a rank in Megatron's interleaved order. Microbatches go
/// in groups of P; a group runs local stage 0 for its microbatches, then stage 1, ... (backwards:
/// stage v−1 first). M need not be divisible by P: the M mod P remaining microbatches join the
/// last group (of P + M mod P microbatches), and the warm-up is sized for that largest group
/// (warmup_units). A separate small last group would instead idle the pipeline while its few
/// microbatches go round the ranks v times.
[[nodiscard]] inline UnitRef interleaved_unit(int k, int P, int v, int M, bool backward) {
  int full_groups = M / P;
  if (M % P != 0 && full_groups > 0) --full_groups;  // the last group takes P + (M mod P) microbatches
  int group = 0, size = P, idx = k;
  if (k < full_groups * P * v) {
    group = k / (P * v);
    idx = k % (P * v);
  } else {
    group = full_groups;
    size = M - full_groups * P;
    idx = k - full_groups * P * v;
  }
  int stage = idx / size;
  if (backward) stage = v - 1 - stage;
  return UnitRef{stage, group * P + idx % size, backward};
}
}  // namespace detail

/// Number of forward units rank `rank` runs before its first backward.
/// gpipe: all M; 1F1B: min(P − r − 1, M); interleaved: min(2(P − r − 1) + (v − 1)G, M·v), G the
/// largest group (interleaved_group): Megatron's warm-up, which has G = P when P divides M.
[[nodiscard]] inline int warmup_units(PipelineOrder order, int P, int v, int M, int rank) {
  switch (order) {
    case PipelineOrder::gpipe: return M;
    case PipelineOrder::one_f_one_b: return std::min(P - rank - 1, M);
    case PipelineOrder::interleaved: return std::min(2 * (P - rank - 1) + (v - 1) * interleaved_group(P, M), M * v);
  }
  return M;
}

/// The order of units on `rank`: `warmup` forwards, then alternately one forward and one
/// backward until the forwards run out, then the remaining backwards. Units are enumerated in
/// microbatch order (gpipe, 1F1B; v must be 1) or Megatron's interleaved order.
[[nodiscard]] inline std::vector<UnitRef> rank_unit_order(PipelineOrder order, int P, int v, int M, int rank,
                                                          int warmup = -1) {
  if (order != PipelineOrder::interleaved && v != 1)
    throw input_error("gpipe and 1F1B orders have one virtual stage per rank", {.path = "rank_unit_order", .expected = "virtual_stages == 1"});
  const int N = M * v;
  if (warmup < 0) warmup = warmup_units(order, P, v, M, rank);
  warmup = std::clamp(warmup, 0, N);
  const auto unit = [&](int k, bool backward) {
    return order == PipelineOrder::interleaved ? detail::interleaved_unit(k, P, v, M, backward)
                                               : UnitRef{0, k, backward};
  };
  std::vector<UnitRef> out;
  out.reserve(static_cast<std::size_t>(2 * N));
  int f = 0, b = 0;
  for (; f < warmup; ++f) out.push_back(unit(f, false));
  while (f < N) {
    out.push_back(unit(f++, false));
    out.push_back(unit(b++, true));
  }
  while (b < N) out.push_back(unit(b++, true));
  return out;
}

// --- units of a step ------------------------------------------------------------------------------

/// The stage nodes of every unit of one step, grouped by (range, microbatch, direction).
class UnitTable {
 public:
  UnitTable(const StageGraph& graph, std::span<const SubMicrobatchSpec> sub_microbatches, const PipelineLayout& layout,
            std::span<const ModuleId> chain_order, int microbatches)
      : ranges_(layout.ranks() * layout.virtual_stages), microbatches_(microbatches) {
    units_.assign(static_cast<std::size_t>(ranges_) * static_cast<std::size_t>(microbatches_) * 2, {});
    std::vector<int> chain_pos(layout.partition.modules.size(), 0);
    for (std::size_t i = 0; i < chain_order.size(); ++i) chain_pos.at(chain_order[i].index()) = static_cast<int>(i);
    struct Keyed {
      int key1, key2, key3;
      NodeIndex node;
    };
    std::vector<std::vector<Keyed>> keyed(units_.size());
    for (std::size_t n = 0; n < graph.nodes.size(); ++n) {
      const StageNode& node = graph.nodes[n];
      const int j = layout.range_of_chunk.at(node.stage.module.index()).at(static_cast<std::size_t>(node.stage.chunk));
      if (j < 0) continue;
      const int mb = sub_microbatches[node.stage.sub_microbatch.index()].microbatch().value();
      if (mb < 0 || mb >= microbatches_)
        throw invalid_plan_error("sub-microbatch names microbatch " + std::to_string(mb), {.path = "sub-microbatch " + std::to_string(node.stage.sub_microbatch.value()), .expected = "a microbatch in 0.." + std::to_string(microbatches_ - 1)});
      const bool bwd = is_backward(node.stage.pass);
      const int pos = chain_pos[node.stage.module.index()];
      // Forward: chain order; backward: reverse chain order, input-gradient part before weight part.
      keyed[slot(j, mb, bwd)].push_back(
          Keyed{bwd ? -pos : pos, bwd ? -node.stage.chunk : node.stage.chunk,
                node.stage.sub_microbatch.value() * 4 + static_cast<int>(node.stage.pass), static_cast<NodeIndex>(n)});
    }
    for (std::size_t u = 0; u < keyed.size(); ++u) {
      auto& k = keyed[u];
      std::sort(k.begin(), k.end(), [](const Keyed& a, const Keyed& b) {
        return std::tie(a.key1, a.key2, a.key3, a.node) < std::tie(b.key1, b.key2, b.key3, b.node);
      });
      for (const auto& e : k) units_[u].push_back(e.node);
    }
  }

  [[nodiscard]] std::span<const NodeIndex> unit(int range, int microbatch, bool backward) const {
    return units_.at(slot(range, microbatch, backward));
  }
  [[nodiscard]] int microbatches() const noexcept { return microbatches_; }

 private:
  [[nodiscard]] std::size_t slot(int range, int mb, bool backward) const {
    return (static_cast<std::size_t>(range) * static_cast<std::size_t>(microbatches_) + static_cast<std::size_t>(mb)) * 2 +
           (backward ? 1 : 0);
  }
  int ranges_;
  int microbatches_;
  std::vector<std::vector<NodeIndex>> units_;
};

/// Number of microbatches of a step's sub-microbatches (largest microbatch id + 1).
[[nodiscard]] inline int microbatch_count(std::span<const SubMicrobatchSpec> sub_microbatches) {
  int m = 0;
  for (const auto& s : sub_microbatches) m = std::max(m, s.microbatch().value() + 1);
  return m;
}

/// Strategy of a node under a uniform recompute setting (by its chunk's layer count).
[[nodiscard]] inline MemoryStrategy node_strategy(const StageGraph& graph, const Partition& partition, NodeIndex n,
                                                  UniformRecompute recompute) {
  const StageRef& s = graph.nodes[static_cast<std::size_t>(n)].stage;
  return uniform_strategy(recompute, partition.chunk(s.module, s.chunk).layer_count);
}

/// The schedule of a layout without fillers under a classic order: each rank runs its units in
/// rank_unit_order, every stage with the uniform recompute setting.
/// `warmup_extra` (>= 0) adds forwards to every rank's warm-up (used only if the plain order
/// would deadlock, see pipeline_schedule_checked).
[[nodiscard]] inline Schedule pipeline_schedule(const StageGraph& graph, std::span<const SubMicrobatchSpec> sub_microbatches,
                                                const PipelineLayout& layout, std::span<const ModuleId> chain_order,
                                                PipelineOrder order, UniformRecompute recompute, int microbatches = -1,
                                                int warmup_extra = 0) {
  const int P = layout.ranks();
  const int v = layout.virtual_stages;
  const int M = microbatches >= 0 ? microbatches : microbatch_count(sub_microbatches);
  const UnitTable table(graph, sub_microbatches, layout, chain_order, M);
  Schedule s;
  s.ranks.assign(static_cast<std::size_t>(P), {});
  for (int r = 0; r < P; ++r) {
    const int w = warmup_units(order, P, v, M, r) + warmup_extra;
    for (const UnitRef& u : rank_unit_order(order, P, v, M, r, w))
      for (NodeIndex n : table.unit(u.local_stage * P + r, u.microbatch, u.backward)) {
        if (graph.nodes[static_cast<std::size_t>(n)].rank != RankId{r})
          throw invalid_plan_error("stage graph places a unit's stage on another rank", {.path = "rank " + std::to_string(r), .expected = "chunk ranks as in the layout"});
        s.ranks[static_cast<std::size_t>(r)].push_back(ScheduledStage{n, node_strategy(graph, layout.partition, n, recompute)});
      }
  }
  return s;
}

// --- deadlock check -------------------------------------------------------------------------------

/// Result of `check_executable`: ok, or the first rank whose next stage can never start.
struct ExecutableCheck {
  bool ok = true;
  int rank = -1;      ///< a stuck rank (smallest index)
  int position = -1;  ///< index of its stuck stage in the rank's order
  [[nodiscard]] explicit operator bool() const noexcept { return ok; }
};

/// Whether every rank can run its order to the end when each stage waits only for its inputs
/// (no deadlock), and every node of the graph is scheduled exactly once. With
/// `unscheduled_done`, nodes the schedule leaves out count as done from the start (a partial
/// schedule whose missing stages never wait for it, e.g. Optimus' encoder forwards) and each
/// node is scheduled at most once.
[[nodiscard]] inline ExecutableCheck check_executable(const StageGraph& graph, const Schedule& schedule,
                                                      bool unscheduled_done = false) {
  std::vector<char> done(graph.nodes.size(), 0);
  std::vector<int> seen(graph.nodes.size(), 0);
  for (const auto& rank : schedule.ranks)
    for (const auto& st : rank) {
      if (st.node < 0 || static_cast<std::size_t>(st.node) >= graph.nodes.size()) return {false, -1, -1};
      ++seen[static_cast<std::size_t>(st.node)];
    }
  for (std::size_t n = 0; n < seen.size(); ++n) {
    if (seen[n] > 1 || (seen[n] == 0 && !unscheduled_done)) return {false, -1, -1};
    if (seen[n] == 0) done[n] = 1;
  }
  std::vector<std::size_t> pos(schedule.ranks.size(), 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (std::size_t r = 0; r < schedule.ranks.size(); ++r) {
      const auto& order = schedule.ranks[r];
      while (pos[r] < order.size()) {
        const StageNode& node = graph.nodes[static_cast<std::size_t>(order[pos[r]].node)];
        const bool ready = std::all_of(node.inputs.begin(), node.inputs.end(),
                                       [&](NodeIndex i) { return done[static_cast<std::size_t>(i)] != 0; });
        if (!ready) break;
        done[static_cast<std::size_t>(order[pos[r]].node)] = 1;
        ++pos[r];
        progress = true;
      }
    }
  }
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r)
    if (pos[r] < schedule.ranks[r].size()) return {false, static_cast<int>(r), static_cast<int>(pos[r])};
  return {};
}

/// pipeline_schedule, with every rank's warm-up lengthened by the smallest number of forwards
/// that makes the order deadlock-free on this step: a safety net (more activations in flight,
/// which the memory check accounts for). The orders of this header need none on a chain (the
/// tests check GPipe, 1F1B and interleaved for many P, v, M); a step whose units are uneven
/// (microbatches without an encoder's items) cannot need more, as an empty unit waits for nothing.
/// Throws Error{invalid_plan} if no warm-up helps (impossible for a chain: all forwards first
/// never deadlocks).
[[nodiscard]] inline Schedule pipeline_schedule_checked(const StageGraph& graph,
                                                        std::span<const SubMicrobatchSpec> sub_microbatches,
                                                        const PipelineLayout& layout, std::span<const ModuleId> chain_order,
                                                        PipelineOrder order, UniformRecompute recompute) {
  const int M = microbatch_count(sub_microbatches);
  const int N = M * layout.virtual_stages;
  // Chunks outside the pipeline order (range -1) are scheduled by the caller; they must not
  // wait for pipeline stages that wait for them (true of Optimus' encoder forwards).
  bool partial = false;
  for (const auto& m : layout.range_of_chunk)
    for (int j : m) partial = partial || j < 0;
  for (int extra = 0;; ++extra) {
    Schedule s = pipeline_schedule(graph, sub_microbatches, layout, chain_order, order, recompute, M, extra);
    const ExecutableCheck c = check_executable(graph, s, partial);
    if (c) return s;
    if (extra >= N)
      throw invalid_plan_error("pipeline order deadlocks", {.path = "rank " + std::to_string(c.rank) + ", stage " + std::to_string(c.position), .expected = "an order whose stages can all start"});
  }
}

}  // namespace pipeweaver
