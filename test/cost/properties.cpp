// Properties every cost model must have, checked on the analytic and the table model.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/cost/table.hpp>

#include "cost/fixtures.hpp"
#include "model/reference_workloads.hpp"

namespace pw = pipeweaver;
using pw::test::smb;
using pw::test::stage;

static_assert(pw::CostModel<pw::AnalyticCostModel, pw::StageSpec, pw::SubMicrobatchSpec>);
static_assert(pw::CostModel<pw::TableCostModel, pw::StageSpec, pw::SubMicrobatchSpec>);

namespace {
template <class C>
C make(const pw::ModelSpec& model, const pw::Setup& setup);
template <>
pw::AnalyticCostModel make<pw::AnalyticCostModel>(const pw::ModelSpec& model, const pw::Setup& setup) {
  return pw::AnalyticCostModel(model, setup);
}
template <>
pw::TableCostModel make<pw::TableCostModel>(const pw::ModelSpec& model, const pw::Setup& setup) {
  const pw::AnalyticCostModel analytic(model, setup);
  return pw::TableCostModel(model, setup, pw::test::sample_table(analytic, {256, 1024, 2048, 4096, 8192, 16384}));
}
}  // namespace

TEST_CASE_TEMPLATE("cost model properties", C, pw::AnalyticCostModel, pw::TableCostModel) {
  const auto model = pw::test::vlm_s();
  const C cost = make<C>(model, pw::test::h800(4, 4));
  const std::vector<pw::MemoryStrategy> strategies{
      {}, pw::MemoryStrategy::full(4), pw::MemoryStrategy::selective(4), {0, 0, 4}, {1, 1, 1}, {2, 0, 1}};

  SUBCASE("latency is monotone in tokens") {
    for (int m : {0, 1}) {
      for (pw::Pass p : {pw::Pass::forward, pw::Pass::backward, pw::Pass::backward_input, pw::Pass::backward_weight}) {
        pw::Nanoseconds prev{0}, prev_items{0};
        for (std::int64_t n = 64; n <= 20000; n = n * 5 / 4) {
          const auto one = cost.latency(stage(m, p, 4, 4), smb(m, {n}), {});
          const auto many = cost.latency(stage(m, p, 4, 4), smb(m, {n, n, n}), {});
          CAPTURE(m);
          CAPTURE(n);
          CHECK(one >= prev);
          CHECK(many >= prev_items);
          CHECK(many >= one);
          prev = one;
          prev_items = many;
        }
      }
    }
  }
  SUBCASE("recompute: slower backward, fewer activation bytes") {
    for (int m : {0, 1}) {
      const auto s = smb(m, {1500, 700});
      const auto none_b = cost.latency(stage(m, pw::Pass::backward, 4, 4), s, {});
      for (auto st : {pw::MemoryStrategy::full(4), pw::MemoryStrategy::selective(4), pw::MemoryStrategy{1, 0, 0}}) {
        CAPTURE(pw::to_string(st));
        CHECK(cost.latency(stage(m, pw::Pass::backward, 4, 4), s, st) > none_b);
        CHECK(cost.activation_bytes(stage(m, pw::Pass::forward, 4, 4), s, st) <
              cost.activation_bytes(stage(m, pw::Pass::forward, 4, 4), s, {}));
      }
      CHECK(cost.activation_bytes(stage(m, pw::Pass::forward, 4, 4), s, pw::MemoryStrategy::full(4)) <
            cost.activation_bytes(stage(m, pw::Pass::forward, 4, 4), s, pw::MemoryStrategy::selective(4)));
    }
  }
  SUBCASE("offloading every layer keeps no activation bytes on the device") {
    for (int m : {0, 1}) {
      CHECK(cost.activation_bytes(stage(m, pw::Pass::forward, 4, 4), smb(m, {3000}), pw::MemoryStrategy{0, 0, 4}) ==
            pw::Bytes{0});
      CHECK(cost.activation_bytes(stage(m, pw::Pass::backward, 4, 4), smb(m, {3000}), pw::MemoryStrategy{0, 0, 4}) ==
            pw::Bytes{0});
    }
  }
  SUBCASE("backward_input + backward_weight == backward") {
    for (int m : {0, 1})
      for (const auto& st : strategies)
        for (std::int64_t n : {100, 1000, 5000}) {
          const auto s = smb(m, {n, n / 3 + 1});
          CAPTURE(pw::to_string(st));
          CHECK(cost.latency(stage(m, pw::Pass::backward_input, 4, 4), s, st) +
                    cost.latency(stage(m, pw::Pass::backward_weight, 4, 4), s, st) ==
                cost.latency(stage(m, pw::Pass::backward, 4, 4), s, st));
        }
  }
  SUBCASE("bytes and transfers") {
    const auto s = smb(1, {4000});
    CHECK(cost.output_bytes(stage(1, pw::Pass::forward, 4, 4), s) == pw::Bytes{2LL * 4000 * 4096});
    CHECK(cost.transfer_time(pw::Bytes{2'000'000}) > cost.transfer_time(pw::Bytes{1'000'000}));
  }
}
