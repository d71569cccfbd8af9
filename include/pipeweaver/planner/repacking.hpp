#pragma once
// Sample re-packing across microbatches (as systems for dynamic multimodal data do): one step's
// samples regrouped into the same number of microbatches, each within the setup's microbatch
// budget (tokens and items of the budget module, data/packing.hpp), so that every module's cost
// is spread evenly over the microbatches. The step still trains on the same set of samples, so
// its summed gradient is the same; only which samples share a microbatch changes (the Planner
// reports it in PlanResult::sample_origin).
//
// Cost of a sample on a module: the latency of the module's forward and backward passes (the
// whole module as one chunk, MemoryStrategy{}) on a microbatch holding only that sample. A
// microbatch's load on a module is the sum over its samples. The objective, smaller is better:
//   spread    = Σ over modules of the largest load of any microbatch on that module (ns);
//   tie-break = Σ over microbatches and modules of the load squared (loads in whole µs).
// Two starts: the given packing, and a greedy one (samples by decreasing total cost, each into
// the microbatch that keeps the objective smallest among those it fits in; it fails when a sample
// fits nowhere). From each, a local search: move one sample of a microbatch that sets some
// module's largest load into another microbatch, or swap it with a sample there, keeping every
// microbatch non-empty and within budget, while the objective decreases. Each step takes the
// first candidate (in scan order) that lowers the spread, else the one that lowers the
// tie-break most; at most RepackOptions::max_moves steps and max_evaluations candidates scored
// per search, so a step of thousands of samples costs a bounded time (a full scan scores
// O(samples of the maximal microbatches x all samples) swaps). The better result is kept when its spread is strictly below
// the given packing's; otherwise the given packing stays (changed = false). Microbatches come out
// ordered by their first sample in the given order, samples within one in the given order.
// Deterministic: integer loads, fixed scan orders, ties to the first found.
//
// The lower bound that holds for every packing (packing_independent_lower_bound):
//   LB = max( ⌈W / P⌉, L )
//   W = the work of the whole-module stage graph of ONE microbatch holding every sample;
//   L = the longest chain of the whole-module stage graph in which every sample is its own
//       microbatch and every item its own sub-microbatch.
// Why it bounds every plan of the step's samples, whatever the packing, partition and
// sub-microbatch split, under a cost model whose stage latency is (i) sub-additive in layers
// (merging consecutive chunks never adds time), (ii) sub-additive in items (a stage on the union
// of two sub-microbatches never costs more than the two) and (iii) monotone in items (a
// sub-microbatch never costs less than any of its items alone); the analytic model has all
// three (its fixed per-stage terms and GEMM efficiency only favor larger stages):
//  * work: a plan's stages cover every layer of every module once per item, in some grouping;
//    merging all of them into one stage per module and pass only lowers the sum (i, ii), so the
//    plan's total work is at least W, and its busiest rank at least ⌈W / P⌉;
//  * chains: whatever microbatch and sub-microbatches hold a sample, its chain of stages (its
//    items' forwards through their module's chunks, the modules they feed, the loss, the
//    backwards back) has each stage holding at least that item or sample, so by (iii) and (i)
//    it is at least the same chain with the item or sample alone and one chunk per module: L.
// It is stated per sample (the chain) and over the step's whole work, so no packing can beat it.
// Latencies are rounded to whole ns per stage, so (i) and (ii) hold up to half a ns per stage
// merged: W is lowered by half a ns per stage a plan can have at most (one per item, layer and
// pass), L by one ns per stage a chain can pass (two per layer of the model, plus one).
// With split_backward the graphs have split backwards: a chain then runs through input parts
// only, so the bound also holds for plans that defer weight parts (and, since the two parts sum
// to the whole backward, for plans that do not).
// std-only.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/planner/plan_result.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

struct RepackOptions {
  int max_moves = 200;  ///< improving moves of each local search (a move or a swap of samples)
  /// Candidate moves and swaps scored by each local search (a deterministic work bound).
  std::int64_t max_evaluations = 4'000'000;
};

