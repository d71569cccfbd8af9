// The stage dependency graph against closed forms for node and edge counts, a brute-force
// re-derivation of its edges, and partition validation.
#include <doctest/doctest.h>

#include <pipeweaver/schedule/stage_graph.hpp>

#include <algorithm>
#include <set>
#include <tuple>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

std::size_t edge_count(const pw::StageGraph& g) {
  std::size_t e = 0;
  for (const auto& n : g.nodes) e += n.inputs.size();
  return e;
}

// Structural invariants every graph must satisfy.
void check_invariants(const pw::StageGraph& g) {
  std::size_t out_edges = 0;
  for (std::size_t n = 0; n < g.nodes.size(); ++n) {
    const auto& node = g.nodes[n];
    CHECK(g.find(node.stage) == static_cast<pw::NodeIndex>(n));
    CHECK(std::is_sorted(node.inputs.begin(), node.inputs.end()));
    CHECK(std::is_sorted(node.outputs.begin(), node.outputs.end()));
    for (auto i : node.inputs) {
      const auto& in = g.nodes[static_cast<std::size_t>(i)].outputs;
      CHECK(std::count(in.begin(), in.end(), static_cast<pw::NodeIndex>(n)) == 1);
    }
    out_edges += node.outputs.size();
    if (n > 0) {  // order: (sub-microbatch, pass, chunk)
      const auto& a = g.nodes[n - 1].stage;
      const auto& b = node.stage;
      CHECK(std::make_tuple(a.sub_microbatch, static_cast<int>(a.pass), a.chunk) < std::make_tuple(b.sub_microbatch, static_cast<int>(b.pass), b.chunk));
    }
  }
  CHECK(out_edges == edge_count(g));
  // Acyclic: Kahn's algorithm consumes every node.
  std::vector<std::size_t> pending(g.nodes.size());
  std::vector<std::size_t> ready;
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    if ((pending[n] = g.nodes[n].inputs.size()) == 0) ready.push_back(n);
  std::size_t seen = 0;
  while (!ready.empty()) {
    const auto n = ready.back();
    ready.pop_back();
    ++seen;
    for (auto o : g.nodes[n].outputs)
      if (--pending[static_cast<std::size_t>(o)] == 0) ready.push_back(static_cast<std::size_t>(o));
  }
  CHECK(seen == g.nodes.size());
}

}  // namespace

TEST_CASE("encoder + backbone: node and edge counts match the closed forms") {
  // Per microbatch, encoder with M_e sub-microbatches and C_e chunks, backbone with one
  // sub-microbatch and C_b chunks:
  //   nodes = 2 M_e C_e + 2 C_b
  //   edges = [fwd chains M_e (C_e - 1) + (C_b - 1)] + [encoder -> backbone M_e]
  //         + [bwd chains + forward->backward: M_e (2 C_e - 1) + (2 C_b - 1)] + [backbone -> encoder grads M_e]
  //         = 3 M_e C_e + 3 C_b - 2.
  // Frozen encoder (no backward): nodes M_e C_e + 2 C_b, edges M_e C_e + 3 C_b - 2.
  // Split backward adds one weight node per backward node, each with one input edge.
  Rng rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int Ce = static_cast<int>(rng.in(1, 4)), Cb = static_cast<int>(rng.in(1, 6));
    const int Me = static_cast<int>(rng.in(0, 4)), M = static_cast<int>(rng.in(1, 5)), P = static_cast<int>(rng.in(1, 4));
    const bool frozen = rng.in(0, 1) == 1, split = rng.in(0, 1) == 1;
    const auto model = vlm(4, 8, !frozen);
    const auto part = interleaved(model, P, {Ce, Cb});
    const auto s = smbs(model, M, {Me, 1}, rng);
    const auto g = pw::build_stage_graph(model, part, s, {.split_backward = split});
    CAPTURE(Ce);
    CAPTURE(Cb);
    CAPTURE(Me);
    CAPTURE(M);
    CAPTURE(frozen);
    CAPTURE(split);
    const std::size_t enc_bwd = frozen ? 0 : static_cast<std::size_t>(Me * Ce);
    const std::size_t bwd_nodes = enc_bwd + static_cast<std::size_t>(Cb);
    std::size_t nodes = static_cast<std::size_t>(Me * Ce + Cb) + bwd_nodes;
    std::size_t edges = frozen ? static_cast<std::size_t>(Me * Ce + 3 * Cb - 2) : static_cast<std::size_t>(3 * Me * Ce + 3 * Cb - 2);
    if (split) {
      nodes += bwd_nodes;
      edges += bwd_nodes;
    }
    CHECK(g.size() == static_cast<std::size_t>(M) * nodes);
    CHECK(edge_count(g) == static_cast<std::size_t>(M) * edges);
    check_invariants(g);
  }
}

