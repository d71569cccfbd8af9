// DIP partitioner: B_i and K_i against closed forms under a synthetic linear cost model, the
// chunk layout, the static-memory check and the candidate neighborhood.
#include <doctest/doctest.h>

#include <pipeweaver/partition/dip_partitioner.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

namespace pw = pipeweaver;

namespace {

// latency = overhead + per_token · tokens · layers (forward); backward = 2 × forward.
struct LinearCost {
  std::vector<std::int64_t> overhead;   // per module
  std::vector<std::int64_t> per_token;  // per module, per layer
  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M& m, const pw::MemoryStrategy&) const {
    std::int64_t tok = 0;
    for (auto t : m.item_tokens()) tok += t;
    const auto i = s.module().index();
    const std::int64_t f = overhead[i] + per_token[i] * tok * s.layer_count();
    return pw::Nanoseconds{s.pass() == pw::Pass::forward ? f : 2 * f};
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const { return pw::Bytes{0}; }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const { return pw::Bytes{0}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return pw::Nanoseconds{0}; }
};
static_assert(pw::CostModel<LinearCost, pw::StageSpec, pw::SubMicrobatchSpec>);

pw::ModelSpec vlm(int vit_layers, int lm_layers) {
  pw::ModelSpec m;
  m.name = "test-vlm";
  m.modules = {pw::ModuleSpec{.name = "vit", .role = pw::ModuleRole::encoder, .modality = "image", .layers = vit_layers,
                              .hidden = 1024, .ffn_hidden = 4096, .heads = 16, .kv_heads = 16,
                              .attention = pw::AttentionKind::bidirectional, .feeds = pw::ModuleId{1},
                              .output_tokens_per_input_token = 0.25},
               pw::ModuleSpec{.name = "lm", .role = pw::ModuleRole::backbone, .modality = "text", .layers = lm_layers,
                              .hidden = 2048, .ffn_hidden = 8192, .heads = 16, .kv_heads = 4, .ffn = pw::FfnKind::swiglu,
                              .vocab = 32000}};
  return m;
}

pw::Setup setup(int P, double gib = 80) {
  pw::Setup s;
  s.name = "test-setup";
  s.pipeline_stages = P;
  s.device = {"dev", 1000, 3000, gib, 2};
  s.microbatches_per_step = 4;
  return s;
}

// 4 microbatches of 5 samples; each sample 300 text tokens and 8 images of 256 tokens
// (so 40 images per microbatch).
pw::Batch batch() {
  pw::Batch b;
  for (int mb = 0; mb < 4; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 5; ++s) {
      pw::Sample smp;
      smp.text = 300;
      smp.items.push_back({"image", std::vector<std::int64_t>(8, 256)});
      m.samples.push_back(smp);
    }
    b.microbatches.push_back(m);
  }
  return b;
}

/// Closed form of B for latency ∝ o + b·k: eff(b) = b / (o + b k) increases to eff(cap);
/// eff(b) >= 0.95 eff(cap)  <=>  b >= 0.95 · cap · o / (o + 0.05 · cap · k).
std::int64_t closed_form_b(double o, double k, double cap) {
  return static_cast<std::int64_t>(std::ceil(0.95 * cap * o / (o + 0.05 * cap * k) - 1e-9));
}

}  // namespace

TEST_CASE("representative shapes are medians of the sampled step") {
  auto model = vlm(24, 32);
  auto sh = pw::representative_shapes(model, batch());
  REQUIRE(sh.size() == 2);
  CHECK(sh[0].present);
  CHECK(sh[0].item_tokens == 256);
  CHECK(sh[0].items_per_microbatch == 40);
  CHECK(sh[0].max_items_per_microbatch == 40);
  CHECK(sh[1].item_tokens == 300 + 8 * 64);  // text + 8 images × 256 × 0.25
  CHECK(sh[1].items_per_microbatch == 5);
}

