#pragma once
// tiny-vlm with real math on the CPU (example code, not library API): a ViT (bidirectional
// attention, gelu MLP) whose 2x2 token merge feeds an LLM (causal attention, swiglu MLP) with
// an embedding, a vocabulary head and a next-token cross-entropy loss. Every layer has a
// hand-written backward (checked by finite differences in test/backends/host/toy_vlm.cpp).
//
// Conventions. Matrices are row-major, one row per token. Attention never crosses items: an
// image is one ViT item; a sample's LLM sequence is [merged tokens of its images in order,
// then its text tokens]. The "2x2 merge" concatenates groups of 4 consecutive ViT tokens (the
// last group zero-padded) and projects them to the LLM width: ceil(n/4) tokens per image, as
// the splitter counts them (output_tokens_per_input_token = 0.25). The loss is the sum over
// the step's predicted text tokens of their cross-entropy times `loss_scale` (1 / predicted
// tokens of the step), so it does not depend on how the step is cut into pieces.
//
// Determinism. Every item's math is a fixed sequence of float operations whatever chunk or
// sub-microbatch it runs in; weight gradients are accumulated per item into double
// accumulators, so the pipelined and the sequential step agree to double rounding.
//
// Stage callbacks (Callbacks) run the layers of the chunk a StageSpec names on the items of a
// sub-microbatch, using the executor's buffers (execute/stage_io.hpp); the backward recomputes
// the chunk's forward from its input (full recompute). A split backward's input part
// (Pass::backward_input) and weight part (Pass::backward_weight) each recompute it and keep only
// their own gradients (Part). A step whose samples a planner regrouped (PlanResult::
// sample_origin) runs on regroup(batch, origin).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/ids.hpp>
#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/planner/plan_result.hpp>

namespace toy_vlm {

namespace pw = pipeweaver;

// ---- configuration and randomness ------------------------------------------------------

struct Config {
  pw::ModuleId vit_module{0}, llm_module{1};
  int vit_layers = 4, vit_hidden = 64, vit_ffn = 256, vit_heads = 4;
  int llm_layers = 8, llm_hidden = 96, llm_ffn = 384, llm_heads = 4, vocab = 512;
  int patch_dim = 48;  ///< floats per image patch (a 4x4 RGB patch)
  static constexpr int merge = 4;

  /// From a model like tiny-vlm: one encoder (gelu, bidirectional, ratio 0.25) feeding a
  /// backbone (swiglu, causal, with a vocabulary).
  static Config from(const pw::ModelSpec& m) {
    Config c;
    c.llm_module = m.backbone();
    const auto feeders = m.feeders(c.llm_module);
    if (feeders.size() != 1) throw pw::input_error("toy_vlm needs exactly one encoder feeding the backbone");
    c.vit_module = feeders[0];
    const auto& v = m.module(c.vit_module);
    const auto& l = m.module(c.llm_module);
    if (v.output_tokens_per_input_token != 0.25 || !l.vocab || v.hidden % v.heads != 0 || l.hidden % l.heads != 0)
      throw pw::input_error("toy_vlm needs a 2x2-merge encoder and a backbone with a vocabulary");
    c.vit_layers = v.layers;
    c.vit_hidden = static_cast<int>(v.hidden);
    c.vit_ffn = static_cast<int>(v.ffn_hidden);
    c.vit_heads = v.heads;
    c.llm_layers = l.layers;
    c.llm_hidden = static_cast<int>(l.hidden);
    c.llm_ffn = static_cast<int>(l.ffn_hidden);
    c.llm_heads = l.heads;
    c.vocab = static_cast<int>(*l.vocab);
    return c;
  }
};

/// splitmix64: the same numbers on every platform (no std:: distributions).
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }     // [0, 1)
  double symmetric() { return 2.0 * uniform() - 1.0; }                           // [-1, 1)
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
};

// ---- dense helpers (row-major) ---------------------------------------------------------

