// The stage-cost cache's hit counters (spatial and temporal reuse, exact counts on a hand-made
// step), and the emulator's rejection of plans that cannot run.
#include <doctest/doctest.h>

#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>

#include <string>

#include "emulate/emu_support.hpp"

namespace pw = pipeweaver;
using namespace emu_test;

namespace {

struct Chain {
  pw::ModelSpec model;
  pw::Setup setup;
  pw::Partition part;
  pw::StageGraph graph;
  pw::Plan plan;
};

/// 1F1B over P ranks, one chunk each; smb s has tokens shape(s).
template <class Shape>
Chain chain_1f1b(int P, int M, Shape shape) {
  Chain c;
  c.model = chain_model(2 * P);
  c.setup = test_setup(P);
  c.part = interleaved_partition(P, 1, 2);
  c.graph = chain_graph(c.part, M);
  std::vector<pw::SubMicrobatchSpec> smbs;
  for (int s = 0; s < M; ++s) smbs.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{s}, std::vector<std::int64_t>{shape(s)});
  c.plan = mini_lower(c.model, c.part, smbs, c.graph, chain_schedule(c.graph, c.part, one_f_one_b_order(P, M)),
                      [](pw::NodeIndex, pw::NodeIndex) { return pw::Bytes{8}; });
  c.plan.setup = c.setup.name;
  return c;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the stage-cost cache reuses identical chunks and shapes, within and across steps") {
  const int P = 4, M = 6;
  const std::int64_t stages = 2LL * P * M;
  SUBCASE("identical shapes, uniform-layer keys: first / middle / last chunk x F / B") {
    const Chain c = chain_1f1b(P, M, [](int) { return std::int64_t{64}; });
    TableCost cost;
    pw::StageCostCache<TableCost> cache(cost, c.model);
    const auto r1 = pw::emulate(c.plan, c.model, c.setup, cache);
    CHECK(r1.cache.misses == 6);  // chunks 1 and 2 are "middle" chunks: spatial reuse across ranks
    CHECK(r1.cache.hits == static_cast<std::uint64_t>(stages - 6));
    CHECK(cost.calls == 6);
    CHECK(r1.cache.shapes == 1);
    // Temporal reuse: the next step with the same shapes evaluates nothing.
    const auto r2 = pw::emulate(c.plan, c.model, c.setup, cache);
    CHECK(r2.cache.misses == 0);
    CHECK(r2.cache.hits == static_cast<std::uint64_t>(stages));
    CHECK(cost.calls == 6);
    CHECK(r2.step_time == r1.step_time);
    CHECK(cache.hits() == static_cast<std::uint64_t>(2 * stages - 6));
  }
  SUBCASE("exact layer-range keys: one entry per chunk and pass") {
    const Chain c = chain_1f1b(P, M, [](int) { return std::int64_t{64}; });
    TableCost cost;
    pw::StageCostCache<TableCost> cache(cost, c.model, {.enabled = true, .uniform_layers = false});
    const auto r = pw::emulate(c.plan, c.model, c.setup, cache);
    CHECK(r.cache.misses == static_cast<std::uint64_t>(2 * P));
    CHECK(r.cache.entries == static_cast<std::size_t>(2 * P));
  }
  SUBCASE("distinct shapes miss; equal shapes in other microbatches hit") {
    const Chain c = chain_1f1b(P, M, [](int s) { return std::int64_t{64 + s % 2}; });
    TableCost cost;
    const auto r = pw::emulate(c.plan, c.model, c.setup, cost);  // the per-step cache of the plain overload
    CHECK(r.cache.shapes == 2);
    CHECK(r.cache.misses == 12);
    CHECK(r.cache.hits == static_cast<std::uint64_t>(stages - 12));
  }
  SUBCASE("cache off: every stage evaluates the cost model, same results") {
    const Chain c = chain_1f1b(P, M, [](int) { return std::int64_t{64}; });
    TableCost cost;
    const auto on = pw::emulate(c.plan, c.model, c.setup, cost);
    const auto calls_on = cost.calls;
    const auto off = pw::emulate(c.plan, c.model, c.setup, cost, {.record_timeline = false, .cache = {.enabled = false}});
    CHECK(off.cache.hits == 0);
    CHECK(off.cache.misses == static_cast<std::uint64_t>(stages));
    CHECK(cost.calls - calls_on == stages);
    CHECK(off.step_time == on.step_time);
    for (int r = 0; r < P; ++r) CHECK(off.ranks[static_cast<std::size_t>(r)].peak_memory == on.ranks[static_cast<std::size_t>(r)].peak_memory);
  }
}

