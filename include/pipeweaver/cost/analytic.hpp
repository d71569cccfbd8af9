#pragma once
// The analytic roofline cost model. std-only: the emulator, the search and the
// CUDA side include it.
//
// A stage is a sequence of operators; each layer of a chunk runs the same ones:
//   qkv projection, attention core, output projection, FFN in (gate+up | up), FFN out,
//   element-wise (two norms, two residual adds, the activation function);
//   cross-attention modules add q projection, k/v projections of the context, cross core,
//   output projection and their element-wise work;
//   the chunk with layer 0 of a module with a vocab adds the embedding lookup, the chunk with
//   its last layer the final norm, the vocab head and the loss.
// Operator latency = max(α_f·FLOPs/F_eff, α_m·bytes/B_mem, α_n·collective), per rank:
//   F        = bf16_tflops of one device; FLOPs and bytes are the TP group's divided by t
//              (tensor_parallel; Megatron splits heads and FFN columns, and sequence
//              parallelism splits norms and dropout)
//   F_eff    = F · n / (n + half_saturation_tokens): a GEMM over n rows (the sub-microbatch's
//              tokens, or one item's for the attention core) reaches half of peak at
//              n = half_saturation_tokens and saturates as n grows
//   bytes    = weights (2 bytes/param) + input + output tensors (bf16) the operator reads and
//              writes, or the traffic of element-wise kernels
//   collective = sequence-parallel all-gather before qkv/FFN-in/cross-q and reduce-scatter after
//              out/FFN-out/cross-out, each over t ranks on the ring:
//              (t−1)·(latency + 2·T·h / (t·B_tp)); two all-gather+reduce-scatter pairs (the
//              volume of two all-reduces) per layer, zero when t = 1. The max overlaps each
//              collective with the GEMM that consumes or produces it (as Transformer Engine's
//              comm-GEMM overlap does).
// Backward (per operator): input gradient = the forward's FLOPs, bytes and (mirrored)
// collective, weight gradient = the forward's FLOPs and bytes again, no collective; the
// attention core has no weights and its backward costs attention_backward_factor (2.5) × its
// forward FLOPs and 2× its bytes; element-wise backward moves 2× the bytes. A frozen module
// (trainable = false) has no weight-gradient part. Pass::backward = backward_input +
// backward_weight exactly (each is rounded to ns, then summed).
// Memory strategies (per layer of the chunk):
//   full recompute k layers:      backward_input += k × a layer's forward
//   selective recompute s layers: backward_input += s × the attention cores' forward
//   offload o layers:             their activations (layer_activation_bytes().none each) cross
//                                 the host link (host_link_gb_per_s) out in the forward and back
//                                 in the backward; only the part not hidden behind compute
//                                 counts: forward += max(0, X − forward), backward_input +=
//                                 max(0, X − backward), X = bytes / host bandwidth.
// Stage latency = Σ over operators, each layer's operators × layer_count, rounded to ns.
// Activation and output bytes come from model/memory.hpp; transfer_time(b) =
// pipeline latency + b / pipeline bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/stage_bytes.hpp"
#include "pipeweaver/model/layer_math.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver {

struct AnalyticOptions {
  double alpha_flops = 1;    ///< α_f: scales every compute term (1 = peak after saturation)
  double alpha_memory = 1;   ///< α_m: scales every memory-traffic term
  double alpha_network = 1;  ///< α_n: scales every tensor-parallel collective
  double half_saturation_tokens = 128;   ///< GEMM rows at which a GEMM reaches half of peak
  double host_link_gb_per_s = 50;        ///< device↔host bandwidth for offload, one direction
  double attention_backward_factor = 2.5;  ///< attention-core backward FLOPs / forward FLOPs
  friend bool operator==(const AnalyticOptions&, const AnalyticOptions&) = default;
};

/// A latency split by what it is made of, in ns before the α factors:
/// latency = α_f·compute + α_m·memory + α_n·network + fixed. Each operator contributes its
/// dominant term (under the model's α) to one of the three; `fixed` holds the offload time
/// that compute does not hide. Calibration fits the α factors on these.
struct LatencyTerms {
  double compute = 0;
  double memory = 0;
  double network = 0;
  double fixed = 0;