namespace detail {

// C[n x m] = A[n x k] W[k x m]
template <class T>
void mm(const T* A, const T* W, T* C, int n, int k, int m) {
  for (int i = 0; i < n; ++i) {
    T* c = C + static_cast<std::ptrdiff_t>(i) * m;
    std::fill(c, c + m, T(0));
    for (int kk = 0; kk < k; ++kk) {
      const T a = A[static_cast<std::ptrdiff_t>(i) * k + kk];
      const T* w = W + static_cast<std::ptrdiff_t>(kk) * m;
      for (int j = 0; j < m; ++j) c[j] += a * w[j];
    }
  }
}
// dA[n x k] += dC[n x m] W^T
template <class T>
void mm_da(const T* dC, const T* W, T* dA, int n, int k, int m) {
  for (int i = 0; i < n; ++i)
    for (int kk = 0; kk < k; ++kk) {
      const T* d = dC + static_cast<std::ptrdiff_t>(i) * m;
      const T* w = W + static_cast<std::ptrdiff_t>(kk) * m;
      T s = 0;
      for (int j = 0; j < m; ++j) s += d[j] * w[j];
      dA[static_cast<std::ptrdiff_t>(i) * k + kk] += s;
    }
}
// dW[k x m] += A^T dC, per item in T, added into double accumulators
template <class T>
void mm_dw(const T* A, const T* dC, double* dW, int n, int k, int m) {
  std::vector<T> acc(static_cast<std::size_t>(k) * static_cast<std::size_t>(m), T(0));
  for (int i = 0; i < n; ++i)
    for (int kk = 0; kk < k; ++kk) {
      const T a = A[static_cast<std::ptrdiff_t>(i) * k + kk];
      const T* d = dC + static_cast<std::ptrdiff_t>(i) * m;
      T* out = acc.data() + static_cast<std::ptrdiff_t>(kk) * m;
      for (int j = 0; j < m; ++j) out[j] += a * d[j];
    }
  for (std::size_t i = 0; i < acc.size(); ++i) dW[i] += static_cast<double>(acc[i]);
}

constexpr double rms_eps = 1e-5;

// y = g * x / sqrt(mean(x^2) + eps) per row; r = 1/sqrt(...) kept for the backward.
template <class T>
void rms_fwd(const T* x, const T* g, T* y, T* r, int n, int d) {
  for (int i = 0; i < n; ++i) {
    const T* xi = x + static_cast<std::ptrdiff_t>(i) * d;
    T ss = 0;
    for (int j = 0; j < d; ++j) ss += xi[j] * xi[j];
    const T ri = T(1) / std::sqrt(ss / T(d) + T(rms_eps));
    r[i] = ri;
    for (int j = 0; j < d; ++j) y[static_cast<std::ptrdiff_t>(i) * d + j] = g[j] * xi[j] * ri;
  }
}
// dx += r (dy*g - xhat * <dy*g, xhat> / d);  dg += sum_rows dy * xhat (dg: nullptr to skip it)
template <class T>
void rms_bwd(const T* x, const T* g, const T* r, const T* dy, T* dx, double* dg, int n, int d) {
  std::vector<T> gacc(static_cast<std::size_t>(d), T(0));
  for (int i = 0; i < n; ++i) {
    const T* xi = x + static_cast<std::ptrdiff_t>(i) * d;
    const T* dyi = dy + static_cast<std::ptrdiff_t>(i) * d;
    const T ri = r[i];
    T dot = 0;
    for (int j = 0; j < d; ++j) dot += dyi[j] * g[j] * xi[j] * ri;
    for (int j = 0; j < d; ++j) {
      const T xhat = xi[j] * ri;
      gacc[static_cast<std::size_t>(j)] += dyi[j] * xhat;
      dx[static_cast<std::ptrdiff_t>(i) * d + j] += ri * (dyi[j] * g[j] - xhat * dot / T(d));
    }
  }
  if (dg != nullptr)
    for (int j = 0; j < d; ++j) dg[j] += static_cast<double>(gacc[static_cast<std::size_t>(j)]);
}

// gelu (tanh form) and its derivative
template <class T>
T gelu(T u) {
  const T c = T(0.7978845608028654);
  return T(0.5) * u * (T(1) + std::tanh(c * (u + T(0.044715) * u * u * u)));
}
template <class T>
T gelu_grad(T u) {
  const T c = T(0.7978845608028654);
  const T t = std::tanh(c * (u + T(0.044715) * u * u * u));
  return T(0.5) * (T(1) + t) + T(0.5) * u * (T(1) - t * t) * c * (T(1) + T(3) * T(0.044715) * u * u);
}
template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace detail

// ---- parameters and layers -------------------------------------------------------------

/// Which gradients a backward computes: both (Pass::backward), the input's only
/// (Pass::backward_input) or the parameters' only (Pass::backward_weight). Both parts run the
/// same float operations as the whole backward, each keeping its own results, so a split
/// backward accumulates exactly the whole backward's gradients.
enum class Part { both, input, weight };

template <class T>
struct Param {
  std::vector<T> w;
  std::vector<double> g;  ///< gradient accumulator (double: order-independent to rounding)
  void init(std::size_t n, Rng& rng, double scale) {
    w.resize(n);
    for (auto& v : w) v = static_cast<T>(scale * rng.symmetric());
    g.assign(n, 0.0);
  }
  void init_const(std::size_t n, double v) {
    w.assign(n, static_cast<T>(v));
    g.assign(n, 0.0);
  }
};

/// One pre-norm transformer layer: x2 = x + Attn(RMS1(x)); y = x2 + MLP(RMS2(x2)).
template <class T>
struct Block {
  int d = 0, f = 0, heads = 0;
  bool causal = false, swiglu = false;
  Param<T> n1, wq, wk, wv, wo, n2, w1, w2, w3;  // w1: up (gelu) or gate (swiglu); w3: swiglu up

