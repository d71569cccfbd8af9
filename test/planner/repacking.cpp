// Sample re-packing (planner/repacking.hpp) and the planner's split-backward and re-packing
// options, against independent truths:
//  * a repacked step holds exactly the given samples, the same number of microbatches, each
//    non-empty and within the setup's budget; its spread (recomputed here from per-sample costs
//    measured independently) is what repack() reports, strictly below the given packing's when it
//    says it changed anything, and no better than the optimum found by brute force on a small step;
//  * the analytic model is sub-additive and monotone in a stage's items (the assumptions of the
//    packing-independent bound), and that bound is at most the per-graph bound of every plan of
//    the step under random packings, partitions and split backwards;
//  * with split_backward and repack the planner's plans stay validated, fit, are never slower
//    than without the options nor than with either alone (same seed and iterations), map every
//    sample exactly once, and are reproducible.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/planner/repacking.hpp"
#include "pipeweaver/schedule/validator.hpp"
#include "planner/planner_cases.hpp"
#include "support/splitmix.hpp"

using namespace pipeweaver;

namespace {

using planner_test::Case;
using planner_test::load;
using planner_test::W;

using Splitmix = pwtest::SplitMix;

/// A sample's cost on every module, measured directly: forward and backward latency of each
/// module's whole stack on that sample alone (a module without backward stages: forward only).
std::vector<std::int64_t> sample_cost(const ModelSpec& model, const AnalyticCostModel& cost, const Sample& s) {
  const Partition whole = whole_module_partition(model, 1);
  Batch one;
  one.microbatches.push_back(Microbatch{{s}});
  const auto smbs = split(model, whole, one);
  std::vector<std::int64_t> out(model.modules.size(), 0);
  const StageGraph g = build_stage_graph(model, whole, smbs);
  for (const auto& smb : smbs) {
    const ModuleId m = smb.module();
    const int L = model.module(m).layers;
    out[m.index()] += cost.latency(StageSpec{m, 0, RankId{0}, Pass::forward, 0, L}, smb, {}).count();
    for (const auto& n : g.nodes)
      if (n.stage.module == m && n.stage.pass == Pass::backward) {
        out[m.index()] += cost.latency(StageSpec{m, 0, RankId{0}, Pass::backward, 0, L}, smb, {}).count();
        break;
      }
  }
  return out;
}

/// Σ over modules of the largest per-microbatch load.
std::int64_t spread(const ModelSpec& model, const AnalyticCostModel& cost, const Batch& b) {
  std::vector<std::int64_t> top(model.modules.size(), 0);
  for (const auto& mb : b.microbatches) {
    std::vector<std::int64_t> load(model.modules.size(), 0);
    for (const auto& s : mb.samples) {
      const auto c = sample_cost(model, cost, s);
      for (std::size_t m = 0; m < c.size(); ++m) load[m] += c[m];
    }
    for (std::size_t m = 0; m < load.size(); ++m) top[m] = std::max(top[m], load[m]);
  }
  std::int64_t sum = 0;
  for (auto t : top) sum += t;
  return sum;
}

bool within_budget(const ModelSpec& model, const Setup& setup, const Microbatch& mb) {
  const ModuleLoad l = module_load(model, *model.find(setup.microbatch.module), mb);
  return !mb.samples.empty() && l.tokens <= setup.microbatch.max_tokens &&
         (!setup.microbatch.max_items || l.items <= *setup.microbatch.max_items);
}

/// The origin mapping names every sample of `given` exactly once, and `got` holds those samples.
void check_same_samples(const Batch& given, const Batch& got, const std::vector<std::vector<SampleOrigin>>& origin) {
  REQUIRE(origin.size() == got.microbatches.size());
  std::map<std::pair<int, int>, int> seen;
  for (std::size_t mb = 0; mb < origin.size(); ++mb) {
    REQUIRE(origin[mb].size() == got.microbatches[mb].samples.size());
    for (std::size_t s = 0; s < origin[mb].size(); ++s) {
      const SampleOrigin o = origin[mb][s];
      ++seen[{o.microbatch, o.sample}];
      CHECK(got.microbatches[mb].samples[s] ==
            given.microbatches.at(static_cast<std::size_t>(o.microbatch)).samples.at(static_cast<std::size_t>(o.sample)));
    }
  }
  std::size_t total = 0;
  for (const auto& mb : given.microbatches) total += mb.samples.size();
  CHECK(seen.size() == total);
  for (const auto& [k, n] : seen) CHECK(n == 1);
}

/// Every packing of `samples` into `bins` non-empty microbatches within budget; the smallest spread.
std::int64_t brute_force_spread(const Case& c, const AnalyticCostModel& cost, const std::vector<Sample>& samples, std::size_t bins) {
  std::vector<std::vector<std::int64_t>> costs;
  for (const auto& s : samples) costs.push_back(sample_cost(c.model, cost, s));
  std::vector<std::size_t> bin_of(samples.size(), 0);
  std::int64_t best = -1;
  const std::function<void(std::size_t)> go = [&](std::size_t i) {
    if (i == samples.size()) {
      std::vector<Microbatch> mbs(bins);
      std::vector<std::vector<std::int64_t>> load(bins, std::vector<std::int64_t>(c.model.modules.size(), 0));
      for (std::size_t s = 0; s < samples.size(); ++s) {
        mbs[bin_of[s]].samples.push_back(samples[s]);
        for (std::size_t m = 0; m < costs[s].size(); ++m) load[bin_of[s]][m] += costs[s][m];
      }
      for (const auto& mb : mbs)
        if (!within_budget(c.model, c.setup, mb)) return;
      std::int64_t sp = 0;
      for (std::size_t m = 0; m < c.model.modules.size(); ++m) {
        std::int64_t top = 0;
        for (const auto& l : load) top = std::max(top, l[m]);
        sp += top;
      }
      if (best < 0 || sp < best) best = sp;
      return;
    }
    for (std::size_t b = 0; b < bins; ++b) {
      bin_of[i] = b;
      go(i + 1);
    }
  };
  go(0);
  return best;
}

PlannerOptions quick(std::int64_t iterations = 2) {
  PlannerOptions o;
  o.budget = std::chrono::nanoseconds{0};
  o.iterations = iterations;
  o.seed = 3;
  o.partition_steps = 1;
  o.partition_iterations = 1;
  o.compare.profile_steps = 1;
  return o;
}

}  // namespace