/// One step's samples regrouped (see the header comment).
struct Repacking {
  Batch batch{};                                    ///< the regrouped microbatches (the given batch when unchanged)
  std::vector<std::vector<SampleOrigin>> origin{};  ///< origin[mb][s]: that sample of the given batch
  bool changed = false;                             ///< the regrouping evens the cost out better than the given packing
  std::int64_t spread_before = 0;                   ///< the given packing's spread (ns)
  std::int64_t spread_after = 0;                    ///< the result's spread (ns)
};

namespace detail {

/// Per sample of `batch` (microbatch by microbatch), its cost on every module (see the header
/// comment).
template <class C>
[[nodiscard]] std::vector<std::vector<std::int64_t>> sample_module_costs(const ModelSpec& model, const Setup& setup, const C& cost,
                                                                         const Batch& batch) {
  const Partition whole = whole_module_partition(model, setup.pipeline_stages);
  std::vector<std::vector<std::int64_t>> out;
  for (const Microbatch& mb : batch.microbatches)
    for (const Sample& s : mb.samples) {
      Batch one;
      one.microbatches.push_back(Microbatch{{s}});
      const std::vector<SubMicrobatchSpec> smbs = split(model, whole, one);
      const StageGraph g = build_stage_graph(model, whole, smbs);
      std::vector<std::int64_t> c(model.modules.size(), 0);
      for (const StageNode& n : g.nodes) {
        const StageRef& st = n.stage;
        c[st.module.index()] +=
            cost.latency(StageSpec::of(whole, st.module, st.chunk, st.pass), smbs[st.sub_microbatch.index()], MemoryStrategy{}).count();
      }
      out.push_back(std::move(c));
    }
  return out;
}

/// The objective of a packing (see the header comment); smaller is better.
struct PackingScore {
  std::int64_t spread = std::numeric_limits<std::int64_t>::max();
  std::int64_t squares = std::numeric_limits<std::int64_t>::max();
  friend auto operator<=>(const PackingScore&, const PackingScore&) = default;
};

/// The regrouping search: samples 0..N-1 (the given batch flattened), their costs and budget
/// loads, and a packing (bin per sample) with its per-bin loads. Candidate moves are scored
/// incrementally: only two bins change, and each module's three largest loads (refreshed after
/// every committed change) give the largest load of the bins that do not.
class Repacker {
 public:
  Repacker(std::vector<std::vector<std::int64_t>> cost, std::vector<ModuleLoad> budget, const MicrobatchBudget& limit, std::size_t bins)
      : cost_(std::move(cost)), budget_(std::move(budget)), limit_(limit), bins_(bins),
        modules_(cost_.empty() ? 0 : cost_.front().size()) {}

