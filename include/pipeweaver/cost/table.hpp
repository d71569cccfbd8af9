#pragma once
// A cost model that interpolates measured stage latencies (profiled on the real system).
// std-only.
//
// A sample is one measured stage: module, pass, the memory-strategy kind all of its layers
// used, its layer count, its total tokens T, the sum of its items' squared tokens Q = Σ n_i²
// and the latency. The model keeps, per (module, pass, kind), the per-layer latency
// ℓ = latency / layers as a function of T:
//   - samples with equal T are merged (mean ℓ, mean Q);
//   - between the merged points, ℓ and Q_ref are linear in T; below the smallest T both scale
//     proportionally to T (through the origin), above the largest they grow proportionally too;
//   - the item mix enters through Q: ℓ(T, Q) = max(0, ℓ(T) + κ·(Q − Q_ref(T))), where κ is the
//     pooled least-squares slope of ℓ against Q over samples that share a T (0 when no two
//     samples share a T with different Q: the table then ignores the mix beyond its samples).
// A stage of L layers under strategy (full k, selective s, offload o) takes
//   (L−k−s−o)·ℓ_none + k·ℓ_full + s·ℓ_selective + o·ℓ_offload.
// A forward of recomputed layers is a plain forward: without samples of its own it uses
// ℓ_none. Pass::backward is backward_input + backward_weight when the table holds both parts
// for every kind the stage needs (so the three passes stay consistent), else its own samples.
// Whatever else is missing (module, pass or kind) is an error naming it. The embedding and the
// vocab head are folded into the per-layer figure of the samples they were measured in, so
// measure a module's first and last chunks as they are placed.
// Activation and output bytes come from model/memory.hpp; transfer_time as in the analytic
// model (pipeline latency + bytes / bandwidth).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/stage_bytes.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver {

/// Which memory technique every layer of a measured stage used.
enum class StrategyKind : std::uint8_t { none, full_recompute, selective_recompute, offload };

[[nodiscard]] constexpr std::string_view to_string(StrategyKind k) noexcept {
  switch (k) {
    case StrategyKind::none: return "none";
    case StrategyKind::full_recompute: return "full_recompute";
    case StrategyKind::selective_recompute: return "selective_recompute";
    case StrategyKind::offload: return "offload";
  }
  return "?";
}

/// One measured stage latency.
struct TableSample {
  ModuleId module{0};
  Pass pass = Pass::forward;
  StrategyKind strategy = StrategyKind::none;
  int layers = 1;                  ///< layers of the measured chunk
  std::int64_t tokens = 0;         ///< T = Σ n_i
  double sum_sq_tokens = 0;        ///< Q = Σ n_i²
  Nanoseconds latency{0};
};

class TableCostModel {
 public:
  TableCostModel(ModelSpec model, Setup setup, std::vector<TableSample> samples)
      : model_(std::move(model)), setup_(std::move(setup)), series_(model_.modules.size() * kPasses * kKinds) {
    if (samples.empty())
      throw input_error("the latency table is empty", {.path = "TableCostModel", .expected = "at least one measured sample"});
    if (!(setup_.pipeline_link.gb_per_s > 0))
      throw input_error("pipeline link bandwidth is not positive", {.file = setup_.name, .path = "/links/pipeline/gb_per_s", .expected = "> 0"});
    for (std::size_t i = 0; i < samples.size(); ++i) {
      const TableSample& s = samples[i];
      if (!s.module.valid() || s.module.index() >= model_.modules.size() || s.layers <= 0 || s.tokens <= 0 ||
          !(s.sum_sq_tokens >= 0) || s.latency.count() < 0 || static_cast<int>(s.pass) >= kPasses ||
          static_cast<int>(s.strategy) >= kKinds)
        throw input_error("invalid latency sample", {.path = "samples[" + std::to_string(i) + "]", .expected = "a module of the model, layers > 0, tokens > 0, sum_sq_tokens >= 0, latency >= 0"});
      series_[key(s.module, s.pass, s.strategy)].raw.push_back(
          Point{static_cast<double>(s.tokens), s.sum_sq_tokens,
                static_cast<double>(s.latency.count()) / static_cast<double>(s.layers)});
    }
    for (Series& s : series_) s.build();
  }

  [[nodiscard]] const ModelSpec& model() const noexcept { return model_; }
  [[nodiscard]] const Setup& setup() const noexcept { return setup_; }

  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Nanoseconds latency(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    const ModuleId id = stage.module();
    check_module(id);
    const ModuleSpec& m = model_.modules[id.index()];
    detail::check_layer_range(m, stage.first_layer(), stage.layer_count());
    detail::check_strategy(m, stage.layer_count(), strategy);
    double T = 0, Q = 0;
    for (auto n : smb.item_tokens()) {
      T += static_cast<double>(n);
      Q += static_cast<double>(n) * static_cast<double>(n);
    }
    const Pass pass = stage.pass();
    if (pass == Pass::backward && has_split(id, stage.layer_count(), strategy))
      return round_ns(per_pass(id, Pass::backward_input, stage.layer_count(), strategy, T, Q)) +
             round_ns(per_pass(id, Pass::backward_weight, stage.layer_count(), strategy, T, Q));
    return round_ns(per_pass(id, pass, stage.layer_count(), strategy, T, Q));
  }

  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes activation_bytes(const S& stage, const M& smb, const MemoryStrategy& strategy) const {
    return detail::checked_activation_bytes(model_, setup_, stage, smb, strategy);
  }
  template <Stage S, SubMicrobatch M>
  [[nodiscard]] Bytes output_bytes(const S& stage, const M& smb) const {
    return detail::checked_output_bytes(model_, stage, smb);
  }
  [[nodiscard]] Nanoseconds transfer_time(Bytes bytes) const {
    return detail::pipeline_transfer_time(setup_, bytes);
  }