TEST_CASE("backbone + generator: counts match 3 C_b - 2 + 3 M_g C_g per microbatch") {
  // Backbone chains and forward->backward (3 C_b - 2); per generator sub-microbatch: forward
  // chain C_g - 1, fed by the backbone 1, backward chain + forward->backward 2 C_g - 1, and the
  // backbone's last backward needs its first backward 1: 3 C_g in all.
  Rng rng(11);
  for (int trial = 0; trial < 30; ++trial) {
    const int Cb = static_cast<int>(rng.in(1, 4)), Cg = static_cast<int>(rng.in(1, 6));
    const int Mg = static_cast<int>(rng.in(0, 4)), M = static_cast<int>(rng.in(1, 4));
    const auto model = t2v();
    const auto part = interleaved(model, 3, {Cb, Cg}, {0, 1});
    const auto s = smbs(model, M, {1, Mg}, rng);
    const auto g = pw::build_stage_graph(model, part, s);
    CHECK(g.size() == static_cast<std::size_t>(M * (2 * Cb + 2 * Mg * Cg)));
    CHECK(edge_count(g) == static_cast<std::size_t>(M * (3 * Cb - 2 + 3 * Mg * Cg)));
    check_invariants(g);
  }
}

TEST_CASE("edges equal a brute-force restatement of the rules") {
  // Independent truth: for every ordered pair of stages, decide from the rules whether the
  // second needs the first, and compare with the graph's inputs.
  for (std::uint64_t seed = 1; seed <= 25; ++seed) {
    Rng rng(seed);
    const bool gen = seed % 3 == 0;
    const auto model = gen ? t2v(3, 4) : vlm(3, 5, seed % 4 != 1, seed % 5 != 2);
    const int P = static_cast<int>(rng.in(1, 3));
    const auto part = interleaved(model, P, {static_cast<int>(rng.in(1, 3)), static_cast<int>(rng.in(1, 3))});
    const std::vector<int> per_mb = gen ? std::vector<int>{1, static_cast<int>(rng.in(1, 3))}
                                        : std::vector<int>{static_cast<int>(rng.in(0, 3)), static_cast<int>(rng.in(1, 2))};
    const bool origins = seed % 2 == 0;
    const auto s = smbs(model, 2, per_mb, rng, origins);
    const bool split = seed % 4 == 0;
    const auto g = pw::build_stage_graph(model, part, s, {.split_backward = split});
    CAPTURE(seed);

    // Which modules have backward stages: by hand for these two-module models.
    auto has_bwd = [&](pw::ModuleId m) {
      if (gen) return true;  // both trainable
      const bool enc_t = model.modules[0].trainable, bb_t = model.modules[1].trainable;
      return m.value() == 0 ? enc_t : (bb_t || enc_t);
    };
    auto share = [&](const pw::SubMicrobatchSpec& a, const pw::SubMicrobatchSpec& b) {
      if (a.items().empty() || b.items().empty()) return true;
      for (auto x : a.items())
        for (auto y : b.items())
          if (x.sample == y.sample) return true;
      return false;
    };
    const pw::Pass bwd = split ? pw::Pass::backward_input : pw::Pass::backward;
    auto needs = [&](const pw::StageRef& u, const pw::StageRef& v) {  // does v need u?
      const auto& su = s[u.sub_microbatch.index()];
      const auto& sv = s[v.sub_microbatch.index()];
      const int Cu = part.chunk_count(u.module);
      const bool same = u.sub_microbatch == v.sub_microbatch;
      if (v.pass == pw::Pass::forward) {
        if (u.pass != pw::Pass::forward) return false;
        if (same && u.chunk == v.chunk - 1) return true;
        return v.chunk == 0 && model.modules[u.module.index()].feeds == v.module && u.chunk == Cu - 1 &&
               su.microbatch() == sv.microbatch() && share(su, sv);
      }
      if (v.pass == pw::Pass::backward_weight) return same && u.chunk == v.chunk && u.pass == pw::Pass::backward_input;
      if (same && u.chunk == v.chunk && u.pass == pw::Pass::forward) return true;
      if (u.pass != bwd) return false;
      if (same && u.chunk == v.chunk + 1) return true;
      return v.chunk == part.chunk_count(v.module) - 1 && model.modules[v.module.index()].feeds == u.module && u.chunk == 0 &&
             su.microbatch() == sv.microbatch() && share(sv, su);
    };
    // Expected node set.
    std::size_t expected_nodes = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const auto m = s[i].module();
      const int C = part.chunk_count(m);
      expected_nodes += static_cast<std::size_t>(C);
      if (has_bwd(m)) expected_nodes += static_cast<std::size_t>(C) * (split && model.module(m).trainable ? 2 : 1);
    }
    CHECK(g.size() == expected_nodes);
    for (std::size_t v = 0; v < g.size(); ++v)
      for (std::size_t u = 0; u < g.size(); ++u) {
        const bool edge = std::binary_search(g.nodes[v].inputs.begin(), g.nodes[v].inputs.end(), static_cast<pw::NodeIndex>(u));
        CHECK(edge == needs(g.nodes[u].stage, g.nodes[v].stage));
      }
    check_invariants(g);
  }
}