  /// The greedy start (see the header comment); empty when some sample fits nowhere.
  [[nodiscard]] std::vector<std::size_t> greedy() {
    std::vector<std::size_t> order(cost_.size());
    for (std::size_t s = 0; s < order.size(); ++s) order[s] = s;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return total(a) > total(b); });
    reset({});
    std::vector<std::size_t> bin_of(cost_.size(), bins_);
    for (std::size_t s : order) {
      std::size_t best = bins_;
      PackingScore best_score;
      for (std::size_t b = 0; b < bins_; ++b) {
        if (!fits(b, s, none())) continue;
        if (const PackingScore sc = score_after(b, b, s, none(), true); sc < best_score) best_score = sc, best = b;
      }
      if (best == bins_) return {};
      add(best, s, +1);
      bin_of[s] = best;
      members_[best].push_back(s);
      refresh();
    }
    for (const auto& m : members_)
      if (m.empty()) return {};  // fewer samples than microbatches: keep the given packing
    return bin_of;
  }

  /// Local search from `bin_of` (see the header comment); returns the packing it ends in.
  [[nodiscard]] std::vector<std::size_t> improve(std::vector<std::size_t> bin_of, int max_moves, std::int64_t max_evaluations) {
    reset(bin_of);
    evaluations_left_ = max_evaluations;
    for (int move = 0; move < max_moves && evaluations_left_ > 0; ++move) {
      const Move m = best_move(bin_of);
      if (m.from == bins_) break;
      apply(m, bin_of);
    }
    return bin_of;
  }

  /// The objective of `bin_of`.
  [[nodiscard]] PackingScore evaluate(std::span<const std::size_t> bin_of) {
    reset(bin_of);
    return score_;
  }

 private:
  /// Sample `sample` leaves bin `from` for bin `to`; with `other` < N, sample `other` goes the
  /// other way.
  struct Move {
    std::size_t from = 0, to = 0, sample = 0, other = 0;
    PackingScore score{};
  };
  /// A module's largest load and the bin holding it.
  struct Top {
    std::int64_t load = -1;
    std::size_t bin = 0;
  };
  static constexpr std::size_t kTops = 3;

  [[nodiscard]] std::size_t none() const noexcept { return cost_.size(); }
  [[nodiscard]] std::int64_t total(std::size_t s) const {
    std::int64_t t = 0;
    for (std::int64_t c : cost_[s]) t += c;
    return t;
  }
  [[nodiscard]] std::int64_t load(std::size_t b, std::size_t m) const { return load_[b * modules_ + m]; }
  /// Whether bin b can take sample s (after giving up sample `out`, unless out == none()).
  [[nodiscard]] bool fits(std::size_t b, std::size_t s, std::size_t out) const {
    std::int64_t tokens = tokens_[b] + budget_[s].tokens, items = items_[b] + budget_[s].items;
    if (out != none()) tokens -= budget_[out].tokens, items -= budget_[out].items;
    return tokens <= limit_.max_tokens && (!limit_.max_items || items <= *limit_.max_items);
  }
  void add(std::size_t b, std::size_t s, int sign) {
    for (std::size_t m = 0; m < modules_; ++m) load_[b * modules_ + m] += sign * cost_[s][m];
    tokens_[b] += sign * budget_[s].tokens;
    items_[b] += sign * budget_[s].items;
  }
  void reset(std::span<const std::size_t> bin_of) {
    load_.assign(bins_ * modules_, 0);
    tokens_.assign(bins_, 0);
    items_.assign(bins_, 0);
    members_.assign(bins_, {});
    for (std::size_t s = 0; s < bin_of.size(); ++s) {
      add(bin_of[s], s, +1);
      members_[bin_of[s]].push_back(s);
    }
    refresh();
  }
  [[nodiscard]] static std::int64_t square_us(std::int64_t ns) {
    const std::int64_t us = ns / 1000;
    return us * us;
  }
  /// The objective and each module's largest loads, from scratch.
  void refresh() {
    tops_.assign(modules_ * kTops, Top{});
    score_ = PackingScore{0, 0};
    for (std::size_t m = 0; m < modules_; ++m) {
      Top* t = &tops_[m * kTops];
      for (std::size_t b = 0; b < bins_; ++b) {
        const std::int64_t l = load(b, m);
        score_.squares += square_us(l);
        for (std::size_t k = 0; k < kTops; ++k)
          if (l > t[k].load) {
            for (std::size_t j = kTops - 1; j > k; --j) t[j] = t[j - 1];
            t[k] = Top{l, b};
            break;
          }
      }
      score_.spread += std::max<std::int64_t>(t[0].load, 0);
    }
  }
  /// The objective after sample s goes from bin `from` to bin `to` (and `other` back), or, with
  /// `insert`, after s is added to bin `to` (then from == to).
  [[nodiscard]] PackingScore score_after(std::size_t from, std::size_t to, std::size_t s, std::size_t other, bool insert = false) const {
    PackingScore sc{0, score_.squares};
    for (std::size_t m = 0; m < modules_; ++m) {
      const std::int64_t swap = other != none() ? cost_[other][m] : 0;
      const std::int64_t new_to = load(to, m) + cost_[s][m] - swap;
      const std::int64_t new_from = insert ? new_to : load(from, m) - cost_[s][m] + swap;
      std::int64_t rest = 0;  // the largest load of the bins that do not change
      for (std::size_t k = 0; k < kTops; ++k) {
        const Top& t = tops_[m * kTops + k];
        if (t.load >= 0 && t.bin != from && t.bin != to) {
          rest = t.load;
          break;
        }
      }
      sc.spread += std::max({rest, new_to, new_from});
      sc.squares += square_us(new_to) - square_us(load(to, m));
      if (!insert) sc.squares += square_us(new_from) - square_us(load(from, m));
    }
    return sc;
  }

  /// An improving move or swap out of a bin that sets some module's largest load: the first
  /// that lowers the spread, else the best; from == bins_ when none improves. Stops early when
  /// the evaluation budget runs out (returning the best found so far).
  [[nodiscard]] Move best_move(std::span<const std::size_t> bin_of) {
    Move best{bins_, bins_, 0, 0, score_};
    const auto consider = [&](std::size_t from, std::size_t to, std::size_t s, std::size_t other) {
      --evaluations_left_;
      if (const PackingScore sc = score_after(from, to, s, other); sc < best.score) best = Move{from, to, s, other, sc};
      return best.score.spread < score_.spread || evaluations_left_ <= 0;  // done scanning
    };
    for (std::size_t from = 0; from < bins_; ++from) {
      if (!sets_a_maximum(from)) continue;
      for (std::size_t s : members_[from]) {
        for (std::size_t to = 0; to < bins_ && members_[from].size() > 1; ++to)  // moves
          if (to != from && fits(to, s, none()) && consider(from, to, s, none())) return best;
        for (std::size_t other = 0; other < cost_.size(); ++other) {  // swaps
          const std::size_t to = bin_of[other];
          if (to != from && fits(to, s, other) && fits(from, other, s) && consider(from, to, s, other)) return best;
        }
      }
    }
    return best;
  }
  [[nodiscard]] bool sets_a_maximum(std::size_t b) const {
    for (std::size_t m = 0; m < modules_; ++m)
      if (load(b, m) == tops_[m * kTops].load) return true;
    return false;
  }
  void apply(const Move& m, std::vector<std::size_t>& bin_of) {
    auto take = [&](std::size_t b, std::size_t s) {
      auto& v = members_[b];
      v.erase(std::find(v.begin(), v.end(), s));
    };
    take(m.from, m.sample);
    add(m.from, m.sample, -1);
    add(m.to, m.sample, +1);
    members_[m.to].push_back(m.sample);
    bin_of[m.sample] = m.to;
    if (m.other != none()) {
      take(m.to, m.other);
      add(m.to, m.other, -1);
      add(m.from, m.other, +1);
      members_[m.from].push_back(m.other);
      bin_of[m.other] = m.from;
    }
    refresh();
  }

  std::vector<std::vector<std::int64_t>> cost_;  ///< [sample][module]
  std::vector<ModuleLoad> budget_;               ///< per sample: tokens and items on the budget module
  MicrobatchBudget limit_;
  std::size_t bins_, modules_;
  std::vector<std::int64_t> load_;  ///< [bin * modules + module]
  std::vector<std::int64_t> tokens_, items_;
  std::vector<std::vector<std::size_t>> members_;
  std::vector<Top> tops_;  ///< [module * kTops + k]: the k-th largest load of the module
  PackingScore score_{};
  std::int64_t evaluations_left_ = 0;  ///< of the local search under way
};

}  // namespace detail