TEST_CASE("dip_partition picks B_i and K_i as the closed forms say") {
  const int P = 4;
  auto model = vlm(24, 32);
  for (std::int64_t vit_overhead : {1000, 20000, 200000}) {
    CAPTURE(vit_overhead);
    LinearCost cost{{vit_overhead, 5000}, {1, 2}};
    auto dip = pw::dip_partition(model, setup(P), cost, batch());
    // Encoder: L/P = 6 layers per chunk, 256-token images: forward o + b·(256·6), backward twice.
    const double o = static_cast<double>(vit_overhead), k = 256.0 * 6;
    const std::int64_t B = closed_form_b(o, k, 40);
    CHECK(dip.modules[0].sub_microbatch_items == B);
    CHECK(dip.modules[1].sub_microbatch_items == 0);
    const std::int64_t t_vit = 3 * (vit_overhead + B * 256 * 6);
    const std::int64_t t_lm = 3 * (5000 + 2 * 5 * (300 + 8 * 64) * 8);  // 5 samples, 8 layers per chunk
    CHECK(dip.modules[0].stage_latency.count() == t_vit);
    CHECK(dip.modules[1].stage_latency.count() == t_lm);
    const std::int64_t t1 = std::min(t_vit, t_lm);
    auto expect_k = [&](std::int64_t t, int layers) {
      return static_cast<int>(std::clamp<std::int64_t>(t / t1, 1, std::min(8, layers / P)));
    };
    CHECK(dip.modules[0].segments == expect_k(t_vit, 24));
    CHECK(dip.modules[1].segments == expect_k(t_lm, 32));
    CHECK(std::min(dip.modules[0].segments, dip.modules[1].segments) == 1);
    // Partition: P·K chunks, c on rank c mod P, layers spread with the first ones one larger.
    for (std::size_t i = 0; i < 2; ++i) {
      const auto& pl = dip.partition.modules[i];
      const int K = dip.modules[i].segments, L = model.modules[i].layers;
      REQUIRE(pl.chunks.size() == static_cast<std::size_t>(P * K));
      CHECK(pl.sub_microbatch_items == dip.modules[i].sub_microbatch_items);
      int next = 0;
      for (int c = 0; c < P * K; ++c) {
        const auto& ch = pl.chunks[static_cast<std::size_t>(c)];
        CHECK(ch.rank.value() == c % P);
        CHECK(ch.first_layer == next);
        CHECK(ch.layer_count == L / (P * K) + (c < L % (P * K) ? 1 : 0));
        next += ch.layer_count;
      }
      CHECK(next == L);
    }
  }
}

TEST_CASE("dip_partition caps K so every chunk keeps a layer") {
  auto model = vlm(8, 40);
  LinearCost cost{{10, 1000000}, {1, 100}};  // backbone stage ≫ encoder stage
  auto dip = pw::dip_partition(model, setup(4), cost, batch(), {.efficiency_threshold = 0.95, .max_sub_microbatch_items = 64, .max_segments = 100});
  CHECK(dip.modules[0].segments == 1);
  CHECK(dip.modules[1].segments == 10);  // 40 layers / 4 ranks
  auto capped = pw::dip_partition(model, setup(4), cost, batch(), {.efficiency_threshold = 0.95, .max_sub_microbatch_items = 64, .max_segments = 3});
  CHECK(capped.modules[1].segments == 3);
  CHECK(capped.partition.modules[1].chunks.size() == 12);
}

TEST_CASE("make_dip_partition rejects modules with fewer layers than chunks") {
  auto model = vlm(3, 32);
  std::vector<int> K{1, 1};
  std::vector<std::int64_t> B{4, 0};
  try {
    (void)pw::make_dip_partition(model, 4, K, B);
    FAIL("expected an error");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::infeasible);
    CHECK(std::string(e.what()).find("vit") != std::string::npos);
  }
}

