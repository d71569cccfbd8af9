#pragma once
// Modality-aware partitioning.
//
//  * B_i, the sub-microbatch size of module i: the smallest item count b whose efficiency
//      eff(b) = FLOPs(b) / latency(b) = b · FLOPs(1) / latency(b)
//    (b identical items of the module's representative shape, so FLOPs are proportional to b)
//    is at least `efficiency_threshold` (95 %) of the peak over b = 1 .. cap. The latency is the
//    cost model's forward (+ backward, when the module has one) of one chunk of L_i / P layers.
//    The backbone gets B = 0 (one sub-microbatch per microbatch).
//  * T_i: that stage latency at B_i (backbone: at a representative microbatch). Sorting
//    T_1 <= ... <= T_n: K_1 = 1, K_i = floor(T_i / T_1), at least 1 and at most
//    min(max_segments, floor(L_i / P)) so every chunk keeps a layer.
//  * Module i is cut into P·K_i chunks; chunk c gets floor(L_i / (P·K_i)) layers, the first
//    L_i mod (P·K_i) chunks one more, and lives on rank c mod P. With balance_layers (default),
//    the layer counts are instead the contiguous split minimizing the largest chunk latency
//    (forward + backward at the representative shape, from the cost model: a chunk holding the
//    embedding or the vocabulary head costs more than its layer count says), by dynamic
//    programming over (chunks, layers); it replaces the even split only when it strictly
//    lowers that maximum. Every rank holds K_i chunks of module i, so balanced chunks give
//    balanced ranks.
//  * The representative shape of a module comes from a sampled step: the median item tokens
//    (and median context tokens for a cross-attention generator) over all its items, and for
//    the backbone the median number of samples per microbatch.
// Generic over any CostModel<C, StageSpec, SubMicrobatchSpec>.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

struct DipOptions {
  double efficiency_threshold = 0.95;           ///< fraction of the peak efficiency B_i must keep
  std::int64_t max_sub_microbatch_items = 64;   ///< largest b scanned for the peak
  int max_segments = 8;                         ///< cap on K_i (graph size grows with it)
  bool balance_layers = true;                   ///< split layers by chunk latency (see the header comment)
};

/// A module's typical item, from a sampled step.
struct RepresentativeShape {
  bool present = false;                   ///< the module has items in the sample
  std::int64_t item_tokens = 0;           ///< median tokens per item
  std::int64_t context_tokens = 0;        ///< median context tokens per item (cross-attention), else 0
  std::int64_t items_per_microbatch = 0;  ///< median over microbatches holding any of its items
  std::int64_t max_items_per_microbatch = 0;
};

struct DipModuleChoice {
  ModuleId module{0};
  std::int64_t sub_microbatch_items = 0;  ///< B_i (0: whole microbatch)
  int segments = 1;                       ///< K_i
  Nanoseconds stage_latency{0};           ///< T_i
};

struct DipPartition {
  Partition partition{};
  std::vector<DipModuleChoice> modules{};  ///< indexed by ModuleId
};

namespace detail {
inline std::int64_t median(std::vector<std::int64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];  // lower median: an actual value
}
inline bool module_has_backward(const ModuleSpec& m) { return m.trainable || m.role == ModuleRole::generator; }

template <class C>
Nanoseconds chunk_time(const C& cost, const ModelSpec& model, ModuleId id, int first, int count, std::int64_t items,
                       std::int64_t tokens, std::int64_t context) {
  const ModuleSpec& m = model.module(id);
  std::vector<std::int64_t> tok(static_cast<std::size_t>(items), tokens);
  std::vector<std::int64_t> ctx;
  if (m.cross_attention) ctx.assign(static_cast<std::size_t>(items), context);
  const SubMicrobatchSpec smb{id, MicrobatchId{0}, tok, ctx};
  const MemoryStrategy none{};
  Nanoseconds t = cost.latency(StageSpec{id, 0, RankId{0}, Pass::forward, first, count}, smb, none);
  if (module_has_backward(m)) t += cost.latency(StageSpec{id, 0, RankId{0}, Pass::backward, first, count}, smb, none);
  return t;
}

template <class C>
Nanoseconds stage_time(const C& cost, const ModelSpec& model, ModuleId id, int layers_per_chunk, std::int64_t items,
                       std::int64_t tokens, std::int64_t context) {
  const ModuleSpec& m = model.module(id);
  const int count = std::clamp(layers_per_chunk, 1, m.layers);
  const int first = (m.layers - count) / 2;  // a middle chunk: no embedding or vocabulary head
  return chunk_time(cost, model, id, first, count, items, tokens, context);
}
}  // namespace detail