/// `batch`'s samples regrouped into as many microbatches, each within `setup`'s budget, to even
/// out every module's per-microbatch cost under `cost` (see the header comment). Throws
/// Error{input} when the batch is one the planner refuses (data/batch_check.hpp) or an option is
/// out of range.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Repacking repack(const ModelSpec& model, const Setup& setup, const C& cost, const Batch& batch, const RepackOptions& options = {}) {
  if (options.max_moves < 0)
    throw input_error("max_moves = " + std::to_string(options.max_moves), {.path = "RepackOptions::max_moves", .expected = ">= 0"});
  if (options.max_evaluations < 0)
    throw input_error("max_evaluations = " + std::to_string(options.max_evaluations),
                      {.path = "RepackOptions::max_evaluations", .expected = ">= 0"});
  check_batch(model, setup, batch);
  const ModuleId budget = budget_module(model, setup);
  std::vector<SampleOrigin> flat;
  std::vector<std::size_t> given;
  std::vector<ModuleLoad> loads;
  for (std::size_t mb = 0; mb < batch.microbatches.size(); ++mb)
    for (std::size_t s = 0; s < batch.microbatches[mb].samples.size(); ++s) {
      flat.push_back({static_cast<std::int32_t>(mb), static_cast<std::int32_t>(s)});
      given.push_back(mb);
      loads.push_back(module_load(model, budget, batch.microbatches[mb].samples[s]));
    }
  detail::Repacker rp(detail::sample_module_costs(model, setup, cost, batch), std::move(loads), setup.microbatch, batch.microbatches.size());
  Repacking out;
  const detail::PackingScore before = rp.evaluate(given);
  out.spread_before = out.spread_after = before.spread;
  std::vector<std::size_t> best = rp.improve(given, options.max_moves, options.max_evaluations);
  detail::PackingScore best_score = rp.evaluate(best);
  if (std::vector<std::size_t> g = rp.greedy(); !g.empty()) {
    g = rp.improve(std::move(g), options.max_moves, options.max_evaluations);
    if (const detail::PackingScore sc = rp.evaluate(g); sc < best_score) best = std::move(g), best_score = sc;
  }
  if (!(best_score.spread < before.spread)) {
    out.batch = batch;
    out.origin = identity_sample_origin(batch);
    return out;
  }
  // Microbatches ordered by their first sample in the given order; samples in the given order.
  std::vector<std::vector<std::size_t>> bins(batch.microbatches.size());
  for (std::size_t s = 0; s < best.size(); ++s) bins[best[s]].push_back(s);
  std::sort(bins.begin(), bins.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
  out.batch.truncated_samples = batch.truncated_samples;
  for (const auto& bin : bins) {
    Microbatch mb;
    std::vector<SampleOrigin> origin;
    for (std::size_t s : bin) {
      mb.samples.push_back(batch.microbatches[static_cast<std::size_t>(flat[s].microbatch)].samples[static_cast<std::size_t>(flat[s].sample)]);
      origin.push_back(flat[s]);
    }
    out.batch.microbatches.push_back(std::move(mb));
    out.origin.push_back(std::move(origin));
  }
  out.changed = true;
  out.spread_after = best_score.spread;
  return out;
}