  void init(int d_, int f_, int heads_, bool causal_, bool swiglu_, Rng& rng) {
    d = d_, f = f_, heads = heads_, causal = causal_, swiglu = swiglu_;
    const auto D = static_cast<std::size_t>(d), F = static_cast<std::size_t>(f);
    const double sd = 1.0 / std::sqrt(static_cast<double>(d)), sf = 1.0 / std::sqrt(static_cast<double>(f));
    n1.init_const(D, 1.0);
    wq.init(D * D, rng, sd);
    wk.init(D * D, rng, sd);
    wv.init(D * D, rng, sd);
    wo.init(D * D, rng, sd);
    n2.init_const(D, 1.0);
    w1.init(D * F, rng, sd);
    w2.init(F * D, rng, sf);
    if (swiglu) w3.init(D * F, rng, sd);
  }
  void collect(std::vector<Param<T>*>& out) {
    for (Param<T>* p : {&n1, &wq, &wk, &wv, &wo, &n2, &w1, &w2}) out.push_back(p);
    if (swiglu) out.push_back(&w3);
  }
};

template <class T>
struct BlockCache {
  std::vector<T> x, h1, r1, q, k, v, p, o, x2, h2, r2, u, up, act;
};

template <class T>
void block_forward(const Block<T>& b, const T* x, int n, T* y, BlockCache<T>& c) {
  using namespace detail;
  const int d = b.d, f = b.f, H = b.heads, dh = d / H;
  const auto nd = static_cast<std::size_t>(n) * static_cast<std::size_t>(d);
  const auto nf = static_cast<std::size_t>(n) * static_cast<std::size_t>(f);
  c.x.assign(x, x + nd);
  c.h1.resize(nd);
  c.r1.resize(static_cast<std::size_t>(n));
  rms_fwd(x, b.n1.w.data(), c.h1.data(), c.r1.data(), n, d);
  c.q.resize(nd), c.k.resize(nd), c.v.resize(nd);
  mm(c.h1.data(), b.wq.w.data(), c.q.data(), n, d, d);
  mm(c.h1.data(), b.wk.w.data(), c.k.data(), n, d, d);
  mm(c.h1.data(), b.wv.w.data(), c.v.data(), n, d, d);
  c.p.assign(static_cast<std::size_t>(H) * static_cast<std::size_t>(n) * static_cast<std::size_t>(n), T(0));
  c.o.assign(nd, T(0));
  const T scale = T(1) / std::sqrt(T(dh));
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < n; ++i) {
      const int lim = b.causal ? i + 1 : n;
      T* p = c.p.data() + (static_cast<std::size_t>(h) * static_cast<std::size_t>(n) + static_cast<std::size_t>(i)) * static_cast<std::size_t>(n);
      T mx = -INFINITY;
      for (int j = 0; j < lim; ++j) {
        T s = 0;
        for (int e = 0; e < dh; ++e) s += c.q[static_cast<std::size_t>(i * d + h * dh + e)] * c.k[static_cast<std::size_t>(j * d + h * dh + e)];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      T sum = 0;
      for (int j = 0; j < lim; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int j = 0; j < lim; ++j) p[j] /= sum;
      for (int j = 0; j < lim; ++j)
        for (int e = 0; e < dh; ++e) c.o[static_cast<std::size_t>(i * d + h * dh + e)] += p[j] * c.v[static_cast<std::size_t>(j * d + h * dh + e)];
    }
  c.x2.resize(nd);
  mm(c.o.data(), b.wo.w.data(), c.x2.data(), n, d, d);
  for (std::size_t i = 0; i < nd; ++i) c.x2[i] += x[i];
  c.h2.resize(nd);
  c.r2.resize(static_cast<std::size_t>(n));
  rms_fwd(c.x2.data(), b.n2.w.data(), c.h2.data(), c.r2.data(), n, d);
  c.u.resize(nf);
  c.act.resize(nf);
  mm(c.h2.data(), b.w1.w.data(), c.u.data(), n, d, f);
  if (b.swiglu) {
    c.up.resize(nf);
    mm(c.h2.data(), b.w3.w.data(), c.up.data(), n, d, f);
    for (std::size_t i = 0; i < nf; ++i) c.act[i] = c.u[i] * sigmoid(c.u[i]) * c.up[i];
  } else {
    for (std::size_t i = 0; i < nf; ++i) c.act[i] = gelu(c.u[i]);
  }
  mm(c.act.data(), b.w2.w.data(), y, n, f, d);
  for (std::size_t i = 0; i < nd; ++i) y[i] += c.x2[i];
}

/// dx = d(layer)/dx^T dy (written, not added); parameter gradients accumulated unless
/// `weights` is false.
template <class T>
void block_backward(Block<T>& b, const BlockCache<T>& c, int n, const T* dy, T* dx, bool weights = true) {
  using namespace detail;
  auto dw = [weights](const T* A, const T* dC, Param<T>& p, int rows, int k, int m) {
    if (weights) mm_dw(A, dC, p.g.data(), rows, k, m);
  };
  auto dg = [weights](Param<T>& p) { return weights ? p.g.data() : nullptr; };
  const int d = b.d, f = b.f, H = b.heads, dh = d / H;
  const auto nd = static_cast<std::size_t>(n) * static_cast<std::size_t>(d);
  const auto nf = static_cast<std::size_t>(n) * static_cast<std::size_t>(f);
  // MLP
  dw(c.act.data(), dy, b.w2, n, f, d);
  std::vector<T> dact(nf, T(0)), du(nf), dh2(nd, T(0));
  mm_da(dy, b.w2.w.data(), dact.data(), n, f, d);
  if (b.swiglu) {
    std::vector<T> dup(nf);
    for (std::size_t i = 0; i < nf; ++i) {
      const T s = sigmoid(c.u[i]);
      du[i] = dact[i] * c.up[i] * s * (T(1) + c.u[i] * (T(1) - s));
      dup[i] = dact[i] * c.u[i] * s;
    }
    dw(c.h2.data(), dup.data(), b.w3, n, d, f);
    mm_da(dup.data(), b.w3.w.data(), dh2.data(), n, d, f);
  } else {
    for (std::size_t i = 0; i < nf; ++i) du[i] = dact[i] * gelu_grad(c.u[i]);
  }
  dw(c.h2.data(), du.data(), b.w1, n, d, f);
  mm_da(du.data(), b.w1.w.data(), dh2.data(), n, d, f);
  std::vector<T> dx2(dy, dy + nd);
  rms_bwd(c.x2.data(), b.n2.w.data(), c.r2.data(), dh2.data(), dx2.data(), dg(b.n2), n, d);
  // attention
  dw(c.o.data(), dx2.data(), b.wo, n, d, d);
  std::vector<T> dout(nd, T(0)), dq(nd, T(0)), dk(nd, T(0)), dv(nd, T(0));
  mm_da(dx2.data(), b.wo.w.data(), dout.data(), n, d, d);
  const T scale = T(1) / std::sqrt(T(dh));
  std::vector<T> dp(static_cast<std::size_t>(n));
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < n; ++i) {
      const int lim = b.causal ? i + 1 : n;
      const T* p = c.p.data() + (static_cast<std::size_t>(h) * static_cast<std::size_t>(n) + static_cast<std::size_t>(i)) * static_cast<std::size_t>(n);
      T dot = 0;
      for (int j = 0; j < lim; ++j) {
        T s = 0;
        for (int e = 0; e < dh; ++e) {
          const auto oi = static_cast<std::size_t>(i * d + h * dh + e), vj = static_cast<std::size_t>(j * d + h * dh + e);
          s += dout[oi] * c.v[vj];
          dv[vj] += p[j] * dout[oi];
        }
        dp[static_cast<std::size_t>(j)] = s;
        dot += p[j] * s;
      }
      for (int j = 0; j < lim; ++j) {
        const T ds = p[j] * (dp[static_cast<std::size_t>(j)] - dot) * scale;
        for (int e = 0; e < dh; ++e) {
          const auto qi = static_cast<std::size_t>(i * d + h * dh + e), kj = static_cast<std::size_t>(j * d + h * dh + e);
          dq[qi] += ds * c.k[kj];
          dk[kj] += ds * c.q[qi];
        }
      }
    }
  std::vector<T> dh1(nd, T(0));
  dw(c.h1.data(), dq.data(), b.wq, n, d, d);
  dw(c.h1.data(), dk.data(), b.wk, n, d, d);
  dw(c.h1.data(), dv.data(), b.wv, n, d, d);
  mm_da(dq.data(), b.wq.w.data(), dh1.data(), n, d, d);
  mm_da(dk.data(), b.wk.w.data(), dh1.data(), n, d, d);
  mm_da(dv.data(), b.wv.w.data(), dh1.data(), n, d, d);
  std::copy(dx2.begin(), dx2.end(), dx);
  rms_bwd(c.x.data(), b.n1.w.data(), c.r1.data(), dh1.data(), dx, dg(b.n1), n, d);
}

