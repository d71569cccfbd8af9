// Hand-broken plans, each rejected with the right rank, position and rule; memory checked
// against an independent GPipe accounting.
#include <doctest/doctest.h>

#include <pipeweaver/model/memory.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <variant>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

struct Fixture {
  pw::ModelSpec model = vlm(2, 4);
  pw::Partition part = interleaved(model, 2, {1, 2}, {0, 0});  // vit and llm chunk 0 on rank 0, llm chunk 1 on rank 1
  std::vector<pw::SubMicrobatchSpec> s;
  pw::StageGraph graph;
  pw::Plan plan;
  Fixture() {
    Rng rng(17);
    s = smbs(model, 2, {1, 1}, rng);
    graph = pw::build_stage_graph(model, part, s);
    plan = pw::lower(model, part, s, graph, gpipe_schedule(graph, 2), TinyCost{}, "gpipe", "test-setup");
  }
};

using Pred = std::function<bool(const pw::Action&)>;
std::size_t find(const std::vector<pw::Action>& list, const Pred& p, std::size_t from = 0) {
  for (std::size_t i = from; i < list.size(); ++i)
    if (p(list[i])) return i;
  FAIL("no such action");
  return 0;
}
Pred is_recv(pw::TransferId t) {
  return [t](const pw::Action& a) { return std::holds_alternative<pw::Recv>(a) && std::get<pw::Recv>(a).transfer == t; };
}
Pred is_send(pw::TransferId t) {
  return [t](const pw::Action& a) { return std::holds_alternative<pw::Send>(a) && std::get<pw::Send>(a).transfer == t; };
}
Pred is_wait(pw::TransferId t) {
  return [t](const pw::Action& a) { return std::holds_alternative<pw::Wait>(a) && std::get<pw::Wait>(a).transfer == t; };
}
template <class A>
Pred is() {
  return [](const pw::Action& a) { return std::holds_alternative<A>(a); };
}

void expect_rejected(const pw::Plan& plan, const pw::ModelSpec& model, const std::string& path, const std::string& rule) {
  try {
    pw::validate(plan, model);
    FAIL("the broken plan was accepted");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::invalid_plan);
    CHECK(e.context().path == path);
    INFO(e.what());
    CHECK(std::string(e.what()).find(rule) != std::string::npos);
  }
}

pw::TransferId first_transfer(const pw::Plan& p, int from, int to, std::size_t skip = 0) {
  for (std::size_t t = 0; t < p.transfers.size(); ++t)
    if (p.transfers[t].from.value() == from && p.transfers[t].to.value() == to && skip-- == 0) return pw::TransferId{static_cast<int>(t)};
  FAIL("no such transfer");
  return pw::TransferId{0};
}

}  // namespace

TEST_CASE("the fixture's lowered plan is valid") {
  Fixture f;
  CHECK_NOTHROW(pw::validate(f.plan, f.model));
  CHECK(f.plan.transfers.size() == 4);  // per microbatch: activations 0 -> 1, gradients 1 -> 0
}

TEST_CASE("a missing Recv is reported at its Send") {
  Fixture f;
  const auto t = first_transfer(f.plan, 0, 1);
  auto& r1 = f.plan.ranks[1];
  r1.erase(r1.begin() + static_cast<std::ptrdiff_t>(find(r1, is_recv(t))));
  const auto send = find(f.plan.ranks[0], is_send(t));
  expect_rejected(f.plan, f.model, "rank 0, action " + std::to_string(send), "missing Recv");
}

TEST_CASE("a crossed send order between two ranks is reported at the first out-of-order Recv") {
  Fixture f;
  const auto t0 = first_transfer(f.plan, 0, 1, 0), t1 = first_transfer(f.plan, 0, 1, 1);
  auto& r1 = f.plan.ranks[1];
  const auto p0 = find(r1, is_recv(t0)), p1 = find(r1, is_recv(t1));
  REQUIRE(p0 < p1);
  // Move the second Recv just before the first: each Recv stays before its Wait.
  const pw::Action second = r1[p1];
  r1.erase(r1.begin() + static_cast<std::ptrdiff_t>(p1));
  r1.insert(r1.begin() + static_cast<std::ptrdiff_t>(p0), second);
  expect_rejected(f.plan, f.model, "rank 1, action " + std::to_string(p0), "crossed order");
}

