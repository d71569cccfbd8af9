#pragma once
// Shared by the plan-IR tests (test/schedule, test/io): small models built in code, partitions,
// synthetic sub-microbatches, a tiny cost model, a seeded generator, random valid schedules and
// a lowered 1F1B plan.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/model/setup.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/ir/partition.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

namespace planir_test {

namespace pw = pipeweaver;

/// SplitMix64: a tiny, platform-independent generator.
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform-ish integer in [lo, hi].
  std::int64_t in(std::int64_t lo, std::int64_t hi) { return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1)); }
};

inline pw::ModuleSpec module(std::string name, pw::ModuleRole role, std::string modality, int layers, std::int64_t hidden = 64) {
  pw::ModuleSpec m;
  m.name = std::move(name);
  m.role = role;
  m.modality = std::move(modality);
  m.layers = layers;
  m.hidden = hidden;
  m.ffn_hidden = 4 * hidden;
  m.heads = 4;
  m.kv_heads = 4;
  return m;
}

/// Encoder "vit" (image) feeding backbone "llm" (vocab 512).
inline pw::ModelSpec vlm(int enc_layers = 4, int bb_layers = 8, bool enc_trainable = true, bool bb_trainable = true) {
  pw::ModelSpec m;
  m.name = "test-vlm";
  auto enc = module("vit", pw::ModuleRole::encoder, "image", enc_layers);
  enc.attention = pw::AttentionKind::bidirectional;
  enc.feeds = pw::ModuleId{1};
  enc.output_tokens_per_input_token = 0.25;
  enc.trainable = enc_trainable;
  auto bb = module("llm", pw::ModuleRole::backbone, "text", bb_layers, 96);
  bb.vocab = 512;
  bb.trainable = bb_trainable;
  m.modules = {enc, bb};
  return m;
}

/// Backbone "llm" feeding generator "dit" (video, cross-attention).
inline pw::ModelSpec t2v(int bb_layers = 4, int gen_layers = 6) {
  pw::ModelSpec m;
  m.name = "test-t2v";
  auto bb = module("llm", pw::ModuleRole::backbone, "text", bb_layers, 96);
  bb.vocab = 512;
  bb.feeds = pw::ModuleId{1};
  auto gen = module("dit", pw::ModuleRole::generator, "video", gen_layers);
  gen.attention = pw::AttentionKind::bidirectional;
  gen.cross_attention = true;
  m.modules = {bb, gen};
  return m;
}

/// Each module cut into chunks[i] near-equal chunks, chunk c on rank (c + offset[i]) mod P.
inline pw::Partition interleaved(const pw::ModelSpec& model, int ranks, const std::vector<int>& chunks,
                                 const std::vector<int>& offset = {}, std::vector<std::int64_t> b = {}) {
  pw::Partition p;
  p.name = "test";
  p.ranks = ranks;
  for (std::size_t m = 0; m < model.modules.size(); ++m) {
    pw::ModulePlacement pl;
    const int L = model.modules[m].layers, C = chunks[m];
    int first = 0;
    for (int c = 0; c < C; ++c) {
      const int count = L / C + (c < L % C ? 1 : 0);
      const int off = offset.empty() ? 0 : offset[m];
      pl.chunks.push_back(pw::Chunk{first, count, pw::RankId{(c + off) % ranks}});
      first += count;
    }
    pl.sub_microbatch_items = b.empty() ? 0 : b[m];
    p.modules.push_back(pl);
  }
  return p;
}