// ---- the model ---------------------------------------------------------------------------

template <class T>
class Model {
 public:
  Config cfg;
  Param<T> patch_embed;  ///< patch_dim x Dv
  std::vector<Block<T>> vit;
  Param<T> vit_norm;     ///< Dv
  Param<T> merge_proj;   ///< 4 Dv x Dl
  Param<T> embed;        ///< V x Dl
  std::vector<Block<T>> llm;
  Param<T> llm_norm;     ///< Dl
  Param<T> head;         ///< Dl x V
  double loss_scale = 1.0;  ///< multiplies each predicted token's cross-entropy

  Model(const Config& c, std::uint64_t seed) : cfg(c) {
    Rng rng{seed};
    const auto Dv = static_cast<std::size_t>(c.vit_hidden), Dl = static_cast<std::size_t>(c.llm_hidden);
    patch_embed.init(static_cast<std::size_t>(c.patch_dim) * Dv, rng, 1.0 / std::sqrt(double(c.patch_dim)));
    vit.resize(static_cast<std::size_t>(c.vit_layers));
    for (auto& b : vit) b.init(c.vit_hidden, c.vit_ffn, c.vit_heads, false, false, rng);
    vit_norm.init_const(Dv, 1.0);
    merge_proj.init(4 * Dv * Dl, rng, 1.0 / std::sqrt(4.0 * double(Dv)));
    embed.init(static_cast<std::size_t>(c.vocab) * Dl, rng, 1.0);
    llm.resize(static_cast<std::size_t>(c.llm_layers));
    for (auto& b : llm) b.init(c.llm_hidden, c.llm_ffn, c.llm_heads, true, true, rng);
    llm_norm.init_const(Dl, 1.0);
    head.init(Dl * static_cast<std::size_t>(c.vocab), rng, 1.0 / std::sqrt(double(Dl)));
  }

  /// Every parameter, in a fixed order.
  std::vector<Param<T>*> params() {
    std::vector<Param<T>*> out{&patch_embed};
    for (auto& b : vit) b.collect(out);
    out.push_back(&vit_norm);
    out.push_back(&merge_proj);
    out.push_back(&embed);
    for (auto& b : llm) b.collect(out);
    out.push_back(&llm_norm);
    out.push_back(&head);
    return out;
  }
  void zero_grad() {
    for (auto* p : params()) std::fill(p->g.begin(), p->g.end(), 0.0);
  }
  void sgd(double lr) {
    for (auto* p : params())
      for (std::size_t i = 0; i < p->w.size(); ++i) p->w[i] = static_cast<T>(static_cast<double>(p->w[i]) - lr * p->g[i]);
  }

  // --- ViT chunk [first, first + count) on one image of n patches ---
  /// Output rows and width of a ViT chunk for an image of n patches.
  [[nodiscard]] std::size_t vit_out_floats(int first, int count, int n) const {
    if (first + count == cfg.vit_layers) return static_cast<std::size_t>(merged(n)) * static_cast<std::size_t>(cfg.llm_hidden);
    return static_cast<std::size_t>(n) * static_cast<std::size_t>(cfg.vit_hidden);
  }
  [[nodiscard]] static int merged(int n) { return (n + Config::merge - 1) / Config::merge; }

