#pragma once
// The check of a batch the planner is handed (built by hand, decoded from a file, or packed):
// everything the planner needs to honor it, refused with an Error(input) that names the
// microbatch, the sample and the field, in the JSON path of the batch format
// (io/batch_json.hpp): "/microbatches/3/7/image" is item list "image" of sample 7 of
// microbatch 3.
//
//  * at least one microbatch, at most limits::max_microbatches_per_step; every microbatch has
//    at least one sample and at most max_samples_per_microbatch;
//  * a sample's text tokens are in [0, limits::max_item_tokens], and no sample is empty (no text
//    and no items);
//  * item lists are sorted by modality, each modality once, none empty, at most
//    limits::max_items_per_sample items each, every item >= 1 token (and at most
//    limits::max_item_tokens); every modality is consumed by a module of the model
//    (an encoder or a generator): a typo would otherwise silently drop the items;
//  * every microbatch stays within the setup's microbatch budget: at most max_tokens tokens of
//    the budget module and, when max_items is given, at most max_items of its items. pack()
//    (data/packing.hpp) is the way from samples to microbatches that always satisfies this;
//  * every module gets at most limits::max_module_tokens_per_microbatch tokens of a microbatch.
// Accepted by design: a microbatch count other than the setup's microbatches_per_step (the last
// step of an epoch is often shorter; the plan is for the batch given), and samples that do not
// fill a microbatch.
#include <cstddef>
#include <cstdint>
#include <string>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/model/validate.hpp"

