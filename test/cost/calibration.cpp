// Calibration recovers known α factors from synthetic measurements.
#include <doctest/doctest.h>

#include <pipeweaver/cost/calibration.hpp>

#include <cmath>
#include <vector>

#include "cost/fixtures.hpp"
#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;
using pw::test::smb;
using pw::test::stage;

namespace {
/// "Measurements" of a model with factors `truth`, with deterministic noise of ±`noise`.
std::vector<pw::LatencySample> measure(const pw::ModelSpec& model, const pw::Setup& setup, pw::AnalyticOptions truth,
                                       double noise) {
  const pw::AnalyticCostModel cost(model, setup, truth);
  std::vector<pw::LatencySample> out;
  int i = 0;
  for (int m : {0, 1})
    for (pw::Pass p : {pw::Pass::forward, pw::Pass::backward_input, pw::Pass::backward_weight})
      for (std::int64_t n : {32, 128, 512, 2048, 8192})
        for (int items : {1, 3}) {
          const auto st = stage(m, p, 2, 2);
          const auto s = smb(m, std::vector<std::int64_t>(static_cast<std::size_t>(items), n));
          const double y = static_cast<double>(cost.latency(st, s, {}).count()) * (1 + noise * std::sin(1.7 * ++i));
          out.push_back(pw::LatencySample{st, s, {}, pw::Nanoseconds{static_cast<std::int64_t>(y)}});
        }
  return out;
}
}  // namespace

TEST_CASE("calibration recovers the factors of a known model") {
  const auto model = pw::test::vlm_s();
  const auto setup = pw::test::h800(4, 4);
  pw::AnalyticOptions truth;
  truth.alpha_flops = 1.35;
  truth.alpha_memory = 0.8;
  truth.alpha_network = 1.6;
  SUBCASE("exact measurements") {
    const auto samples = measure(model, setup, truth, 0.0);
    const auto r = pw::calibrate(model, setup, samples);
    CHECK(r.converged);
    CHECK(r.options.alpha_flops == doctest::Approx(truth.alpha_flops).epsilon(1e-4));
    CHECK(r.options.alpha_memory == doctest::Approx(truth.alpha_memory).epsilon(1e-4));
    CHECK(r.options.alpha_network == doctest::Approx(truth.alpha_network).epsilon(1e-4));
    CHECK(r.rms_relative_error < 1e-5);
  }
  SUBCASE("with 1% noise") {
    const auto samples = measure(model, setup, truth, 0.01);
    const auto r = pw::calibrate(model, setup, samples);
    MESSAGE("fitted α_f " << r.options.alpha_flops << ", α_m " << r.options.alpha_memory << ", α_n "
                          << r.options.alpha_network << ", rms " << r.rms_relative_error << " after " << r.iterations);
    CHECK(r.options.alpha_flops == doctest::Approx(truth.alpha_flops).epsilon(0.03));
    CHECK(r.options.alpha_memory == doctest::Approx(truth.alpha_memory).epsilon(0.03));
    CHECK(r.options.alpha_network == doctest::Approx(truth.alpha_network).epsilon(0.03));
    CHECK(r.rms_relative_error < 0.015);
    // the fit is no worse than the truth it came from
    const pw::AnalyticCostModel at_truth(model, setup, truth);
    double sum = 0;
    for (const auto& s : samples) {
      const double y = static_cast<double>(s.measured.count());
      const double e = (at_truth.latency_terms(s.stage, s.sub_microbatch, s.strategy).value(truth) - y) / y;
      sum += e * e;
    }
    CHECK(r.rms_relative_error <= std::sqrt(sum / static_cast<double>(samples.size())) + 1e-12);
  }
  SUBCASE("without tensor parallelism α_n has nothing to fit and keeps its value") {
    const auto tp1 = pw::test::h800(1, 4);
    pw::AnalyticOptions init;
    init.alpha_network = 0.5;
    const auto r = pw::calibrate(model, tp1, measure(model, tp1, truth, 0.0), init);
    CHECK(r.options.alpha_network == 0.5);
    CHECK(r.options.alpha_flops == doctest::Approx(truth.alpha_flops).epsilon(1e-4));
  }
}

TEST_CASE("calibration rejects empty or non-positive measurements") {
  const auto model = pw::test::vlm_s();
  const auto setup = pw::test::h800();
  CHECK_THROWS_AS((void)pw::calibrate(model, setup, std::span<const pw::LatencySample>{}), pw::Error);
  const std::vector<pw::LatencySample> bad{{stage(1, pw::Pass::forward, 0, 1), smb(1, {10}), {}, pw::Nanoseconds{0}}};
  CHECK_THROWS_AS((void)pw::calibrate(model, setup, bad), pw::Error);
}