TEST_CASE("static memory per rank adds up the chunks and the check names the rank") {
  auto model = vlm(24, 32);
  std::vector<int> K{1, 2};
  std::vector<std::int64_t> B{4, 0};
  auto part = pw::make_dip_partition(model, 4, K, B);
  auto s = setup(4);
  auto per_rank = pw::static_memory_per_rank(model, s, part);
  REQUIRE(per_rank.size() == 4);
  // Independent: the modules' whole state, up to one byte of rounding per chunk.
  std::int64_t sum = 0, whole = 0;
  for (auto b : per_rank) sum += b.count();
  for (std::size_t i = 0; i < 2; ++i)
    whole += pw::chunk_state_bytes(model, pw::ModuleId{static_cast<int>(i)}, s, 0, model.modules[i].layers).count();
  CHECK(sum >= whole);
  CHECK(sum <= whole + 12);
  CHECK_NOTHROW(pw::check_static_memory(model, s, part));
  const double tiny_gib = pw::to_gib(*std::max_element(per_rank.begin(), per_rank.end())) / 2 + 2;
  try {
    pw::check_static_memory(model, setup(4, tiny_gib), part);
    FAIL("expected an error");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::infeasible);
    CHECK(e.context().path.find("rank") != std::string::npos);
    CHECK(std::string(e.what()).find("GiB") != std::string::npos);
  }
}

TEST_CASE("candidate_partitions: DIP first, then single-step neighbors, no duplicates") {
  auto model = vlm(24, 32);
  LinearCost cost{{20000, 5000}, {1, 2}};
  auto dip = pw::dip_partition(model, setup(4), cost, batch());
  auto cands = pw::candidate_partitions(model, setup(4), cost, batch());
  REQUIRE(!cands.empty());
  CHECK(cands.front() == dip.partition);
  std::set<std::pair<std::vector<std::size_t>, std::vector<std::int64_t>>> keys;
  for (const auto& p : cands) {
    std::vector<std::size_t> chunks;
    std::vector<std::int64_t> bs;
    int changed = 0;
    for (std::size_t i = 0; i < 2; ++i) {
      chunks.push_back(p.modules[i].chunks.size());
      bs.push_back(p.modules[i].sub_microbatch_items);
      const auto k0 = dip.partition.modules[i].chunks.size(), k = p.modules[i].chunks.size();
      if (k != k0) {
        ++changed;
        CHECK((k == k0 + 4 || k + 4 == k0));
      }
      const auto b0 = dip.partition.modules[i].sub_microbatch_items, b = p.modules[i].sub_microbatch_items;
      if (b != b0) {
        ++changed;
        CHECK(i == 0);  // the backbone keeps B = 0
        CHECK((b == 2 * b0 || b == std::max<std::int64_t>(1, b0 / 2)));
      }
    }
    CHECK(changed <= 1);
    CHECK(keys.insert({chunks, bs}).second);
  }
  CHECK(cands.size() >= 4);
}

TEST_CASE("balanced_layer_split: minimum largest chunk, against brute force") {
  // Random per-layer costs plus a per-chunk overhead and a heavy last layer (a vocabulary head).
  std::uint64_t state = 12345;
  auto next = [&](std::int64_t lo, std::int64_t hi) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + static_cast<std::int64_t>((state >> 33) % static_cast<std::uint64_t>(hi - lo + 1));
  };
  for (int trial = 0; trial < 60; ++trial) {
    CAPTURE(trial);
    const int L = static_cast<int>(next(2, 11)), C = static_cast<int>(next(1, std::min<std::int64_t>(L, 5)));
    std::vector<std::int64_t> layer(static_cast<std::size_t>(L));
    for (auto& x : layer) x = next(10, 20);
    layer.back() += next(0, 40);
    const std::int64_t overhead = next(0, 5);
    auto chunk = [&](int first, int count) {
      std::int64_t t = overhead;
      for (int l = first; l < first + count; ++l) t += layer[static_cast<std::size_t>(l)];
      return pw::Nanoseconds{t};
    };
    auto max_of = [&](const std::vector<int>& counts) {
      std::int64_t m = 0;
      int first = 0;
      for (int c : counts) {
        m = std::max(m, chunk(first, c).count());
        first += c;
      }
      return m;
    };
    const auto got = pw::balanced_layer_split(L, C, chunk);
    REQUIRE(got.size() == static_cast<std::size_t>(C));
    int sum = 0;
    for (int c : got) {
      CHECK(c >= 1);
      sum += c;
    }
    CHECK(sum == L);
    // Brute force over every composition of L into C positive parts.
    std::int64_t best = std::numeric_limits<std::int64_t>::max();
    std::vector<int> cur;
    auto rec = [&](auto&& self, int left, int parts) -> void {
      if (parts == 1) {
        cur.push_back(left);
        best = std::min(best, max_of(cur));
        cur.pop_back();
        return;
      }
      for (int x = 1; x <= left - (parts - 1); ++x) {
        cur.push_back(x);
        self(self, left - x, parts - 1);
        cur.pop_back();
      }
    };
    rec(rec, L, C);
    CHECK(max_of(got) == best);
    // The even split is kept unless strictly worse.
    std::vector<int> even;
    for (int c = 0; c < C; ++c) even.push_back(L / C + (c < L % C ? 1 : 0));
    if (max_of(even) == best) CHECK(got == even);
  }
}