TEST_CASE("repack: the same samples, within budget, a smaller spread when it changes anything") {
  int changed = 0, steps = 0;
  for (const auto& [model, dataset, setup] : {std::tuple{std::string("vlm-s"), std::string("vlm-web-mix"), std::string("h800-tp4-pp4")}, std::tuple{std::string("t2v-s"), std::string("t2v-clips"), std::string("t2v-h800-tp4-pp4")},
                                              std::tuple{std::string("tiny-vlm"), std::string("vlm-web-mix"), std::string("cpu-pp4")}}) {
    CAPTURE(model);
    const Case c = load(model, dataset, setup);
    const AnalyticCostModel cost(c.model, c.setup);
    for (int step = 0; step < 2; ++step) {
      const Batch given = sample_step(c.model, c.dataset, c.setup, 5, step);
      const Repacking r = repack(c.model, c.setup, cost, given);
      CHECK(r.batch.microbatches.size() == given.microbatches.size());
      check_same_samples(given, r.batch, r.origin);
      for (const auto& mb : r.batch.microbatches) CHECK(within_budget(c.model, c.setup, mb));
      CHECK(r.spread_before == spread(c.model, cost, given));
      CHECK(r.spread_after == spread(c.model, cost, r.batch));
      CHECK(r.changed == (r.spread_after < r.spread_before));
      if (!r.changed) CHECK(r.spread_after == r.spread_before);
      changed += r.changed ? 1 : 0;
      ++steps;
      const Repacking again = repack(c.model, c.setup, cost, given);  // deterministic
      CHECK(again.origin == r.origin);
      MESSAGE(model << " step " << step << ": spread " << to_ms(Nanoseconds{r.spread_before}) << " -> " << to_ms(Nanoseconds{r.spread_after}) << " ms");
    }
  }
  CHECK(changed * 2 > steps);  // most steps of these datasets have a better packing
}

TEST_CASE("repack: never better than the brute-force optimum of a small step, and a malformed option is refused") {
  const Case c = load("tiny-vlm", "vlm-web-mix", "cpu-pp4");
  Splitmix rng{17};
  for (int trial = 0; trial < 6; ++trial) {
    CAPTURE(trial);
    const Batch drawn = sample_step(c.model, c.dataset, c.setup, 9, trial);
    std::vector<Sample> samples;
    for (const auto& mb : drawn.microbatches)
      for (const auto& s : mb.samples)
        if (samples.size() < 7) samples.push_back(s);
    const std::size_t bins = 2 + rng.below(2);
    Batch given;  // round-robin; the budget is its fullest microbatch, so it binds other packings
    given.microbatches.resize(bins);
    for (std::size_t s = 0; s < samples.size(); ++s) given.microbatches[s % bins].samples.push_back(samples[s]);
    Case small = c;
    small.setup.microbatch.max_items.reset();
    small.setup.microbatch.max_tokens = 0;
    for (const auto& mb : given.microbatches)
      small.setup.microbatch.max_tokens =
          std::max(small.setup.microbatch.max_tokens, module_load(c.model, *c.model.find(c.setup.microbatch.module), mb).tokens);
    const AnalyticCostModel cost(small.model, small.setup);
    const std::int64_t optimum = brute_force_spread(small, cost, samples, bins);
    const Repacking r = repack(small.model, small.setup, cost, given);
    CHECK(r.spread_after >= optimum);
    CHECK(r.spread_after <= r.spread_before);
    MESSAGE("spread: given " << r.spread_before << ", repacked " << r.spread_after << ", optimum " << optimum);
  }
  const AnalyticCostModel cost(c.model, c.setup);
  CHECK_THROWS_AS((void)repack(c.model, c.setup, cost, sample_step(c.model, c.dataset, c.setup, 1, 0), RepackOptions{.max_moves = -1}), Error);
  CHECK_THROWS_AS((void)repack(c.model, c.setup, cost, sample_step(c.model, c.dataset, c.setup, 1, 0), RepackOptions{.max_evaluations = -1}),
                  Error);
}

