// The flat rank program against the plan it flattens: rebuilding a Plan from the flat program
// alone (a second reading of every field) gives back the original plan, action for action,
// transfer for transfer; every action's stage runs on its own rank; and a plan naming a transfer
// or module it lacks is refused naming the rank and the action.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"

#include <pipeweaver/ir/flat_program.hpp>

#include <map>
#include <optional>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

pw::Batch three_microbatches() {
  pw::Batch batch;
  for (int mb = 0; mb < 3; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{7 + mb, {pw::SampleItems{"image", {8, 12, 4}}}});
    m.samples.push_back(pw::Sample{9, {}});
    m.samples.push_back(pw::Sample{5, {pw::SampleItems{"image", {16}}}});
    batch.microbatches.push_back(m);
  }
  return batch;
}

pw::StageRef ref_of(const pw::FlatStage& s) { return pw::StageRef{s.module_id, s.chunk, s.sub_microbatch, s.pass}; }

/// A Plan read back from the flat program only.
pw::Plan rebuild(const pw::FlatProgram& f) {
  pw::Plan p;
  p.name = f.plan;
  p.model = f.model;
  p.setup = f.setup;
  p.microbatches = f.microbatches;
  p.partition.name = f.plan;
  p.partition.ranks = f.ranks;
  for (const pw::FlatModule& m : f.modules) p.partition.modules.push_back(pw::ModulePlacement{m.chunks, m.sub_microbatch_items});
  std::map<int, pw::SubMicrobatchSpec> smbs;
  std::map<int, pw::Transfer> transfers;
  auto note_smb = [&](const pw::FlatStage& s) {
    std::vector<std::int64_t> tokens, context;
    std::vector<pw::ItemRef> items;
    bool any_context = false;
    for (const pw::FlatItem& i : s.items) {
      tokens.push_back(i.tokens);
      context.push_back(i.context_tokens);
      any_context = any_context || i.context_tokens != 0;
      items.push_back(pw::ItemRef{i.sample, i.item});
    }
    if (!any_context) context.clear();
    pw::SubMicrobatchSpec spec(s.module_id, s.microbatch, tokens, context, items);
    const auto [it, fresh] = smbs.emplace(s.sub_microbatch.value(), spec);
    if (!fresh) CHECK(it->second == spec);  // every mention agrees
  };
  for (const pw::FlatRankProgram& r : f.programs) {
    std::vector<pw::Action> actions;
    for (const pw::FlatAction& a : r.actions) {
      note_smb(a.stage);
      switch (a.op) {
        case pw::FlatOp::forward: actions.push_back(pw::Forward{a.stage.module_id, a.stage.chunk, a.stage.sub_microbatch, a.strategy}); break;
        case pw::FlatOp::backward:
        case pw::FlatOp::backward_input:
        case pw::FlatOp::backward_weight:
          actions.push_back(pw::Backward{a.stage.module_id, a.stage.chunk, a.stage.sub_microbatch, a.strategy, a.stage.pass});
          break;
        case pw::FlatOp::send:
        case pw::FlatOp::recv:
        case pw::FlatOp::wait: {
          note_smb(a.peer_stage);
          const bool send = a.op == pw::FlatOp::send;
          const pw::Transfer t{send ? r.rank : a.peer, send ? a.peer : r.rank, ref_of(send ? a.stage : a.peer_stage),
                               ref_of(send ? a.peer_stage : a.stage), a.bytes};
          const auto [it, fresh] = transfers.emplace(a.transfer.value(), t);
          if (!fresh) CHECK(it->second == t);
          if (send) actions.push_back(pw::Send{a.transfer});
          else if (a.op == pw::FlatOp::recv) actions.push_back(pw::Recv{a.transfer});
          else actions.push_back(pw::Wait{a.transfer});
          break;
        }
      }
    }
    p.ranks.push_back(std::move(actions));
  }
  for (const auto& [id, s] : smbs) {
    REQUIRE(id == static_cast<int>(p.sub_microbatches.size()));  // every sub-microbatch is mentioned
    p.sub_microbatches.push_back(s);
  }
  for (const auto& [id, t] : transfers) {
    REQUIRE(id == static_cast<int>(p.transfers.size()));
    p.transfers.push_back(t);
  }
  return p;
}

}  // namespace

TEST_CASE("flat program: rebuilt from its fields alone, it is the plan it came from") {
  const auto model = test_plans::tiny_vlm();
  const auto batch = three_microbatches();
  struct Case {
    pw::Partition partition;
    bool split;
  };
  for (const Case& c : {Case{test_plans::dip_partition(2, 1), false}, Case{test_plans::dip_partition(1, 2), true},
                        Case{test_plans::chain_partition(), false}}) {
    CAPTURE(c.partition.name);
    CAPTURE(c.split);
    pw::StageGraphOptions go;
    go.split_backward = c.split;
    const pw::Plan plan = test_plans::make_plan(model, c.partition, batch, go);
    const pw::FlatProgram flat = pw::flatten(plan, model);
    REQUIRE(flat.ranks == plan.rank_count());
    REQUIRE(flat.programs.size() == plan.ranks.size());
    CHECK(rebuild(flat) == plan);

    // Every action's own stage runs on its rank; a transfer's peer stage on the peer; module
    // names, layer ranges and token sums are the model's and the partition's.
    long transfers = 0;
    for (const pw::FlatRankProgram& r : flat.programs) {
      for (const pw::FlatAction& a : r.actions) {
        CHECK(a.stage.rank == r.rank);
        CHECK(a.stage.module == model.module(a.stage.module_id).name);
        const pw::Chunk& ch = plan.partition.chunk(a.stage.module_id, a.stage.chunk);
        CHECK(a.stage.first_layer == ch.first_layer);
        CHECK(a.stage.layer_count == ch.layer_count);
        CHECK(a.stage.tokens == plan.sub_microbatch(a.stage.sub_microbatch).total_tokens());
        if (pw::is_compute(a.op)) {
          CHECK_FALSE(a.transfer.valid());
          CHECK(a.peer_stage == pw::FlatStage{});
        } else {
          ++transfers;
          CHECK(a.peer_stage.rank == a.peer);
          CHECK(a.peer != r.rank);
        }
      }
    }
    CHECK(transfers == 3 * static_cast<long>(plan.transfers.size()));  // a send, a recv and a wait each
    CHECK(flat.modules.at(0).feeds == "llm");
    CHECK(flat.modules.at(1).feeds.empty());
  }
}

TEST_CASE("flat program: a plan naming what it lacks is refused with the rank and the action") {
  const auto model = test_plans::tiny_vlm();
  pw::Plan plan = test_plans::make_plan(model, test_plans::dip_partition(), three_microbatches());
  SUBCASE("a transfer") {
    plan.ranks[1].insert(plan.ranks[1].begin() + 2, pw::Wait{pw::TransferId{static_cast<int>(plan.transfers.size())}});
    try {
      (void)pw::flatten(plan, model);
      FAIL("no error");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == "rank 1, action 2");
    }
  }
  SUBCASE("a module") {
    plan.ranks[3][0] = pw::Forward{pw::ModuleId{5}, 0, pw::SubMicrobatchId{0}, {}};
    try {
      (void)pw::flatten(plan, model);
      FAIL("no error");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == "rank 3, action 0");
    }
  }
  SUBCASE("a sub-microbatch") {
    plan.ranks[0][0] = pw::Forward{pw::ModuleId{0}, 0, pw::SubMicrobatchId{static_cast<int>(plan.sub_microbatches.size())}, {}};
    CHECK_THROWS_AS((void)pw::flatten(plan, model), pw::Error);
  }
}