TEST_CASE("frozen modules: backward only where a trainable module upstream needs it") {
  Rng rng(3);
  SUBCASE("frozen encoder: no encoder backward") {
    const auto model = vlm(2, 4, false, true);
    const auto s = smbs(model, 1, {2, 1}, rng);
    const auto g = pw::build_stage_graph(model, interleaved(model, 2, {1, 2}), s);
    for (const auto& n : g.nodes) CHECK((n.stage.module.value() == 1 || n.stage.pass == pw::Pass::forward));
  }
  SUBCASE("frozen backbone under a trainable encoder: backbone backward (input part only when split)") {
    const auto model = vlm(2, 4, true, false);
    const auto s = smbs(model, 1, {2, 1}, rng);
    const auto g = pw::build_stage_graph(model, interleaved(model, 2, {1, 2}), s, {.split_backward = true});
    CHECK(g.find({pw::ModuleId{1}, 0, pw::SubMicrobatchId{2}, pw::Pass::backward_input}) >= 0);
    CHECK(g.find({pw::ModuleId{1}, 0, pw::SubMicrobatchId{2}, pw::Pass::backward_weight}) == -1);
    CHECK(g.find({pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::backward_weight}) >= 0);
  }
  SUBCASE("everything frozen: forward only") {
    const auto model = vlm(2, 4, false, false);
    const auto s = smbs(model, 2, {1, 1}, rng);
    const auto g = pw::build_stage_graph(model, interleaved(model, 2, {2, 2}), s);
    CHECK(g.size() == 2 * (2 + 2));
  }
}