TEST_CASE("analytic model: stage latency is sub-additive and monotone in the stage's items") {
  for (const auto& [model, dataset, setup] : {std::tuple{std::string("vlm-s"), std::string("vlm-web-mix"), std::string("h800-tp4-pp4")}, std::tuple{std::string("t2v-s"), std::string("t2v-clips"), std::string("t2v-h800-tp4-pp4")}}) {
    CAPTURE(model);
    const Case c = load(model, dataset, setup);
    const AnalyticCostModel cost(c.model, c.setup);
    const Partition whole = whole_module_partition(c.model, 1);
    const Batch batch = sample_step(c.model, c.dataset, c.setup, 3, 0);
    Splitmix rng{7};
    for (int trial = 0; trial < 60; ++trial) {
      // Two random disjoint groups of samples, alone and together.
      Batch a, b, both;
      for (Batch* x : {&a, &b, &both}) x->microbatches.emplace_back();
      for (const auto& mb : batch.microbatches)
        for (const auto& s : mb.samples) {
          const std::size_t k = rng.below(4);
          if (k == 0) a.microbatches[0].samples.push_back(s);
          if (k == 1) b.microbatches[0].samples.push_back(s);
          if (k <= 1) both.microbatches[0].samples.push_back(s);
        }
      if (a.microbatches[0].samples.empty() || b.microbatches[0].samples.empty()) continue;
      const auto sa = split(c.model, whole, a), sb = split(c.model, whole, b), sab = split(c.model, whole, both);
      for (const auto& x : sab) {
        const ModuleId m = x.module();
        const int L = c.model.module(m).layers;
        const auto find = [&](const std::vector<SubMicrobatchSpec>& v) -> const SubMicrobatchSpec* {
          for (const auto& y : v)
            if (y.module() == m) return &y;
          return nullptr;
        };
        const SubMicrobatchSpec* ya = find(sa);
        const SubMicrobatchSpec* yb = find(sb);
        for (Pass p : {Pass::forward, Pass::backward_input, Pass::backward_weight, Pass::backward})
          for (int first : {0, L / 2}) {
            const StageSpec st{m, 0, RankId{0}, p, first, L - first};
            const std::int64_t tab = cost.latency(st, x, {}).count();
            const std::int64_t ta = ya ? cost.latency(st, *ya, {}).count() : 0, tb = yb ? cost.latency(st, *yb, {}).count() : 0;
            CHECK(tab <= ta + tb + 1);  // + 1: each latency is rounded to whole ns
            CHECK(tab >= std::max(ta, tb));
          }
      }
    }
  }
}

TEST_CASE("the packing-independent bound is at most every plan graph's own bound, whatever the packing") {
  for (const auto& [model, dataset, setup] : {std::tuple{std::string("vlm-s"), std::string("vlm-docs"), std::string("h800-tp4-pp4")}, std::tuple{std::string("t2v-s"), std::string("t2v-clips"), std::string("t2v-h800-tp4-pp4")},
                                              std::tuple{std::string("tiny-vlm"), std::string("vlm-web-mix"), std::string("cpu-pp4")}}) {
    CAPTURE(model);
    const Case c = load(model, dataset, setup);
    const AnalyticCostModel cost(c.model, c.setup);
    const Batch given = sample_step(c.model, c.dataset, c.setup, 2, 0);
    Splitmix rng{99};
    for (bool split_bw : {false, true}) {
      CAPTURE(split_bw);
      const Nanoseconds bound = packing_independent_lower_bound(c.model, c.setup, cost, given, split_bw);
      CHECK(bound > Nanoseconds{0});
      for (int trial = 0; trial < 4; ++trial) {
        // A random packing into as many microbatches (budget ignored: the bound needs none).
        Batch b;
        b.microbatches.resize(given.microbatches.size());
        std::size_t i = 0;
        for (const auto& mb : given.microbatches)
          for (const auto& s : mb.samples) b.microbatches[trial == 0 ? i++ % b.microbatches.size() : rng.below(b.microbatches.size())].samples.push_back(s);
        std::erase_if(b.microbatches, [](const Microbatch& mb) { return mb.samples.empty(); });
        const Partition dip = dip_partition(c.model, c.setup, cost, b).partition;
        for (const Partition& part : {dip, whole_module_partition(c.model, c.setup.pipeline_stages)}) {
          const auto smbs = split(c.model, part, b);
          const LowerBound own = lower_bound(c.model, part, smbs, cost, {.count_transfers = false, .split_backward = split_bw});
          CHECK(bound <= own.value);
        }
      }
    }
  }
}

