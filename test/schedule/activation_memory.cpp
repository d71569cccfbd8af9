// The activation-memory rule (schedule/activation_memory.hpp): its graph and list forms and the
// walk of a rank's peak on hand-built cases with closed-form answers (whole backward, split
// backward, a frozen module with and without a weight part, a forward without backward, stages
// interleaved), the graph form against a lookup of each stage's parts on built graphs; and the
// agreement of every component that applies the rule: on the reference suite's plans (each
// baseline's and the planner's) and on random plans (small models with frozen modules, split
// backward, random valid schedules and strategies), the per-rank peak memory from emulate(),
// peak_memory_by_rank (the validator), schedule_peak_memory (the baselines) and the search's
// evaluator are equal.
#include <doctest/doctest.h>

#include <pipeweaver/baselines/builder.hpp>
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>
#include <pipeweaver/schedule/activation_memory.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/validator.hpp>
#include <pipeweaver/search/schedule_evaluator.hpp>
#include <pipeweaver/search/segments.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

constexpr auto F = pw::Pass::forward;
constexpr auto B = pw::Pass::backward;
constexpr auto Bi = pw::Pass::backward_input;
constexpr auto Bw = pw::Pass::backward_weight;
constexpr std::size_t none = pw::no_release;

pw::StageRef ref(int module, int chunk, int smb, pw::Pass pass) {
  return pw::StageRef{pw::ModuleId{module}, chunk, pw::SubMicrobatchId{smb}, pass};
}

// Four stages: `a` with a whole backward, `b` split (input and weight part), `c` a frozen
// module's split backward (input part only), `d` a forward without backward.
pw::StageRef a(pw::Pass p) { return ref(0, 0, 0, p); }
pw::StageRef b(pw::Pass p) { return ref(0, 1, 0, p); }
pw::StageRef c(pw::Pass p) { return ref(1, 0, 0, p); }
pw::StageRef d(pw::Pass p) { return ref(1, 0, 1, p); }

/// Bytes of each stage's forward, keyed by its chunk and sub-microbatch: a = 10, b = 20,
/// c = 40, d = 80.
pw::Bytes bytes_of(const pw::StageRef& s) {
  if (s.module.value() == 0) return pw::Bytes{s.chunk == 0 ? 10 : 20};
  return pw::Bytes{s.sub_microbatch.value() == 0 ? 40 : 80};
}

struct Walk {
  pw::Bytes peak{0};
  std::vector<std::pair<std::size_t, std::int64_t>> at_forward;  // (position, held)
};

Walk walk(const std::vector<pw::StageRef>& list, pw::Bytes static_bytes = pw::Bytes{1000}) {
  Walk w;
  const auto release = pw::activation_release_positions(list);
  w.peak = pw::rank_peak_memory(list, release, static_bytes, [&](std::size_t i) { return bytes_of(list[i]); },
                                [&](std::size_t i, pw::Bytes held) { w.at_forward.emplace_back(i, held.count()); });
  return w;
}

}  // namespace

TEST_CASE("graph form: the releasing node of each forward on a hand-built graph") {
  // Nodes in no particular order; the graph has no lookup table.
  pw::StageGraph g;
  for (const pw::StageRef& s : {b(Bw), d(F), a(B), b(F), c(Bi), a(F), b(Bi), c(F)}) {
    pw::StageNode n;
    n.stage = s;
    g.nodes.push_back(n);
  }
  // a(F) -> a(B); b(F) -> its weight part, not its input part; c(F) -> its input part (no
  // weight part); d(F) -> none; every other node -> none.
  CHECK(pw::activation_release_nodes(g) == std::vector<pw::NodeIndex>{-1, -1, -1, 0, -1, 2, -1, 4});
  CHECK(pw::activation_release_nodes(pw::StageGraph{}).empty());
}

