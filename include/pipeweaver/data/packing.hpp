#pragma once
// Packing samples, in arrival order, into microbatches under the setup's budget
// (examples/workloads/README.md, "setups/*.json", key "microbatch"), and the samples of one
// training step.
//
// Tokens a sample puts on a module m:
//   backbone:            text + sum over encoders e feeding m, over e's items t:
//                          ceil(t x e.output_tokens_per_input_token)
//   encoder / generator: sum of the tokens of the sample's items of m's modality
// Items a sample puts on m: 1 for the backbone (the sample's sequence), else the number of its
// items of m's modality.
//
// A microbatch holds at most max_tokens tokens of the budget module and, when max_items is
// given, at most max_items of its items. A sample that alone exceeds the budget is truncated:
// its text first (down to what the items leave), then its trailing items (only items that
// count towards the budget are dropped); each such sample is counted in
// Batch::truncated_samples. If one item alone exceeds max_tokens, no truncation can help:
// Error(infeasible).
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/random.hpp"
#include "pipeweaver/data/sampler.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/model/validate.hpp"

namespace pipeweaver {

/// A microbatch with more samples than this means the budget module gets (almost) no tokens
/// from the data: Error(infeasible) rather than packing forever.
inline constexpr std::size_t max_samples_per_microbatch = static_cast<std::size_t>(limits::max_samples_per_microbatch);

/// Tokens an encoder hands to the module it feeds for an item of `item_tokens` tokens:
/// ceil(item_tokens x output_tokens_per_input_token), computed in double exactly as the
/// splitter (partition/splitter.hpp) and the memory model do, so that all agree.
[[nodiscard]] inline std::int64_t encoder_output_tokens(const ModuleSpec& encoder, std::int64_t item_tokens) noexcept {
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(item_tokens) * encoder.output_tokens_per_input_token));
}

/// Tokens one item of `modality` with `item_tokens` tokens puts on module `m`.
[[nodiscard]] inline std::int64_t item_contribution(const ModelSpec& model, ModuleId m, const std::string& modality,
                                                   std::int64_t item_tokens) {
  const ModuleSpec& mod = model.module(m);
  if (mod.role != ModuleRole::backbone) return modality == mod.modality ? item_tokens : 0;
  std::int64_t sum = 0;
  for (ModuleId f : model.feeders(m)) {
    const ModuleSpec& e = model.module(f);
    if (e.role == ModuleRole::encoder && e.modality == modality) sum += encoder_output_tokens(e, item_tokens);
  }
  return sum;
}

struct ModuleLoad {
  std::int64_t tokens = 0;
  std::int64_t items = 0;
  friend bool operator==(const ModuleLoad&, const ModuleLoad&) = default;
};

namespace detail {
/// a + b for non-negative counts, held at 2^62: loads are only compared with budgets far below
/// it, and a batch read from a file could otherwise sum past int64 (its counts are not yet checked).
[[nodiscard]] constexpr std::int64_t load_add(std::int64_t a, std::int64_t b) noexcept {
  constexpr std::int64_t cap = std::int64_t{1} << 62;
  a = a < 0 ? 0 : a > cap ? cap : a;
  b = b < 0 ? 0 : b > cap ? cap : b;
  return a > cap - b ? cap : a + b;
}
}  // namespace detail

/// Tokens and items a sample puts on module `m` (see the header comment). Sums are held at 2^62.
[[nodiscard]] inline ModuleLoad module_load(const ModelSpec& model, ModuleId m, const Sample& s) {
  const ModuleSpec& mod = model.module(m);
  ModuleLoad load;
  if (mod.role == ModuleRole::backbone) {
    load.tokens = s.text;
    load.items = 1;
  }
  for (const SampleItems& it : s.items) {
    for (std::int64_t t : it.tokens) load.tokens = detail::load_add(load.tokens, item_contribution(model, m, it.modality, t));
    if (mod.role != ModuleRole::backbone && it.modality == mod.modality)
      load.items += static_cast<std::int64_t>(it.tokens.size());
  }
  return load;
}

/// Tokens and items a microbatch puts on module `m`. Sums are held at 2^62.
[[nodiscard]] inline ModuleLoad module_load(const ModelSpec& model, ModuleId m, const Microbatch& mb) {
  ModuleLoad sum;
  for (const Sample& s : mb.samples) {
    const ModuleLoad l = module_load(model, m, s);
    sum.tokens = detail::load_add(sum.tokens, l.tokens);
    sum.items = detail::load_add(sum.items, l.items);
  }
  return sum;
}