namespace {
// LinearCost plus a vocabulary head: the backbone's last layer costs `head` layers more.
struct HeadCost : LinearCost {
  std::int64_t head = 0;
  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M& m, const pw::MemoryStrategy& st) const {
    pw::Nanoseconds t = LinearCost::latency(s, m, st);
    const auto i = s.module().index();
    if (i == 1 && s.first_layer() + s.layer_count() == 32) {
      std::int64_t tok = 0;
      for (auto x : m.item_tokens()) tok += x;
      const std::int64_t extra = head * per_token[i] * tok;
      t += pw::Nanoseconds{s.pass() == pw::Pass::forward ? extra : 2 * extra};
    }
    return t;
  }
};
}  // namespace

TEST_CASE("dip_partition balances the ranks when a chunk carries the vocabulary head") {
  auto model = vlm(24, 32);
  HeadCost cost;
  cost.overhead = {1000, 5000};
  cost.per_token = {1, 2};
  cost.head = 3;  // the head costs three layers
  const int P = 4;
  auto balanced = pw::dip_partition(model, setup(P), cost, batch());
  auto even = pw::dip_partition(model, setup(P), cost, batch(), {.balance_layers = false});
  CHECK(balanced.modules[1].segments == even.modules[1].segments);
  // Independent: per-rank work of each partition on the sample, from the cost model directly.
  auto rank_work = [&](const pw::Partition& part) {
    const auto smbs = pw::split(model, part, batch());
    std::vector<std::int64_t> w(static_cast<std::size_t>(P), 0);
    for (const auto& smb : smbs)
      for (std::size_t c = 0; c < part.modules[smb.module().index()].chunks.size(); ++c) {
        const auto& ch = part.modules[smb.module().index()].chunks[c];
        for (pw::Pass pass : {pw::Pass::forward, pw::Pass::backward}) {
          const pw::StageSpec st{smb.module(), static_cast<int>(c), ch.rank, pass, ch.first_layer, ch.layer_count};
          w[ch.rank.index()] += cost.latency(st, smb, pw::MemoryStrategy{}).count();
        }
      }
    return *std::max_element(w.begin(), w.end());
  };
  CHECK(rank_work(balanced.partition) < rank_work(even.partition));
  // The head's chunk got fewer layers than an even split gives it.
  const auto& lm = balanced.partition.modules[1].chunks;
  CHECK(lm.back().layer_count < even.partition.modules[1].chunks.back().layer_count);
  int total = 0;
  for (const auto& ch : lm) total += ch.layer_count;
  CHECK(total == 32);
  // Explicit layer counts that do not add up are rejected.
  std::vector<int> K{1, 1};
  std::vector<std::int64_t> B{4, 0};
  std::vector<std::vector<int>> bad{{}, {8, 8, 8, 7}};
  CHECK_THROWS_AS((void)pw::make_dip_partition(model, P, K, B, "x", bad), pw::Error);
}