TEST_CASE("graph form on built graphs: whole, split and frozen backward") {
  int frozen_split_forwards = 0;
  for (const bool split : {false, true})
    for (const auto& [enc_trainable, bb_trainable] : std::vector<std::pair<bool, bool>>{{true, true}, {false, true}, {true, false}, {false, false}}) {
      CAPTURE(split);
      CAPTURE(enc_trainable);
      CAPTURE(bb_trainable);
      const pw::ModelSpec model = vlm(4, 6, enc_trainable, bb_trainable);
      const pw::Partition part = interleaved(model, 2, {2, 3}, {1, 0});
      Rng rng(5);
      const auto s = smbs(model, 2, {2, 1}, rng, true);
      const pw::StageGraph g = pw::build_stage_graph(model, part, s, {.split_backward = split});
      const auto release = pw::activation_release_nodes(g);
      REQUIRE(release.size() == g.size());
      for (std::size_t v = 0; v < g.size(); ++v) {
        const pw::StageRef& st = g.nodes[v].stage;
        if (st.pass != F) {
          CHECK(release[v] == -1);
          continue;
        }
        // The rule, by looking up the stage's parts: the whole backward, else the weight
        // part, else the input part, else none.
        auto part_of = [&](pw::Pass p) { return g.find(pw::StageRef{st.module, st.chunk, st.sub_microbatch, p}); };
        pw::NodeIndex expect = part_of(B);
        if (expect < 0) expect = part_of(Bw);
        if (expect < 0) expect = part_of(Bi);
        CHECK(release[v] == expect);
        // Closed form: the encoder has a backward iff it is trainable; the backbone always has one
        // (the loss) when it or the encoder is trainable; a frozen module's split backward has
        // only its input part.
        const bool encoder = st.module.value() == 0;
        const bool has_backward = encoder ? enc_trainable : (enc_trainable || bb_trainable);
        const bool frozen = encoder ? !enc_trainable : !bb_trainable;
        const pw::Pass expected_pass = !split ? B : frozen ? Bi : Bw;
        CHECK((release[v] >= 0) == has_backward);
        if (release[v] >= 0) {
          CHECK(g.nodes[static_cast<std::size_t>(release[v])].stage.pass == expected_pass);
          if (expected_pass == Bi) ++frozen_split_forwards;
        }
      }
    }
  CHECK(frozen_split_forwards > 0);  // the frozen backbone under a trainable encoder
}

TEST_CASE("list form and the walk: closed forms") {
  SUBCASE("several stages interleaved: whole, split, frozen split, no backward") {
    const std::vector<pw::StageRef> list{a(F), b(F), c(F), b(Bi), d(F), a(B), b(Bw), c(Bi)};
    CHECK(pw::activation_release_positions(list) == std::vector<std::size_t>{5, 6, 7, none, none, none, none, none});
    const Walk w = walk(list);
    // held: a 10, +b 30, +c 70, (b's input part frees nothing), +d 150 then d's bytes go.
    CHECK(w.peak == pw::Bytes{1000 + 10 + 20 + 40 + 80});
    CHECK(w.at_forward == std::vector<std::pair<std::size_t, std::int64_t>>{{0, 10}, {1, 30}, {2, 70}, {4, 150}});
  }
  SUBCASE("a forward without backward holds its bytes only while it runs") {
    const std::vector<pw::StageRef> list{a(F), b(F), c(F), a(B), b(Bi), b(Bw), c(Bi), d(F)};
    const Walk w = walk(list);
    CHECK(w.peak == pw::Bytes{1000 + 80});  // d alone: every other stage was freed before it
    CHECK(w.at_forward.back() == std::pair<std::size_t, std::int64_t>{7, 80});
  }
  SUBCASE("split backward: the input part frees nothing, the weight part frees the forward") {
    // b is held across a's forward until its weight part: 20 + 10.
    CHECK(walk({b(F), b(Bi), a(F), b(Bw), a(B)}).peak == pw::Bytes{1000 + 30});
    // Freed by its weight part before a starts: a alone.
    CHECK(walk({b(F), b(Bi), b(Bw), a(F), a(B)}).peak == pw::Bytes{1000 + 20});
  }
  SUBCASE("frozen module: the input part frees the forward when there is no weight part") {
    CHECK(walk({c(F), c(Bi), a(F), a(B)}).peak == pw::Bytes{1000 + 40});
    CHECK(walk({c(F), a(F), c(Bi), a(B)}).peak == pw::Bytes{1000 + 50});
  }
  SUBCASE("whole backward: GPipe holds every forward, 1F1B two at a time") {
    std::vector<pw::StageRef> gpipe, one_f_one_b;
    for (int s = 0; s < 4; ++s) gpipe.push_back(ref(0, 0, s, F));
    for (int s = 3; s >= 0; --s) gpipe.push_back(ref(0, 0, s, B));
    CHECK(walk(gpipe, pw::Bytes{0}).peak == pw::Bytes{4 * 10});
    for (int s = 0; s < 4; ++s) {
      one_f_one_b.push_back(ref(0, 0, s, F));
      if (s > 0) one_f_one_b.push_back(ref(0, 0, s - 1, B));
    }
    one_f_one_b.push_back(ref(0, 0, 3, B));
    CHECK(walk(one_f_one_b, pw::Bytes{0}).peak == pw::Bytes{2 * 10});
  }
  SUBCASE("a releasing part before its forward (no valid order): held only while it runs") {
    const std::vector<pw::StageRef> list{a(B), a(F), d(F)};
    CHECK(pw::activation_release_positions(list) == std::vector<std::size_t>{none, 0, none});
    CHECK(walk(list).peak == pw::Bytes{1000 + 80});
  }
  SUBCASE("no forward: static memory only") {
    CHECK(walk({}).peak == pw::Bytes{1000});
    CHECK(walk({a(B), c(Bi)}).peak == pw::Bytes{1000});
  }
}