  /// in: patches (n x patch_dim) when first == 0, else tokens (n x Dv). out: vit_out_floats.
  void vit_forward(int first, int count, const T* in, int n, T* out) const {
    std::vector<T> x;
    std::vector<BlockCache<T>> caches;
    vit_run(first, count, in, n, x, caches);
    if (first + count == cfg.vit_layers) {
      std::vector<T> h, r, z;
      vit_merge_fwd(x, n, h, r, z, out);
    } else {
      std::copy(x.begin(), x.end(), out);
    }
  }
  /// Recomputes the chunk from `in`; accumulates parameter gradients (unless part is input) and
  /// writes din (n x Dv) when non-null, first > 0 and part is not weight.
  void vit_backward(int first, int count, const T* in, int n, const T* dout, T* din, Part part = Part::both) {
    const bool weights = part != Part::input;
    if (part == Part::weight) din = nullptr;
    using namespace detail;
    const int Dv = cfg.vit_hidden, Dl = cfg.llm_hidden, m = merged(n);
    std::vector<T> x;
    std::vector<BlockCache<T>> caches;
    vit_run(first, count, in, n, x, caches);
    std::vector<T> dx;
    if (first + count == cfg.vit_layers) {
      std::vector<T> h, r, z, out(static_cast<std::size_t>(m) * static_cast<std::size_t>(Dl));
      vit_merge_fwd(x, n, h, r, z, out.data());
      if (weights) mm_dw(z.data(), dout, merge_proj.g.data(), m, 4 * Dv, Dl);
      std::vector<T> dz(z.size(), T(0)), dh(x.size(), T(0));
      mm_da(dout, merge_proj.w.data(), dz.data(), m, 4 * Dv, Dl);
      for (int t = 0; t < n; ++t)
        for (int e = 0; e < Dv; ++e) dh[static_cast<std::size_t>(t * Dv + e)] = dz[static_cast<std::size_t>((t / 4) * 4 * Dv + (t % 4) * Dv + e)];
      dx.assign(x.size(), T(0));
      rms_bwd(x.data(), vit_norm.w.data(), r.data(), dh.data(), dx.data(), weights ? vit_norm.g.data() : nullptr, n, Dv);
    } else {
      dx.assign(dout, dout + x.size());
    }
    std::vector<T> prev(dx.size());
    for (int l = first + count - 1; l >= first; --l) {
      block_backward(vit[static_cast<std::size_t>(l)], caches[static_cast<std::size_t>(l - first)], n, dx.data(), prev.data(), weights);
      dx.swap(prev);
    }
    if (first == 0 && weights) mm_dw(in, dx.data(), patch_embed.g.data(), n, cfg.patch_dim, Dv);
    else if (first > 0 && din != nullptr) std::copy(dx.begin(), dx.end(), din);
  }

  // --- LLM chunk [first, first + count) on one sample: n_img image tokens, then the text ---
  [[nodiscard]] std::size_t llm_out_floats(int first, int count, int n) const {
    if (first + count == cfg.llm_layers) return 0;  // the last chunk ends in the loss
    return static_cast<std::size_t>(n) * static_cast<std::size_t>(cfg.llm_hidden);
  }
  /// in: the sample's merged image tokens (n_img x Dl) when first == 0, else its sequence
  /// (n x Dl), n = n_img + text.size(). Returns the chunk's loss (0 unless it is the last).
  double llm_forward(int first, int count, const T* in, int n_img, std::span<const int> text, T* out) const {
    std::vector<T> x;
    std::vector<BlockCache<T>> caches;
    llm_run(first, count, in, n_img, text, x, caches);
    if (first + count == cfg.llm_layers) {
      std::vector<T> h, r, logits;
      return llm_loss(x, n_img, text, h, r, logits, nullptr);
    }
    if (out == nullptr) throw std::invalid_argument("toy_vlm: llm_forward of a middle chunk needs an output");
    std::copy(x.begin(), x.end(), out);
    return 0.0;
  }
  /// din: the gradient of `in` (image rows when first == 0), written when non-null and part is
  /// not weight; parameter gradients accumulated unless part is input.
  void llm_backward(int first, int count, const T* in, int n_img, std::span<const int> text, const T* dout, T* din,
                    Part part = Part::both) {
    const bool weights = part != Part::input;
    if (part == Part::weight) din = nullptr;
    using namespace detail;
    const int Dl = cfg.llm_hidden, n = n_img + static_cast<int>(text.size());
    std::vector<T> x;
    std::vector<BlockCache<T>> caches;
    llm_run(first, count, in, n_img, text, x, caches);
    std::vector<T> dx;
    if (first + count == cfg.llm_layers) {
      std::vector<T> h, r, logits, dlogits;
      llm_loss(x, n_img, text, h, r, logits, &dlogits);
      if (weights) mm_dw(h.data(), dlogits.data(), head.g.data(), n, Dl, cfg.vocab);
      std::vector<T> dh(x.size(), T(0));
      mm_da(dlogits.data(), head.w.data(), dh.data(), n, Dl, cfg.vocab);
      dx.assign(x.size(), T(0));
      rms_bwd(x.data(), llm_norm.w.data(), r.data(), dh.data(), dx.data(), weights ? llm_norm.g.data() : nullptr, n, Dl);
    } else {
      dx.assign(dout, dout + x.size());
    }
    std::vector<T> prev(dx.size());
    for (int l = first + count - 1; l >= first; --l) {
      block_backward(llm[static_cast<std::size_t>(l)], caches[static_cast<std::size_t>(l - first)], n, dx.data(), prev.data(), weights);
      dx.swap(prev);
    }
    if (first == 0) {
      for (std::size_t j = 0; j < text.size() && weights; ++j) {
        const T* g = dx.data() + (static_cast<std::size_t>(n_img) + j) * static_cast<std::size_t>(Dl);
        double* e = embed.g.data() + static_cast<std::size_t>(text[j]) * static_cast<std::size_t>(Dl);
        for (int k = 0; k < Dl; ++k) e[k] += static_cast<double>(g[k]);
      }
      if (din != nullptr) std::copy(dx.begin(), dx.begin() + static_cast<std::ptrdiff_t>(n_img) * Dl, din);
    } else if (din != nullptr) {
      std::copy(dx.begin(), dx.end(), din);
    }
  }

