// Closed forms of the classic schedules, emulated through the whole path a baseline takes
// (layout -> split -> stage graph -> order -> lowering -> emulator), with zero communication
// cost on a homogeneous single-module chain (ToyCost: f / b ns per layer forward / backward):
//   GPipe, 1F1B:           step = (M + P − 1)(F + B)
//   1F1B:                  peak activations on rank r = min(P − r, M) microbatches
//   interleaved 1F1B:      step − M(F + B) = (P − 1)(F + B)/v        (M divisible by P)
// with F, B the per-rank forward / backward time of one whole microbatch. Also: the schedule's
// own memory accounting equals the emulator's, and the recompute choice is the cheapest that fits.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/baselines/builder.hpp"
#include "baselines/chain_graph.hpp"
#include "baselines/toy_step.hpp"

using namespace pipeweaver;

namespace {

using pwtest::even_chain;
using pwtest::toy_batch;
using pwtest::toy_setup;

}  // namespace

TEST_CASE("GPipe and 1F1B: step time (M + P - 1)(F + B) with zero communication") {
  const pwtest::ToyCost cost;
  for (int P : {1, 2, 3, 4, 8})
    for (int M : {1, 2, 3, 5, 8, 13})
      for (int per_rank : {1, 3}) {
        const ModelSpec model = pwtest::chain_model(P * per_rank);
        const Setup setup = toy_setup(P, M);
        BaselineContext<pwtest::ToyCost> ctx(model, setup, cost);
        const std::int64_t F = cost.f * per_rank, B = cost.b * per_rank;
        for (auto order : {BaselineOrder::gpipe, BaselineOrder::one_f_one_b}) {
          CAPTURE(P);
          CAPTURE(M);
          CAPTURE(per_rank);
          CAPTURE(static_cast<int>(order));
          const auto plan = build_baseline_plan(ctx, even_chain(model, P, 1, order), toy_batch(M));
          CHECK(plan.recompute == UniformRecompute::none);
          CHECK(plan.emulation.step_time.count() == (M + P - 1) * (F + B));
          for (int r = 0; r < P; ++r) {
            const auto& rs = plan.emulation.ranks[static_cast<std::size_t>(r)];
            const std::int64_t held = (rs.peak_memory - rs.static_memory).count();
            const std::int64_t one_microbatch = cost.a * per_rank;
            if (order == BaselineOrder::one_f_one_b) CHECK(held == std::min(P - r, M) * one_microbatch);
            else CHECK(held == M * one_microbatch);
          }
        }
      }
}

TEST_CASE("interleaved 1F1B: bubble (P - 1)(F + B)/v for M divisible by P") {
  const pwtest::ToyCost cost;
  for (int P : {2, 3, 4, 8})
    for (int v : {2, 3, 4})
      for (int groups : {1, 2, 3}) {
        const int M = P * groups;
        const int per_chunk = 2;
        const ModelSpec model = pwtest::chain_model(P * v * per_chunk);
        const Setup setup = toy_setup(P, M);
        BaselineContext<pwtest::ToyCost> ctx(model, setup, cost);
        const std::int64_t F = cost.f * per_chunk * v, B = cost.b * per_chunk * v;  // per rank, whole microbatch
        CAPTURE(P);
        CAPTURE(v);
        CAPTURE(M);
        const auto plan = build_baseline_plan(ctx, even_chain(model, P, v, BaselineOrder::interleaved), toy_batch(M));
        const std::int64_t bubble = plan.emulation.step_time.count() - M * (F + B);
        CHECK(bubble * v == (P - 1) * (F + B));
      }
}

TEST_CASE("interleaved 1F1B with M not divisible by P: deadlock-free, never slower than the 1F1B bound") {
  const pwtest::ToyCost cost;
  for (int P : {4, 8})
    for (int v : {2, 4})
      for (int M : {5, 9, 12, 13, 17}) {
        if (M % P == 0) continue;
        const ModelSpec model = pwtest::chain_model(P * v);
        const Setup setup = toy_setup(P, M);
        BaselineContext<pwtest::ToyCost> ctx(model, setup, cost);
        CAPTURE(P);
        CAPTURE(v);
        CAPTURE(M);
        const auto plan = build_baseline_plan(ctx, even_chain(model, P, v, BaselineOrder::interleaved), toy_batch(M));
        const std::int64_t F = cost.f * v, B = cost.b * v;
        CHECK(plan.emulation.step_time.count() >= M * (F + B));
        CHECK(plan.emulation.step_time.count() <= (M + P - 1) * (F + B));
      }
}

TEST_CASE("schedule memory accounting equals the emulator's peaks") {
  const pwtest::ToyCost cost;
  const ModelSpec model = pwtest::chain_model(16);
  const Setup setup = toy_setup(4, 6);
  BaselineContext<pwtest::ToyCost> ctx(model, setup, cost);
  for (auto [v, order] : {std::pair{1, BaselineOrder::gpipe}, std::pair{1, BaselineOrder::one_f_one_b},
                          std::pair{2, BaselineOrder::interleaved}, std::pair{4, BaselineOrder::interleaved}}) {
    const auto b = even_chain(model, 4, v, order);
    const auto step = schedule_step(ctx, b, toy_batch(6));
    const auto plan = build_baseline_plan(ctx, b, toy_batch(6));
    REQUIRE(step.peak_memory.size() == plan.emulation.ranks.size());
    for (std::size_t r = 0; r < step.peak_memory.size(); ++r) CHECK(step.peak_memory[r] == plan.emulation.ranks[r].peak_memory);
  }
}

TEST_CASE("uniform recompute: the cheapest setting that fits, else full with fits_memory = false") {
  // 1F1B, P = 4, M = 8, 2 layers per rank, a = 1 GiB per layer: rank 0 holds 4 microbatches,
  // i.e. 8 GiB (none), 4 GiB (selective), 0.5 GiB (full), on top of a few MiB of weights.
  pwtest::ToyCost cost;
  cost.a = std::int64_t{1} << 30;
  const ModelSpec model = pwtest::chain_model(8);
  struct Case {
    double memory_gib;
    UniformRecompute expected;
    bool fits;
  };
  for (const Case c : {Case{10, UniformRecompute::none, true}, Case{6, UniformRecompute::selective, true},
                       Case{2, UniformRecompute::full, true}, Case{0.25, UniformRecompute::full, false}}) {
    CAPTURE(c.memory_gib);
    const Setup setup = toy_setup(4, 8, c.memory_gib);
    BaselineContext<pwtest::ToyCost> ctx(model, setup, cost);
    const auto b = even_chain(model, 4, 1, BaselineOrder::one_f_one_b);
    const auto plan = build_baseline_plan(ctx, b, toy_batch(8));
    CHECK(plan.recompute == c.expected);
    CHECK(plan.fits_memory == c.fits);
    CHECK(plan.emulation.fits_memory() == c.fits);
    // Every cheaper setting really does not fit (checked by emulating it).
    const auto smbs = split(model, b.layout.partition, toy_batch(8));
    const auto graph = build_stage_graph(model, b.layout.partition, smbs);
    for (UniformRecompute r : uniform_recompute_settings) {
      if (r == c.expected) break;
      const auto s = order_step(ctx, b, graph, smbs, r);
      const auto p = lower(model, b.layout.partition, smbs, graph, s, cost, "t", setup.name);
      CHECK_FALSE(emulate(p, model, setup, cost).fits_memory());
    }
  }
}
