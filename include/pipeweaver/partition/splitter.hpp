#pragma once
// The sub-microbatch splitter: each microbatch's items of module i
// are cut into M_i = ceil(N_i / B_i) sub-microbatches balanced by cost, not just by count,
// because attention is quadratic per item.
//
// Items of a module in one microbatch (ItemRef records where each comes from):
//  * encoder (and any non-backbone, non-generator module): one item per item of its modality,
//    tokens as in the sample (for modality "text": the sample's text, when non-zero);
//  * backbone: one item per sample, tokens = text + sum over the encoders feeding it of
//    ceil(item tokens x output_tokens_per_input_token);
//  * generator: one item per item of its modality, context_tokens = that sample's backbone
//    sequence length (the conditioning sequence it cross-attends to).
//
// Balancing: the N items go into K = ceil(N/B) bins (B = 0: one bin) whose item counts differ by
// at most one (so no bin exceeds B items). Candidates: (1) longest-processing-time greedy with a
// cardinality limit: items by decreasing cost (ties: lower original index first), each into the
// least-loaded bin that may still take an item (ties: lower bin index); (2) round-robin in the
// original order. The one with the smaller largest bin cost is kept (ties: the greedy), then
// improved by pairwise swaps between the largest bin and another bin while a swap lowers the
// larger of the two below the current maximum. So the result is never worse than round-robin.
// Cost: O(n log n) for LPT (a heap of open bins) and round-robin; the swap rounds examine at most
// max_swap_pairs (item, item) pairs per call, so splitting a microbatch is near-linear in its
// items whatever their number.
// Items inside a sub-microbatch keep their original order; a module's sub-microbatches of one
// microbatch are ordered by their first item. Everything is deterministic.
//
// Default item cost: n + n^2 / 4096 for an item of n tokens (linear layers plus quadratic
// attention, with attention matching the linear part at 4096 tokens). Exact in double for any
// realistic n (n^2 < 2^53, division by a power of two).
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/sub_microbatch_index.hpp"

namespace pipeweaver {

/// One item a module processes in a microbatch, before splitting.
struct SplitItem {
  std::int64_t tokens = 0;
  std::int64_t context_tokens = 0;  ///< generators only (else 0)
  ItemRef ref{};
  friend bool operator==(const SplitItem&, const SplitItem&) = default;
};

/// Default balancing cost of an item: n + n^2/4096 (see the header comment).
struct DefaultItemCost {
  [[nodiscard]] double operator()(ModuleId, std::int64_t tokens, std::int64_t /*context_tokens*/) const noexcept {
    const auto n = static_cast<double>(tokens);
    return n + n * n / 4096.0;
  }
};

/// A cost function for balancing: cost(module, item tokens, context tokens) -> double.
template <class F>
concept ItemCostFunction = std::invocable<const F&, ModuleId, std::int64_t, std::int64_t> &&
                           std::convertible_to<std::invoke_result_t<const F&, ModuleId, std::int64_t, std::int64_t>, double>;

namespace detail {

inline std::int64_t encoder_output_tokens(const ModuleSpec& enc, std::int64_t tokens) {
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(tokens) * enc.output_tokens_per_input_token));
}

inline std::vector<std::int64_t> modality_tokens(const Sample& s, const std::string& modality) {
  if (modality == "text") return s.text > 0 ? std::vector<std::int64_t>{s.text} : std::vector<std::int64_t>{};
  return s.tokens_of(modality);
}

/// Backbone sequence length of a sample: text + encoder output tokens of every encoder feeding it.
inline std::int64_t backbone_tokens(const ModelSpec& model, ModuleId backbone, const Sample& s) {
  std::int64_t n = s.text;
  for (ModuleId f : model.feeders(backbone)) {
    const ModuleSpec& enc = model.module(f);
    if (enc.role != ModuleRole::encoder) continue;
    for (auto t : modality_tokens(s, enc.modality)) n += detail::encoder_output_tokens(enc, t);
  }
  return n;
}

inline double max_load(const std::vector<double>& loads) {
  double m = 0;
  for (double l : loads) m = std::max(m, l);
  return m;
}