/// Layer counts of `chunks` contiguous chunks of `layers` layers minimizing the largest
/// `chunk_cost(first, count)` (min-max partition by dynamic programming; ties: the split found
/// first, scanning the last chunk's start from the left). Returns the even split (first
/// layers % chunks chunks one larger) unless the balanced one has a strictly smaller maximum.
template <class ChunkCost>
[[nodiscard]] std::vector<int> balanced_layer_split(int layers, int chunks, ChunkCost&& chunk_cost) {
  std::vector<int> even;
  for (int c = 0; c < chunks; ++c) even.push_back(layers / chunks + (c < layers % chunks ? 1 : 0));
  if (chunks <= 1 || layers <= chunks) return even;
  const auto L = static_cast<std::size_t>(layers);
  // cost[j][l]: chunk of layers j .. l-1, computed on demand.
  std::vector<std::int64_t> memo(L * (L + 1), -1);
  auto cost = [&](std::size_t j, std::size_t l) {
    std::int64_t& c = memo[j * (L + 1) + l];
    if (c < 0) c = Nanoseconds{chunk_cost(static_cast<int>(j), static_cast<int>(l - j))}.count();
    return c;
  };
  std::int64_t even_max = 0;
  for (std::size_t j = 0, c = 0; c < even.size(); j += static_cast<std::size_t>(even[c]), ++c)
    even_max = std::max(even_max, cost(j, j + static_cast<std::size_t>(even[c])));
  constexpr std::int64_t inf = std::numeric_limits<std::int64_t>::max();
  const auto C = static_cast<std::size_t>(chunks);
  // best[c][l]: smallest max cost splitting the first l layers into c chunks; from[c][l]: start of the c-th.
  std::vector<std::vector<std::int64_t>> best(C + 1, std::vector<std::int64_t>(L + 1, inf));
  std::vector<std::vector<std::size_t>> from(C + 1, std::vector<std::size_t>(L + 1, 0));
  best[0][0] = 0;
  for (std::size_t c = 1; c <= C; ++c)
    for (std::size_t l = c; l + (C - c) <= L; ++l)
      for (std::size_t j = c - 1; j < l; ++j) {
        if (best[c - 1][j] == inf) continue;
        const std::int64_t v = std::max(best[c - 1][j], cost(j, l));
        if (v < best[c][l]) {
          best[c][l] = v;
          from[c][l] = j;
        }
      }
  if (best[C][L] >= even_max) return even;
  std::vector<int> out(C);
  for (std::size_t c = C, l = L; c > 0; --c) {
    const std::size_t j = from[c][l];
    out[c - 1] = static_cast<int>(l - j);
    l = j;
  }
  return out;
}

/// Representative shapes of every module (indexed by ModuleId) from a sampled step.
[[nodiscard]] inline std::vector<RepresentativeShape> representative_shapes(const ModelSpec& model, const Batch& sample) {
  std::vector<RepresentativeShape> out(model.size());
  for (std::size_t i = 0; i < model.size(); ++i) {
    const ModuleId id{static_cast<ModuleId::rep>(i)};
    std::vector<std::int64_t> tokens, context, counts;
    for (const Microbatch& mb : sample.microbatches) {
      const auto items = module_items(model, id, mb);
      if (items.empty()) continue;
      counts.push_back(static_cast<std::int64_t>(items.size()));
      for (const auto& it : items) {
        tokens.push_back(it.tokens);
        context.push_back(it.context_tokens);
      }
    }
    RepresentativeShape& s = out[i];
    s.present = !tokens.empty();
    s.item_tokens = detail::median(tokens);
    s.context_tokens = detail::median(context);
    s.items_per_microbatch = detail::median(counts);
    s.max_items_per_microbatch = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  }
  return out;
}

