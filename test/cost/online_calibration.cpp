// Online calibration: measured stage timings become latency samples of the plan's stages; the
// analytic calibrator recovers known α factors over its running window (and forgets steps that
// left it); the table calibrator replaces the entries of measured shapes, keeps every other, and
// names exactly the (module, pass) pairs whose series changed; CostChange's bookkeeping.
#include <doctest/doctest.h>

#include <pipeweaver/cost/online_calibration.hpp>

#include <cmath>
#include <variant>
#include <vector>

#include "backends/host/plans.hpp"
#include "cost/fixtures.hpp"
#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;
using pw::test::smb;
using pw::test::stage;

namespace {

/// One step's "measurements" of a model with factors `truth` (several shapes and passes of both
/// modules), with deterministic noise of ±`noise`.
std::vector<pw::LatencySample> measured_step(const pw::ModelSpec& model, const pw::Setup& setup, pw::AnalyticOptions truth, double noise,
                                             int step) {
  const pw::AnalyticCostModel cost(model, setup, truth);
  std::vector<pw::LatencySample> out;
  int i = 0;
  for (int m : {0, 1})
    for (pw::Pass p : {pw::Pass::forward, pw::Pass::backward_input, pw::Pass::backward_weight})
      for (std::int64_t n : {64, 512, 4096})
        for (int items : {1, 3}) {
          const auto st = stage(m, p, 2, 2);
          const auto s = smb(m, std::vector<std::int64_t>(static_cast<std::size_t>(items), n + 8 * step));
          const double y = static_cast<double>(cost.latency(st, s, {}).count()) * (1 + noise * std::sin(1.3 * ++i + step));
          out.push_back(pw::LatencySample{st, s, {}, pw::Nanoseconds{static_cast<std::int64_t>(y)}});
        }
  return out;
}

pw::AnalyticOptions alphas(double f, double m, double n) {
  pw::AnalyticOptions o;
  o.alpha_flops = f;
  o.alpha_memory = m;
  o.alpha_network = n;
  return o;
}

}  // namespace

TEST_CASE("latency_samples: each measured stage with its stage and sub-microbatch, durations unscaled") {
  const auto model = test_plans::tiny_vlm();
  pw::Batch batch;
  pw::Microbatch mb;
  mb.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8, 12}}}});
  mb.samples.push_back(pw::Sample{5, {}});
  batch.microbatches = {mb, mb};
  const pw::Plan plan = test_plans::make_plan(model, test_plans::dip_partition(), batch);
  std::vector<pw::StageTiming> timings;
  for (std::size_t r = 0; r < plan.ranks.size(); ++r)
    for (std::size_t i = 0; i < plan.ranks[r].size(); ++i)
      if (const auto* f = std::get_if<pw::Forward>(&plan.ranks[r][i]))
        timings.push_back({pw::RankId{static_cast<int>(r)}, i, f->module, f->chunk, f->sub_microbatch, pw::Pass::forward, f->strategy,
                           pw::Nanoseconds{static_cast<std::int64_t>(2000 * (timings.size() + 1))}});
  REQUIRE(timings.size() > 4);
  timings[1].duration = pw::Nanoseconds{0};  // nothing measured: left out
  const auto samples = pw::latency_samples(plan, timings, 2.0);
  REQUIRE(samples.size() == timings.size() - 1);
  for (std::size_t k = 0, i = 0; i < timings.size(); ++i) {
    if (i == 1) continue;
    const pw::StageTiming& t = timings[i];
    const pw::LatencySample& s = samples[k++];
    CHECK(s.stage == pw::StageSpec::of(plan.partition, t.module, t.chunk, pw::Pass::forward));
    CHECK(s.sub_microbatch == plan.sub_microbatch(t.sub_microbatch));
    CHECK(s.measured == pw::Nanoseconds{static_cast<std::int64_t>(1000 * (i + 1))});
  }
  SUBCASE("a timing of a stage the plan lacks") {
    timings[2].chunk = 9;
    try {
      (void)pw::latency_samples(plan, timings);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(e.context().path == "timings[2]");
    }
  }
  SUBCASE("a bad time scale") { CHECK_THROWS_AS((void)pw::latency_samples(plan, timings, 0.0), pw::Error); }
}