/// The module whose tokens the setup's microbatch budget counts. Throws Error(input) if it is
/// not in the model, or if max_items is given for the backbone (which consumes no items).
[[nodiscard]] inline ModuleId budget_module(const ModelSpec& model, const Setup& setup) {
  check_compatible(model, setup);
  if (setup.microbatch.max_tokens <= 0 || (setup.microbatch.max_items && *setup.microbatch.max_items <= 0))
    throw input_error("non-positive microbatch budget", {.path = "/microbatch", .expected = "max_tokens > 0 and max_items > 0 when given"});
  return *model.find(setup.microbatch.module);
}

/// Truncates `s` to fit the budget alone (see the header comment). Returns whether anything
/// was cut. Throws Error(infeasible) if an item alone exceeds max_tokens.
inline bool fit_to_budget(const ModelSpec& model, const Setup& setup, ModuleId budget, Sample& s) {
  const MicrobatchBudget& b = setup.microbatch;
  const ModuleSpec& mod = model.module(budget);
  const ModuleLoad load = module_load(model, budget, s);
  const bool items_over = b.max_items && load.items > *b.max_items;
  if (load.tokens <= b.max_tokens && !items_over) return false;

  for (const SampleItems& it : s.items)
    for (std::size_t k = 0; k < it.tokens.size(); ++k) {
      const std::int64_t c = item_contribution(model, budget, it.modality, it.tokens[k]);
      if (c > b.max_tokens)
        throw infeasible_error("one " + it.modality + " item of " + std::to_string(it.tokens[k]) + " tokens puts " +
                        std::to_string(c) + " tokens on \"" + mod.name + "\", more than the microbatch budget of " +
                        std::to_string(b.max_tokens) + " tokens of \"" + mod.name + "\" on its own", {.path = "/microbatch/max_tokens", .expected = "a budget of at least " + std::to_string(c) + " tokens, or smaller items"});
    }

  // Drop trailing items of the budget's modality beyond max_items.
  if (items_over) {
    std::int64_t excess = load.items - *b.max_items;
    for (auto it = s.items.rbegin(); it != s.items.rend() && excess > 0; ++it)
      while (it->modality == mod.modality && !it->tokens.empty() && excess > 0) {
        it->tokens.pop_back();
        --excess;
      }
  }
  // Then drop trailing contributing items while the items alone exceed the budget, and cut the
  // text to what they leave (the text is cut before any item is dropped).
  auto item_tokens = [&] {
    ModuleLoad l = module_load(model, budget, s);
    return mod.role == ModuleRole::backbone ? l.tokens - s.text : l.tokens;
  };
  std::int64_t items = item_tokens();
  for (auto it = s.items.rbegin(); it != s.items.rend() && items > b.max_tokens; ++it) {
    if (item_contribution(model, budget, it->modality, 1) == 0) continue;  // modality not counted
    while (!it->tokens.empty() && items > b.max_tokens) {
      items -= item_contribution(model, budget, it->modality, it->tokens.back());
      it->tokens.pop_back();
    }
  }
  std::erase_if(s.items, [](const SampleItems& it) { return it.tokens.empty(); });
  if (mod.role == ModuleRole::backbone && s.text > b.max_tokens - items) s.text = b.max_tokens - items;
  return true;
}

/// A microbatch closed by the packer and how many of its samples were truncated.
struct PackedMicrobatch {
  Microbatch microbatch{};
  int truncated_samples = 0;
};

/// Greedy packing in arrival order: a sample goes into the open microbatch if it fits, else it
/// closes that microbatch and opens the next. Keeps a reference to `model`.
class Packer {
 public:
  Packer(const ModelSpec& model, const Setup& setup)
      : model_(&model), setup_(setup), budget_(budget_module(model, setup)) {}