/// B for one module (see the header comment): the smallest b in 1 .. cap with
/// eff(b) >= threshold · max eff, cap = min(max_sub_microbatch_items, the most items a sampled
/// microbatch holds). `stage_time(b)` is the latency of a chunk on b representative items.
template <class StageTime>
[[nodiscard]] std::int64_t smallest_efficient_size(StageTime&& stage_time, std::int64_t cap, double threshold) {
  cap = std::max<std::int64_t>(cap, 1);
  std::vector<double> eff(static_cast<std::size_t>(cap) + 1, 0.0);
  double peak = 0;
  for (std::int64_t b = 1; b <= cap; ++b) {
    const auto t = static_cast<double>(Nanoseconds{stage_time(b)}.count());
    eff[static_cast<std::size_t>(b)] = t > 0 ? static_cast<double>(b) / t : 0.0;
    peak = std::max(peak, eff[static_cast<std::size_t>(b)]);
  }
  for (std::int64_t b = 1; b <= cap; ++b)
    if (eff[static_cast<std::size_t>(b)] >= threshold * peak) return b;
  return cap;
}

namespace detail {

/// A module's chunk work on a sample, T(first, count) = o + count·a + [first = 0]·e_first +
/// [first + count = L]·e_last (a module's layers are identical; its first and last chunks carry
/// the embedding and the vocabulary head).
struct ChunkWorkModel {
  bool active = false;  ///< fitted (the module has items in the sample and at least 3 layers)
  int layers = 0;
  std::int64_t o = 0, a = 0, e_first = 0, e_last = 0;
  [[nodiscard]] std::int64_t operator()(int first, int count) const noexcept {
    return o + count * a + (first == 0 ? e_first : 0) + (first + count == layers ? e_last : 0);
  }
};

/// Fits module i's ChunkWorkModel exactly from four chunk latencies summed over the sample's
/// sub-microbatches of B_i items (forward + backward; each microbatch's items in order, ⌈N/B⌉
/// groups; the backbone: the whole microbatch). Inactive when the module has no items in the
/// sample, fewer layers than chunks, or fewer than 3 layers.
template <class C>
[[nodiscard]] ChunkWorkModel fit_chunk_work(const ModelSpec& model, const C& cost, std::size_t i, int chunks, std::int64_t B,
                                            const Batch& sample) {
  const ModuleSpec& m = model.modules[i];
  ChunkWorkModel f;
  f.layers = m.layers;
  if (chunks < 1 || m.layers < chunks || m.layers < 3) return f;
  const ModuleId id{static_cast<ModuleId::rep>(i)};
  std::vector<SubMicrobatchSpec> groups;
  for (const Microbatch& mb : sample.microbatches) {
    const auto items = module_items(model, id, mb);
    if (items.empty()) continue;
    const auto b = static_cast<std::size_t>(B > 0 ? B : static_cast<std::int64_t>(items.size()));
    for (std::size_t g = 0; g < items.size(); g += b) {
      std::vector<std::int64_t> tok, ctx;
      for (std::size_t k = g; k < std::min(items.size(), g + b); ++k) {
        tok.push_back(items[k].tokens);
        if (m.cross_attention) ctx.push_back(items[k].context_tokens);
      }
      groups.push_back(SubMicrobatchSpec{id, MicrobatchId{0}, tok, ctx});
    }
  }
  if (groups.empty()) return f;
  auto T = [&](int first, int count) {
    std::int64_t t = 0;
    for (const auto& smb : groups) {
      t += cost.latency(StageSpec{id, 0, RankId{0}, Pass::forward, first, count}, smb, MemoryStrategy{}).count();
      if (module_has_backward(m)) t += cost.latency(StageSpec{id, 0, RankId{0}, Pass::backward, first, count}, smb, MemoryStrategy{}).count();
    }
    return t;
  };
  const int mid = m.layers / 2 - 1;  // layers mid, mid + 1: neither the first nor the last
  const std::int64_t t1 = T(mid, 1), t2 = T(mid, 2);
  f.a = t2 - t1;
  f.o = t1 - f.a;
  f.e_first = T(0, 1) - t1;
  f.e_last = T(m.layers - 1, 1) - t1;
  f.active = true;
  return f;
}

/// The ranks' loads (rank r holds chunks r, r + P, ... of every module), largest first.
[[nodiscard]] inline std::vector<std::int64_t> rank_loads(std::span<const ChunkWorkModel> fit, const std::vector<std::vector<int>>& counts,
                                                          int P) {
  std::vector<std::int64_t> load(static_cast<std::size_t>(P), 0);
  for (std::size_t i = 0; i < fit.size(); ++i) {
    if (!fit[i].active) continue;
    int first = 0;
    for (std::size_t c = 0; c < counts[i].size(); ++c) {
      load[c % static_cast<std::size_t>(P)] += fit[i](first, counts[i][c]);
      first += counts[i][c];
    }
  }
  std::sort(load.begin(), load.end(), std::greater<>());
  return load;
}

/// Across modules: the layers of one module move in whole units, so the per-module optimum can
/// leave ranks unequal. Hill climb: move one layer across one chunk boundary while that makes
/// the ranks' loads (sorted, largest first) lexicographically smaller; strict decrease, so it
/// terminates.
inline void balance_across_modules(std::span<const ChunkWorkModel> fit, std::vector<std::vector<int>>& counts, int P) {
  std::vector<std::int64_t> cur = rank_loads(fit, counts, P);
  for (int round = 0; round < 10000; ++round) {
    std::vector<std::int64_t> best = cur;
    std::size_t bi = 0, bc = 0;
    int bd = 0;
    for (std::size_t i = 0; i < fit.size(); ++i) {
      if (!fit[i].active) continue;
      for (std::size_t c = 0; c + 1 < counts[i].size(); ++c)
        for (int d : {-1, +1}) {  // d = +1: chunk c gives a layer to chunk c + 1
          if (counts[i][c] - d < 1 || counts[i][c + 1] + d < 1) continue;
          counts[i][c] -= d;
          counts[i][c + 1] += d;
          const auto l = rank_loads(fit, counts, P);
          counts[i][c] += d;
          counts[i][c + 1] -= d;
          if (l < best) {
            best = l;
            bi = i;
            bc = c;
            bd = d;
          }
        }
    }
    if (bd == 0) break;
    counts[bi][bc] -= bd;
    counts[bi][bc + 1] += bd;
    cur = std::move(best);
  }
}

/// Per module, the layer counts of its P·K_i chunks that balance the ranks' work on `sample`
/// (see the header comment): a ChunkWorkModel per module, balanced_layer_split per module, then
/// balance_across_modules. Modules without items in the sample, or with fewer layers than
/// chunks, get an empty entry (the even split).
template <class C>
std::vector<std::vector<int>> balanced_layer_counts(const ModelSpec& model, const C& cost, int P, std::span<const int> K,
                                                    std::span<const std::int64_t> B, const Batch& sample) {
  const std::size_t n = model.size();
  std::vector<ChunkWorkModel> fit(n);
  for (std::size_t i = 0; i < n; ++i) fit[i] = fit_chunk_work(model, cost, i, P * K[i], B[i], sample);
  std::vector<std::vector<int>> out(n);
  for (std::size_t i = 0; i < n; ++i)
    if (fit[i].active)
      out[i] = balanced_layer_split(model.modules[i].layers, P * K[i], [&](int first, int count) { return Nanoseconds{fit[i](first, count)}; });
  balance_across_modules(fit, out, P);
  return out;
}
}  // namespace detail

