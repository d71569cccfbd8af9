// The zero-bubble baseline (ZB-H1) through the whole path a baseline takes (layout -> split ->
// stage graph with split backwards -> order -> lowering -> emulator), on a homogeneous
// single-module chain with zero communication cost, against closed forms:
//   F = B = W per rank (B, W: the input- and weight-gradient parts of the backward):
//     ZB-H1 step = M(F + B + W) + (P − 1)(F + B − W)     (M >= P)
//     1F1B step  = (M + P − 1)(F + B + W)
//   activations held on any rank: at most min(P, M) microbatches (1F1B's peak over ranks);
// and for uneven F, B, W and M < P: a valid plan (validator), every weight part after its input
// part, never slower than 1F1B's closed form.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <variant>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/zero_bubble.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/schedule/validator.hpp"
#include "baselines/chain_graph.hpp"
#include "baselines/toy_step.hpp"

using namespace pipeweaver;

namespace {

/// Per layer: forward f, input part bi, weight part bw (the whole backward is their sum),
/// activations a bytes; full recompute adds f to the input part.
struct SplitCost {
  std::int64_t f = 1000, bi = 1000, bw = 1000, a = 1 << 20;
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Nanoseconds latency(const S& s, const M&, const MemoryStrategy& st) const {
    const std::int64_t L = s.layer_count();
    switch (s.pass()) {
      case Pass::forward: return Nanoseconds{f * L};
      case Pass::backward_input: return Nanoseconds{bi * L + f * st.full_recompute};
      case Pass::backward_weight: return Nanoseconds{bw * L};
      case Pass::backward: break;
    }
    return Nanoseconds{(bi + bw) * L + f * st.full_recompute};
  }
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes activation_bytes(const S& s, const M&, const MemoryStrategy& st) const {
    return Bytes{a * (s.layer_count() - st.full_recompute - st.selective_recompute) + (a / 16) * st.full_recompute +
                 (a / 2) * st.selective_recompute};
  }
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes output_bytes(const S&, const M&) const { return Bytes{0}; }
  [[nodiscard]] Nanoseconds transfer_time(Bytes) const { return Nanoseconds{0}; }
};
static_assert(CostModel<SplitCost, StageSpec, SubMicrobatchSpec>);

using pwtest::toy_batch;
using pwtest::toy_setup;

StaticBaseline even_chain(const ModelSpec& model, int P, BaselineOrder order) {
  return pwtest::even_chain(model, P, 1, order, "zero-bubble");
}

/// Per rank: positions of the input and weight parts of each stage (both must exist, the weight
/// part later).
void check_split_order(const Plan& plan) {
  int weight_parts = 0;
  for (const auto& actions : plan.ranks) {
    std::vector<std::pair<int, int>> seen_input;  // (chunk, sub-microbatch) of input parts run so far
    for (const Action& a : actions) {
      const auto* b = std::get_if<Backward>(&a);
      if (b == nullptr) continue;
      CHECK(b->pass != Pass::backward);
      const std::pair key{b->chunk, b->sub_microbatch.value()};
      if (b->pass == Pass::backward_input) seen_input.push_back(key);
      if (b->pass == Pass::backward_weight) {
        ++weight_parts;
        CHECK(std::find(seen_input.begin(), seen_input.end(), key) != seen_input.end());
      }
    }
  }
  CHECK(weight_parts > 0);
}

}  // namespace

TEST_CASE("zero-bubble: ZB-H1's closed form M(F + B + W) + (P - 1)(F + B - W) with F = B = W") {
  const SplitCost cost;
  for (int P : {1, 2, 3, 4, 8})
    for (int extra : {0, 1, 3, 8})
      for (int per_rank : {1, 2}) {
        const int M = P + extra;
        const ModelSpec model = pwtest::chain_model(P * per_rank);
        const Setup setup = toy_setup(P, M);
        BaselineContext<SplitCost> ctx(model, setup, cost);
        CAPTURE(P);
        CAPTURE(M);
        CAPTURE(per_rank);
        const std::int64_t F = cost.f * per_rank, B = cost.bi * per_rank, W = cost.bw * per_rank;
        const auto zb = build_baseline_plan(ctx, even_chain(model, P, BaselineOrder::zero_bubble), toy_batch(M));
        CHECK(zb.recompute == UniformRecompute::none);
        CHECK(zb.emulation.step_time.count() == M * (F + B + W) + (P - 1) * (F + B - W));
        const auto one = build_baseline_plan(ctx, even_chain(model, P, BaselineOrder::one_f_one_b), toy_batch(M));
        CHECK(one.emulation.step_time.count() == (M + P - 1) * (F + B + W));
        for (int r = 0; r < P; ++r) {
          const auto& rs = zb.emulation.ranks[static_cast<std::size_t>(r)];
          CHECK((rs.peak_memory - rs.static_memory).count() <= std::min(P, M) * cost.a * per_rank);
        }
        CHECK((zb.emulation.ranks[0].peak_memory - zb.emulation.ranks[0].static_memory).count() == std::min(P, M) * cost.a * per_rank);
        validate(zb.plan, model, setup, cost);
        if (P > 1) check_split_order(zb.plan);
      }
}

TEST_CASE("zero-bubble: uneven F, B, W and few microbatches give valid plans no slower than 1F1B") {
  for (const SplitCost cost : {SplitCost{1000, 1200, 800}, SplitCost{1000, 2000, 1000}, SplitCost{700, 1500, 1900}})
    for (int P : {2, 3, 4, 6})
      for (int M : {1, 2, 3, 5, 9}) {
        const ModelSpec model = pwtest::chain_model(2 * P);
        const Setup setup = toy_setup(P, M);
        BaselineContext<SplitCost> ctx(model, setup, cost);
        CAPTURE(cost.bi);
        CAPTURE(P);
        CAPTURE(M);
        const auto zb = build_baseline_plan(ctx, even_chain(model, P, BaselineOrder::zero_bubble), toy_batch(M));
        validate(zb.plan, model, setup, cost);
        check_split_order(zb.plan);
        const std::int64_t F = 2 * cost.f, B = 2 * cost.bi, W = 2 * cost.bw;
        CHECK(zb.emulation.step_time.count() >= M * (F + B + W));
        CHECK(zb.emulation.step_time.count() <= (M + P - 1) * (F + B + W));
      }
}

TEST_CASE("zero-bubble: a layout with several virtual stages per rank is refused") {
  const SplitCost cost;
  const ModelSpec model = pwtest::chain_model(8);
  const Setup setup = toy_setup(2, 4);
  BaselineContext<SplitCost> ctx(model, setup, cost);
  StaticBaseline b = even_chain(model, 2, BaselineOrder::zero_bubble);
  ChainSplit split{2, 2, {0, 2, 4, 6, 8}};
  b.layout = chain_layout(model, b.chain, split, "zero-bubble");
  CHECK_THROWS_AS((void)build_baseline_plan(ctx, b, toy_batch(4)), Error);
}