namespace pipeweaver {

namespace detail {

[[nodiscard]] inline std::string microbatch_path(std::size_t m) { return "/microbatches/" + std::to_string(m); }

/// Whether some encoder or generator of the model consumes `modality`, and a list of those that do.
[[nodiscard]] inline bool consumed_modality(const ModelSpec& model, const std::string& modality, std::string& consumed) {
  bool found = false;
  for (const ModuleSpec& m : model.modules) {
    if (m.role == ModuleRole::backbone) continue;
    found = found || m.modality == modality;
    const std::string quoted = "\"" + m.modality + "\"";
    if (consumed.find(quoted) == std::string::npos) consumed += (consumed.empty() ? "" : ", ") + quoted;
  }
  return found;
}

inline void check_sample(const ModelSpec& model, const Sample& s, const std::string& at) {
  if (s.text < 0 || s.text > limits::max_item_tokens)
    throw input_error("sample has " + std::to_string(s.text) + " text tokens",
                      {.path = at + "/text", .expected = "an integer in [0, " + std::to_string(limits::max_item_tokens) + "]"});
  for (std::size_t k = 0; k < s.items.size(); ++k) {
    const SampleItems& it = s.items[k];
    const std::string ip = at + "/" + json_pointer_token(it.modality);
    std::string consumed;
    if (!consumed_modality(model, it.modality, consumed))
      throw input_error("items of modality \"" + it.modality + "\", which no module of model \"" + model.name + "\" consumes",
                        {.path = ip, .expected = consumed.empty() ? "no items (the model has no encoder or generator)"
                                                                  : "items of a modality the model consumes: " + consumed});
    if (k > 0 && !(s.items[k - 1].modality < it.modality))
      throw input_error("item lists out of order or repeated (\"" + s.items[k - 1].modality + "\" before \"" + it.modality + "\")",
                        {.path = ip, .expected = "one list per modality, sorted by modality name"});
    if (it.tokens.empty()) throw input_error("an empty item list", {.path = ip, .expected = "at least one item, or no list"});
    if (static_cast<std::int64_t>(it.tokens.size()) > limits::max_items_per_sample)
      throw input_error(std::to_string(it.tokens.size()) + " items", {.path = ip, .expected = "at most " + std::to_string(limits::max_items_per_sample) + " per modality and sample"});
    for (std::size_t i = 0; i < it.tokens.size(); ++i)
      if (it.tokens[i] < 1 || it.tokens[i] > limits::max_item_tokens)
        throw input_error("item of " + std::to_string(it.tokens[i]) + " tokens",
                          {.path = ip + "/" + std::to_string(i), .expected = "an integer in [1, " + std::to_string(limits::max_item_tokens) + "]"});
  }
  if (s.text == 0 && s.items.empty())
    throw input_error("empty sample: no text tokens and no items", {.path = at, .expected = "text tokens or items"});
}

/// Every module's tokens in the microbatch within limits::max_module_tokens_per_microbatch (the
/// backbone also gets the encoders' outputs, which no budget counts).
inline void check_module_tokens(const ModelSpec& model, const Microbatch& mb, std::size_t m) {
  for (std::size_t i = 0; i < model.modules.size(); ++i) {
    const ModuleLoad load = module_load(model, ModuleId{static_cast<ModuleId::rep>(i)}, mb);
    if (load.tokens > limits::max_module_tokens_per_microbatch)
      throw input_error("microbatch puts " + std::to_string(load.tokens) + " tokens on module \"" + model.modules[i].name + "\"",
                        {.path = microbatch_path(m), .expected = "at most " + std::to_string(limits::max_module_tokens_per_microbatch) + " per module"});
  }
}

inline void check_microbatch_budget(const ModelSpec& model, const Setup& setup, ModuleId budget, const Microbatch& mb, std::size_t m) {
  const ModuleLoad load = module_load(model, budget, mb);
  const std::string name = model.module(budget).name;
  if (load.tokens > setup.microbatch.max_tokens)
    throw input_error("microbatch puts " + std::to_string(load.tokens) + " tokens on module \"" + name + "\", over the setup's budget",
                      {.path = microbatch_path(m),
                       .expected = "at most max_tokens = " + std::to_string(setup.microbatch.max_tokens) +
                                   " (pack() splits samples into microbatches under the budget)"});
  if (setup.microbatch.max_items && load.items > *setup.microbatch.max_items)
    throw input_error("microbatch holds " + std::to_string(load.items) + " items of module \"" + name + "\", over the setup's budget",
                      {.path = microbatch_path(m),
                       .expected = "at most max_items = " + std::to_string(*setup.microbatch.max_items) +
                                   " (pack() splits samples into microbatches under the budget)"});
}

}  // namespace detail

/// Checks `batch` against `model` and `setup` (see the header comment). Throws Error(input).
inline void check_batch(const ModelSpec& model, const Setup& setup, const Batch& batch) {
  if (batch.microbatches.empty()) throw input_error("the batch has no microbatches", {.path = "/microbatches", .expected = "at least one microbatch"});
  if (static_cast<std::int64_t>(batch.microbatches.size()) > limits::max_microbatches_per_step)
    throw input_error("the batch has " + std::to_string(batch.microbatches.size()) + " microbatches",
                      {.path = "/microbatches", .expected = "at most " + std::to_string(limits::max_microbatches_per_step)});
  const ModuleId budget = budget_module(model, setup);
  for (std::size_t m = 0; m < batch.microbatches.size(); ++m) {
    const Microbatch& mb = batch.microbatches[m];
    if (mb.samples.empty()) throw input_error("microbatch has no samples", {.path = detail::microbatch_path(m), .expected = "at least one sample"});
    if (mb.samples.size() > max_samples_per_microbatch)
      throw input_error("microbatch has " + std::to_string(mb.samples.size()) + " samples",
                        {.path = detail::microbatch_path(m), .expected = "at most " + std::to_string(max_samples_per_microbatch)});
    for (std::size_t i = 0; i < mb.samples.size(); ++i)
      detail::check_sample(model, mb.samples[i], detail::microbatch_path(m) + "/" + std::to_string(i));
    detail::check_microbatch_budget(model, setup, budget, mb, m);
    detail::check_module_tokens(model, mb, m);
  }
}

}  // namespace pipeweaver