/// The partition for given K_i (`segments`) and B_i, chunk c of module i on rank c mod P.
/// Throws Error{infeasible} when a module has fewer layers than P·K_i.
/// `layer_counts` (optional, per module; an empty entry or an empty span: the even split)
/// gives each chunk's layer count explicitly; they must be positive and add up to the module's
/// layers.
[[nodiscard]] inline Partition make_dip_partition(const ModelSpec& model, int ranks, std::span<const int> segments,
                                                  std::span<const std::int64_t> sub_microbatch_items,
                                                  std::string name = "dip",
                                                  std::span<const std::vector<int>> layer_counts = {}) {
  if (ranks < 1)
    throw input_error("pipeline of " + std::to_string(ranks) + " ranks", {.path = "pipeline_stages", .expected = ">= 1"});
  if (segments.size() != model.size() || sub_microbatch_items.size() != model.size())
    throw input_error("segment counts / sub-microbatch sizes do not match the model's modules", {.expected = std::to_string(model.size()) + " entries each"});
  Partition p;
  p.name = std::move(name);
  p.ranks = ranks;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const ModuleSpec& m = model.modules[i];
    const int K = segments[i];
    const int chunks = ranks * K;
    if (K < 1 || m.layers < chunks)
      throw infeasible_error("module '" + m.name + "' has " + std::to_string(m.layers) + " layers, too few for " +
                      std::to_string(chunks) + " chunks (" + std::to_string(ranks) + " ranks x " + std::to_string(K) +
                      " segments)", {.path = "module '" + m.name + "'", .expected = "at least one layer per chunk: layers >= P * K"});
    ModulePlacement pl;
    pl.sub_microbatch_items = sub_microbatch_items[i];
    const bool given = i < layer_counts.size() && !layer_counts[i].empty();
    if (given) {
      const auto& lc = layer_counts[i];
      int sum = 0;
      bool positive = true;
      for (int x : lc) {
        sum += x;
        positive = positive && x > 0;
      }
      if (lc.size() != static_cast<std::size_t>(chunks) || sum != m.layers || !positive)
        throw input_error("layer counts of module '" + m.name + "' do not split its " + std::to_string(m.layers) + " layers", {.path = "module '" + m.name + "'", .expected = std::to_string(chunks) + " positive counts adding up to " + std::to_string(m.layers)});
    }
    const int base = m.layers / chunks, extra = m.layers % chunks;
    int first = 0;
    for (int c = 0; c < chunks; ++c) {
      const int count = given ? layer_counts[i][static_cast<std::size_t>(c)] : base + (c < extra ? 1 : 0);
      pl.chunks.push_back(Chunk{first, count, RankId{c % ranks}});
      first += count;
    }
    p.modules.push_back(std::move(pl));
  }
  return p;
}

