// Device memory: static chunk state, stage activations, stage outputs.
#include <doctest/doctest.h>

#include <pipeweaver/model/memory.hpp>

#include <vector>

#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;

TEST_CASE("chunk state: optimizer bytes sharded over tp·dp, frozen modules keep bf16 weights") {
  auto model = pw::test::vlm_s();
  auto setup = pw::test::h800(4, 4);
  const std::int64_t params = pw::chunk_parameters(model.modules[1], 8, 8);
  CHECK(pw::chunk_state_bytes(model.modules[1], setup, 8, 8).count() == params * 16 / 4);
  setup.data_parallel = 2;
  CHECK(pw::chunk_state_bytes(model, pw::ModuleId{1}, setup, 8, 8).count() == params * 16 / 8);
  model.modules[1].trainable = false;
  CHECK(pw::chunk_state_bytes(model.modules[1], setup, 8, 8).count() == params * 2 / 4);
}

TEST_CASE("memory capacity is memory minus reserved") {
  CHECK(pw::memory_capacity(pw::test::h800()) == pw::from_gib(74));
  CHECK(pw::memory_capacity(pw::test::cpu_pp4()) == pw::from_gib(1));
}

TEST_CASE("stage activation bytes by strategy") {
  const auto model = pw::test::vlm_s();
  const pw::ModuleId llm{1};
  const std::vector<std::int64_t> items{3000, 5192};
  const auto layer = pw::layer_activation_bytes(model.modules[1], 8192, 0, 4);
  auto bytes = [&](int first, int count, pw::MemoryStrategy s) {
    return pw::stage_activation_bytes(model, 4, llm, first, count, items, {}, s);
  };
  CHECK(bytes(8, 8, {}) == layer.none * 8);
  CHECK(bytes(8, 8, pw::MemoryStrategy::full(8)) == layer.full_recompute * 8);
  CHECK(bytes(8, 8, pw::MemoryStrategy::selective(8)) == layer.selective * 8);
  CHECK(bytes(8, 8, pw::MemoryStrategy{2, 1, 3}) == layer.none * 2 + layer.full_recompute * 2 + layer.selective);
  CHECK(bytes(8, 8, pw::MemoryStrategy{0, 0, 8}) == pw::Bytes{0});
  // the last chunk also keeps the head's inputs and the fp32 logits: (4·T·h + 4·T·V) / t
  CHECK(bytes(24, 8, {}) == layer.none * 8 + pw::Bytes{(4LL * 8192 * 4096 + 4LL * 8192 * 128256) / 4});
  CHECK_THROWS_AS((void)bytes(8, 8, pw::MemoryStrategy{5, 4, 0}), pw::Error);
}

TEST_CASE("stage output bytes") {
  SUBCASE("an encoder's last chunk hands merged tokens in the backbone's hidden size") {
    const auto model = pw::test::vlm_s();
    const std::vector<std::int64_t> images{676, 100, 3};
    // ceil(676/4) + ceil(100/4) + ceil(3/4) = 169 + 25 + 1 tokens of 4096
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{0}, 40, 5, images, {}).count() == 2LL * 195 * 4096);
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{0}, 0, 5, images, {}).count() == 2LL * 779 * 3200);
    // the backbone's last chunk feeds nothing: the loss stays on the rank
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{1}, 24, 8, images, {}).count() == 0);
  }
  SUBCASE("a cross-attention module carries its context along") {
    const auto model = pw::test::t2v_s();
    const std::vector<std::int64_t> clips{8000, 4000};
    const std::vector<std::int64_t> ctx{500, 300};
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{1}, 0, 8, clips, ctx).count() ==
          2LL * 12000 * 3584 + 2LL * 800 * 4096);
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{1}, 24, 8, clips, ctx).count() == 0);
    // the llm's last chunk hands its hidden states to the generator
    CHECK(pw::stage_output_bytes(model, pw::ModuleId{0}, 24, 8, ctx, {}).count() == 2LL * 800 * 4096);
  }
}
