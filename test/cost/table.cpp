// The table model against its interpolation rules.
#include <doctest/doctest.h>

#include <pipeweaver/cost/table.hpp>

#include "cost/fixtures.hpp"
#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;
using pw::test::smb;
using pw::test::stage;

namespace {
pw::TableSample sample(int module, pw::Pass p, int layers, std::int64_t tokens, double q, std::int64_t ns,
                       pw::StrategyKind k = pw::StrategyKind::none) {
  return pw::TableSample{pw::ModuleId{module}, p, k, layers, tokens, q, pw::Nanoseconds{ns}};
}
}  // namespace

TEST_CASE("the table reproduces its samples and interpolates between them") {
  // per-layer latency 1000 ns at 1000 tokens, 3000 ns at 2000 (measured on 2 and 4 layers)
  const pw::TableCostModel t(pw::test::vlm_s(), pw::test::h800(),
                             {sample(1, pw::Pass::forward, 2, 1000, 1e6, 2000),
                              sample(1, pw::Pass::forward, 4, 2000, 4e6, 12000)});
  const auto fwd = [&](int layers, std::vector<std::int64_t> items) {
    return t.latency(stage(1, pw::Pass::forward, 0, layers), smb(1, std::move(items)), {}).count();
  };
  CHECK(fwd(1, {1000}) == 1000);
  CHECK(fwd(3, {2000}) == 9000);
  CHECK(fwd(2, {1500}) == 4000);  // halfway: 2000 per layer
  CHECK(fwd(1, {500}) == 500);    // below the table: proportional
  CHECK(fwd(1, {4000}) == 6000);  // above: proportional to the last point
  // one sample per token count: no slope in Σn², so the item mix does not move the figure
  CHECK(fwd(1, {1000, 1000}) == fwd(1, {2000}));
}

TEST_CASE("the slope in the sum of squared item tokens comes from samples that share a token count") {
  // synthetic truth: per-layer ℓ = 100 + 2·T + 0.001·Q
  auto truth = [](double T, double Q) { return 100 + 2 * T + 0.001 * Q; };
  std::vector<pw::TableSample> samples;
  for (std::int64_t T : {1000, 2000, 4000}) {
    for (int k : {1, 2, 4}) {  // k equal items
      const double q = static_cast<double>(T) * static_cast<double>(T) / k;
      samples.push_back(sample(0, pw::Pass::forward, 1, T, q, static_cast<std::int64_t>(truth(static_cast<double>(T), q))));
    }
  }
  const pw::TableCostModel t(pw::test::vlm_s(), pw::test::h800(), samples);
  const auto at = [&](std::vector<std::int64_t> items) {
    return static_cast<double>(t.latency(stage(0, pw::Pass::forward, 0, 1), smb(0, std::move(items)), {}).count());
  };
  CHECK(at({1000, 1000, 1000}) == doctest::Approx(truth(3000, 3e6)).epsilon(0.01));
  CHECK(at({3000}) > at({1500, 1500}));
}

TEST_CASE("strategy mixes, forward fallback and the split backward") {
  std::vector<pw::TableSample> s{
      sample(1, pw::Pass::forward, 1, 1000, 1e6, 100),
      sample(1, pw::Pass::backward_input, 1, 1000, 1e6, 150),
      sample(1, pw::Pass::backward_weight, 1, 1000, 1e6, 60),
      sample(1, pw::Pass::backward, 1, 1000, 1e6, 999),  // ignored: the parts define the whole
      sample(1, pw::Pass::backward_input, 1, 1000, 1e6, 250, pw::StrategyKind::full_recompute),
      sample(1, pw::Pass::backward_weight, 1, 1000, 1e6, 60, pw::StrategyKind::full_recompute),
  };
  const pw::TableCostModel t(pw::test::vlm_s(), pw::test::h800(), s);
  const auto s1 = smb(1, {1000});
  CHECK(t.latency(stage(1, pw::Pass::backward, 0, 4), s1, {}).count() == 4 * 210);
  CHECK(t.latency(stage(1, pw::Pass::backward, 0, 4), s1, pw::MemoryStrategy::full(1)).count() == 3 * 210 + 310);
  // a recomputed layer's forward is a plain forward
  CHECK(t.latency(stage(1, pw::Pass::forward, 0, 4), s1, pw::MemoryStrategy::full(2)).count() == 400);
  CHECK_THROWS_AS((void)t.latency(stage(1, pw::Pass::backward, 0, 4), s1, pw::MemoryStrategy::selective(1)), pw::Error);
  CHECK_THROWS_AS((void)t.latency(stage(1, pw::Pass::forward, 0, 4), s1, pw::MemoryStrategy{0, 0, 1}), pw::Error);
}

TEST_CASE("an empty table or a missing module/pass is an error") {
  CHECK_THROWS_AS(pw::TableCostModel(pw::test::vlm_s(), pw::test::h800(), {}), pw::Error);
  CHECK_THROWS_AS(pw::TableCostModel(pw::test::vlm_s(), pw::test::h800(), {sample(7, pw::Pass::forward, 1, 10, 100, 5)}),
                  pw::Error);
  CHECK_THROWS_AS(pw::TableCostModel(pw::test::vlm_s(), pw::test::h800(), {sample(1, pw::Pass::forward, 0, 10, 100, 5)}),
                  pw::Error);
  const pw::TableCostModel t(pw::test::vlm_s(), pw::test::h800(), {sample(1, pw::Pass::forward, 1, 10, 100, 5)});
  try {
    (void)t.latency(stage(0, pw::Pass::forward, 0, 1), smb(0, {10}), {});
    FAIL("expected an error");
  } catch (const pw::Error& e) {
    CHECK(std::string(e.what()).find("vit") != std::string::npos);
  }
  CHECK_THROWS_AS((void)t.latency(stage(1, pw::Pass::backward, 0, 1), smb(1, {10}), {}), pw::Error);
}

TEST_CASE("a table sampled from the analytic model agrees with it between the samples") {
  const pw::AnalyticCostModel analytic(pw::test::vlm_s(), pw::test::h800());
  const pw::TableCostModel table(analytic.model(), analytic.setup(),
                                 pw::test::sample_table(analytic, {512, 1024, 2048, 4096, 8192}));
  for (std::int64_t n : {600, 1500, 3000, 6000}) {
    for (pw::Pass p : {pw::Pass::forward, pw::Pass::backward}) {
      const auto st = stage(1, p, 8, 8);
      const double a = static_cast<double>(analytic.latency(st, smb(1, {n}), {}).count());
      const double b = static_cast<double>(table.latency(st, smb(1, {n}), {}).count());
      CAPTURE(n);
      CHECK(b == doctest::Approx(a).epsilon(0.05));
    }
  }
}