/// The lower bound of every plan of `batch`'s samples, whatever their packing into microbatches
/// (see the header comment).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Nanoseconds packing_independent_lower_bound(const ModelSpec& model, const Setup& setup, const C& cost, const Batch& batch,
                                                          bool split_backward = false) {
  const LowerBoundOptions lbo{.count_transfers = false, .split_backward = split_backward};
  Partition whole = whole_module_partition(model, setup.pipeline_stages);
  Batch together;
  together.microbatches.emplace_back();
  Batch apart;
  for (const Microbatch& mb : batch.microbatches)
    for (const Sample& s : mb.samples) {
      together.microbatches.front().samples.push_back(s);
      apart.microbatches.push_back(Microbatch{{s}});
    }
  if (apart.microbatches.empty()) return Nanoseconds{0};
  const LowerBound work = lower_bound(model, whole, split(model, whole, together), cost, lbo);
  for (ModulePlacement& m : whole.modules) m.sub_microbatch_items = 1;
  const std::vector<SubMicrobatchSpec> items = split(model, whole, apart);
  const LowerBound chains = lower_bound(model, whole, items, cost, lbo);
  // Rounding slack (see the header comment).
  std::int64_t stages = 0, layers = 0;
  for (const SubMicrobatchSpec& x : items) stages += 3 * model.module(x.module()).layers;
  for (const ModuleSpec& m : model.modules) layers += m.layers;
  const std::int64_t P = setup.pipeline_stages;
  const std::int64_t w = std::max<std::int64_t>(0, work.total_work.count() - (stages + 1) / 2);
  return std::max(Nanoseconds{(w + P - 1) / P}, Nanoseconds{std::max<std::int64_t>(0, chains.critical_path.count() - 2 * layers - 1)});
}

}  // namespace pipeweaver
