#pragma once
// Shared helpers of the cost tests: stages, sub-microbatches and a latency table sampled from
// the analytic model.
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/cost/table.hpp>
#include <pipeweaver/ir/stage.hpp>

#include <vector>

namespace pipeweaver::test {

inline StageSpec stage(int module, Pass pass, int first, int count) {
  return StageSpec{ModuleId{module}, 0, RankId{0}, pass, first, count};
}
inline SubMicrobatchSpec smb(int module, std::vector<std::int64_t> items, std::vector<std::int64_t> ctx = {}) {
  return SubMicrobatchSpec{ModuleId{module}, MicrobatchId{0}, std::move(items), std::move(ctx)};
}

inline MemoryStrategy all_layers(StrategyKind k, int layers) {
  switch (k) {
    case StrategyKind::none: return {};
    case StrategyKind::full_recompute: return MemoryStrategy::full(layers);
    case StrategyKind::selective_recompute: return MemoryStrategy::selective(layers);
    case StrategyKind::offload: return MemoryStrategy{0, 0, static_cast<std::int16_t>(layers)};
  }
  return {};
}

/// Samples of `cost` on two interior layers of every module (first layer 1), every pass and
/// kind, over `tokens` (one item of T tokens, and two items of T/2 at the same T).
inline std::vector<TableSample> sample_table(const AnalyticCostModel& cost, const std::vector<std::int64_t>& tokens) {
  std::vector<TableSample> out;
  for (std::size_t m = 0; m < cost.model().modules.size(); ++m)
    for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
      for (StrategyKind k : {StrategyKind::none, StrategyKind::full_recompute, StrategyKind::selective_recompute,
                             StrategyKind::offload})
        for (std::int64_t t : tokens)
          for (const std::vector<std::int64_t>& items : {std::vector<std::int64_t>{t}, std::vector<std::int64_t>{t / 2, t - t / 2}}) {
            const int mi = static_cast<int>(m);
            double q = 0;
            for (auto n : items) q += static_cast<double>(n) * static_cast<double>(n);
            const auto st = stage(mi, p, 1, 2);
            out.push_back(TableSample{ModuleId{mi}, p, k, 2, t, q, cost.latency(st, smb(mi, items), all_layers(k, 2))});
          }
  return out;
}

}  // namespace pipeweaver::test