  [[nodiscard]] double value(const AnalyticOptions& o) const noexcept {
    return o.alpha_flops * compute + o.alpha_memory * memory + o.alpha_network * network + fixed;
  }
  LatencyTerms& operator+=(const LatencyTerms& b) noexcept {
    compute += b.compute, memory += b.memory, network += b.network, fixed += b.fixed;
    return *this;
  }
  friend LatencyTerms operator+(LatencyTerms a, const LatencyTerms& b) noexcept { return a += b; }
  friend LatencyTerms operator*(LatencyTerms a, double k) noexcept {
    a.compute *= k, a.memory *= k, a.network *= k, a.fixed *= k;
    return a;
  }
  friend bool operator==(const LatencyTerms&, const LatencyTerms&) = default;
};

namespace detail {
/// One operator's three candidate times (ns, α = 1).
struct OpTerm {
  double compute = 0, memory = 0, network = 0;
};
/// The terms of one stage for each pass, and its forward FLOPs (whole TP group).
struct StageTerms {
  LatencyTerms forward, backward_input, backward_weight;
  double flops = 0;
};
}  // namespace detail

class AnalyticCostModel {
 public:
  AnalyticCostModel(ModelSpec model, Setup setup, AnalyticOptions options = {})
      : model_(std::move(model)), setup_(std::move(setup)), options_(options) {
    validate();
    consts_.reserve(model_.modules.size());
    for (std::size_t i = 0; i < model_.modules.size(); ++i) {
      const ModuleSpec& m = model_.modules[i];
      const ModuleId id{static_cast<ModuleId::rep>(i)};
      Consts c;
      c.h = static_cast<double>(m.hidden);
      c.f = static_cast<double>(m.ffn_hidden);
      c.dkv = static_cast<double>(kv_dim(m));
      c.hc = static_cast<double>(context_hidden(model_, id));
      c.vocab = m.vocab ? static_cast<double>(*m.vocab) : 0.0;
      c.ffn_matrices = ffn_matrices(m);
      consts_.push_back(c);
    }
    t_ = setup_.tensor_parallel;
    flop_per_ns_ = setup_.device.bf16_tflops * 1e3;    // 1 TFLOP/s = 1e3 FLOP/ns
    hbm_bytes_per_ns_ = setup_.device.hbm_gb_per_s;   // 1 GB/s = 1 byte/ns
    if (setup_.tensor_parallel > 1) {
      tp_bytes_per_ns_ = setup_.tensor_parallel_link->gb_per_s;
      tp_latency_ns_ = setup_.tensor_parallel_link->latency_us * 1e3;
    }
  }

  [[nodiscard]] const ModelSpec& model() const noexcept { return model_; }
  [[nodiscard]] const Setup& setup() const noexcept { return setup_; }
  [[nodiscard]] const AnalyticOptions& options() const noexcept { return options_; }

  /// Time of `stage` on `smb` under `strategy` (see the header comment).
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Nanoseconds latency(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    const detail::StageTerms st = evaluate(stage, smb, strategy);
    switch (stage.pass()) {
      case Pass::forward: return round_ns(st.forward.value(options_));
      case Pass::backward_input: return round_ns(st.backward_input.value(options_));
      case Pass::backward_weight: return round_ns(st.backward_weight.value(options_));
      case Pass::backward: break;
    }
    return round_ns(st.backward_input.value(options_)) + round_ns(st.backward_weight.value(options_));
  }