TEST_CASE("planner: split backward and re-packing stay validated, never slower, and map every sample once") {
  const Case c = load("vlm-s", "vlm-docs", "h800-tp4-pp4");
  const AnalyticCostModel cost(c.model, c.setup);
  const std::vector<Batch> profile{sample_step(c.model, c.dataset, c.setup, 0, 0)};
  PlannerOptions plain_o = quick(), opt_o = quick(), split_o = quick(), repack_o = quick();
  opt_o.split_backward = split_o.split_backward = true;
  opt_o.repack = repack_o.repack = true;
  const Planner<AnalyticCostModel> plain(c.model, c.setup, cost, profile, plain_o);
  const Planner<AnalyticCostModel> both(c.model, c.setup, cost, profile, opt_o);
  const Planner<AnalyticCostModel> split_only(c.model, c.setup, cost, profile, split_o);
  const Planner<AnalyticCostModel> repack_only(c.model, c.setup, cost, profile, repack_o);
  int repacked = 0, splits = 0;
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    const Batch batch = sample_step(c.model, c.dataset, c.setup, 1, step);
    const PlanResult a = plain.plan(batch);
    const PlanResult b = both.plan(batch);
    CHECK_NOTHROW(validate(b.plan, c.model, c.setup, cost));
    const EmulationResult e = emulate(b.plan, c.model, c.setup, cost);
    CHECK(e.step_time == b.step_time);
    CHECK(e.fits_memory());
    CHECK(b.step_time <= a.step_time);  // the plain search is one of the candidates
    CHECK(b.step_time <= split_only.plan(batch).step_time);   // and so are the split-only searches
    CHECK(b.step_time <= repack_only.plan(batch).step_time);  // and the repack-only ones
    CHECK(b.lower_bound <= b.step_time);
    // The classic bound holds for every packing; the tight one is the smallest over the
    // candidates' own graphs (each a particular packing), so only the classic is compared.
    CHECK(b.classic_lower_bound <= b.lower_bound);
    CHECK(b.classic_lower_bound <= packing_independent_lower_bound(c.model, c.setup, cost, batch, true));
    CHECK(b.iterations >= a.iterations);
    CHECK(a.sample_origin == identity_sample_origin(batch));
    CHECK_FALSE(a.repacked);
    CHECK(b.plan.microbatches == static_cast<int>(b.sample_origin.size()));
    // The plan's microbatches hold the mapped samples: regroup the batch and compare shapes.
    Batch regrouped;
    for (const auto& group : b.sample_origin) {
      regrouped.microbatches.emplace_back();
      for (const SampleOrigin& o : group)
        regrouped.microbatches.back().samples.push_back(
            batch.microbatches.at(static_cast<std::size_t>(o.microbatch)).samples.at(static_cast<std::size_t>(o.sample)));
    }
    check_same_samples(batch, regrouped, b.sample_origin);
    CHECK(split(c.model, b.plan.partition, regrouped) == b.plan.sub_microbatches);
    CHECK(b.repacked == (b.sample_origin != identity_sample_origin(batch)));
    repacked += b.repacked ? 1 : 0;
    splits += has_split_backward(b.plan) ? 1 : 0;
    // Reproducible: the same call gives the same plan and mapping.
    const PlanResult again = both.plan(batch);
    CHECK(again.plan == b.plan);
    CHECK(again.sample_origin == b.sample_origin);
    const std::string how = b.source + (b.repacked ? std::string(", repacked") : std::string()) +
                            (has_split_backward(b.plan) ? std::string(", split") : std::string());
    MESSAGE("step " << step << ": plain " << to_ms(a.step_time) << " ms (" << a.source << "), split + repack " << to_ms(b.step_time)
                    << " ms (" << how << ")");
  }
  MESSAGE(repacked << " of 3 steps repacked, " << splits << " split");
}