TEST_CASE("AnalyticCalibrator: refits α over its window and forgets the steps that left it") {
  const auto model = pw::test::vlm_s();
  const auto setup = pw::test::h800(4, 4);
  const pw::AnalyticOptions first = alphas(2.0, 1.5, 1.25), second = alphas(3.0, 0.75, 1.75);
  pw::AnalyticCalibrator cal(model, setup, {}, {.window = 2});
  CHECK(cal.model().options() == pw::AnalyticOptions{});

  const auto u1 = cal.add_step(measured_step(model, setup, first, 0.0, 0));
  CHECK(u1.change.all());
  CHECK(cal.options().alpha_flops == doctest::Approx(first.alpha_flops).epsilon(1e-4));
  CHECK(cal.options().alpha_memory == doctest::Approx(first.alpha_memory).epsilon(1e-4));
  CHECK(cal.options().alpha_network == doctest::Approx(first.alpha_network).epsilon(1e-4));
  CHECK(u1.model.options() == cal.options());

  // A step of the second truth: the window holds one of each, the fit lies in between.
  (void)cal.add_step(measured_step(model, setup, second, 0.0, 1));
  CHECK(cal.samples() == 2 * measured_step(model, setup, second, 0.0, 1).size());
  CHECK(cal.options().alpha_flops > first.alpha_flops + 0.05);
  CHECK(cal.options().alpha_flops < second.alpha_flops - 0.05);
  // A second one: the first truth has left the window.
  const auto u3 = cal.add_step(measured_step(model, setup, second, 0.0, 2));
  CHECK(u3.change.all());
  CHECK(cal.options().alpha_flops == doctest::Approx(second.alpha_flops).epsilon(1e-4));
  CHECK(cal.options().alpha_memory == doctest::Approx(second.alpha_memory).epsilon(1e-4));
  CHECK(cal.options().alpha_network == doctest::Approx(second.alpha_network).epsilon(1e-4));
  CHECK(cal.last_fit().rms_relative_error < 1e-5);

  // With noise the fit stays close; a step without samples changes nothing.
  pw::AnalyticCalibrator noisy(model, setup, {}, {.window = 3});
  for (int k = 0; k < 5; ++k) (void)noisy.add_step(measured_step(model, setup, first, 0.02, k));
  CHECK(noisy.options().alpha_flops == doctest::Approx(first.alpha_flops).epsilon(0.04));
  CHECK(noisy.options().alpha_memory == doctest::Approx(first.alpha_memory).epsilon(0.04));
  const pw::AnalyticOptions before = noisy.options();
  const auto none = noisy.add_step(std::vector<pw::LatencySample>{});
  CHECK(none.change.empty());
  CHECK(noisy.options() == before);

  CHECK_THROWS_AS(pw::AnalyticCalibrator(model, setup, {}, {.window = 0}), pw::Error);
}