TEST_CASE("lower bound of a homogeneous 1F1B chain is max(M, P)(F + B) and never above the emulated time") {
  for (int P : {1, 2, 4})
    for (int M : {1, 2, 4, 7}) {
      CAPTURE(P);
      CAPTURE(M);
      const Chain c = chain_1f1b(P, M, [](int) { return std::int64_t{64}; });
      TableCost cost;
      cost.f = 10;
      cost.b = 20;
      cost.ns_per_byte = 2;
      cost.output = 8;  // the edge size lower_bound derives (edge_bytes), as in the plan
      pw::StageCostCache<TableCost> cache(cost, c.model);
      const auto lb = pw::lower_bound(c.graph, c.part, c.plan.sub_microbatches, cache);
      CHECK(lb.total_work == pw::Nanoseconds{30LL * P * M});
      CHECK(lb.critical_path == pw::Nanoseconds{30LL * P});
      CHECK(lb.value == pw::Nanoseconds{30LL * std::max(M, P)});
      // Counting transfers: each of the 2(P - 1) cross-rank edges of the chain adds 8 bytes x 2 ns.
      const auto lbt = pw::lower_bound(c.graph, c.part, c.plan.sub_microbatches, cache, {.count_transfers = true});
      CHECK(lbt.critical_path == pw::Nanoseconds{30LL * P + 2LL * (P - 1) * 16});
      const auto emu = pw::emulate(c.plan, c.model, c.setup, cost);
      CHECK(lb.value <= emu.step_time);
      CHECK(lbt.value <= emu.step_time);
    }
}

TEST_CASE("plans that cannot run are rejected with the rank, the position and the rule") {
  const auto model = chain_model(4);
  const auto setup = test_setup(2);
  const auto part = interleaved_partition(2, 1, 2);
  TableCost cost;
  auto base = [&] {
    pw::Plan p;
    p.name = "hand";
    p.partition = part;
    p.sub_microbatches = one_per_microbatch(1);
    p.ranks.resize(2);
    const pw::StageRef f0{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::forward};
    const pw::StageRef f1{pw::ModuleId{0}, 1, pw::SubMicrobatchId{0}, pw::Pass::forward};
    const pw::StageRef b1{pw::ModuleId{0}, 1, pw::SubMicrobatchId{0}, pw::Pass::backward};
    const pw::StageRef b0{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::backward};
    p.transfers.push_back(pw::Transfer{pw::RankId{0}, pw::RankId{1}, f0, f1, pw::Bytes{4}});
    p.transfers.push_back(pw::Transfer{pw::RankId{1}, pw::RankId{0}, b1, b0, pw::Bytes{4}});
    return p;
  };
  const pw::Forward F0{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, {}};
  const pw::Forward F1{pw::ModuleId{0}, 1, pw::SubMicrobatchId{0}, {}};
  const pw::Backward B1{pw::ModuleId{0}, 1, pw::SubMicrobatchId{0}, {}, pw::Pass::backward};
  const pw::Backward B0{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, {}, pw::Pass::backward};
  const pw::TransferId t0{0}, t1{1};

  SUBCASE("the valid plan runs") {
    auto p = base();
    p.ranks[0] = {F0, pw::Send{t0}, pw::Recv{t1}, pw::Wait{t1}, B0};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, F1, B1, pw::Send{t1}};
    CHECK(pw::emulate(p, model, setup, cost).step_time == pw::Nanoseconds{60});
  }
  auto expect_error = [&](const pw::Plan& p, const std::string& path, const std::string& words) {
    try {
      (void)pw::emulate(p, model, setup, cost);
      FAIL("accepted a broken plan");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == path);
      CHECK_MESSAGE(contains(e.what(), words), e.what());
    }
  };
  SUBCASE("a cycle of waits is a deadlock naming every stuck rank and its next action") {
    auto p = base();
    p.ranks[0] = {pw::Recv{t1}, pw::Wait{t1}, F0, pw::Send{t0}, B0};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, F1, B1, pw::Send{t1}};
    expect_error(p, "rank 0, action 1", "deadlock");
    expect_error(p, "rank 0, action 1", "rank 1, action 1 waits in Wait transfer 0");
  }
  SUBCASE("a wait before its recv") {
    auto p = base();
    p.ranks[0] = {F0, pw::Send{t0}, pw::Wait{t1}, pw::Recv{t1}, B0};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, F1, B1, pw::Send{t1}};
    expect_error(p, "rank 0, action 2", "before its Recv");
  }
  SUBCASE("a send before its producer") {
    auto p = base();
    p.ranks[0] = {pw::Send{t0}, F0, pw::Recv{t1}, pw::Wait{t1}, B0};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, F1, B1, pw::Send{t1}};
    expect_error(p, "rank 0, action 0", "before its producer");
  }
  SUBCASE("a stage on a rank the partition does not give it") {
    auto p = base();
    p.ranks[0] = {F0, pw::Send{t0}, pw::Recv{t1}, pw::Wait{t1}, B0, F1};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, B1, pw::Send{t1}};
    expect_error(p, "rank 0, action 5", "partition places the chunk on rank 1");
  }
  SUBCASE("a missing recv") {
    auto p = base();
    p.ranks[0] = {F0, pw::Send{t0}, pw::Recv{t1}, pw::Wait{t1}, B0};
    p.ranks[1] = {F1, B1, pw::Send{t1}};
    expect_error(p, "transfers/0", "never received");
  }
  SUBCASE("a backward before its forward") {
    auto p = base();
    p.ranks[0] = {F0, pw::Send{t0}, pw::Recv{t1}, pw::Wait{t1}, B0};
    p.ranks[1] = {pw::Recv{t0}, pw::Wait{t0}, B1, F1, pw::Send{t1}};
    expect_error(p, "rank 1, action 2", "before its forward");
  }
  SUBCASE("a rank count that differs from the setup's") {
    auto p = base();
    p.ranks.resize(3);
    CHECK_THROWS_AS((void)pw::emulate(p, model, setup, cost), pw::Error);
  }
}