TEST_CASE("find: O(1) lookup agrees with a scan and rejects absent stages") {
  Rng rng(5);
  const auto model = vlm();
  const auto part = interleaved(model, 2, {2, 4});
  const auto s = smbs(model, 2, {2, 1}, rng);
  const auto g = pw::build_stage_graph(model, part, s);
  pw::StageGraph bare;
  bare.nodes = g.nodes;  // no lookup table: linear fallback
  for (std::size_t n = 0; n < g.size(); ++n) CHECK(bare.find(g.nodes[n].stage) == static_cast<pw::NodeIndex>(n));
  CHECK(g.find({pw::ModuleId{0}, 2, pw::SubMicrobatchId{0}, pw::Pass::forward}) == -1);          // chunk out of range
  CHECK(g.find({pw::ModuleId{1}, 0, pw::SubMicrobatchId{0}, pw::Pass::forward}) == -1);          // wrong module
  CHECK(g.find({pw::ModuleId{0}, 0, pw::SubMicrobatchId{99}, pw::Pass::forward}) == -1);         // no such sub-microbatch
  CHECK(g.find({pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::backward_input}) == -1);   // not split
  CHECK(g.find({pw::ModuleId{0}, 0, pw::SubMicrobatchId{-1}, pw::Pass::forward}) == -1);
}

TEST_CASE("a partition that does not cover the layers is rejected, naming module and chunk") {
  const auto model = vlm(4, 8);
  Rng rng(1);
  const auto s = smbs(model, 1, {1, 1}, rng);
  auto expect = [&](const pw::Partition& p, const std::string& where, const std::string& what) {
    try {
      (void)pw::build_stage_graph(model, p, s);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path.find(where) != std::string::npos);
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  auto p = interleaved(model, 2, {2, 4});
  SUBCASE("gap") {
    p.modules[1].chunks[2].first_layer += 1;
    expect(p, "module 'llm', chunk 2", "starts at layer 5");
  }
  SUBCASE("overlap") {
    p.modules[0].chunks[1].first_layer -= 1;
    expect(p, "module 'vit', chunk 1", "starts at layer 1");
  }
  SUBCASE("short") {
    p.modules[1].chunks.pop_back();
    expect(p, "module 'llm', chunk 2", "chunks covering all 8 layers");
  }
  SUBCASE("rank out of range") {
    p.modules[0].chunks[1].rank = pw::RankId{2};
    expect(p, "module 'vit', chunk 1", "rank 2");
  }
  SUBCASE("module count") {
    p.modules.pop_back();
    expect(p, "partition 'test'", "places 1 modules");
  }
  SUBCASE("sub-microbatch of an unknown module") {
    auto bad = s;
    bad.emplace_back(pw::ModuleId{5}, pw::MicrobatchId{0}, std::vector<std::int64_t>{4});
    try {
      (void)pw::build_stage_graph(model, p, bad);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == "sub-microbatch 2");
    }
  }
}

TEST_CASE("SubMicrobatchIndex lists each module's sub-microbatches per microbatch") {
  Rng rng(9);
  const auto model = vlm();
  const auto s = smbs(model, 3, {2, 1}, rng);
  const pw::SubMicrobatchIndex idx(s, 2);
  CHECK(idx.microbatches() == 3);
  std::size_t total = 0;
  for (int mb = 0; mb < 3; ++mb)
    for (int m = 0; m < 2; ++m) {
      const auto ids = idx.of(pw::MicrobatchId{mb}, pw::ModuleId{m});
      CHECK(ids.size() == (m == 0 ? 2u : 1u));
      for (auto id : ids) {
        CHECK(s[id.index()].microbatch() == pw::MicrobatchId{mb});
        CHECK(s[id.index()].module() == pw::ModuleId{m});
      }
      CHECK(std::is_sorted(ids.begin(), ids.end()));
      total += ids.size();
    }
  CHECK(total == s.size());
  CHECK(idx.of(pw::MicrobatchId{3}, pw::ModuleId{0}).empty());
}
