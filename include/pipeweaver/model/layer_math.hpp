#pragma once
// Per-layer model math: parameters, forward FLOPs and activation bytes of transformer modules.
// std-only (schedule/ and the CUDA side include it through the cost headers).
//
// Notation: h = hidden, f = ffn_hidden, d_kv = kv_heads · head_dim (grouped-query attention
// shrinks only the k and v projections), k_ffn = 2 (gelu: up, down) or 3 (swiglu: gate, up,
// down), h_c = hidden of the module a cross-attention layer attends to, V = vocab.
//
// Parameters (linear layers are bias-free, as in Llama; every norm is one weight vector of h):
//   self-attention   q, o: h·h each; k, v: h·d_kv each                  = 2h² + 2h·d_kv
//   FFN              k_ffn matrices of h·f                               = k_ffn·h·f
//   norms            pre-attention and pre-FFN                           = 2h
//   cross-attention  q, o: h·h; k, v project the context: h_c·d_kv each;
//                    its own pre-norm                                    = 2h² + 2h_c·d_kv + h
//   module with V    embedding V·h on the chunk with layer 0; untied output head V·h plus the
//                    final norm h on the chunk with the last layer.
// Not modeled: biases, an encoder's projector into the fed module, a DiT's timestep/adaLN
// modulation and patch embedding (each below ~2% of the module).
//
// Forward FLOPs of a chunk on items of n_i tokens (T = Σ n_i) and contexts of m_i tokens
// (M = Σ m_i), per layer:
//   matmuls          2·T·(matmul parameters) (norm weights excluded), cross-attention k/v
//                    projections 2·M·(2·h_c·d_kv)
//   attention core   per item: bidirectional 4·n²·h (QKᵀ and A·V, 2·n²·h each); causal
//                    counts the diagonal: 2·n·(n+1)·h; cross-attention 4·n·m·h
//   vocab head       2·T·h·V on the chunk with the last layer of a module with V
// Softmax, norms and element-wise work are left out of FLOPs (they are memory-bound; the cost
// model charges them as memory traffic).
//
// Activation bytes kept by one layer from its forward until its backward, per tensor-parallel
// rank (bf16 = 2 bytes; Megatron's accounting, Korthikanti et al. 2022, with flash attention so
// that no n² score matrix is stored, and sequence parallelism so that every term is divided by
// t = tensor_parallel). Per token:
//   norms            inputs of the two norms                               4h
//   attention        QKV input 2h, Q 2h, K and V 4·d_kv, core output O 2h,
//                    dropout mask h                                        7h + 4·d_kv
//   FFN              up input 2h, dropout mask h; gelu: activation input 2f and down input 2f;
//                    swiglu: gate 2f, up 2f, product 2f                    3h + 4f | 3h + 6f
//   cross-attention  norm input 2h, q input 2h, Q 2h, O 2h, mask h           9h
//                    plus per context token K and V                        4·d_kv
// The standard layer (gelu, f = 4h, d_kv = h) gives Megatron's 34·T·h/t.
//   selective recompute  drops the attention cores' outputs O (2h per core per token): flash
//                        attention re-derives them from the kept Q, K, V
//   full recompute       keeps only the layer input, 2·T·h/t
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver {

/// Width of the k and v projections: kv_heads · head_dim.
[[nodiscard]] inline std::int64_t kv_dim(const ModuleSpec& m) noexcept {
  return static_cast<std::int64_t>(m.kv_heads) * m.head_dim();
}
/// Matrices in the FFN: 2 for gelu, 3 for swiglu.
[[nodiscard]] inline int ffn_matrices(const ModuleSpec& m) noexcept { return m.ffn == FfnKind::swiglu ? 3 : 2; }

/// Hidden size of the sequence a cross-attention module attends to: the first module that
/// feeds it; its own hidden when it has no cross-attention or no feeder.
[[nodiscard]] inline std::int64_t context_hidden(const ModelSpec& model, ModuleId id) {
  const ModuleSpec& m = model.module(id);
  if (!m.cross_attention) return m.hidden;
  for (const ModuleSpec& other : model.modules)
    if (other.feeds && *other.feeds == id) return other.hidden;
  return m.hidden;
}

/// Hidden size of the module this module hands its output to (its own hidden if it feeds none).
[[nodiscard]] inline std::int64_t fed_hidden(const ModelSpec& model, ModuleId id) {
  const ModuleSpec& m = model.module(id);
  if (m.feeds && m.feeds->index() < model.modules.size()) return model.module(*m.feeds).hidden;
  return m.hidden;
}

namespace detail {
/// Weights of one layer's matrices (no norms), split by what multiplies them.
struct LayerMatmuls {
  std::int64_t token_params = 0;    ///< multiplied by each of the T item tokens
  std::int64_t context_params = 0;  ///< cross-attention k/v: multiplied by each of the M context tokens
};
[[nodiscard]] inline LayerMatmuls layer_matmuls(const ModuleSpec& m, std::int64_t ctx_hidden) noexcept {
  const std::int64_t h = m.hidden, dkv = kv_dim(m);
  LayerMatmuls out;
  out.token_params = 2 * h * h + 2 * h * dkv + ffn_matrices(m) * h * m.ffn_hidden;
  if (m.cross_attention) {
    out.token_params += 2 * h * h;
    out.context_params = 2 * ctx_hidden * dkv;
  }
  return out;
}
inline void check_layer_range(const ModuleSpec& m, int first_layer, int layer_count) {
  if (first_layer < 0 || layer_count < 0 || first_layer + layer_count > m.layers)
    throw input_error("layer range [" + std::to_string(first_layer) + ", " + std::to_string(first_layer + layer_count) +
                    ") is outside module '" + m.name + "'", {.path = "module '" + m.name + "'", .expected = "0 <= first_layer, first_layer + layer_count <= " + std::to_string(m.layers)});
}
}  // namespace detail

/// Parameters of one transformer layer, norms included. `context_hidden` is the hidden size
/// cross-attention k/v project from (0: the module's own hidden; the ModelSpec overload finds it).
[[nodiscard]] inline std::int64_t layer_parameters(const ModuleSpec& m, std::int64_t context_hidden = 0) noexcept {
  const std::int64_t hc = context_hidden > 0 ? context_hidden : m.hidden;
  const auto mm = detail::layer_matmuls(m, hc);
  return mm.token_params + mm.context_params + 2 * m.hidden + (m.cross_attention ? m.hidden : 0);
}
/// Embedding table (V·h) of a module with a vocabulary, else 0.
[[nodiscard]] inline std::int64_t embedding_parameters(const ModuleSpec& m) noexcept {
  return m.vocab ? *m.vocab * m.hidden : 0;
}
/// Untied output head (V·h) plus the final norm (h) of a module with a vocabulary, else 0.
[[nodiscard]] inline std::int64_t head_parameters(const ModuleSpec& m) noexcept {
  return m.vocab ? *m.vocab * m.hidden + m.hidden : 0;
}

/// Parameters of layers [first_layer, first_layer + layer_count): the layers, plus the embedding
/// if the chunk holds layer 0 and the head if it holds the last layer (modules with a vocab).
[[nodiscard]] inline std::int64_t chunk_parameters(const ModuleSpec& m, int first_layer, int layer_count,
                                                   std::int64_t context_hidden = 0) {
  detail::check_layer_range(m, first_layer, layer_count);
  std::int64_t p = layer_count * layer_parameters(m, context_hidden);
  if (layer_count > 0 && first_layer == 0) p += embedding_parameters(m);
  if (layer_count > 0 && first_layer + layer_count == m.layers) p += head_parameters(m);
  return p;
}
[[nodiscard]] inline std::int64_t module_parameters(const ModuleSpec& m, std::int64_t context_hidden = 0) {
  return chunk_parameters(m, 0, m.layers, context_hidden);
}

// Overloads that find the cross-attention context's hidden size in the model.
[[nodiscard]] inline std::int64_t layer_parameters(const ModelSpec& model, ModuleId id) {
  return layer_parameters(model.module(id), context_hidden(model, id));
}
[[nodiscard]] inline std::int64_t chunk_parameters(const ModelSpec& model, ModuleId id, int first_layer,
                                                   int layer_count) {
  return chunk_parameters(model.module(id), first_layer, layer_count, context_hidden(model, id));
}
[[nodiscard]] inline std::int64_t module_parameters(const ModelSpec& model, ModuleId id) {
  return module_parameters(model.module(id), context_hidden(model, id));
}
[[nodiscard]] inline std::int64_t model_parameters(const ModelSpec& model) {
  std::int64_t p = 0;
  for (std::size_t i = 0; i < model.modules.size(); ++i)
    p += module_parameters(model, ModuleId{static_cast<ModuleId::rep>(i)});
  return p;
}

/// Attention-core FLOPs of one item of n tokens in one layer (see the header comment).
[[nodiscard]] inline double attention_core_flops(const ModuleSpec& m, std::int64_t n) noexcept {
  const double dn = static_cast<double>(n), h = static_cast<double>(m.hidden);
  return m.attention == AttentionKind::bidirectional ? 4.0 * dn * dn * h : 2.0 * dn * (dn + 1.0) * h;
}
/// Cross-attention core FLOPs of one item of n tokens attending to m context tokens, one layer.
[[nodiscard]] inline double cross_attention_core_flops(const ModuleSpec& mod, std::int64_t n, std::int64_t m) noexcept {
  return 4.0 * static_cast<double>(n) * static_cast<double>(m) * static_cast<double>(mod.hidden);
}

namespace detail {
inline void check_context(const ModuleSpec& m, std::span<const std::int64_t> items,
                          std::span<const std::int64_t> contexts) {
  if (m.cross_attention && !contexts.empty() && contexts.size() != items.size())
    throw input_error("module '" + m.name + "' got " + std::to_string(contexts.size()) + " context lengths for " +
                    std::to_string(items.size()) + " items", {.path = "module '" + m.name + "'", .expected = "one context length per item, or none"});
}
}  // namespace detail

/// Forward FLOPs (whole tensor-parallel group) of layers [first_layer, first_layer + layer_count)
/// of `m` on items of `item_tokens` tokens; `context_tokens` (one per item, or empty) is the
/// conditioning sequence a cross-attention module attends to (ignored by other modules).
[[nodiscard]] inline double forward_flops(const ModuleSpec& m, const ModelSpec& model, int first_layer,
                                          int layer_count, std::span<const std::int64_t> item_tokens,
                                          std::span<const std::int64_t> context_tokens) {
  detail::check_layer_range(m, first_layer, layer_count);
  detail::check_context(m, item_tokens, context_tokens);
  std::int64_t hc = m.hidden;
  if (m.cross_attention) {
    for (std::size_t i = 0; i < model.modules.size(); ++i)
      if (&model.modules[i] == &m || model.modules[i].name == m.name) {
        hc = context_hidden(model, ModuleId{static_cast<ModuleId::rep>(i)});
        break;
      }
  }
  const auto mm = detail::layer_matmuls(m, hc);
  double tokens = 0, context = 0, core = 0;
  for (std::size_t i = 0; i < item_tokens.size(); ++i) {
    tokens += static_cast<double>(item_tokens[i]);
    core += attention_core_flops(m, item_tokens[i]);
    if (m.cross_attention && !context_tokens.empty()) {
      context += static_cast<double>(context_tokens[i]);
      core += cross_attention_core_flops(m, item_tokens[i], context_tokens[i]);
    }
  }
  const double per_layer = 2.0 * tokens * static_cast<double>(mm.token_params) +
                           2.0 * context * static_cast<double>(mm.context_params) + core;
  double flops = layer_count * per_layer;
  if (m.vocab && layer_count > 0 && first_layer + layer_count == m.layers)
    flops += 2.0 * tokens * static_cast<double>(m.hidden) * static_cast<double>(*m.vocab);
  return flops;
}

/// Activation bytes one layer keeps until its backward, per tensor-parallel rank, under each
/// way of treating the layer (see the header comment for the formula).
struct LayerActivationBytes {
  Bytes none{};            ///< everything stored
  Bytes selective{};       ///< attention-core outputs dropped (recomputed in the backward)
  Bytes full_recompute{};  ///< only the layer input kept
};

/// Per-layer activation bytes of `m` on `tokens` item tokens and `context_tokens` context
/// tokens (cross-attention only) with tensor (and sequence) parallelism `tensor_parallel`.
[[nodiscard]] inline LayerActivationBytes layer_activation_bytes(const ModuleSpec& m, std::int64_t tokens,
                                                                 std::int64_t context_tokens, int tensor_parallel) {
  const double T = static_cast<double>(tokens), h = static_cast<double>(m.hidden),
               f = static_cast<double>(m.ffn_hidden), dkv = static_cast<double>(kv_dim(m));
  const double t = tensor_parallel > 0 ? tensor_parallel : 1;
  double per_token = 4 * h + (7 * h + 4 * dkv) + (m.ffn == FfnKind::swiglu ? 3 * h + 6 * f : 3 * h + 4 * f);
  double cores = 1;
  double full = 0;
  if (m.cross_attention) {
    per_token += 9 * h;
    cores = 2;
    full += 4 * dkv * static_cast<double>(context_tokens);
  }
  full += per_token * T;
  LayerActivationBytes out;
  out.none = ceil_bytes(full / t);
  out.selective = ceil_bytes((full - cores * 2 * h * T) / t);
  out.full_recompute = ceil_bytes(2 * h * T / t);
  return out;
}

}  // namespace pipeweaver