  /// Adds the next sample (truncated if it alone exceeds the budget). Returns the microbatch
  /// it closed, if it did not fit into the open one.
  std::optional<PackedMicrobatch> add(Sample s) {
    const bool cut = fit_to_budget(*model_, setup_, budget_, s);
    const ModuleLoad l = module_load(*model_, budget_, s);
    const MicrobatchBudget& b = setup_.microbatch;
    std::optional<PackedMicrobatch> closed;
    if (!open_.microbatch.samples.empty() &&
        (open_load_.tokens + l.tokens > b.max_tokens || (b.max_items && open_load_.items + l.items > *b.max_items))) {
      closed = std::move(open_);
      open_ = {};
      open_load_ = {};
    }
    if (open_.microbatch.samples.size() >= max_samples_per_microbatch)
      throw infeasible_error("more than " + std::to_string(max_samples_per_microbatch) + " samples fit in one microbatch: the data puts (almost) no tokens on \"" +
                      model_->module(budget_).name + "\"", {.path = "/microbatch/module", .expected = "a budget module that the dataset's samples give tokens to"});
    open_.microbatch.samples.push_back(std::move(s));
    open_.truncated_samples += cut ? 1 : 0;
    open_load_.tokens += l.tokens;
    open_load_.items += l.items;
    return closed;
  }

  /// Closes and returns the open microbatch, if it holds any sample.
  std::optional<PackedMicrobatch> finish() {
    if (open_.microbatch.samples.empty()) return std::nullopt;
    std::optional<PackedMicrobatch> out = std::move(open_);
    open_ = {};
    open_load_ = {};
    return out;
  }

  [[nodiscard]] ModuleId budget() const noexcept { return budget_; }

 private:
  const ModelSpec* model_;
  Setup setup_;
  ModuleId budget_;
  PackedMicrobatch open_;
  ModuleLoad open_load_;
};

/// Packs all of `samples`, in order (the last microbatch may be partly filled).
[[nodiscard]] inline Batch pack(const ModelSpec& model, const Setup& setup, std::span<const Sample> samples) {
  Packer packer(model, setup);
  Batch batch;
  auto take = [&](std::optional<PackedMicrobatch> p) {
    if (!p) return;
    batch.microbatches.push_back(std::move(p->microbatch));
    batch.truncated_samples += p->truncated_samples;
  };
  for (const Sample& s : samples) take(packer.add(s));
  take(packer.finish());
  return batch;
}

/// The seed of step `step`'s own sample stream: step K is generated without steps 0..K-1.
[[nodiscard]] constexpr std::uint64_t step_seed(std::uint64_t seed, int step) noexcept {
  return splitmix64_mix(splitmix64_mix(seed) ^ splitmix64_mix(0x5851f42d4c957f2dULL + static_cast<std::uint64_t>(step)));
}

/// The samples of training step `step` (>= 0) packed into setup.microbatches_per_step
/// microbatches: samples are drawn from the step's own stream (seeded by step_seed(seed, step))
/// until that many microbatches are full; the sample that would open one more is discarded.
/// Error(infeasible) when the step would hold more than limits::max_samples_per_step samples or
/// limits::max_items_per_step items (so its memory is bounded whatever the dataset draws).
[[nodiscard]] inline Batch sample_step(const ModelSpec& model, const DatasetSpec& dataset, const Setup& setup,
                                       std::uint64_t seed, int step) {
  if (step < 0)
    throw input_error("step is " + std::to_string(step), {.expected = "a step >= 0"});
  if (setup.microbatches_per_step < 1)
    throw input_error("microbatches_per_step is " + std::to_string(setup.microbatches_per_step), {.path = "/microbatches_per_step", .expected = "an integer >= 1"});
  Packer packer(model, setup);
  DatasetSampler sampler(dataset, step_seed(seed, step));
  Batch batch;
  const auto want = static_cast<std::size_t>(setup.microbatches_per_step);
  batch.microbatches.reserve(want);
  std::int64_t samples = 0, items = 0;
  while (batch.microbatches.size() < want) {
    Sample s = sampler.next();
    for (const SampleItems& it : s.items) items += static_cast<std::int64_t>(it.tokens.size());
    if (++samples > limits::max_samples_per_step || items > limits::max_items_per_step)
      throw infeasible_error("step " + std::to_string(step) + " needs more than " +
                                 (samples > limits::max_samples_per_step ? std::to_string(limits::max_samples_per_step) + " samples"
                                                                         : std::to_string(limits::max_items_per_step) + " items") +
                                 " to fill " + std::to_string(want) + " microbatches",
                             {.path = "/microbatches_per_step",
                              .expected = "fewer microbatches per step, a smaller microbatch budget, or a budget module the data gives more tokens"});
    if (auto closed = packer.add(std::move(s))) {
      batch.microbatches.push_back(std::move(closed->microbatch));
      batch.truncated_samples += closed->truncated_samples;
    }
  }
  return batch;
}

}  // namespace pipeweaver