 private:
  void vit_run(int first, int count, const T* in, int n, std::vector<T>& x, std::vector<BlockCache<T>>& caches) const {
    const auto nd = static_cast<std::size_t>(n) * static_cast<std::size_t>(cfg.vit_hidden);
    x.resize(nd);
    if (first == 0) detail::mm(in, patch_embed.w.data(), x.data(), n, cfg.patch_dim, cfg.vit_hidden);
    else std::copy(in, in + nd, x.begin());
    run_blocks(vit, first, count, n, x, caches);
  }
  void vit_merge_fwd(const std::vector<T>& x, int n, std::vector<T>& h, std::vector<T>& r, std::vector<T>& z, T* out) const {
    const int Dv = cfg.vit_hidden, m = merged(n);
    h.resize(x.size());
    r.resize(static_cast<std::size_t>(n));
    detail::rms_fwd(x.data(), vit_norm.w.data(), h.data(), r.data(), n, Dv);
    z.assign(static_cast<std::size_t>(m) * 4 * static_cast<std::size_t>(Dv), T(0));
    std::copy(h.begin(), h.end(), z.begin());  // row t of h is part (t % 4) of merged row t / 4
    detail::mm(z.data(), merge_proj.w.data(), out, m, 4 * Dv, cfg.llm_hidden);
  }
  void llm_run(int first, int count, const T* in, int n_img, std::span<const int> text, std::vector<T>& x,
               std::vector<BlockCache<T>>& caches) const {
    const int Dl = cfg.llm_hidden, n = n_img + static_cast<int>(text.size());
    x.resize(static_cast<std::size_t>(n) * static_cast<std::size_t>(Dl));
    if (first == 0) {
      std::copy(in, in + static_cast<std::ptrdiff_t>(n_img) * Dl, x.begin());
      for (std::size_t j = 0; j < text.size(); ++j) {
        const int tok = text[j];
        if (tok < 0 || tok >= cfg.vocab) throw std::out_of_range("toy_vlm: token id out of the vocabulary");
        std::copy_n(embed.w.data() + static_cast<std::size_t>(tok) * static_cast<std::size_t>(Dl), Dl,
                    x.begin() + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(n_img) + j) * static_cast<std::size_t>(Dl)));
      }
    } else {
      std::copy(in, in + x.size(), x.begin());
    }
    run_blocks(llm, first, count, n, x, caches);
  }
  double llm_loss(const std::vector<T>& x, int n_img, std::span<const int> text, std::vector<T>& h, std::vector<T>& r,
                  std::vector<T>& logits, std::vector<T>* dlogits) const {
    const int Dl = cfg.llm_hidden, V = cfg.vocab, n = n_img + static_cast<int>(text.size());
    h.resize(x.size());
    r.resize(static_cast<std::size_t>(n));
    detail::rms_fwd(x.data(), llm_norm.w.data(), h.data(), r.data(), n, Dl);
    logits.resize(static_cast<std::size_t>(n) * static_cast<std::size_t>(V));
    detail::mm(h.data(), head.w.data(), logits.data(), n, Dl, V);
    if (dlogits) dlogits->assign(logits.size(), T(0));
    double loss = 0;
    const T scale = static_cast<T>(loss_scale);
    for (std::size_t j = 0; j + 1 < text.size(); ++j) {  // position of text token j predicts token j+1
      const std::size_t row = static_cast<std::size_t>(n_img) + j;
      const T* l = logits.data() + row * static_cast<std::size_t>(V);
      T mx = l[0];
      for (int v = 1; v < V; ++v) mx = std::max(mx, l[v]);
      T sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
      const int target = text[j + 1];
      const T lse = mx + std::log(sum);
      loss += static_cast<double>((lse - l[target]) * scale);
      if (dlogits) {
        T* d = dlogits->data() + row * static_cast<std::size_t>(V);
        for (int v = 0; v < V; ++v) d[v] = std::exp(l[v] - lse) * scale;
        d[target] -= scale;
      }
    }
    return loss;
  }
  static void run_blocks(const std::vector<Block<T>>& blocks, int first, int count, int n, std::vector<T>& x,
                         std::vector<BlockCache<T>>& caches) {
    caches.resize(static_cast<std::size_t>(count));
    std::vector<T> y(x.size());
    for (int l = first; l < first + count; ++l) {
      block_forward(blocks[static_cast<std::size_t>(l)], x.data(), n, y.data(), caches[static_cast<std::size_t>(l - first)]);
      x.swap(y);
    }
  }
};

// ---- a tiny deterministic synthetic dataset ---------------------------------------------

struct ToySample {
  std::vector<int> text;
  std::vector<std::vector<float>> images;  ///< per image: n x patch_dim patch vectors
};

/// One step: the planner's metadata (`meta`) and the data itself, same shapes.
struct ToyBatch {
  pw::Batch meta;
  std::vector<std::vector<ToySample>> samples;  ///< [microbatch][sample]
  int predicted_tokens = 0;                     ///< text tokens that have a successor (the loss's count)

  [[nodiscard]] const ToySample& sample(pw::MicrobatchId mb, std::int32_t s) const {
    return samples.at(mb.index()).at(static_cast<std::size_t>(s));
  }
};

struct DatasetOptions {
  int microbatches = 4;
  int samples_per_microbatch = 3;
  int min_text = 6, max_text = 12;
  int max_images = 2;                      ///< 0 .. max_images per sample
  int min_image_tokens = 6, max_image_tokens = 18;
};