inline std::vector<double> bin_loads(std::span<const double> costs, const std::vector<std::size_t>& bin_of, std::size_t bins) {
  std::vector<double> loads(bins, 0.0);
  for (std::size_t i = 0; i < costs.size(); ++i) loads[bin_of[i]] += costs[i];
  return loads;
}

}  // namespace detail

/// Pairs the swap improvement of balance_items examines at most (per call): beyond it, the
/// result is the better of LPT and round-robin as improved so far.
inline constexpr std::int64_t max_swap_pairs = std::int64_t{1} << 24;

/// Splits items with the given costs into `bins` groups whose counts differ by at most one,
/// balanced by cost (see the header comment). Returns, per bin, the item indices ascending;
/// bins are ordered by their first item. `bins` is clamped to [1, costs.size()] (no empty bin
/// unless there are no items, then the result is empty).
[[nodiscard]] inline std::vector<std::vector<std::size_t>> balance_items(std::span<const double> costs, std::size_t bins) {
  const std::size_t n = costs.size();
  if (n == 0) return {};
  bins = std::clamp<std::size_t>(bins, 1, n);
  const std::size_t q = n / bins, rem = n % bins;

  // (1) cardinality-limited LPT. The least-loaded bin that may still take an item comes off a
  // heap ordered by (load, bin): a bin that may not take one now never may again (a bin with
  // q + 1 items is closed; one with q is closed once rem bins hold q + 1), so it is dropped.
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  std::vector<std::size_t> lpt(n), count(bins, 0);
  std::vector<double> load(bins, 0.0);
  std::size_t full = 0;  // bins holding q + 1 items
  using Entry = std::pair<double, std::size_t>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> open;
  for (std::size_t b = 0; b < bins; ++b) open.emplace(0.0, b);
  for (std::size_t i : order) {
    std::size_t best = bins;
    while (best == bins) {
      const std::size_t b = open.top().second;
      open.pop();
      if (count[b] < q || (count[b] == q && full < rem)) best = b;
    }
    lpt[i] = best;
    load[best] += costs[i];
    if (++count[best] == q + 1) ++full;
    if (count[best] <= q) open.emplace(load[best], best);
  }
  // (2) round-robin in the original order (bins 0..rem-1 get the extra item, as in LPT's limits).
  std::vector<std::size_t> rr(n);
  for (std::size_t i = 0; i < n; ++i) rr[i] = i % bins;
  std::vector<std::size_t> bin_of =
      detail::max_load(detail::bin_loads(costs, rr, bins)) < detail::max_load(detail::bin_loads(costs, lpt, bins)) ? rr : lpt;

  // Swap improvement: strictly lowers the sorted load vector, so it terminates; capped anyway,
  // by rounds and by pairs examined (max_swap_pairs), so it stays bounded on huge microbatches.
  std::int64_t pairs_left = max_swap_pairs;
  std::vector<std::size_t> members;
  for (std::size_t iter = 0; bins > 1 && iter < 4 * n + 16; ++iter) {
    const auto loads = detail::bin_loads(costs, bin_of, bins);
    std::size_t h = 0;
    for (std::size_t b = 1; b < bins; ++b)
      if (loads[b] > loads[h]) h = b;
    members.clear();
    for (std::size_t a = 0; a < n; ++a)
      if (bin_of[a] == h) members.push_back(a);
    pairs_left -= static_cast<std::int64_t>(members.size()) * static_cast<std::int64_t>(n);
    if (pairs_left < 0) break;
    double best_max = loads[h];
    std::size_t sa = n, sb = n;
    for (std::size_t a : members) {
      for (std::size_t b = 0; b < n; ++b) {
        if (bin_of[b] == h || !(costs[a] > costs[b])) continue;
        const std::size_t o = bin_of[b];
        const double nm = std::max(loads[h] - costs[a] + costs[b], loads[o] - costs[b] + costs[a]);
        if (nm < best_max) {
          best_max = nm;
          sa = a;
          sb = b;
        }
      }
    }
    if (sa == n) break;
    std::swap(bin_of[sa], bin_of[sb]);
  }

  std::vector<std::vector<std::size_t>> out(bins);
  for (std::size_t i = 0; i < n; ++i) out[bin_of[i]].push_back(i);  // ascending: original order
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return out;
}

