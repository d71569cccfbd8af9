// On real workloads (AnalyticCostModel, the splitter, build_stage_graph, lowering):
//  * emulate_schedule (the search's fast path) equals emulate() of the lowered plan, stage by stage;
//  * uniform-layer cache keys, exact keys and no cache give identical emulations (the analytic
//    model satisfies the cache's assumption), and a later step reuses earlier entries;
//  * the lower bound never exceeds the emulated time of these plans.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>
// g++ 12 -O3 raises a false -Wrestrict inside the JSON reader's string building in this TU.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <cmath>
#include <string>

#include "emulate/emu_support.hpp"

namespace pw = pipeweaver;

namespace {

const std::string dir = PIPEWEAVER_WORKLOADS_DIR;

/// Every module in P*K even chunks, chunk c on rank c mod P (DIP's placement shape).
pw::Partition even_partition(const pw::ModelSpec& model, int P, int K) {
  pw::Partition part;
  part.name = "even";
  part.ranks = P;
  for (const auto& m : model.modules) {
    pw::ModulePlacement mp;
    const int chunks = std::min(P * K, m.layers);
    for (int c = 0; c < chunks; ++c) {
      const int first = m.layers * c / chunks, next = m.layers * (c + 1) / chunks;
      mp.chunks.push_back(pw::Chunk{first, next - first, pw::RankId{c % P}});
    }
    mp.sub_microbatch_items = m.role == pw::ModuleRole::backbone ? 0 : 4;
    part.modules.push_back(mp);
  }
  return part;
}

/// A valid schedule: a seeded random topological order of the graph, split per rank.
pw::Schedule random_schedule(const pw::StageGraph& g, int P, std::uint64_t seed) {
  pw::Schedule s;
  s.ranks.resize(static_cast<std::size_t>(P));
  std::vector<int> indeg(g.size());
  std::vector<pw::NodeIndex> ready;
  for (std::size_t n = 0; n < g.size(); ++n)
    if ((indeg[n] = static_cast<int>(g.nodes[n].inputs.size())) == 0) ready.push_back(static_cast<pw::NodeIndex>(n));
  while (!ready.empty()) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    // Mostly the oldest ready node (pipeline-like), sometimes a random one.
    const std::size_t k = (seed >> 33) % 4 == 0 ? static_cast<std::size_t>((seed >> 40) % ready.size()) : 0;
    const pw::NodeIndex n = ready[k];
    ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(k));
    const auto& node = g.nodes[static_cast<std::size_t>(n)];
    s.ranks[node.rank.index()].push_back(pw::ScheduledStage{n, {}});
    for (auto o : node.outputs)
      if (--indeg[static_cast<std::size_t>(o)] == 0) ready.push_back(o);
  }
  return s;
}

struct Workload {
  pw::ModelSpec model;
  pw::DatasetSpec dataset;
  pw::Setup setup;
};

Workload load(const std::string& model, const std::string& dataset, const std::string& setup, int microbatches) {
  Workload w{pw::io::read_model(dir + "/models/" + model), pw::io::read_dataset(dir + "/datasets/" + dataset),
             pw::io::read_setup(dir + "/setups/" + setup)};
  w.setup.microbatches_per_step = microbatches;  // keep the test quick
  return w;
}

}  // namespace

