#pragma once
// The field-by-field bounds of a Plan, checked the same way whichever form it came in (JSON,
// binary, built in code) before anything is allocated in proportion to one of its numbers:
// every count within core/limits.hpp, every id and token count non-negative (tokens >= 1),
// list lengths that must agree do agree. Errors are Error(input) at the JSON path of the field
// ("/sub_microbatches/3/item_tokens/0"), the same path for the binary form. What the fields
// mean together (a stage of the step, a transfer along a dependency, deadlock freedom) is the
// validator's business (schedule/validator.hpp). std-only (nvcc).
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

namespace detail {

[[noreturn]] inline void plan_field_error(const std::string& path, const std::string& message, const std::string& expected) {
  throw input_error(message, {.path = path, .expected = expected});
}

inline void check_plan_count(std::size_t n, std::int64_t max, const std::string& path, const char* what) {
  if (n > static_cast<std::size_t>(max))
    plan_field_error(path, std::to_string(n) + " " + what, "at most " + std::to_string(max));
}

/// `path` is the field's JSON path, or a callable that makes it (only on failure: a plan has
/// millions of fields).
template <class Path>
inline void check_plan_int(std::int64_t v, std::int64_t lo, std::int64_t hi, const Path& path, const char* what) {
  if (v >= lo && v <= hi) [[likely]]
    return;
  std::string p;
  if constexpr (std::is_invocable_v<const Path&>) p = path();
  else p = path;
  plan_field_error(p, std::string(what) + " is " + std::to_string(v), "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

inline void check_plan_partition(const Plan& plan) {
  const Partition& p = plan.partition;
  check_plan_int(p.ranks, 1, limits::max_ranks, "/partition/ranks", "the rank count");
  check_plan_count(p.modules.size(), limits::max_modules, "/partition/modules", "modules");
  for (std::size_t m = 0; m < p.modules.size(); ++m) {
    const std::string at = "/partition/modules/" + std::to_string(m);
    const ModulePlacement& mp = p.modules[m];
    check_plan_int(mp.sub_microbatch_items, 0, limits::max_items_per_sub_microbatch, at + "/sub_microbatch_items", "sub_microbatch_items");
    check_plan_count(mp.chunks.size(), limits::max_chunks_per_module, at + "/chunks", "chunks");
    for (std::size_t c = 0; c < mp.chunks.size(); ++c) {
      const std::string cp = at + "/chunks/" + std::to_string(c);
      check_plan_int(mp.chunks[c].first_layer, 0, limits::max_layers, cp + "/first_layer", "first_layer");
      check_plan_int(mp.chunks[c].layer_count, 0, limits::max_layers, cp + "/layer_count", "layer_count");
      check_plan_int(mp.chunks[c].rank.value(), 0, p.ranks - 1, cp + "/rank", "the chunk's rank");
    }
  }
}

inline void check_plan_sub_microbatch(const Plan& plan, std::size_t s) {
  const SubMicrobatchSpec& smb = plan.sub_microbatches[s];
  const auto at = [s] { return "/sub_microbatches/" + std::to_string(s); };
  check_plan_int(smb.module().value(), 0, static_cast<std::int64_t>(plan.partition.modules.size()) - 1, [&] { return at() + "/module"; },
                 "the module (an index into the partition's modules)");
  check_plan_int(smb.microbatch().value(), 0, plan.microbatches - 1, [&] { return at() + "/microbatch"; }, "the microbatch (below the plan's \"microbatches\")");
  const auto tokens = smb.item_tokens();
  if (tokens.empty()) plan_field_error(at() + "/item_tokens", "no items", "at least one item's token count");
  if (tokens.size() > static_cast<std::size_t>(limits::max_items_per_sub_microbatch))
    check_plan_count(tokens.size(), limits::max_items_per_sub_microbatch, at() + "/item_tokens", "items");
  std::int64_t total = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    check_plan_int(tokens[i], 1, limits::max_item_tokens, [&] { return at() + "/item_tokens/" + std::to_string(i); }, "an item's token count");
    total += tokens[i];  // <= 2^20 items x 2^30 tokens: no overflow
  }
  if (total > limits::max_sub_microbatch_tokens)
    plan_field_error(at() + "/item_tokens", std::to_string(total) + " tokens in all", "at most " + std::to_string(limits::max_sub_microbatch_tokens));
  const auto context = smb.context_tokens();
  if (!context.empty() && context.size() != tokens.size())
    plan_field_error(at() + "/context_tokens", std::to_string(context.size()) + " context lengths for " + std::to_string(tokens.size()) + " items",
                     "one per item, or none");
  for (std::size_t i = 0; i < context.size(); ++i)
    check_plan_int(context[i], 0, limits::max_item_tokens, [&] { return at() + "/context_tokens/" + std::to_string(i); }, "a context length");
  const auto items = smb.items();
  if (!items.empty() && items.size() != tokens.size())
    plan_field_error(at() + "/items", std::to_string(items.size()) + " item origins for " + std::to_string(tokens.size()) + " items",
                     "one [sample, item] per item, or none");
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto ip = [&](const char* k) { return [&at, i, k] { return at() + "/items/" + std::to_string(i) + k; }; };
    check_plan_int(items[i].sample, 0, limits::max_samples_per_microbatch - 1, ip("/0"), "the item's sample");
    check_plan_int(items[i].item, -1, limits::max_items_per_sample - 1, ip("/1"), "the item's index in its sample (-1: the whole sample)");
  }
}

/// `at` makes the JSON path of the object holding the fields.
template <class At>
inline void check_plan_stage_ref(const StageRef& s, const At& at) {
  check_plan_int(s.module.value(), 0, limits::max_modules - 1, [&] { return at() + "/module"; }, "the stage's module");
  check_plan_int(s.chunk, 0, limits::max_chunks_per_module - 1, [&] { return at() + "/chunk"; }, "the stage's chunk");
  check_plan_int(s.sub_microbatch.value(), 0, limits::max_sub_microbatches - 1, [&] { return at() + "/sub_microbatch"; },
                 "the stage's sub-microbatch");
}

template <class At>
inline void check_plan_strategy(const MemoryStrategy& s, const At& at) {
  check_plan_int(s.full_recompute, 0, limits::max_layers, [&] { return at() + "/strategy/full_recompute"; }, "full_recompute");
  check_plan_int(s.selective_recompute, 0, limits::max_layers, [&] { return at() + "/strategy/selective_recompute"; }, "selective_recompute");
  check_plan_int(s.offload, 0, limits::max_layers, [&] { return at() + "/strategy/offload"; }, "offload");
}

template <class At>
inline void check_plan_action(const Action& a, const At& at) {
  if (const auto* f = std::get_if<Forward>(&a)) {
    check_plan_stage_ref(StageRef{f->module, f->chunk, f->sub_microbatch, Pass::forward}, at);
    check_plan_strategy(f->strategy, at);
  } else if (const auto* b = std::get_if<Backward>(&a)) {
    check_plan_stage_ref(StageRef{b->module, b->chunk, b->sub_microbatch, b->pass}, at);
    check_plan_strategy(b->strategy, at);
    if (b->pass == Pass::forward) plan_field_error(at() + "/op", "a backward action with pass 'forward'", "backward, backward_input or backward_weight");
  } else {
    const TransferId t = std::visit(
        [](const auto& x) -> TransferId {
          if constexpr (requires { x.transfer; }) return x.transfer;
          else return TransferId{0};
        },
        a);
    check_plan_int(t.value(), 0, limits::max_transfers - 1, [&] { return at() + "/transfer"; }, "the transfer id");
  }
}

}  // namespace detail