/// The items module `m` processes in microbatch `mb` (see the header comment), in sample order.
[[nodiscard]] inline std::vector<SplitItem> module_items(const ModelSpec& model, ModuleId m, const Microbatch& mb) {
  const ModuleSpec& spec = model.module(m);
  std::vector<SplitItem> items;
  for (std::size_t si = 0; si < mb.samples.size(); ++si) {
    const Sample& s = mb.samples[si];
    const auto sample = static_cast<std::int32_t>(si);
    if (spec.role == ModuleRole::backbone) {
      items.push_back({detail::backbone_tokens(model, m, s), 0, ItemRef{sample, -1}});
      continue;
    }
    std::int64_t context = 0;
    if (spec.role == ModuleRole::generator) context = detail::backbone_tokens(model, model.backbone(), s);
    const auto tokens = detail::modality_tokens(s, spec.modality);
    for (std::size_t k = 0; k < tokens.size(); ++k)
      items.push_back({tokens[k], context, ItemRef{sample, static_cast<std::int32_t>(k)}});
  }
  return items;
}

/// Splits every microbatch of `batch` into sub-microbatches (order: microbatch, then module,
/// then first item), balancing with `item_cost`. Throws Error{invalid_plan} if the partition
/// does not describe the model's modules or a sub-microbatch size is negative.
template <ItemCostFunction F>
[[nodiscard]] std::vector<SubMicrobatchSpec> split(const ModelSpec& model, const Partition& partition, const Batch& batch,
                                                   const F& item_cost) {
  if (partition.modules.size() != model.modules.size())
    throw invalid_plan_error("partition '" + partition.name + "' places " + std::to_string(partition.modules.size()) + " modules", {.path = "partition", .expected = std::to_string(model.modules.size()) + " (one per module of model '" + model.name + "')"});
  for (std::size_t m = 0; m < model.modules.size(); ++m)
    if (partition.modules[m].sub_microbatch_items < 0)
      throw invalid_plan_error("negative sub-microbatch size " + std::to_string(partition.modules[m].sub_microbatch_items), {.path = "partition, module '" + model.modules[m].name + "'", .expected = "0 (whole microbatch) or a positive item count"});
  std::vector<SubMicrobatchSpec> out;
  for (std::size_t mbi = 0; mbi < batch.microbatches.size(); ++mbi) {
    const MicrobatchId mb_id{static_cast<MicrobatchId::rep>(mbi)};
    for (std::size_t mi = 0; mi < model.modules.size(); ++mi) {
      const ModuleId m{static_cast<ModuleId::rep>(mi)};
      const auto items = module_items(model, m, batch.microbatches[mbi]);
      if (items.empty()) continue;
      const auto b = static_cast<std::size_t>(partition.modules[mi].sub_microbatch_items);
      const std::size_t bins = b == 0 ? 1 : (items.size() + b - 1) / b;
      std::vector<double> costs(items.size());
      for (std::size_t i = 0; i < items.size(); ++i)
        costs[i] = static_cast<double>(std::invoke(item_cost, m, items[i].tokens, items[i].context_tokens));
      const bool with_context = model.modules[mi].role == ModuleRole::generator;
      for (const auto& group : balance_items(costs, bins)) {
        std::vector<std::int64_t> tokens, context;
        std::vector<ItemRef> refs;
        for (std::size_t i : group) {
          tokens.push_back(items[i].tokens);
          if (with_context) context.push_back(items[i].context_tokens);
          refs.push_back(items[i].ref);
        }
        out.emplace_back(m, mb_id, std::move(tokens), std::move(context), std::move(refs));
      }
    }
  }
  return out;
}

/// split() with the default item cost n + n^2/4096.
[[nodiscard]] inline std::vector<SubMicrobatchSpec> split(const ModelSpec& model, const Partition& partition, const Batch& batch) {
  return split(model, partition, batch, DefaultItemCost{});
}

/// Per microbatch and module, the ids of the split's sub-microbatches (see SubMicrobatchIndex).
[[nodiscard]] inline SubMicrobatchIndex index_sub_microbatches(const ModelSpec& model, std::span<const SubMicrobatchSpec> smbs,
                                                               int microbatches = -1) {
  return SubMicrobatchIndex(smbs, static_cast<int>(model.modules.size()), microbatches);
}

}  // namespace pipeweaver