TEST_CASE("fast path == emulate(lower(schedule)) on real steps - cache modes agree - lower bound holds") {
  struct Spec {
    const char* model;
    const char* dataset;
    const char* setup;
    int K;
  };
  std::uint64_t temporal_savings = 0;
  for (const Spec& sp : {Spec{"vlm-s.json", "vlm-web-mix.json", "h800-tp4-pp4.json", 1},
                         Spec{"vlm-s.json", "vlm-docs.json", "h800-tp4-pp4.json", 2},
                         Spec{"t2v-s.json", "t2v-clips.json", "t2v-h800-tp4-pp4.json", 1},
                         Spec{"vlm-l.json", "vlm-web-mix.json", "h800-tp8-pp8.json", 2}}) {
    for (bool split_backward : {false, true}) {
      const std::string name = std::string(sp.model) + " / " + sp.dataset;
      CAPTURE(name);
      CAPTURE(split_backward);
      const Workload w = load(sp.model, sp.dataset, sp.setup, 8);
      const pw::AnalyticCostModel cost(w.model, w.setup);
      const int P = w.setup.pipeline_stages;
      const pw::Partition part = even_partition(w.model, P, sp.K);
      pw::StageCostCache<pw::AnalyticCostModel> shared(cost, w.model);
      for (int step = 0; step < 2; ++step) {
        CAPTURE(step);
        const pw::Batch batch = pw::sample_step(w.model, w.dataset, w.setup, 7, step);
        const auto smbs = pw::split(w.model, part, batch);
        const pw::StageGraph g = pw::build_stage_graph(w.model, part, smbs, {.split_backward = split_backward});
        const pw::Schedule sched = random_schedule(g, P, 11 + static_cast<std::uint64_t>(step));
        const pw::Plan plan = pw::lower(w.model, part, smbs, g, sched, cost, "random", w.setup.name);

        const auto res = pw::emulate(plan, w.model, w.setup, shared, {.record_timeline = true});
        const auto fresh = pw::emulate(plan, w.model, w.setup, cost);
        CHECK(fresh.step_time == res.step_time);
        CHECK(res.cache.misses <= fresh.cache.misses);
        if (step == 1) temporal_savings += fresh.cache.misses - res.cache.misses;  // step 0's entries reused

        const auto exact = pw::emulate(plan, w.model, w.setup, cost, {.cache = {.enabled = true, .uniform_layers = false}});
        const auto off = pw::emulate(plan, w.model, w.setup, cost, {.cache = {.enabled = false}});
        CHECK(exact.step_time == res.step_time);
        CHECK(off.step_time == res.step_time);
        for (int r = 0; r < P; ++r) {
          CHECK(exact.ranks[static_cast<std::size_t>(r)].peak_memory == res.ranks[static_cast<std::size_t>(r)].peak_memory);
          CHECK(off.ranks[static_cast<std::size_t>(r)].busy == res.ranks[static_cast<std::size_t>(r)].busy);
        }
        CHECK(res.cache.misses < off.cache.misses);  // spatial reuse within the step

        const auto lat = pw::node_latencies(g, sched, part, smbs, shared);
        const auto fast = pw::emulate_schedule(g, sched, lat, [&](pw::NodeIndex p, pw::NodeIndex n) {
          return cost.transfer_time(pw::edge_bytes(cost, part, smbs, g.nodes[static_cast<std::size_t>(p)],
                                                   g.nodes[static_cast<std::size_t>(n)]));
        });
        CHECK(fast.step_time == res.step_time);
        int mismatches = 0, computes = 0;
        for (const auto& e : res.timeline) {
          if (e.kind != pw::TimelineEvent::Kind::compute) continue;
          ++computes;
          const auto n = static_cast<std::size_t>(g.find(e.stage));
          if (fast.start[n] != e.start || fast.end[n] != e.end) ++mismatches;
        }
        CHECK(mismatches == 0);
        CHECK(computes == static_cast<int>(g.size()));
        for (int r = 0; r < P; ++r) CHECK(fast.busy[static_cast<std::size_t>(r)] == res.ranks[static_cast<std::size_t>(r)].busy);

        const auto lb = pw::lower_bound(plan, w.model, cost);
        const auto lbt = pw::lower_bound(plan, w.model, cost, {.count_transfers = true});
        CHECK(lb.value > pw::Nanoseconds{0});
        CHECK(lb.value <= res.step_time);
        CHECK(lbt.value <= res.step_time);
        CHECK(lbt.critical_path >= lb.critical_path);
        CHECK(lb.max_rank_work >= lb.work_bound);
        CHECK(lb.max_rank_work <= res.step_time);
        CHECK(lb.tight >= std::max(lb.value, lb.max_rank_work));  // the relaxation includes both
        CHECK(lb.tight <= res.step_time);
        CHECK(lbt.tight >= lbt.value);
      }
    }
  }
  CHECK(temporal_savings > 0);  // shapes recur across steps for some datasets (fixed-size items)
}

TEST_CASE("the lower bound never exceeds the emulated time across the reference suite") {
  const auto suite = pw::io::read_suite(dir + "/suite.json");
  double log_ratio = 0, log_tight = 0;
  int plans = 0;
  for (const auto& c : suite.cases) {
    CAPTURE(c.name);
    const auto w = pw::io::read_case(c);
    const pw::AnalyticCostModel cost(w.model, w.setup);
    const int P = w.setup.pipeline_stages;
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
      CAPTURE(seed);
      const pw::Partition part = even_partition(w.model, P, seed == 2 ? 2 : 1);
      const auto smbs = pw::split(w.model, part, pw::sample_step(w.model, w.dataset, w.setup, seed, 0));
      const pw::StageGraph g = pw::build_stage_graph(w.model, part, smbs);
      const pw::Schedule greedy = emu_test::greedy_schedule(g, part, smbs, cost);
      const pw::Schedule random = random_schedule(g, P, seed);
      for (const pw::Schedule* sched : {&greedy, &random}) {
        const pw::Plan plan = pw::lower(w.model, part, smbs, g, *sched, cost, "bound-check", w.setup.name);
        const auto res = pw::emulate(plan, w.model, w.setup, cost);
        const auto lb = pw::lower_bound(plan, w.model, cost);
        const auto lbt = pw::lower_bound(plan, w.model, cost, {.count_transfers = true});
        CHECK(lb.value <= res.step_time);
        CHECK(lbt.value <= res.step_time);
        CHECK(lb.max_rank_work <= res.step_time);
        CHECK(lb.tight <= res.step_time);  // heads, tails and transfers: still below every plan
        CHECK(lb.tight >= lb.value);
        if (sched == &greedy) {
          log_ratio += std::log(static_cast<double>(res.step_time.count()) / static_cast<double>(lb.value.count()));
          log_tight += std::log(static_cast<double>(res.step_time.count()) / static_cast<double>(lb.tight.count()));
          ++plans;
        }
      }
    }
  }
  CHECK(plans == 3 * static_cast<int>(suite.cases.size()));
  MESSAGE("greedy plans over the suite: geometric mean step / lower bound = " << std::exp(log_ratio / plans)
                                                                              << ", step / tight bound = " << std::exp(log_tight / plans));
}