/// Checks every field of `plan` against core/limits.hpp (see the header comment). Throws
/// Error(input) at the JSON path of the first field out of bounds.
inline void check_plan_limits(const Plan& plan) {
  detail::check_plan_int(plan.microbatches, 0, limits::max_microbatches_per_step, "/microbatches", "the microbatch count");
  detail::check_plan_partition(plan);
  detail::check_plan_count(plan.ranks.size(), limits::max_ranks, "/ranks", "action lists");
  detail::check_plan_count(plan.sub_microbatches.size(), limits::max_sub_microbatches, "/sub_microbatches", "sub-microbatches");
  detail::check_plan_count(plan.transfers.size(), limits::max_transfers, "/transfers", "transfers");
  for (std::size_t s = 0; s < plan.sub_microbatches.size(); ++s) detail::check_plan_sub_microbatch(plan, s);
  for (std::size_t t = 0; t < plan.transfers.size(); ++t) {
    const Transfer& tr = plan.transfers[t];
    const auto at = [t] { return "/transfers/" + std::to_string(t); };
    detail::check_plan_int(tr.from.value(), 0, limits::max_ranks - 1, [&] { return at() + "/from"; }, "the sending rank");
    detail::check_plan_int(tr.to.value(), 0, limits::max_ranks - 1, [&] { return at() + "/to"; }, "the receiving rank");
    detail::check_plan_int(tr.bytes.count(), 0, limits::max_transfer_bytes, [&] { return at() + "/bytes"; }, "the transfer's size");
    detail::check_plan_stage_ref(tr.producer, [&] { return at() + "/producer"; });
    detail::check_plan_stage_ref(tr.consumer, [&] { return at() + "/consumer"; });
  }
  for (std::size_t r = 0; r < plan.ranks.size(); ++r)
    for (std::size_t a = 0; a < plan.ranks[r].size(); ++a)
      detail::check_plan_action(plan.ranks[r][a], [r, a] { return "/ranks/" + std::to_string(r) + "/" + std::to_string(a); });
}

}  // namespace pipeweaver