/// Weights + gradients + optimizer state per rank (sum of chunk_state_bytes of its chunks).
[[nodiscard]] inline std::vector<Bytes> static_memory_per_rank(const ModelSpec& model, const Setup& setup,
                                                               const Partition& partition) {
  std::vector<Bytes> out(static_cast<std::size_t>(std::max(partition.ranks, 0)), Bytes{0});
  for (std::size_t i = 0; i < partition.modules.size() && i < model.size(); ++i)
    for (const Chunk& c : partition.modules[i].chunks) {
      if (c.rank.value() < 0 || c.rank.value() >= partition.ranks)
        throw input_error("chunk on rank " + std::to_string(c.rank.value()), {.path = "partition '" + partition.name + "', module '" + model.modules[i].name + "'", .expected = "0 <= rank < " + std::to_string(partition.ranks)});
      out[c.rank.index()] += chunk_state_bytes(model, ModuleId{static_cast<ModuleId::rep>(i)}, setup, c.first_layer, c.layer_count);
    }
  return out;
}

/// Throws Error{infeasible} naming the first rank whose static memory exceeds memory_capacity.
inline void check_static_memory(const ModelSpec& model, const Setup& setup, const Partition& partition) {
  const Bytes cap = memory_capacity(setup);
  const auto per_rank = static_memory_per_rank(model, setup, partition);
  for (std::size_t r = 0; r < per_rank.size(); ++r)
    if (per_rank[r] > cap)
      throw infeasible_error("static memory (weights, gradients, optimizer state) of rank " + std::to_string(r) + " is " +
                      std::to_string(to_gib(per_rank[r])) + " GiB, over the " + std::to_string(to_gib(cap)) +
                      " GiB available on setup '" + setup.name + "'", {.path = "partition '" + partition.name + "', rank " + std::to_string(r), .expected = "at most " + std::to_string(to_gib(cap)) +
                                   " GiB: more pipeline ranks, more tensor or data parallelism, or more device memory"});
}