/// Samples from a seeded generator: text follows t[j+1] = (5 t[j] + 3 + images) mod vocab from
/// a random first token (learnable, and it needs the images); patches are uniform in [-1, 1).
inline ToyBatch make_batch(const Config& cfg, std::uint64_t seed, const DatasetOptions& o = {}) {
  Rng rng{seed};
  ToyBatch b;
  b.samples.resize(static_cast<std::size_t>(o.microbatches));
  for (int mb = 0; mb < o.microbatches; ++mb) {
    pw::Microbatch meta;
    for (int s = 0; s < o.samples_per_microbatch; ++s) {
      ToySample sm;
      const int images = rng.below(o.max_images + 1);
      for (int i = 0; i < images; ++i) {
        const int n = o.min_image_tokens + rng.below(o.max_image_tokens - o.min_image_tokens + 1);
        std::vector<float> patches(static_cast<std::size_t>(n) * static_cast<std::size_t>(cfg.patch_dim));
        for (auto& v : patches) v = static_cast<float>(rng.symmetric());
        sm.images.push_back(std::move(patches));
      }
      const int len = o.min_text + rng.below(o.max_text - o.min_text + 1);
      int tok = rng.below(cfg.vocab);
      for (int j = 0; j < len; ++j) {
        sm.text.push_back(tok);
        tok = (5 * tok + 3 + images) % cfg.vocab;
      }
      b.predicted_tokens += len - 1;
      pw::Sample s_meta;
      s_meta.text = len;
      if (images > 0) {
        pw::SampleItems it{"image", {}};
        for (const auto& im : sm.images) it.tokens.push_back(static_cast<std::int64_t>(im.size()) / cfg.patch_dim);
        s_meta.items.push_back(std::move(it));
      }
      meta.samples.push_back(std::move(s_meta));
      b.samples[static_cast<std::size_t>(mb)].push_back(std::move(sm));
    }
    b.meta.microbatches.push_back(std::move(meta));
  }
  return b;
}

/// `b` with its samples regrouped: microbatch mb of the result holds samples origin[mb][0],
/// origin[mb][1], ... of `b` (a planner's PlanResult::sample_origin). The same samples, so the
/// same loss scale. Throws std::invalid_argument unless `origin` names every sample exactly once.
inline ToyBatch regroup(const ToyBatch& b, const std::vector<std::vector<pw::SampleOrigin>>& origin) {
  std::vector<std::vector<char>> used(b.samples.size());
  std::size_t total = 0, named = 0;
  for (std::size_t mb = 0; mb < b.samples.size(); ++mb) {
    used[mb].assign(b.samples[mb].size(), 0);
    total += b.samples[mb].size();
  }
  ToyBatch out;
  out.predicted_tokens = b.predicted_tokens;
  out.meta.truncated_samples = b.meta.truncated_samples;
  for (const auto& group : origin) {
    out.samples.emplace_back();
    out.meta.microbatches.emplace_back();
    for (const pw::SampleOrigin& o : group) {
      const auto mb = static_cast<std::size_t>(o.microbatch), s = static_cast<std::size_t>(o.sample);
      if (o.microbatch < 0 || o.sample < 0 || mb >= b.samples.size() || s >= b.samples[mb].size() || used[mb][s])
        throw std::invalid_argument("toy_vlm: a regrouping names a sample twice or one the step lacks");
      used[mb][s] = 1;
      ++named;
      out.samples.back().push_back(b.samples[mb][s]);
      out.meta.microbatches.back().samples.push_back(b.meta.microbatches.at(mb).samples.at(s));
    }
  }
  if (named != total) throw std::invalid_argument("toy_vlm: a regrouping leaves samples out");
  return out;
}

/// The merged image tokens a sample hands the LLM.
inline int image_tokens(const Config& cfg, const ToySample& s) {
  int n = 0;
  for (const auto& im : s.images) n += Model<float>::merged(static_cast<int>(im.size()) / cfg.patch_dim);
  return n;
}

/// The sequential reference: the whole step without a pipeline, sample by sample. Adds the
/// step's gradients to the model's accumulators and returns the loss.
template <class T>
double reference_step(Model<T>& model, const ToyBatch& batch) {
  const Config& c = model.cfg;
  model.loss_scale = 1.0 / batch.predicted_tokens;
  double loss = 0;
  for (const auto& mb : batch.samples)
    for (const ToySample& s : mb) {
      std::vector<std::vector<T>> patches, merged_tokens;
      std::vector<T> seq;  // merged image tokens in image order
      for (const auto& im : s.images) {
        const int n = static_cast<int>(im.size()) / c.patch_dim;
        patches.emplace_back(im.begin(), im.end());
        std::vector<T> out(model.vit_out_floats(0, c.vit_layers, n));
        model.vit_forward(0, c.vit_layers, patches.back().data(), n, out.data());
        seq.insert(seq.end(), out.begin(), out.end());
      }
      const int n_img = image_tokens(c, s);
      loss += model.llm_forward(0, c.llm_layers, seq.data(), n_img, s.text, nullptr);
      std::vector<T> dseq(seq.size());
      model.llm_backward(0, c.llm_layers, seq.data(), n_img, s.text, nullptr, dseq.empty() ? nullptr : dseq.data());
      std::size_t off = 0;
      for (std::size_t i = 0; i < s.images.size(); ++i) {
        const int n = static_cast<int>(s.images[i].size()) / c.patch_dim;
        const std::size_t len = model.vit_out_floats(0, c.vit_layers, n);
        model.vit_backward(0, c.vit_layers, patches[i].data(), n, dseq.data() + off, nullptr);
        off += len;
      }
    }
  return loss;
}

