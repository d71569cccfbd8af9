// Model math against hand-computed figures and closed forms.
#include <doctest/doctest.h>

#include <pipeweaver/model/layer_math.hpp>

#include <vector>

#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;
using pw::test::module;

TEST_CASE("the vlm-s backbone (Llama-3-8B-like) has 8.03B parameters") {
  const auto model = pw::test::vlm_s();
  const auto& llm = model.modules[1];
  const double p = static_cast<double>(pw::module_parameters(llm));
  CHECK(p == doctest::Approx(8.03e9).epsilon(0.005));
  // Meta's published count for Llama-3-8B (bias-free, untied head, RMSNorm weights).
  CHECK(pw::module_parameters(llm) == 8'030'261'248);
  // by hand: q, o 4096², k, v 4096·1024, three FFN matrices 4096·14336, two norms
  CHECK(pw::layer_parameters(llm) == 2LL * 4096 * 4096 + 2LL * 4096 * 1024 + 3LL * 4096 * 14336 + 2 * 4096);
  CHECK(pw::layer_parameters(model, pw::ModuleId{1}) == pw::layer_parameters(llm));
}

TEST_CASE("the vlm-s ViT (InternViT-6B-like) has about 5.5B parameters") {
  const auto model = pw::test::vlm_s();
  const auto& vit = model.modules[0];
  CHECK(pw::layer_parameters(vit) == 4LL * 3200 * 3200 + 2LL * 3200 * 12800 + 2 * 3200);
  CHECK(pw::module_parameters(vit) == 45 * pw::layer_parameters(vit));  // no vocab: no embedding, no head
  CHECK(static_cast<double>(pw::module_parameters(vit)) == doctest::Approx(5.53e9).epsilon(0.01));
}

TEST_CASE("chunk parameters: layers plus embedding on the first chunk and head on the last") {
  const auto model = pw::test::vlm_s();
  const auto& llm = model.modules[1];
  const std::int64_t layer = pw::layer_parameters(llm);
  const std::int64_t emb = 128256LL * 4096, head = 128256LL * 4096 + 4096;
  CHECK(pw::chunk_parameters(llm, 0, 8) == 8 * layer + emb);
  CHECK(pw::chunk_parameters(llm, 8, 8) == 8 * layer);
  CHECK(pw::chunk_parameters(llm, 24, 8) == 8 * layer + head);
  CHECK(pw::chunk_parameters(llm, 0, 32) == pw::module_parameters(llm));
  // any cut into chunks sums to the module
  for (int cut : {1, 5, 16, 31}) {
    CHECK(pw::chunk_parameters(llm, 0, cut) + pw::chunk_parameters(llm, cut, 32 - cut) == pw::module_parameters(llm));
  }
  CHECK(pw::chunk_parameters(llm, 3, 0) == 0);
  CHECK_THROWS_AS((void)pw::chunk_parameters(llm, 30, 3), pw::Error);
  CHECK_THROWS_AS((void)pw::chunk_parameters(llm, -1, 3), pw::Error);
}

TEST_CASE("grouped-query attention shrinks only the k and v projections") {
  auto mha = module("m", pw::ModuleRole::backbone, "text", 4, 512, 2048, 8, 8, pw::FfnKind::gelu,
                    pw::AttentionKind::causal);
  auto gqa = mha;
  gqa.kv_heads = 2;  // head_dim 64: k and v become 512 × 128
  CHECK(pw::layer_parameters(mha) - pw::layer_parameters(gqa) == 2LL * 512 * (512 - 128));
  // and leaves FLOPs of the attention core unchanged
  const std::vector<std::int64_t> items{100};
  const pw::ModelSpec model{"x", "", {mha}};
  const pw::ModelSpec model_gqa{"x", "", {gqa}};
  const double diff = pw::forward_flops(mha, model, 0, 1, items, {}) - pw::forward_flops(gqa, model_gqa, 0, 1, items, {});
  CHECK(diff == doctest::Approx(2.0 * 100 * 2 * 512 * (512 - 128)));
}

TEST_CASE("gelu FFN has two matrices, swiglu three") {
  auto g = module("m", pw::ModuleRole::encoder, "image", 1, 64, 256, 4, 4, pw::FfnKind::gelu,
                  pw::AttentionKind::bidirectional);
  auto s = g;
  s.ffn = pw::FfnKind::swiglu;
  CHECK(pw::layer_parameters(s) - pw::layer_parameters(g) == 64 * 256);
}

TEST_CASE("cross-attention adds q, o and k, v projecting from the feeding module's hidden size") {
  const auto model = pw::test::t2v_s();
  const pw::ModuleId dit_id{1};
  const auto& dit = model.modules[1];
  CHECK(pw::context_hidden(model, dit_id) == 4096);
  const std::int64_t h = 3584, f = 14336, dkv = 28 * 128;
  const std::int64_t self = 2 * h * h + 2 * h * dkv + 2 * h * f + 2 * h;
  const std::int64_t cross = 2 * h * h + 2 * 4096 * dkv + h;
  CHECK(pw::layer_parameters(model, dit_id) == self + cross);
  CHECK(pw::module_parameters(model, dit_id) == 32 * (self + cross));
  // the ModuleSpec-only overload assumes the context has the module's own hidden
  CHECK(pw::layer_parameters(dit) == self + 2 * h * h + 2 * h * dkv + h);
}

TEST_CASE("forward FLOPs of a small module, worked by hand") {
  // tiny-vlm's llm: h = 96, f = 384, 4 heads, 4 kv heads, swiglu, causal, vocab 512, 8 layers.
  const auto model = pw::test::tiny_vlm();
  const auto& llm = model.modules[1];
  const std::vector<std::int64_t> items{10, 20};
  // matmul weights per layer: q, k, v, o 4·96² = 36864; FFN 3·96·384 = 110592; sum 147456
  // matmuls: 2 · 30 tokens · 147456 = 8'847'360
  // causal attention: 2·10·11·96 + 2·20·21·96 = 21'120 + 80'640 = 101'760
  const double per_layer = 8'847'360.0 + 101'760.0;
  CHECK(pw::forward_flops(llm, model, 2, 1, items, {}) == doctest::Approx(per_layer));
  CHECK(pw::forward_flops(llm, model, 2, 3, items, {}) == doctest::Approx(3 * per_layer));
  // the last chunk adds the vocab head: 2 · 30 · 96 · 512 = 2'949'120 (the embedding costs no FLOPs)
  CHECK(pw::forward_flops(llm, model, 7, 1, items, {}) == doctest::Approx(per_layer + 2'949'120.0));
  CHECK(pw::forward_flops(llm, model, 0, 1, items, {}) == doctest::Approx(per_layer));
}

TEST_CASE("attention is quadratic per item") {
  const auto model = pw::test::vlm_s();
  const auto& vit = model.modules[0];  // bidirectional
  const double matmul_per_token = 2.0 * (4.0 * 3200 * 3200 + 2.0 * 3200 * 12800);
  auto attention = [&](std::vector<std::int64_t> items) {
    double tokens = 0;
    for (auto n : items) tokens += static_cast<double>(n);
    return pw::forward_flops(vit, model, 0, 1, items, {}) - matmul_per_token * tokens;
  };
  const double one = attention({676});
  CHECK(one == doctest::Approx(4.0 * 676 * 676 * 3200));
  SUBCASE("doubling one item's tokens quadruples the attention term") {
    CHECK(attention({1352}) == doctest::Approx(4 * one));
  }
  SUBCASE("splitting an item into two halves halves it") {
    CHECK(attention({676, 676}) == doctest::Approx(attention({1352}) / 2));
  }
  SUBCASE("causal attention counts the diagonal: 2·n·(n+1)·h") {
    const auto& llm = model.modules[1];
    const double mm = 2.0 * (2.0 * 4096 * 4096 + 2.0 * 4096 * 1024 + 3.0 * 4096 * 14336);
    const double att = pw::forward_flops(llm, model, 1, 1, std::vector<std::int64_t>{1000}, {}) - mm * 1000;
    CHECK(att == doctest::Approx(2.0 * 1000 * 1001 * 4096));
  }
}

TEST_CASE("cross-attention FLOPs: 4·n·m·h plus the k/v projections of the context") {
  const auto model = pw::test::t2v_s();
  const auto& dit = model.modules[1];
  const std::vector<std::int64_t> items{4000, 2000};
  const std::vector<std::int64_t> ctx1{300, 100};
  const std::vector<std::int64_t> ctx2{600, 200};
  const double dkv = 28 * 128;
  // doubling every context adds 4·n·m·h per item and 2·m·(2·4096·dkv) per context token
  const double expected = 4.0 * 3584 * (4000.0 * 300 + 2000.0 * 100) + 2.0 * 400 * (2 * 4096 * dkv);
  const double diff = pw::forward_flops(dit, model, 0, 1, items, ctx2) - pw::forward_flops(dit, model, 0, 1, items, ctx1);
  CHECK(diff == doctest::Approx(expected));
  CHECK_THROWS_AS((void)pw::forward_flops(dit, model, 0, 1, items, std::vector<std::int64_t>{1}), pw::Error);
}

TEST_CASE("activation bytes per layer") {
  SUBCASE("the standard layer keeps Megatron's 34·s·h/t") {
    const auto m = module("std", pw::ModuleRole::backbone, "text", 1, 1024, 4096, 16, 16, pw::FfnKind::gelu,
                          pw::AttentionKind::causal);
    for (int tp : {1, 2, 4, 8}) {
      const auto a = pw::layer_activation_bytes(m, 2048, 0, tp);
      CHECK(a.none.count() == 34LL * 2048 * 1024 / tp);
      CHECK(a.full_recompute.count() == 2LL * 2048 * 1024 / tp);
      CHECK(a.selective.count() == 32LL * 2048 * 1024 / tp);  // the attention output O dropped
    }
  }
  SUBCASE("swiglu and GQA: the vlm-s backbone") {
    const auto model = pw::test::vlm_s();
    const auto& llm = model.modules[1];
    // per token: norms 4h + attention 7h + 4·d_kv + FFN 3h + 6f = 16384 + 32768 + 98304
    const auto a = pw::layer_activation_bytes(llm, 8192, 0, 4);
    CHECK(a.none.count() == 147456LL * 8192 / 4);
  }
  SUBCASE("cross-attention adds 9h per token and K, V per context token") {
    const auto model = pw::test::t2v_s();
    const auto& dit = model.modules[1];
    const std::int64_t h = 3584, f = 14336, dkv = 3584;
    const auto a = pw::layer_activation_bytes(dit, 1000, 300, 1);
    CHECK(a.none.count() == (4 * h + 7 * h + 4 * dkv + 3 * h + 4 * f + 9 * h) * 1000 + 4 * dkv * 300);
    CHECK(a.none.count() - a.selective.count() == 2 * 2 * h * 1000);
  }
}