namespace {

/// The per-rank peak of `plan` from emulate(), the validator, the baselines' accounting and the
/// search's evaluator (the last two over the plan's schedule on its stage graph). Returns the
/// number of ranks compared.
template <class C>
int check_peaks_agree(const pw::Plan& plan, const pw::ModelSpec& model, const pw::Setup& setup, const C& cost) {
  bool split = false;
  for (const auto& list : plan.ranks)
    for (const pw::Action& x : list)
      if (const auto* bw = std::get_if<pw::Backward>(&x)) split = split || bw->pass != B;
  const pw::StageGraph graph = pw::build_stage_graph(model, plan.partition, plan.sub_microbatches, {.split_backward = split});
  pw::Schedule schedule;
  schedule.ranks.resize(plan.ranks.size());
  for (std::size_t r = 0; r < plan.ranks.size(); ++r)
    for (const pw::Action& x : plan.ranks[r]) {
      if (const auto* f = std::get_if<pw::Forward>(&x)) schedule.ranks[r].push_back({graph.find(pw::stage_of(*f)), f->strategy});
      else if (const auto* bw = std::get_if<pw::Backward>(&x)) schedule.ranks[r].push_back({graph.find(pw::stage_of(*bw)), bw->strategy});
      else continue;
      REQUIRE(schedule.ranks[r].back().node >= 0);
    }

  const pw::EmulationResult emulated = pw::emulate(plan, model, setup, cost);
  const std::vector<pw::Bytes> validator = pw::peak_memory_by_rank(plan, model, setup, cost);
  pw::BaselineContext<C> ctx(model, setup, cost);
  const std::vector<pw::Bytes> baselines = pw::schedule_peak_memory(ctx, plan.partition, plan.sub_microbatches, graph, schedule);
  pw::StageCostCache<C> cache(cost, model);
  const pw::SegmentUnits units = pw::segment_units(graph, plan.sub_microbatches, plan.partition.ranks);
  const pw::StepTables tables = pw::build_step_tables(model, setup, plan.partition, plan.sub_microbatches, graph, units, cache);
  pw::ScheduleEvaluator evaluator(tables);
  const std::vector<pw::Bytes> evaluated = evaluator.peak_memory(schedule, [&](pw::NodeIndex v, const pw::MemoryStrategy& st) {
    const pw::StageRef& s = graph.nodes[static_cast<std::size_t>(v)].stage;
    return cost.activation_bytes(pw::StageSpec::of(plan.partition, s.module, s.chunk, F), plan.sub_microbatches[s.sub_microbatch.index()], st);
  });

  const std::size_t P = plan.ranks.size();
  REQUIRE(emulated.ranks.size() == P);
  REQUIRE(validator.size() == P);
  REQUIRE(baselines.size() == P);
  REQUIRE(evaluated.size() == P);
  for (std::size_t r = 0; r < P; ++r) {
    CAPTURE(r);
    CHECK(emulated.ranks[r].peak_memory == validator[r]);
    CHECK(baselines[r] == validator[r]);
    CHECK(evaluated[r] == validator[r]);
    const bool runs_a_forward = std::any_of(schedule.ranks[r].begin(), schedule.ranks[r].end(), [&](const pw::ScheduledStage& st) {
      return graph.nodes[static_cast<std::size_t>(st.node)].stage.pass == F;
    });
    CHECK((validator[r] > emulated.ranks[r].static_memory) == runs_a_forward);
  }
  return static_cast<int>(P);
}

}  // namespace