TEST_CASE("a stage before its input") {
  Fixture f;
  SUBCASE("same-rank input: a backward before its own forward") {
    auto& r0 = f.plan.ranks[0];
    const auto& st = f.plan.sub_microbatches;
    (void)st;
    // llm chunk 0 of sub-microbatch 1: forward and backward both on rank 0.
    const auto fw = find(r0, [](const pw::Action& a) {
      const auto* x = std::get_if<pw::Forward>(&a);
      return x && x->module.value() == 1 && x->sub_microbatch.value() == 1;
    });
    const auto bw = find(r0, [](const pw::Action& a) {
      const auto* x = std::get_if<pw::Backward>(&a);
      return x && x->module.value() == 1 && x->sub_microbatch.value() == 1;
    });
    std::swap(r0[fw], r0[bw]);
    expect_rejected(f.plan, f.model, "rank 0, action " + std::to_string(fw), "stage before its input");
  }
  SUBCASE("remote input: a forward moved before the Wait for its activations") {
    auto& r1 = f.plan.ranks[1];
    const auto fw = find(r1, is<pw::Forward>());
    const pw::Action a = r1[fw];
    r1.erase(r1.begin() + static_cast<std::ptrdiff_t>(fw));
    r1.insert(r1.begin(), a);
    expect_rejected(f.plan, f.model, "rank 1, action 0", "no Wait earlier on this rank");
  }
}

TEST_CASE("a duplicated stage") {
  Fixture f;
  auto& r0 = f.plan.ranks[0];
  r0.push_back(r0[find(r0, is<pw::Forward>())]);
  expect_rejected(f.plan, f.model, "rank 0, action " + std::to_string(r0.size() - 1), "duplicate stage");
}

TEST_CASE("a Wait without a Recv before it") {
  Fixture f;
  const auto t = first_transfer(f.plan, 0, 1, 1);
  auto& r1 = f.plan.ranks[1];
  const auto w = find(r1, is_wait(t));
  const pw::Action a = r1[w];
  r1.erase(r1.begin() + static_cast<std::ptrdiff_t>(w));
  r1.insert(r1.begin(), a);
  expect_rejected(f.plan, f.model, "rank 1, action 0", "Wait without a Recv before it");
}

TEST_CASE("a missing stage is reported on the rank that should run it") {
  Fixture f;
  auto& r1 = f.plan.ranks[1];
  r1.erase(r1.begin() + static_cast<std::ptrdiff_t>(find(r1, is<pw::Forward>())));
  expect_rejected(f.plan, f.model, "rank 1", "missing Forward llm chunk 1 sub-microbatch 1");
}

TEST_CASE("a stage on a rank the partition does not give it") {
  Fixture f;
  auto& r0 = f.plan.ranks[0];
  const auto fw = find(r0, is<pw::Forward>());
  f.plan.ranks[1].insert(f.plan.ranks[1].begin(), r0[fw]);
  r0.erase(r0.begin() + static_cast<std::ptrdiff_t>(fw));
  expect_rejected(f.plan, f.model, "rank 1, action 0", "the partition places this chunk on rank 0");
}

TEST_CASE("a backward whose strategy differs from its forward's") {
  Fixture f;
  auto& r1 = f.plan.ranks[1];
  const auto bw = find(r1, is<pw::Backward>());
  std::get<pw::Backward>(r1[bw]).strategy = pw::MemoryStrategy::full(1);
  expect_rejected(f.plan, f.model, "rank 1, action " + std::to_string(bw), "differs from its forward's");
}

TEST_CASE("a Send before its producer") {
  Fixture f;
  const auto t = first_transfer(f.plan, 0, 1);
  auto& r0 = f.plan.ranks[0];
  const auto sp = find(r0, is_send(t));
  const pw::Action a = r0[sp];
  r0.erase(r0.begin() + static_cast<std::ptrdiff_t>(sp));
  r0.insert(r0.begin(), a);
  expect_rejected(f.plan, f.model, "rank 0, action 0", "Send before its producer");
}

TEST_CASE("a deadlock: a rank waits for gradients before sending the activations they need") {
  Fixture f;
  auto& r0 = f.plan.ranks[0];
  const auto w = find(r0, is<pw::Wait>());  // first gradient Wait
  std::vector<pw::Action> moved, kept;
  for (std::size_t i = 0; i < w; ++i) (std::holds_alternative<pw::Send>(r0[i]) ? moved : kept).push_back(r0[i]);
  REQUIRE(moved.size() == 2);
  kept.push_back(r0[w]);
  kept.insert(kept.end(), moved.begin(), moved.end());  // Sends right after the Wait, order kept
  kept.insert(kept.end(), r0.begin() + static_cast<std::ptrdiff_t>(w) + 1, r0.end());
  r0 = kept;
  // Rank 0 first blocks at its first communication action: nothing it receives can come.
  const auto stuck = find(r0, [](const pw::Action& a) { return !std::holds_alternative<pw::Forward>(a) && !std::holds_alternative<pw::Backward>(a); });
  expect_rejected(f.plan, f.model, "rank 0, action " + std::to_string(stuck), "deadlock");
}