  /// The latency of `stage` split into its compute, memory, network and fixed parts.
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] LatencyTerms latency_terms(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    const detail::StageTerms st = evaluate(stage, smb, strategy);
    switch (stage.pass()) {
      case Pass::forward: return st.forward;
      case Pass::backward_input: return st.backward_input;
      case Pass::backward_weight: return st.backward_weight;
      case Pass::backward: break;
    }
    return st.backward_input + st.backward_weight;
  }

  /// Forward FLOPs of the stage's chunk on `smb`, whole TP group, summed over this model's
  /// operators (equals model/layer_math.hpp's forward_flops; a test checks it).
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] double forward_flops(const S& stage, const M& smb) const {
    return evaluate(stage, smb, MemoryStrategy{}).flops;
  }

  /// Device bytes the forward of `stage` keeps until its backward (a backward stage: the same
  /// as its forward). See stage_activation_bytes.
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes activation_bytes(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    return detail::checked_activation_bytes(model_, setup_, stage, smb, strategy);
  }

  /// Bytes the forward of `stage` hands to the next stage (for a backward stage: the gradient
  /// of that output, the same size). See stage_output_bytes.
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes output_bytes(const S& stage, const M& smb) const {
    return detail::checked_output_bytes(model_, stage, smb);
  }

  /// latency_us + bytes / gb_per_s of the pipeline link.
  [[nodiscard]] Nanoseconds transfer_time(Bytes bytes) const {
    return detail::pipeline_transfer_time(setup_, bytes);
  }

 private:
  struct Consts {
    double h = 0, f = 0, dkv = 0, hc = 0, vocab = 0;
    int ffn_matrices = 2;
  };

  void validate() const {
    auto bad = [&](const std::string& what, const std::string& path, const std::string& expected) {
      throw input_error(what, {.file = setup_.name, .path = path, .expected = expected});
    };
    if (setup_.tensor_parallel < 1) bad("tensor_parallel < 1", "/tensor_parallel", "an integer >= 1");
    if (!(setup_.device.bf16_tflops > 0)) bad("device bf16_tflops is not positive", "/device/bf16_tflops", "> 0");
    if (!(setup_.device.hbm_gb_per_s > 0)) bad("device hbm_gb_per_s is not positive", "/device/hbm_gb_per_s", "> 0");
    if (!(setup_.pipeline_link.gb_per_s > 0)) bad("pipeline link bandwidth is not positive", "/links/pipeline/gb_per_s", "> 0");
    if (setup_.tensor_parallel > 1 && (!setup_.tensor_parallel_link || !(setup_.tensor_parallel_link->gb_per_s > 0)))
      bad("tensor_parallel > 1 needs a tensor-parallel link", "/links/tensor_parallel",
          "a link with gb_per_s > 0 when tensor_parallel > 1");
    auto nonneg = [](double x) { return std::isfinite(x) && x >= 0; };
    if (!nonneg(options_.alpha_flops) || !nonneg(options_.alpha_memory) || !nonneg(options_.alpha_network) ||
        !nonneg(options_.half_saturation_tokens) || !nonneg(options_.attention_backward_factor) ||
        !(options_.host_link_gb_per_s > 0))
      throw input_error("invalid analytic cost model options", {.path = "AnalyticOptions", .expected = "finite non-negative alphas, half_saturation_tokens and attention_backward_factor, "
                               "host_link_gb_per_s > 0"});
    for (std::size_t i = 0; i < model_.modules.size(); ++i) {
      const ModuleSpec& m = model_.modules[i];
      if (m.hidden <= 0 || m.ffn_hidden <= 0 || m.heads <= 0 || m.kv_heads <= 0 || m.layers < 0 ||
          (m.feeds && m.feeds->index() >= model_.modules.size()))
        throw input_error("module '" + m.name + "' has an invalid shape", {.file = model_.name, .path = "/modules/" + std::to_string(i), .expected = "hidden, ffn_hidden, heads, kv_heads > 0 and feeds naming a module"});
    }
  }

  void check_module(ModuleId id) const { detail::check_stage_module(model_, id); }

  /// F_eff / F for a GEMM over n rows.
  [[nodiscard]] double efficiency(double n) const noexcept { return n / (n + options_.half_saturation_tokens); }
  /// ns of `flops` (already per rank) over n rows.
  [[nodiscard]] double compute_ns(double flops, double n) const noexcept {
    return n > 0 && flops > 0 ? flops / (flop_per_ns_ * efficiency(n)) : 0.0;
  }
  [[nodiscard]] double memory_ns(double bytes) const noexcept { return bytes / hbm_bytes_per_ns_; }
  /// One sequence-parallel all-gather or reduce-scatter of a `bytes` tensor over t ranks (ring).
  [[nodiscard]] double collective_ns(double bytes) const noexcept {
    if (t_ <= 1) return 0.0;
    return (t_ - 1) * (tp_latency_ns_ + bytes / (t_ * tp_bytes_per_ns_));
  }

  /// Adds the operator's dominant term (under α) to `acc`. Ties prefer compute, then memory.
  void add(LatencyTerms& acc, const detail::OpTerm& op) const noexcept {
    const double c = options_.alpha_flops * op.compute, m = options_.alpha_memory * op.memory,
                 n = options_.alpha_network * op.network;
    if (c >= m && c >= n) {
      if (op.compute > 0) acc.compute += op.compute;
    } else if (m >= n) {
      acc.memory += op.memory;
    } else {
      acc.network += op.network;
    }
  }

  struct Accum {
    LatencyTerms forward, backward_input, backward_weight, core_forward;
    double flops = 0;
  };

  /// A GEMM: `flops` for the whole group, `params` weights, input/output bytes per rank,
  /// `rows` for efficiency, `net` its collective (ns).
  void gemm(Accum& a, bool trainable, double flops, double params, double in_bytes, double out_bytes, double rows,
            double net) const {
    const detail::OpTerm fwd{compute_ns(flops / t_, rows), memory_ns(2 * params / t_ + in_bytes + out_bytes), net};
    a.flops += flops;
    add(a.forward, fwd);
    add(a.backward_input, fwd);
    if (trainable) add(a.backward_weight, detail::OpTerm{fwd.compute, fwd.memory, 0});
  }
  /// Element-wise kernels moving `bytes` per rank (backward: twice the bytes).
  void elementwise(Accum& a, double bytes, double backward_factor = 2) const {
    add(a.forward, detail::OpTerm{0, memory_ns(bytes), 0});
    add(a.backward_input, detail::OpTerm{0, memory_ns(backward_factor * bytes), 0});
  }
  /// An attention core: per-rank compute `compute` (ns, efficiency applied per item), `flops`
  /// for the group, `bytes` per rank.
  void core(Accum& a, double compute, double flops, double bytes) const {
    const detail::OpTerm fwd{compute, memory_ns(bytes), 0};
    a.flops += flops;
    add(a.forward, fwd);
    add(a.core_forward, fwd);
    add(a.backward_input,
        detail::OpTerm{options_.attention_backward_factor * compute, memory_ns(2 * bytes), 0});
  }

  /// The operators of one layer (see the header comment).
  void layer_ops(Accum& a, const ModuleSpec& m, const Consts& c, std::span<const std::int64_t> items,
                 std::span<const std::int64_t> contexts, double T, double M) const {
    const double h = c.h, f = c.f, dkv = c.dkv, t = t_;
    const bool tr = m.trainable;
    const double coll = collective_ns(2 * T * h);
    // self-attention
    gemm(a, tr, 2 * T * (h * h + 2 * h * dkv), h * h + 2 * h * dkv, 2 * T * h, 2 * T * (h + 2 * dkv) / t, T, coll);
    {
      double compute = 0, flops = 0;
      for (auto n : items) {
        const double fl = attention_core_flops(m, n);
        flops += fl;
        compute += compute_ns(fl / t, static_cast<double>(n));
      }
      core(a, compute, flops, (2 * T * (h + 2 * dkv) + 2 * T * h) / t);
    }
    gemm(a, tr, 2 * T * h * h, h * h, 2 * T * h / t, 2 * T * h, T, coll);
    // FFN
    const double up = c.ffn_matrices - 1;
    gemm(a, tr, 2 * T * up * h * f, up * h * f, 2 * T * h, 2 * T * up * f / t, T, coll);
    gemm(a, tr, 2 * T * h * f, h * f, 2 * T * f / t, 2 * T * h, T, coll);
    // norms (read+write 2·2Th), residual adds (2 reads + 1 write, 2·6Th), activation function
    elementwise(a, (20 * T * h + (c.ffn_matrices == 3 ? 6 : 4) * T * f) / t);
    if (!m.cross_attention) return;
    const double hc = c.hc;
    gemm(a, tr, 2 * T * h * h, h * h, 2 * T * h, 2 * T * h / t, T, coll);                    // q
    gemm(a, tr, 2 * M * 2 * hc * dkv, 2 * hc * dkv, 2 * M * hc, 4 * M * dkv / t, M, 0.0);  // k, v of the context
    {
      double compute = 0, flops = 0;
      for (std::size_t i = 0; i < items.size() && i < contexts.size(); ++i) {
        const double fl = cross_attention_core_flops(m, items[i], contexts[i]);
        flops += fl;
        compute += compute_ns(fl / t, static_cast<double>(items[i]));
      }
      core(a, compute, flops, (4 * T * h + 4 * M * dkv) / t);
    }
    gemm(a, tr, 2 * T * h * h, h * h, 2 * T * h / t, 2 * T * h, T, coll);  // o
    elementwise(a, 10 * T * h / t);                                        // norm + residual
  }

  /// Embedding (chunk with layer 0) and final norm, head and loss (chunk with the last layer)
  /// of a module with a vocab.
  void chunk_ops(Accum& a, const ModuleSpec& m, const Consts& c, bool first, bool last, double T) const {
    if (!m.vocab) return;
    const double h = c.h, V = c.vocab, t = t_;
    const double coll = collective_ns(2 * T * h);
    if (first) {  // vocab-parallel lookup + reduce-scatter; weight gradient: all-gather + scatter-add
      add(a.forward, detail::OpTerm{0, memory_ns(2 * T * h), coll});
      if (m.trainable) add(a.backward_weight, detail::OpTerm{0, memory_ns(4 * T * h), coll});
    }
    if (last) {
      elementwise(a, 4 * T * h / t);
      gemm(a, m.trainable, 2 * T * h * V, h * V, 2 * T * h, 2 * T * V / t, T, coll);
      elementwise(a, 6 * T * V / t, 1);  // softmax cross-entropy over fp32 logits
    }
  }

  template <Stage S, SubMicrobatch M>
  [[nodiscard]] detail::StageTerms evaluate(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    const ModuleId id = stage.module();
    check_module(id);
    const ModuleSpec& m = model_.modules[id.index()];
    const Consts& c = consts_[id.index()];
    const int first = stage.first_layer(), count = stage.layer_count();
    detail::check_layer_range(m, first, count);
    detail::check_strategy(m, count, strategy);
    const std::span<const std::int64_t> items = smb.item_tokens();
    const std::span<const std::int64_t> contexts =
        m.cross_attention ? std::span<const std::int64_t>(smb.context_tokens()) : std::span<const std::int64_t>{};
    detail::check_context(m, items, contexts);
    double T = 0, Mtok = 0;
    for (auto n : items) T += static_cast<double>(n);
    for (auto n : contexts) Mtok += static_cast<double>(n);

    Accum layer;
    layer_ops(layer, m, c, items, contexts, T, Mtok);
    Accum extra;
    chunk_ops(extra, m, c, count > 0 && first == 0, count > 0 && first + count == m.layers, T);

    detail::StageTerms st;
    const double L = count;
    st.flops = L * layer.flops + extra.flops;
    st.forward = layer.forward * L + extra.forward;
    st.backward_input = layer.backward_input * L + extra.backward_input +
                        layer.forward * static_cast<double>(strategy.full_recompute) +
                        layer.core_forward * static_cast<double>(strategy.selective_recompute);
    if (m.trainable) st.backward_weight = layer.backward_weight * L + extra.backward_weight;
    if (strategy.offload > 0) {
      const auto bytes = layer_activation_bytes(m, static_cast<std::int64_t>(T), static_cast<std::int64_t>(Mtok),
                                                setup_.tensor_parallel).none;
      const double x = static_cast<double>(strategy.offload) * static_cast<double>(bytes.count()) /
                       options_.host_link_gb_per_s;
      st.forward.fixed += std::max(0.0, x - st.forward.value(options_));
      st.backward_input.fixed +=
          std::max(0.0, x - st.backward_input.value(options_) - st.backward_weight.value(options_));
    }
    return st;
  }

  ModelSpec model_;
  Setup setup_;
  AnalyticOptions options_;
  std::vector<Consts> consts_;
  double t_ = 1;
  double flop_per_ns_ = 1;
  double hbm_bytes_per_ns_ = 1;
  double tp_bytes_per_ns_ = 1;
  double tp_latency_ns_ = 0;
};

}  // namespace pipeweaver
