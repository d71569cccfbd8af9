// Closed forms of the classic schedules on a homogeneous chain with zero communication cost.
#include <doctest/doctest.h>

#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>
#include <pipeweaver/model/memory.hpp>

#include "emulate/emu_support.hpp"

namespace pw = pipeweaver;
using namespace emu_test;

namespace {

struct Built {
  pw::ModelSpec model;
  pw::Setup setup;
  pw::Partition part;
  pw::StageGraph graph;
  pw::Schedule schedule;
  pw::Plan plan;
};

Built build(int P, int v, int M, const RankOrders& orders, std::int64_t out_bytes = 0) {
  Built b;
  b.model = chain_model(P * v * 2);
  b.setup = test_setup(P);
  b.part = interleaved_partition(P, v, 2);
  b.graph = chain_graph(b.part, M);
  b.schedule = chain_schedule(b.graph, b.part, orders);
  b.plan = mini_lower(b.model, b.part, one_per_microbatch(M), b.graph, b.schedule,
                      [&](pw::NodeIndex, pw::NodeIndex) { return pw::Bytes{out_bytes}; });
  b.plan.setup = b.setup.name;
  return b;
}

}  // namespace

TEST_CASE("GPipe and 1F1B take (M + P - 1)(F + B) with zero communication cost") {
  for (int P : {1, 2, 3, 4, 8})
    for (int M : {1, 2, 3, 5, 8, 12})
      for (auto [F, B] : {std::pair{10, 20}, std::pair{7, 7}, std::pair{13, 5}}) {
        CAPTURE(P);
        CAPTURE(M);
        CAPTURE(F);
        CAPTURE(B);
        TableCost cost;
        cost.f = F;
        cost.b = B;
        const pw::Nanoseconds expected{static_cast<std::int64_t>(M + P - 1) * (F + B)};
        {  // gpipe (no SUBCASE inside loops: doctest would run only the first iteration's)
          const Built b = build(P, 1, M, gpipe_order(P, M));
          CHECK(pw::emulate(b.plan, b.model, b.setup, cost).step_time == expected);
        }
        {  // 1f1b
          const Built b = build(P, 1, M, one_f_one_b_order(P, M));
          const auto res = pw::emulate(b.plan, b.model, b.setup, cost);
          CHECK(res.step_time == expected);
          // Every rank does M(F + B) of work; the rest of the step is its bubble.
          for (const auto& r : res.ranks) {
            CHECK(r.busy == pw::Nanoseconds{static_cast<std::int64_t>(M) * (F + B)});
            CHECK(r.idle == pw::Nanoseconds{static_cast<std::int64_t>(P - 1) * (F + B)});
          }
        }
      }
}

TEST_CASE("1F1B keeps min(P - r, M) microbatches of activations on rank r - GPipe keeps M") {
  for (int P : {1, 2, 4, 6})
    for (int M : {1, 3, 4, 9}) {
      CAPTURE(P);
      CAPTURE(M);
      TableCost cost;
      cost.activation = 1000;
      const Built f1b = build(P, 1, M, one_f_one_b_order(P, M));
      const Built gp = build(P, 1, M, gpipe_order(P, M));
      const auto r1 = pw::emulate(f1b.plan, f1b.model, f1b.setup, cost);
      const auto rg = pw::emulate(gp.plan, gp.model, gp.setup, cost);
      for (int r = 0; r < P; ++r) {
        const auto& s1 = r1.ranks[static_cast<std::size_t>(r)];
        // Static memory is the real per-chunk state of the rank's chunk.
        CHECK(s1.static_memory == pw::chunk_state_bytes(f1b.model, pw::ModuleId{0}, f1b.setup, 2 * r, 2));
        CHECK(s1.peak_memory - s1.static_memory == pw::Bytes{1000LL * std::min(P - r, M)});
        const auto& sg = rg.ranks[static_cast<std::size_t>(r)];
        CHECK(sg.peak_memory - sg.static_memory == pw::Bytes{1000LL * M});
        CHECK(s1.fits_memory);
      }
    }
}

TEST_CASE("interleaved 1F1B's bubble is (P - 1)(F + B) / v for M divisible by P") {
  for (int P : {2, 3, 4})
    for (int v : {1, 2, 3, 4})
      for (int k : {1, 2, 3}) {
        const int M = k * P;
        CAPTURE(P);
        CAPTURE(v);
        CAPTURE(M);
        // Per-chunk latencies f, b: a whole model stage (v chunks) takes F = v f, B = v b.
        for (auto [f, b] : {std::pair{3, 6}, std::pair{5, 5}}) {
          TableCost cost;
          cost.f = f;
          cost.b = b;
          const Built bt = build(P, v, M, interleaved_order(P, v, M));
          const auto res = pw::emulate(bt.plan, bt.model, bt.setup, cost);
          const std::int64_t F = std::int64_t{v} * f, B = std::int64_t{v} * b;
          const std::int64_t ideal = M * (F + B);
          // bubble = (P - 1)(F + B) / v, exactly (F + B is a multiple of v here).
          CHECK(res.step_time.count() - ideal == (P - 1) * (F + B) / v);
          for (const auto& r : res.ranks) CHECK(r.busy == pw::Nanoseconds{ideal});
        }
      }
}

TEST_CASE("the fast path agrees with the closed forms and with the lowered plan, with communication") {
  for (int P : {2, 4})
    for (int v : {1, 2}) {
      const int M = 2 * P;
      TableCost cost;
      cost.f = 9;
      cost.b = 17;
      cost.ns_per_byte = 3;
      const RankOrders orders = v == 1 ? one_f_one_b_order(P, M) : interleaved_order(P, v, M);
      const Built b = build(P, v, M, orders, /*out_bytes=*/2);
      const auto res = pw::emulate(b.plan, b.model, b.setup, cost, {.record_timeline = true});
      std::vector<pw::Nanoseconds> lat(b.graph.size());
      for (std::size_t n = 0; n < lat.size(); ++n)
        lat[n] = pw::Nanoseconds{b.graph.nodes[n].stage.pass == pw::Pass::forward ? 9 : 17};
      const auto fast = pw::emulate_schedule(b.graph, b.schedule, lat,
                                             [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{6}; });
      CHECK(fast.step_time == res.step_time);
      // With communication the step is longer than the zero-cost closed form.
      CHECK(res.step_time > pw::Nanoseconds{(M * v + P - 1) * 26LL});
      for (const auto& e : res.timeline) {
        if (e.kind != pw::TimelineEvent::Kind::compute) continue;
        const auto n = static_cast<std::size_t>(
            (e.stage.sub_microbatch.value() * 2 + (e.stage.pass == pw::Pass::forward ? 0 : 1)) * P * v + e.stage.chunk);
        REQUIRE(b.graph.nodes[n].stage == e.stage);
        CHECK(fast.start[n] == e.start);
        CHECK(fast.end[n] == e.end);
      }
    }
}