TEST_CASE("transfer-level errors name the transfer") {
  Fixture f;
  SUBCASE("between two stages that do not depend on each other") {
    f.plan.transfers[0].consumer.sub_microbatch = pw::SubMicrobatchId{3};
    expect_rejected(f.plan, f.model, "transfer 0", "does not feed");
  }
  SUBCASE("from the wrong rank") {
    f.plan.transfers[0].from = pw::RankId{1};
    expect_rejected(f.plan, f.model, "transfer 0", "goes from rank 1 to rank 1");
  }
  SUBCASE("an action naming a transfer that does not exist") {
    f.plan.ranks[1].push_back(pw::Wait{pw::TransferId{99}});
    expect_rejected(f.plan, f.model, "rank 1, action " + std::to_string(f.plan.ranks[1].size() - 1), "does not exist");
  }
}

TEST_CASE("memory: peaks match an independent GPipe accounting - over the limit is rejected") {
  Fixture f;
  const TinyCost cost;
  pw::Setup setup;
  setup.name = "test-setup";
  setup.device.memory_gib = 80;
  // GPipe keeps every forward's activations until the backwards: peak = static + all of them.
  std::vector<pw::Bytes> expect(2, pw::Bytes{0});
  std::vector<std::size_t> last_forward(2, 0);
  for (std::size_t m = 0; m < f.model.modules.size(); ++m)
    for (const auto& ch : f.part.modules[m].chunks)
      expect[ch.rank.index()] += pw::chunk_state_bytes(f.model, pw::ModuleId{static_cast<int>(m)}, setup, ch.first_layer, ch.layer_count);
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t i = 0; i < f.plan.ranks[r].size(); ++i)
      if (const auto* fw = std::get_if<pw::Forward>(&f.plan.ranks[r][i])) {
        expect[r] += cost.activation_bytes(pw::StageSpec::of(f.part, fw->module, fw->chunk, pw::Pass::forward), f.s[fw->sub_microbatch.index()], fw->strategy);
        last_forward[r] = i;
      }
  CHECK(pw::peak_memory_by_rank(f.plan, f.model, setup, cost) == expect);
  CHECK_NOTHROW(pw::validate(f.plan, f.model, setup, cost));

  const std::size_t worst = expect[1] > expect[0] ? 1 : 0;
  const pw::Bytes cap = expect[worst] - pw::Bytes{1};
  REQUIRE(cap >= expect[1 - worst]);
  setup.device.memory_gib = static_cast<double>(cap.count()) / pw::bytes_per_gib;
  REQUIRE(pw::memory_capacity(setup) == cap);
  try {
    pw::validate(f.plan, f.model, setup, cost);
    FAIL("accepted");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::invalid_plan);
    CHECK(e.context().path == "rank " + std::to_string(worst) + ", action " + std::to_string(last_forward[worst]));
    CHECK(std::string(e.what()).find("memory " + std::to_string(expect[worst].count()) + " bytes") != std::string::npos);
    CHECK(std::string(e.what()).find("capacity of " + std::to_string(cap.count()) + " bytes") != std::string::npos);
  }
  setup.device.memory_gib = 1e-9;
  try {
    pw::validate(f.plan, f.model, setup, cost);
    FAIL("accepted");
  } catch (const pw::Error& e) {
    CHECK(e.context().path == "rank 0");
    CHECK(std::string(e.what()).find("static memory") != std::string::npos);
  }
}

TEST_CASE("memory: recompute lowers the peak by the activations it drops") {
  Fixture f;
  const TinyCost cost;
  pw::Setup setup;
  setup.device.memory_gib = 80;
  auto sched = gpipe_schedule(f.graph, 2);
  const auto base = pw::peak_memory_by_rank(f.plan, f.model, setup, cost);
  for (auto& list : sched.ranks)
    for (auto& st : list) st.strategy = pw::MemoryStrategy::full(1);
  const auto plan = pw::lower(f.model, f.part, f.s, f.graph, sched, cost, "gpipe-recompute", "s");
  pw::validate(plan, f.model, setup, cost);
  const auto peaks = pw::peak_memory_by_rank(plan, f.model, setup, cost);
  CHECK(peaks[1] < base[1]);  // llm chunk 1 holds 2 layers: recomputing one halves its activations
}
