#pragma once
// Device memory of the model on one rank: the static state of a chunk (weights, gradients,
// optimizer state), the activations a stage keeps until its backward, and the bytes a stage
// hands to the next one. std-only. Formulas in model/layer_math.hpp and below.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/layer_math.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver {

/// Weights + gradients + optimizer state of a chunk on ONE device:
///   trainable: params · optimizer_bytes_per_param / (tensor_parallel · data_parallel)
///              (ZeRO-style sharding of the whole state over data-parallel replicas)
///   frozen:    params · 2 / tensor_parallel (bf16 weights only)
/// `context_hidden` as in chunk_parameters (0: the module's own hidden).
[[nodiscard]] inline Bytes chunk_state_bytes(const ModuleSpec& m, const Setup& setup, int first_layer,
                                             int layer_count, std::int64_t context_hidden = 0) {
  const double params = static_cast<double>(chunk_parameters(m, first_layer, layer_count, context_hidden));
  const double tp = setup.tensor_parallel > 0 ? setup.tensor_parallel : 1;
  const double dp = setup.data_parallel > 0 ? setup.data_parallel : 1;
  if (!m.trainable) return ceil_bytes(params * 2.0 / tp);
  return ceil_bytes(params * setup.optimizer_bytes_per_param / (tp * dp));
}
[[nodiscard]] inline Bytes chunk_state_bytes(const ModelSpec& model, ModuleId id, const Setup& setup,
                                             int first_layer, int layer_count) {
  return chunk_state_bytes(model.module(id), setup, first_layer, layer_count, context_hidden(model, id));
}

/// Memory a plan may use on one device: (memory_gib − reserved_gib) GiB.
[[nodiscard]] inline Bytes memory_capacity(const Setup& setup) {
  return from_gib(setup.device.memory_gib - setup.device.reserved_gib);
}

namespace detail {
inline void check_strategy(const ModuleSpec& m, int layer_count, const MemoryStrategy& s) {
  if (s.full_recompute < 0 || s.selective_recompute < 0 || s.offload < 0 || s.layers_changed() > layer_count)
    throw input_error("memory strategy '" + to_string(s) + "' does not fit a chunk of " + std::to_string(layer_count) +
                    " layers of module '" + m.name + "'", {.path = "module '" + m.name + "'", .expected = "non-negative layer counts summing to at most the chunk's layers"});
}
inline std::int64_t token_total(std::span<const std::int64_t> tokens) noexcept {
  std::int64_t s = 0;
  for (auto t : tokens) s += t;
  return s;
}
}  // namespace detail

/// Bytes a forward of layers [first_layer, first_layer + layer_count) of module `id` keeps on
/// one device until its backward, under `strategy` (per rank, tensor_parallel from the setup):
///   Σ over layers of layer_activation_bytes (none / selective / full_recompute; offloaded
///   layers keep 0 on the device)
///   + the vocab head on the module's last chunk: final-norm input 2·T·h, head input 2·T·h and
///     fp32 logits 4·T·V, all / t
///   + a cross-attention module's context input, 2·M·h_c, once per chunk (replicated, not
///     sequence-parallel).
[[nodiscard]] inline Bytes stage_activation_bytes(const ModelSpec& model, int tensor_parallel, ModuleId id,
                                                  int first_layer, int layer_count,
                                                  std::span<const std::int64_t> item_tokens,
                                                  std::span<const std::int64_t> context_tokens,
                                                  const MemoryStrategy& strategy) {
  const ModuleSpec& m = model.module(id);
  detail::check_layer_range(m, first_layer, layer_count);
  detail::check_strategy(m, layer_count, strategy);
  detail::check_context(m, item_tokens, context_tokens);
  const std::int64_t T = detail::token_total(item_tokens);
  const std::int64_t M = m.cross_attention ? detail::token_total(context_tokens) : 0;
  const LayerActivationBytes layer = layer_activation_bytes(m, T, M, tensor_parallel);
  const int kept = layer_count - strategy.layers_changed();
  Bytes total = layer.none * kept + layer.selective * strategy.selective_recompute +
                layer.full_recompute * strategy.full_recompute;
  const double t = tensor_parallel > 0 ? tensor_parallel : 1;
  if (m.vocab && layer_count > 0 && first_layer + layer_count == m.layers)
    total += ceil_bytes((4.0 * static_cast<double>(T) * static_cast<double>(m.hidden) +
                         4.0 * static_cast<double>(T) * static_cast<double>(*m.vocab)) / t);
  if (m.cross_attention && layer_count > 0)
    total += Bytes{M} * (2 * context_hidden(model, id));
  return total;
}

/// Bytes a FORWARD of layers [first_layer, first_layer + layer_count) of module `id` hands to
/// the next stage (bf16; the whole tensor: sequence parallelism does not shrink p2p messages):
///   not the module's last chunk: 2·T·h, plus a cross-attention module's context 2·M·h_c
///   last chunk of an encoder that feeds a module: 2·h_fed·Σ ceil(n_i · output_tokens_per_input_token)
///   last chunk of another module that feeds one (a backbone conditioning a generator): 2·T·h
///   last chunk of a module that feeds none: 0 (the loss stays on the rank)
/// A backward edge carries the gradient of this output: the same size.
[[nodiscard]] inline Bytes stage_output_bytes(const ModelSpec& model, ModuleId id, int first_layer, int layer_count,
                                              std::span<const std::int64_t> item_tokens,
                                              std::span<const std::int64_t> context_tokens) {
  const ModuleSpec& m = model.module(id);
  detail::check_layer_range(m, first_layer, layer_count);
  detail::check_context(m, item_tokens, context_tokens);
  const std::int64_t T = detail::token_total(item_tokens);
  if (first_layer + layer_count < m.layers) {
    // Checked products (core/units.hpp): token counts are bounded, their products with hidden sizes
    // are checked.
    Bytes b = Bytes{T} * (2 * m.hidden);
    if (m.cross_attention) b += Bytes{detail::token_total(context_tokens)} * (2 * context_hidden(model, id));
    return b;
  }
  if (!m.feeds) return Bytes{0};
  if (m.role == ModuleRole::encoder) {
    std::int64_t out_tokens = 0;
    for (auto n : item_tokens)
      out_tokens += static_cast<std::int64_t>(std::ceil(static_cast<double>(n) * m.output_tokens_per_input_token));
    return Bytes{out_tokens} * (2 * fed_hidden(model, id));
  }
  return Bytes{T} * (2 * m.hidden);
}

}  // namespace pipeweaver