/// `per_mb[m]` sub-microbatches of module m in each of `microbatches` microbatches, each with
/// 1-3 items of random size; item origins: sample = item position (so a backbone sub-microbatch
/// k of a microbatch covers the samples its items name).
inline std::vector<pw::SubMicrobatchSpec> smbs(const pw::ModelSpec& model, int microbatches, const std::vector<int>& per_mb, Rng& rng,
                                               bool with_origins = false) {
  std::vector<pw::SubMicrobatchSpec> out;
  for (int mb = 0; mb < microbatches; ++mb)
    for (std::size_t m = 0; m < model.modules.size(); ++m)
      for (int k = 0; k < per_mb[m]; ++k) {
        std::vector<std::int64_t> tokens, ctx;
        std::vector<pw::ItemRef> items;
        const auto n = rng.in(1, 3);
        for (std::int64_t i = 0; i < n; ++i) {
          tokens.push_back(rng.in(16, 512));
          if (model.modules[m].role == pw::ModuleRole::generator) ctx.push_back(rng.in(16, 128));
          if (with_origins) items.push_back(pw::ItemRef{static_cast<std::int32_t>(k * 3 + i), 0});
        }
        out.emplace_back(pw::ModuleId{static_cast<int>(m)}, pw::MicrobatchId{mb}, tokens, ctx, items);
      }
  return out;
}

/// A deterministic toy cost model: time and bytes grow with tokens and layers.
struct TinyCost {
  std::int64_t activation_per_token_layer = 1000;
  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M& m, const pw::MemoryStrategy& st) const {
    const std::int64_t base = 10 + static_cast<std::int64_t>(s.layer_count()) * total(m);
    const std::int64_t k = s.pass() == pw::Pass::forward ? 1 : 2;
    return pw::Nanoseconds{base * k + (pw::is_backward(s.pass()) ? st.full_recompute * total(m) : 0)};
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S& s, const M& m, const pw::MemoryStrategy& st) const {
    const std::int64_t kept = std::max(1, s.layer_count() - st.full_recompute);
    return pw::Bytes{kept * total(m) * activation_per_token_layer};
  }
  template <class S, class M>
  pw::Bytes output_bytes(const S& s, const M& m) const {
    return pw::Bytes{total(m) * 2 + s.chunk() + 1};
  }
  pw::Nanoseconds transfer_time(pw::Bytes b) const { return pw::Nanoseconds{5 + b.count() / 100}; }

  template <class M>
  static std::int64_t total(const M& m) {
    std::int64_t t = 0;
    for (auto x : m.item_tokens()) t += x;
    return t;
  }
};
static_assert(pw::CostModel<TinyCost, pw::StageSpec, pw::SubMicrobatchSpec>);

/// A random per-rank order consistent with the dependencies (Kahn with random choices) and a
/// random strategy per forward/backward pair (full recompute of 0..layers).
inline pw::Schedule random_schedule(const pw::StageGraph& g, const pw::Partition& part, Rng& rng, bool random_strategies = true) {
  const std::size_t N = g.nodes.size();
  std::vector<int> pending(N);
  std::vector<pw::NodeIndex> ready;
  for (std::size_t n = 0; n < N; ++n) {
    pending[n] = static_cast<int>(g.nodes[n].inputs.size());
    if (pending[n] == 0) ready.push_back(static_cast<pw::NodeIndex>(n));
  }
  std::vector<pw::MemoryStrategy> strategy(N);
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(part.ranks));
  while (!ready.empty()) {
    const auto k = static_cast<std::size_t>(rng.in(0, static_cast<std::int64_t>(ready.size()) - 1));
    const pw::NodeIndex n = ready[k];
    ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(k));
    const auto& node = g.nodes[static_cast<std::size_t>(n)];
    pw::MemoryStrategy st;
    if (node.stage.pass == pw::Pass::forward) {
      const int layers = part.chunk(node.stage.module, node.stage.chunk).layer_count;
      if (random_strategies) st = pw::MemoryStrategy::full(static_cast<int>(rng.in(0, layers)));
    } else {
      st = strategy[static_cast<std::size_t>(g.find({node.stage.module, node.stage.chunk, node.stage.sub_microbatch, pw::Pass::forward}))];
    }
    strategy[static_cast<std::size_t>(n)] = st;
    s.ranks[node.rank.index()].push_back({n, st});
    for (pw::NodeIndex o : node.outputs)
      if (--pending[static_cast<std::size_t>(o)] == 0) ready.push_back(o);
  }
  return s;
}