TEST_CASE("agreement on the reference suite: every baseline's plan and the planner's plan") {
  const pw::io::Suite suite = pw::io::read_suite(std::filesystem::path(PIPEWEAVER_WORKLOADS_DIR) / "suite.json");
  REQUIRE(!suite.cases.empty());
  int plans = 0;
  for (const pw::io::SuiteCase& c : suite.cases) {
    CAPTURE(c.name);
    const pw::io::Workload w = pw::io::read_case(c);
    const pw::AnalyticCostModel cost(w.model, w.setup);
    pw::PlannerOptions options;
    options.iterations = 2;
    options.budget = std::chrono::nanoseconds{0};
    options.partition_steps = 1;
    options.compare.profile_steps = 1;
    const pw::Planner<pw::AnalyticCostModel> planner(w.model, w.setup, cost, w.dataset, options);
    pw::BaselineContext<pw::AnalyticCostModel> ctx(w.model, w.setup, cost);
    for (int step = 0; step < 2; ++step) {
      CAPTURE(step);
      const pw::Batch batch = pw::sample_step(w.model, w.dataset, w.setup, 1, step);
      const pw::PlanResult r = planner.plan(batch);
      CAPTURE(r.source);
      check_peaks_agree(r.plan, w.model, w.setup, cost);
      ++plans;
      for (const pw::PreparedBaseline& pb : planner.baselines()) {
        CAPTURE(pb.baseline.name);
        const pw::BaselinePlan bp = pw::build_baseline_plan(ctx, pb.baseline, batch);
        check_peaks_agree(bp.plan, w.model, w.setup, cost);
        ++plans;
      }
    }
  }
  CHECK(plans == static_cast<int>(suite.cases.size()) * 2 * (1 + static_cast<int>(pw::baseline_names.size())));
}

TEST_CASE("agreement on random plans: frozen modules, split backward, random schedules and strategies") {
  int plans = 0, split_plans = 0, frozen_split_plans = 0, no_backward_plans = 0;
  for (std::uint64_t seed = 1; seed <= 120; ++seed) {
    CAPTURE(seed);
    Rng rng(seed);
    const bool t2v_model = rng.in(0, 3) == 0;
    const pw::ModelSpec model = t2v_model ? t2v(static_cast<int>(rng.in(2, 5)), static_cast<int>(rng.in(2, 5)))
                                          : vlm(static_cast<int>(rng.in(2, 5)), static_cast<int>(rng.in(2, 6)), rng.in(0, 2) != 0, rng.in(0, 2) != 0);
    const int P = static_cast<int>(rng.in(1, 4));
    std::vector<int> chunks, offset;
    for (const auto& m : model.modules) {
      chunks.push_back(static_cast<int>(rng.in(1, m.layers)));
      offset.push_back(static_cast<int>(rng.in(0, P - 1)));
    }
    const pw::Partition part = interleaved(model, P, chunks, offset);
    std::vector<int> per_mb;
    for (const auto& m : model.modules) per_mb.push_back(static_cast<int>(rng.in(m.role == pw::ModuleRole::backbone ? 1 : 0, 3)));
    const auto s = smbs(model, static_cast<int>(rng.in(1, 4)), per_mb, rng, rng.in(0, 1) == 1);
    const bool split = rng.in(0, 1) == 1;
    const pw::StageGraph g = pw::build_stage_graph(model, part, s, {.split_backward = split});
    const pw::Schedule sched = random_schedule(g, part, rng);  // random full-recompute counts per stage
    const pw::Plan plan = pw::lower(model, part, s, g, sched, TinyCost{}, "random", "test-setup");
    bool frozen_split = false, no_backward = false;
    for (std::size_t v = 0; v < g.size(); ++v) {
      const pw::StageRef& st = g.nodes[v].stage;
      if (st.pass == Bi && g.find(pw::StageRef{st.module, st.chunk, st.sub_microbatch, Bw}) < 0) frozen_split = true;
      if (st.pass == F && g.find(pw::StageRef{st.module, st.chunk, st.sub_microbatch, split ? Bi : B}) < 0) no_backward = true;
    }
    pw::Setup setup;
    setup.name = "test-setup";
    setup.pipeline_stages = P;
    setup.device.memory_gib = 80;
    check_peaks_agree(plan, model, setup, TinyCost{});
    ++plans;
    split_plans += split ? 1 : 0;
    frozen_split_plans += frozen_split ? 1 : 0;
    no_backward_plans += no_backward ? 1 : 0;
  }
  CHECK(plans == 120);
  CHECK(split_plans >= 20);
  CHECK(frozen_split_plans >= 5);
  CHECK(no_backward_plans >= 5);
}