// ---- stage callbacks for the executor ---------------------------------------------------

/// Runs tiny-vlm stages on the executor's buffers (float32). Each chunk's parameters are
/// touched by the one rank holding the chunk; losses are summed per rank.
class Callbacks {
 public:
  Callbacks(Model<float>& model, const ToyBatch& batch, int ranks)
      : model_(&model), batch_(&batch), loss_(static_cast<std::size_t>(ranks), 0.0) {
    model.loss_scale = 1.0 / batch.predicted_tokens;
  }

  /// Bytes of an item of a forward stage's output (for ExecutorOptions::sizes).
  [[nodiscard]] pw::BufferSizes sizes() const {
    pw::BufferSizes s;
    const Model<float>* m = model_;
    s.item_output_bytes = [m](const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, std::size_t item) -> std::size_t {
      const int n = static_cast<int>(smb.item_tokens()[item]);
      if (st.module() == m->cfg.vit_module) return sizeof(float) * m->vit_out_floats(st.first_layer(), st.layer_count(), n);
      return sizeof(float) * m->llm_out_floats(st.first_layer(), st.layer_count(), n);
    };
    return s;
  }

  void forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) { run(st, smb, io, false); }
  void backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) { run(st, smb, io, true); }

  /// Loss of the step (sum over ranks); reset by reset_loss().
  [[nodiscard]] double loss() const {
    double l = 0;
    for (double v : loss_) l += v;
    return l;
  }
  void reset_loss() { std::fill(loss_.begin(), loss_.end(), 0.0); }

 private:
  static float* f32(std::span<std::byte> b, std::size_t byte_offset) { return reinterpret_cast<float*>(b.data() + byte_offset); }
  static const float* f32(std::span<const std::byte> b, std::size_t byte_offset) {
    return reinterpret_cast<const float*>(b.data() + byte_offset);
  }

  void run(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io, bool backward) {
    Model<float>& m = *model_;
    const Config& c = m.cfg;
    const int first = st.first_layer(), count = st.layer_count();
    const auto tokens = smb.item_tokens();
    const auto items = smb.items();
    const bool vit = st.module() == c.vit_module;
    const Part part = st.pass() == pw::Pass::backward_input ? Part::input : st.pass() == pw::Pass::backward_weight ? Part::weight : Part::both;
    std::size_t in_off = 0, out_off = 0;
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const int n = static_cast<int>(tokens[k]);
      const ToySample& sample = batch_->sample(smb.microbatch(), items[k].sample);
      if (vit) {
        const std::size_t out_bytes = sizeof(float) * m.vit_out_floats(first, count, n);
        const std::size_t in_bytes = first == 0 ? 0 : sizeof(float) * static_cast<std::size_t>(n) * static_cast<std::size_t>(c.vit_hidden);
        std::vector<float> patches;
        const float* in = nullptr;
        if (first == 0) {
          const auto& im = sample.images.at(static_cast<std::size_t>(items[k].item));
          if (static_cast<int>(im.size()) != n * c.patch_dim) throw std::runtime_error("toy_vlm: image shape differs from the plan");
          in = im.data();
        } else {
          in = f32(io.input, in_off);
        }
        if (!backward) {
          m.vit_forward(first, count, in, n, f32(io.output, out_off));
        } else {
          float* din = io.input_grad.empty() || first == 0 ? nullptr : f32(io.input_grad, in_off);
          m.vit_backward(first, count, in, n, f32(io.output_grad, out_off), din, part);
        }
        in_off += in_bytes;
        out_off += out_bytes;
      } else {
        const int n_img = image_tokens(c, sample);
        if (n != n_img + static_cast<int>(sample.text.size())) throw std::runtime_error("toy_vlm: sequence length differs from the plan");
        std::size_t in_bytes = 0;
        const float* in = nullptr;
        std::size_t seg_off = 0;
        if (first == 0) {  // this item's gathered image tokens: its segments are contiguous
          bool found = false;
          std::size_t total = 0;
          for (const auto& sg : io.segments)
            if (sg.consumer_item == k) {
              if (!found) seg_off = sg.offset;
              found = true;
              total += sg.bytes;
            }
          if (total != sizeof(float) * static_cast<std::size_t>(n_img) * static_cast<std::size_t>(c.llm_hidden))
            throw std::runtime_error("toy_vlm: gathered image tokens have the wrong size");
          in = n_img > 0 ? f32(io.input, seg_off) : nullptr;
        } else {
          in_bytes = sizeof(float) * static_cast<std::size_t>(n) * static_cast<std::size_t>(c.llm_hidden);
          in = f32(io.input, in_off);
        }
        const std::size_t out_bytes = sizeof(float) * m.llm_out_floats(first, count, n);
        if (!backward) {
          loss_[io.rank.index()] += m.llm_forward(first, count, in, n_img, sample.text, out_bytes ? f32(io.output, out_off) : nullptr);
        } else {
          float* din = nullptr;
          if (!io.input_grad.empty() && (first > 0 || n_img > 0)) din = f32(io.input_grad, first == 0 ? seg_off : in_off);
          const float* dout = out_bytes ? f32(io.output_grad, out_off) : nullptr;
          m.llm_backward(first, count, in, n_img, sample.text, dout, din, part);
        }
        in_off += in_bytes;
        out_off += out_bytes;
      }
    }
  }

  Model<float>* model_;
  const ToyBatch* batch_;
  std::vector<double> loss_;  // per rank: each rank's thread writes its own entry
};

}  // namespace toy_vlm