/// GPipe-like order: on each rank all forwards (by sub-microbatch), then all backwards in reverse.
inline pw::Schedule gpipe_schedule(const pw::StageGraph& g, int ranks) {
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(ranks));
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    if (g.nodes[n].stage.pass == pw::Pass::forward) s.ranks[g.nodes[n].rank.index()].push_back({static_cast<pw::NodeIndex>(n), {}});
  for (std::size_t n = g.nodes.size(); n-- > 0;)
    if (g.nodes[n].stage.pass != pw::Pass::forward) s.ranks[g.nodes[n].rank.index()].push_back({static_cast<pw::NodeIndex>(n), {}});
  return s;
}

/// A backbone of P layers, chunk r on rank r, M microbatches of one 1-item sub-microbatch each,
/// in Megatron's 1F1B order (rank r: min(P-r-1, M) forwards, then one forward and one
/// backward alternately, then the remaining backwards), lowered.
inline pw::Plan one_f_one_b(const pw::ModelSpec& model, int P, int M) {
  const auto part = interleaved(model, P, {P});
  std::vector<pw::SubMicrobatchSpec> smbs;
  for (int m = 0; m < M; ++m) smbs.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{m}, std::vector<std::int64_t>{64}, std::vector<std::int64_t>{}, std::vector<pw::ItemRef>{pw::ItemRef{0, 0}});
  const auto g = pw::build_stage_graph(model, part, smbs, {});
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    const auto node = [&](int m, pw::Pass pass) { return pw::ScheduledStage{g.find({pw::ModuleId{0}, r, pw::SubMicrobatchId{m}, pass}), {}}; };
    auto& order = s.ranks[static_cast<std::size_t>(r)];
    const int warmup = std::min(P - r - 1, M);
    int f = 0, b = 0;
    while (f < warmup) order.push_back(node(f++, pw::Pass::forward));
    while (f < M) {
      order.push_back(node(f++, pw::Pass::forward));
      order.push_back(node(b++, pw::Pass::backward));
    }
    while (b < M) order.push_back(node(b++, pw::Pass::backward));
  }
  return pw::lower(model, part, smbs, g, s, TinyCost{}, "1f1b", "test");
}

/// A random plan: random model shape, partition, sub-microbatches and schedule, lowered.
inline pw::Plan random_plan(std::uint64_t seed, pw::ModelSpec* model_out = nullptr) {
  Rng rng(seed);
  const bool gen = rng.in(0, 2) == 0;
  pw::ModelSpec model = gen ? t2v(static_cast<int>(rng.in(2, 6)), static_cast<int>(rng.in(2, 6)))
                            : vlm(static_cast<int>(rng.in(2, 6)), static_cast<int>(rng.in(2, 8)), rng.in(0, 3) != 0, rng.in(0, 4) != 0);
  const int P = static_cast<int>(rng.in(1, 4));
  std::vector<int> chunks, offset;
  for (const auto& m : model.modules) {
    chunks.push_back(static_cast<int>(rng.in(1, m.layers)));
    offset.push_back(static_cast<int>(rng.in(0, P - 1)));
  }
  const auto part = interleaved(model, P, chunks, offset);
  const int M = static_cast<int>(rng.in(1, 4));
  std::vector<int> per_mb;
  for (std::size_t m = 0; m < model.modules.size(); ++m) per_mb.push_back(static_cast<int>(rng.in(model.modules[m].role == pw::ModuleRole::backbone ? 1 : 0, 3)));
  auto s = smbs(model, M, per_mb, rng, rng.in(0, 1) == 1);
  const bool split = rng.in(0, 2) == 0;
  const auto g = pw::build_stage_graph(model, part, s, {.split_backward = split});
  const auto sched = random_schedule(g, part, rng);
  auto plan = pw::lower(model, part, s, g, sched, TinyCost{}, "random-" + std::to_string(seed), "test-setup");
  if (model_out) *model_out = model;
  return plan;
}

}  // namespace planir_test