 private:
  static constexpr int kPasses = 4;
  static constexpr int kKinds = 4;

  struct Point {
    double tokens = 0, sum_sq = 0, per_layer = 0;
  };
  struct Series {
    std::vector<Point> raw;     ///< as measured (kept until build)
    std::vector<Point> points;  ///< merged by tokens, ascending
    double kappa = 0;           ///< ns per layer per unit of Σn²

    [[nodiscard]] bool empty() const noexcept { return points.empty(); }
    void build() {
      if (raw.empty()) return;
      std::sort(raw.begin(), raw.end(), [](const Point& a, const Point& b) {
        if (a.tokens != b.tokens) return a.tokens < b.tokens;
        if (a.sum_sq != b.sum_sq) return a.sum_sq < b.sum_sq;
        return a.per_layer < b.per_layer;
      });
      double sxy = 0, sxx = 0;
      for (std::size_t i = 0; i < raw.size();) {
        std::size_t j = i;
        Point mean{raw[i].tokens, 0, 0};
        while (j < raw.size() && raw[j].tokens == raw[i].tokens) {
          mean.sum_sq += raw[j].sum_sq;
          mean.per_layer += raw[j].per_layer;
          ++j;
        }
        const double k = static_cast<double>(j - i);
        mean.sum_sq /= k;
        mean.per_layer /= k;
        for (std::size_t a = i; a < j; ++a) {
          sxy += (raw[a].sum_sq - mean.sum_sq) * (raw[a].per_layer - mean.per_layer);
          sxx += (raw[a].sum_sq - mean.sum_sq) * (raw[a].sum_sq - mean.sum_sq);
        }
        points.push_back(mean);
        i = j;
      }
      kappa = sxx > 0 ? std::max(0.0, sxy / sxx) : 0.0;
      raw.clear();
      raw.shrink_to_fit();
    }
    /// Per-layer latency at T tokens with Σn² = Q.
    [[nodiscard]] double at(double T, double Q) const noexcept {
      double l = 0, q = 0;
      const Point& lo = points.front();
      const Point& hi = points.back();
      if (T <= lo.tokens) {
        l = lo.per_layer * T / lo.tokens;
        q = lo.sum_sq * T / lo.tokens;
      } else if (T >= hi.tokens) {
        l = hi.per_layer * T / hi.tokens;
        q = hi.sum_sq * T / hi.tokens;
      } else {
        const auto it = std::lower_bound(points.begin(), points.end(), T,
                                         [](const Point& p, double v) { return p.tokens < v; });
        const Point& b = *it;
        const Point& a = *(it - 1);
        const double w = (T - a.tokens) / (b.tokens - a.tokens);
        l = a.per_layer + w * (b.per_layer - a.per_layer);
        q = a.sum_sq + w * (b.sum_sq - a.sum_sq);
      }
      return std::max(0.0, l + kappa * (Q - q));
    }
  };

  [[nodiscard]] std::size_t key(ModuleId m, Pass p, StrategyKind k) const noexcept {
    return (m.index() * kPasses + static_cast<std::size_t>(p)) * kKinds + static_cast<std::size_t>(k);
  }
  void check_module(ModuleId id) const { detail::check_stage_module(model_, id); }

  /// The series for (module, pass, kind), with the forward-of-recompute fallback; nullptr if none.
  [[nodiscard]] const Series* find(ModuleId m, Pass p, StrategyKind k) const noexcept {
    const Series* s = &series_[key(m, p, k)];
    if (s->empty() && p == Pass::forward &&
        (k == StrategyKind::full_recompute || k == StrategyKind::selective_recompute))
      s = &series_[key(m, p, StrategyKind::none)];
    return s->empty() ? nullptr : s;
  }
  [[nodiscard]] const Series& require(ModuleId m, Pass p, StrategyKind k) const {
    if (const Series* s = find(m, p, k)) return *s;
    throw input_error("the latency table has no samples for module '" + model_.modules[m.index()].name + "', pass " +
                    std::string(to_string(p)) + ", strategy " + std::string(to_string(k)), {.path = "TableCostModel", .expected = "samples for every module, pass and strategy used"});
  }
  template <class F>
  static void for_each_kind(int layers, const MemoryStrategy& s, F&& f) {
    const int kept = layers - s.layers_changed();
    if (kept > 0) f(StrategyKind::none, kept);
    if (s.full_recompute > 0) f(StrategyKind::full_recompute, s.full_recompute);
    if (s.selective_recompute > 0) f(StrategyKind::selective_recompute, s.selective_recompute);
    if (s.offload > 0) f(StrategyKind::offload, s.offload);
  }
  [[nodiscard]] bool has_split(ModuleId m, int layers, const MemoryStrategy& s) const noexcept {
    bool ok = true;
    for_each_kind(layers, s, [&](StrategyKind k, int) {
      ok = ok && find(m, Pass::backward_input, k) != nullptr && find(m, Pass::backward_weight, k) != nullptr;
    });
    return ok;
  }
  [[nodiscard]] double per_pass(ModuleId m, Pass p, int layers, const MemoryStrategy& s, double T, double Q) const {
    double total = 0;
    for_each_kind(layers, s, [&](StrategyKind k, int n) { total += n * require(m, p, k).at(T, Q); });
    return total;
  }

  ModelSpec model_;
  Setup setup_;
  std::vector<Series> series_;
};

}  // namespace pipeweaver
