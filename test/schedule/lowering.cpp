// Communication lowering: random valid schedules lower to plans the validator accepts, with one
// transfer per cross-rank edge sized as the contract says; a schedule whose order contradicts
// the dependencies is rejected with its rank and position.
#include <doctest/doctest.h>

#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include <algorithm>
#include <variant>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

TEST_CASE("random valid schedules lower to plans that pass the validator") {
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    pw::ModelSpec model;
    const pw::Plan plan = random_plan(seed, &model);
    CHECK_NOTHROW(pw::validate(plan, model));

    // Independent accounting: one transfer per cross-rank edge of the graph, none within a rank.
    bool split = false;
    for (const auto& list : plan.ranks)
      for (const auto& a : list)
        if (const auto* b = std::get_if<pw::Backward>(&a)) split = split || b->pass != pw::Pass::backward;
    const auto g = pw::build_stage_graph(model, plan.partition, plan.sub_microbatches, {.split_backward = split});
    std::size_t cross = 0, stages = 0, sends = 0, recvs = 0, waits = 0;
    for (const auto& n : g.nodes)
      for (auto i : n.inputs) cross += g.nodes[static_cast<std::size_t>(i)].rank != n.rank ? 1 : 0;
    for (const auto& list : plan.ranks)
      for (const auto& a : list) {
        stages += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a);
        sends += std::holds_alternative<pw::Send>(a);
        recvs += std::holds_alternative<pw::Recv>(a);
        waits += std::holds_alternative<pw::Wait>(a);
      }
    CHECK(plan.transfers.size() == cross);
    CHECK(sends == cross);
    CHECK(recvs == cross);
    CHECK(waits == cross);
    CHECK(stages == g.size());
    // Sizes: forward edges carry the producer's output, backward edges the consumer's forward output.
    const TinyCost cost;
    for (const auto& t : plan.transfers) {
      CHECK(t.from != t.to);
      const auto& src = t.producer.pass == pw::Pass::forward ? t.producer : t.consumer;
      const auto stage = pw::StageSpec::of(plan.partition, src.module, src.chunk, pw::Pass::forward);
      CHECK(t.bytes == cost.output_bytes(stage, plan.sub_microbatches[src.sub_microbatch.index()]));
    }
  }
}

TEST_CASE("lowering keeps each rank's stage order and is deterministic") {
  Rng rng(77);
  const auto model = vlm(4, 8);
  const auto part = interleaved(model, 3, {3, 6}, {1, 0});
  const auto s = smbs(model, 3, {2, 1}, rng);
  const auto g = pw::build_stage_graph(model, part, s);
  const auto sched = random_schedule(g, part, rng);
  const auto plan = pw::lower(model, part, s, g, sched, TinyCost{}, "x", "y");
  CHECK(plan == pw::lower(model, part, s, g, sched, TinyCost{}, "x", "y"));
  CHECK(plan.name == "x");
  CHECK(plan.setup == "y");
  CHECK(plan.model == model.name);
  CHECK(plan.microbatches == 3);
  for (std::size_t r = 0; r < sched.ranks.size(); ++r) {
    std::vector<pw::NodeIndex> order;
    for (const auto& a : plan.ranks[r]) {
      if (const auto* f = std::get_if<pw::Forward>(&a)) order.push_back(g.find({f->module, f->chunk, f->sub_microbatch, pw::Pass::forward}));
      if (const auto* b = std::get_if<pw::Backward>(&a)) order.push_back(g.find({b->module, b->chunk, b->sub_microbatch, b->pass}));
    }
    std::vector<pw::NodeIndex> expect;
    for (const auto& st : sched.ranks[r]) expect.push_back(st.node);
    CHECK(order == expect);
  }
  pw::validate(plan, model);
}

TEST_CASE("lowering rejects schedules that cannot run, naming rank and position") {
  Rng rng(3);
  const auto model = vlm(2, 4);
  const auto part = interleaved(model, 2, {1, 2}, {0, 0});  // vit on rank 0; llm chunks on ranks 0, 1
  const auto s = smbs(model, 2, {1, 1}, rng);
  const auto g = pw::build_stage_graph(model, part, s);
  auto sched = gpipe_schedule(g, 2);
  CHECK_NOTHROW((void)pw::lower(model, part, s, g, sched, TinyCost{}, "ok", "s"));
  auto expect = [&](const pw::Schedule& bad, const std::string& path, const std::string& text) {
    try {
      (void)pw::lower(model, part, s, g, bad, TinyCost{}, "bad", "s");
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == path);
      CHECK(std::string(e.what()).find(text) != std::string::npos);
    }
  };
  SUBCASE("cycle across ranks: rank 1 runs a backward before the forward it needs") {
    auto bad = sched;
    auto& r1 = bad.ranks[1];
    std::rotate(r1.begin(), r1.end() - 1, r1.end());  // last backward first
    expect(bad, "rank 1, position 0", "can never start");
  }
  SUBCASE("a stage twice") {
    auto bad = sched;
    bad.ranks[0].push_back(bad.ranks[0][0]);
    expect(bad, "rank 0, position " + std::to_string(bad.ranks[0].size() - 1), "scheduled twice");
  }
  SUBCASE("a stage missing") {
    auto bad = sched;
    const auto dropped = bad.ranks[1].back();
    bad.ranks[1].pop_back();
    expect(bad, "rank 1", "never scheduled");
    (void)dropped;
  }
  SUBCASE("a stage on the wrong rank") {
    auto bad = sched;
    bad.ranks[1].insert(bad.ranks[1].begin(), bad.ranks[0][0]);
    bad.ranks[0].erase(bad.ranks[0].begin());
    expect(bad, "rank 1, position 0", "scheduled on rank 1");
  }
  SUBCASE("a backward whose strategy differs from its forward's") {
    auto bad = sched;
    auto& last = bad.ranks[0].back();  // a backward
    last.strategy = pw::MemoryStrategy::full(1);
    expect(bad, "rank 0, position " + std::to_string(bad.ranks[0].size() - 1), "its forward has 'none'");
  }
}