/// DIP's choice of B_i and K_i (see the header comment) and the resulting partition. The
/// static memory is not checked here (check_static_memory).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] DipPartition dip_partition(const ModelSpec& model, const Setup& setup, const C& cost, const Batch& sample,
                                         const DipOptions& options = {}) {
  if (!(options.efficiency_threshold > 0 && options.efficiency_threshold <= 1))
    throw input_error("efficiency threshold " + std::to_string(options.efficiency_threshold), {.path = "DipOptions::efficiency_threshold", .expected = "in (0, 1]"});
  const int P = setup.pipeline_stages;
  const ModuleId backbone = model.backbone();
  const auto shapes = representative_shapes(model, sample);
  DipPartition out;
  out.modules.resize(model.size());
  std::vector<int> K(model.size(), 1);
  std::vector<std::int64_t> B(model.size(), 0);
  for (std::size_t i = 0; i < model.size(); ++i) {
    const ModuleId id{static_cast<ModuleId::rep>(i)};
    const ModuleSpec& m = model.modules[i];
    const RepresentativeShape& sh = shapes[i];
    const int per_chunk = std::max(1, m.layers / std::max(P, 1));
    auto time_at = [&](std::int64_t b) {
      return detail::stage_time(cost, model, id, per_chunk, b, sh.item_tokens, sh.context_tokens);
    };
    DipModuleChoice& ch = out.modules[i];
    ch.module = id;
    if (!sh.present) {
      // Nothing to measure on: one item per sub-microbatch; K stays 1.
      B[i] = id == backbone ? 0 : 1;
    } else if (id == backbone) {
      B[i] = 0;
      ch.stage_latency = time_at(std::max<std::int64_t>(sh.items_per_microbatch, 1));
    } else {
      const std::int64_t cap = std::min(options.max_sub_microbatch_items, std::max<std::int64_t>(sh.max_items_per_microbatch, 1));
      B[i] = smallest_efficient_size(time_at, cap, options.efficiency_threshold);
      ch.stage_latency = time_at(B[i]);
    }
    ch.sub_microbatch_items = B[i];
  }
  // K_i = floor(T_i / T_1) over the modules measured.
  Nanoseconds t1 = Nanoseconds::max();
  for (const auto& ch : out.modules)
    if (ch.stage_latency > Nanoseconds{0}) t1 = std::min(t1, ch.stage_latency);
  for (std::size_t i = 0; i < model.size(); ++i) {
    const ModuleSpec& m = model.modules[i];
    const int cap = std::max(1, std::min(options.max_segments, m.layers / std::max(P, 1)));
    const auto t = out.modules[i].stage_latency;
    const std::int64_t k = (t > Nanoseconds{0} && t1 != Nanoseconds::max()) ? t / t1 : 1;
    K[i] = static_cast<int>(std::clamp<std::int64_t>(k, 1, cap));
    out.modules[i].segments = K[i];
  }
  const auto counts = options.balance_layers ? detail::balanced_layer_counts(model, cost, P, K, B, sample)
                                             : std::vector<std::vector<int>>{};
  out.partition = make_dip_partition(model, P, K, B, "dip", counts);
  return out;
}

/// DIP's partition and its neighbors for the planner to score on sampled steps: each module's
/// K_i ± 1 (within 1 .. min(max_segments, L_i / P)) and each non-backbone module's B_i × 0.5
/// and × 2 (at least 1), one change at a time. The first entry is DIP's own; no duplicates.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] std::vector<Partition> candidate_partitions(const ModelSpec& model, const Setup& setup, const C& cost,
                                                          const Batch& sample, const DipOptions& options = {}) {
  const DipPartition dip = dip_partition(model, setup, cost, sample, options);
  const int P = setup.pipeline_stages;
  std::vector<int> K0;
  std::vector<std::int64_t> B0;
  for (const auto& ch : dip.modules) {
    K0.push_back(ch.segments);
    B0.push_back(ch.sub_microbatch_items);
  }
  std::vector<std::pair<std::vector<int>, std::vector<std::int64_t>>> seen{{K0, B0}};
  std::vector<Partition> out{dip.partition};
  auto add = [&](std::vector<int> K, std::vector<std::int64_t> B, const std::string& name) {
    for (const auto& s : seen)
      if (s.first == K && s.second == B) return;
    seen.push_back({K, B});
    if (options.balance_layers) {
      const auto counts = detail::balanced_layer_counts(model, cost, P, K, B, sample);
      out.push_back(make_dip_partition(model, P, K, B, name, counts));
    } else {
      out.push_back(make_dip_partition(model, P, K, B, name));
    }
  };
  const ModuleId backbone = model.backbone();
  for (std::size_t i = 0; i < model.size(); ++i) {
    const ModuleSpec& m = model.modules[i];
    const int cap = std::max(1, std::min(options.max_segments, m.layers / std::max(P, 1)));
    for (int d : {-1, +1}) {
      auto K = K0;
      K[i] = std::clamp(K0[i] + d, 1, cap);
      add(K, B0, "dip K(" + m.name + ")=" + std::to_string(K[i]));
    }
    if (ModuleId{static_cast<ModuleId::rep>(i)} == backbone || B0[i] == 0) continue;
    for (std::int64_t b : {std::max<std::int64_t>(1, B0[i] / 2), B0[i] * 2}) {
      auto B = B0;
      B[i] = b;
      add(K0, B, "dip B(" + m.name + ")=" + std::to_string(b));
    }
  }
  return out;
}

}  // namespace pipeweaver