TEST_CASE("TableCalibrator: measured shapes replace the profile's, the rest is kept, the change is exact") {
  const auto model = pw::test::vlm_s();
  const auto setup = pw::test::h800(4, 4);
  const pw::AnalyticCostModel truth(model, setup);
  const std::vector<pw::TableSample> base = pw::test::sample_table(truth, {256, 1024, 4096});
  const pw::TableCostModel profiled(model, setup, base);
  pw::TableCalibrator cal(model, setup, base, {.window = 2});

  const auto fwd = stage(0, pw::Pass::forward, 1, 2);
  const auto bwi = stage(1, pw::Pass::backward_input, 1, 2);
  const auto at_1024 = smb(0, {1024});
  const auto llm_4096 = smb(1, {4096});
  const auto other = smb(0, {256});
  // One step: vit forward at 1024 tokens measured at 3x the profile, llm backward_input at
  // 4096 tokens at 2x, and a stage mixing recompute with plain layers (not attributable).
  std::vector<pw::LatencySample> step{
      {fwd, at_1024, {}, profiled.latency(fwd, at_1024, {}) * 3},
      {bwi, llm_4096, {}, profiled.latency(bwi, llm_4096, {}) * 2},
      {bwi, llm_4096, pw::MemoryStrategy::full(1), pw::Nanoseconds{12345}},
  };
  const auto u = cal.add_step(step);
  CHECK(cal.skipped() == 1);
  pw::CostChange want;
  want.add(pw::ModuleId{0}, pw::Pass::forward);
  want.add(pw::ModuleId{1}, pw::Pass::backward_input);
  want.add(pw::ModuleId{1}, pw::Pass::backward);  // the table sums Pass::backward from its parts
  CHECK(u.change == want);
  // Measured shapes: the measurement (the profile had two samples at that T; both replaced).
  CHECK(u.model.latency(fwd, at_1024, {}) == profiled.latency(fwd, at_1024, {}) * 3);
  CHECK(u.model.latency(bwi, llm_4096, {}) == profiled.latency(bwi, llm_4096, {}) * 2);
  // Everything else is the profile's, exactly.
  // (The measured series itself changes elsewhere too: its mix slope κ is pooled over its points.)
  CHECK(u.model.latency(fwd, other, pw::MemoryStrategy::selective(2)) == profiled.latency(fwd, other, pw::MemoryStrategy::selective(2)));
  const auto bwd0 = stage(0, pw::Pass::backward, 1, 2);
  CHECK(u.model.latency(bwd0, at_1024, {}) == profiled.latency(bwd0, at_1024, {}));
  const auto fwd1 = stage(1, pw::Pass::forward, 1, 2);
  CHECK(u.model.latency(fwd1, llm_4096, pw::MemoryStrategy::full(2)) == profiled.latency(fwd1, llm_4096, pw::MemoryStrategy::full(2)));

  // Two steps of something else: the first step leaves the window, its entries with it.
  const auto fwd1_step = std::vector<pw::LatencySample>{{fwd1, llm_4096, {}, profiled.latency(fwd1, llm_4096, {}) * 2}};
  const auto u2 = cal.add_step(fwd1_step);
  pw::CostChange only_llm_forward;
  only_llm_forward.add(pw::ModuleId{1}, pw::Pass::forward);
  CHECK(u2.change == only_llm_forward);
  CHECK(u2.model.latency(fwd, at_1024, {}) == profiled.latency(fwd, at_1024, {}) * 3);  // still in the window
  const auto u3 = cal.add_step(fwd1_step);
  pw::CostChange left = only_llm_forward;
  left.merge(want);
  CHECK(u3.change == left);
  CHECK(u3.model.latency(fwd, at_1024, {}) == profiled.latency(fwd, at_1024, {}));  // back to the profile
  CHECK(u3.model.latency(bwi, llm_4096, {}) == profiled.latency(bwi, llm_4096, {}));
}

TEST_CASE("CostChange: pairs, merges and everything") {
  pw::CostChange c;
  CHECK(c.empty());
  CHECK_FALSE(c.affects(pw::ModuleId{0}, pw::Pass::forward));
  c.add(pw::ModuleId{1}, pw::Pass::backward);
  c.add(pw::ModuleId{1}, pw::Pass::backward);
  c.add(pw::ModuleId{0}, pw::Pass::forward);
  CHECK(c.stages().size() == 2);
  CHECK(c.affects(pw::ModuleId{1}, pw::Pass::backward));
  CHECK_FALSE(c.affects(pw::ModuleId{1}, pw::Pass::forward));
  pw::CostChange d;
  d.add_module(pw::ModuleId{2});
  c.merge(d);
  CHECK(c.stages().size() == 6);
  c.merge(pw::CostChange::everything());
  CHECK(c.all());
  CHECK(c.affects(pw::ModuleId{7}, pw::Pass::backward_weight));
  CHECK(c.stages().empty());
}
