#pragma once
// Online calibration: measured stage times of executed steps (ir/stage_timing.hpp, recorded by
// the executor) turned into an updated cost model, step after step, together with what changed
// (cost/cost_change.hpp) so that a planner keeps every cached stage cost the update left alone.
//
//  * latency_samples(plan, timings, scale): each measured Forward / Backward of a step with its
//    stage and sub-microbatch resolved, its duration divided by `scale` (the time scale of an
//    emulated-time run; 1 for a real one).
//  * AnalyticCalibrator REFITS the analytic model's α factors: the least squares of
//    cost/calibration.hpp's calibrate(), started from the current α, over the samples of a
//    running window of the last `window` steps. Any change of α moves every stage's latency, so
//    its change is everything (nothing when the fit leaves α exactly as it was).
//  * TableCalibrator ADDS AND REPLACES entries of a table model: a measured stage whose layers all
//    use one memory technique becomes a TableSample; the window's samples are added to the base
//    table, and each REPLACES the base samples of its series (module, pass, technique) with the
//    same token count, so a measured shape overrides the profile and a new shape extends it.
//    A stage that mixes techniques (some layers recomputed, others not) cannot be attributed to
//    one series and is skipped (counted in skipped()). Its change names exactly the
//    (module, pass) pairs whose series gained or lost samples (a backward part also changes
//    Pass::backward, which the table sums from its parts).
// std-only.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/cost/calibration.hpp"
#include "pipeweaver/cost/cost_change.hpp"
#include "pipeweaver/cost/table.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/stage_timing.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver {

/// A new cost model and what differs from the previous one (for Planner::update_cost).
template <class C>
struct CostUpdate {
  C model;
  CostChange change{};
};

struct OnlineCalibrationOptions {
  int window = 4;             ///< steps whose samples each fit uses: the most recent ones (>= 1)
  CalibrationOptions fit{};   ///< the analytic model's least squares
};

/// The step's measured stages of `plan` as latency samples (see the header comment). A timing
/// that names a stage or sub-microbatch the plan lacks is Error(input) naming it; a duration
/// that is not positive after scaling is left out (nothing was measured).
[[nodiscard]] inline std::vector<LatencySample> latency_samples(const Plan& plan, std::span<const StageTiming> timings,
                                                                double time_scale = 1) {
  if (!(std::isfinite(time_scale) && time_scale > 0))
    throw input_error("time scale " + std::to_string(time_scale), {.path = "latency_samples", .expected = "a finite number > 0"});
  std::vector<LatencySample> out;
  out.reserve(timings.size());
  for (std::size_t i = 0; i < timings.size(); ++i) {
    const StageTiming& t = timings[i];
    const std::string where = "timings[" + std::to_string(i) + "]";
    if (!t.module.valid() || t.module.index() >= plan.partition.modules.size() || t.chunk < 0 ||
        t.chunk >= plan.partition.chunk_count(t.module))
      throw input_error("module " + std::to_string(t.module.value()) + " chunk " + std::to_string(t.chunk) + " is not in plan '" + plan.name + "'",
                        {.path = where, .expected = "a stage of the plan that was measured"});
    if (!t.sub_microbatch.valid() || t.sub_microbatch.index() >= plan.sub_microbatches.size())
      throw input_error("sub-microbatch " + std::to_string(t.sub_microbatch.value()) + " is not in plan '" + plan.name + "'",
                        {.path = where, .expected = "a sub-microbatch of the plan that was measured"});
    const Nanoseconds measured = round_ns(static_cast<double>(t.duration.count()) / time_scale);
    if (measured.count() <= 0) continue;
    out.push_back(LatencySample{StageSpec::of(plan.partition, t.module, t.chunk, t.pass), plan.sub_microbatch(t.sub_microbatch),
                                t.strategy, measured});
  }
  return out;
}

namespace detail {

inline void check_window(const OnlineCalibrationOptions& o) {
  if (o.window < 1)
    throw input_error("calibration window = " + std::to_string(o.window), {.path = "OnlineCalibrationOptions::window", .expected = ">= 1"});
}

/// The last `window` steps' samples, oldest first.
class SampleWindow {
 public:
  explicit SampleWindow(int window) : window_(static_cast<std::size_t>(window)) {}
  /// Adds a step; the oldest leaves a full window.
  void push(std::vector<LatencySample> step) {
    steps_.push_back(std::move(step));
    if (steps_.size() > window_) steps_.pop_front();
  }
  [[nodiscard]] std::vector<LatencySample> all() const {
    std::vector<LatencySample> out;
    for (const auto& s : steps_) out.insert(out.end(), s.begin(), s.end());
    return out;
  }
  [[nodiscard]] const std::deque<std::vector<LatencySample>>& steps() const noexcept { return steps_; }

 private:
  std::size_t window_;
  std::deque<std::vector<LatencySample>> steps_;
};

}  // namespace detail

/// Refits the analytic model's α factors on a running window of measured steps.
class AnalyticCalibrator {
 public:
  AnalyticCalibrator(ModelSpec model, Setup setup, AnalyticOptions initial = {}, OnlineCalibrationOptions options = {})
      : model_(std::move(model)), setup_(std::move(setup)), current_(initial), options_(options), window_(options.window) {
    detail::check_window(options_);
    (void)AnalyticCostModel(model_, setup_, current_);  // the same checks the model makes
  }

  /// Adds one step's samples (the oldest step leaves a full window) and refits α on the window,
  /// from the current α. A step without samples changes nothing.
  CostUpdate<AnalyticCostModel> add_step(std::span<const LatencySample> samples) {
    if (samples.empty()) return {model(), CostChange{}};
    window_.push(std::vector<LatencySample>(samples.begin(), samples.end()));
    const std::vector<LatencySample> all = window_.all();
    fit_ = calibrate(model_, setup_, all, current_, options_.fit);
    const bool moved = fit_.options != current_;
    current_ = fit_.options;
    return {model(), moved ? CostChange::everything() : CostChange{}};
  }

  [[nodiscard]] AnalyticCostModel model() const { return AnalyticCostModel(model_, setup_, current_); }
  /// The current options (the fitted α factors).
  [[nodiscard]] const AnalyticOptions& options() const noexcept { return current_; }
  /// The last fit (its rms relative error over the window, iterations, convergence).
  [[nodiscard]] const CalibrationResult& last_fit() const noexcept { return fit_; }
  /// Samples in the window now.
  [[nodiscard]] std::size_t samples() const noexcept {
    std::size_t n = 0;
    for (const auto& s : window_.steps()) n += s.size();
    return n;
  }

 private:
  ModelSpec model_;
  Setup setup_;
  AnalyticOptions current_;
  OnlineCalibrationOptions options_;
  detail::SampleWindow window_;
  CalibrationResult fit_{};
};

/// The table sample a measured stage gives, if all its layers use one technique.
[[nodiscard]] inline std::optional<TableSample> table_sample(const LatencySample& s) {
  const int layers = s.stage.layer_count();
  const MemoryStrategy& st = s.strategy;
  StrategyKind kind = StrategyKind::none;
  if (st.is_none()) kind = StrategyKind::none;
  else if (st.full_recompute == layers && st.layers_changed() == layers) kind = StrategyKind::full_recompute;
  else if (st.selective_recompute == layers && st.layers_changed() == layers) kind = StrategyKind::selective_recompute;
  else if (st.offload == layers && st.layers_changed() == layers) kind = StrategyKind::offload;
  else return std::nullopt;
  if (layers <= 0) return std::nullopt;
  TableSample t;
  t.module = s.stage.module();
  t.pass = s.stage.pass();
  t.strategy = kind;
  t.layers = layers;
  for (const std::int64_t n : s.sub_microbatch.item_tokens()) {
    t.tokens += n;
    t.sum_sq_tokens += static_cast<double>(n) * static_cast<double>(n);
  }
  if (t.tokens <= 0) return std::nullopt;
  t.latency = s.measured;
  return t;
}

/// Adds measured entries to a table model, replacing the profiled ones of the same shape.
class TableCalibrator {
 public:
  TableCalibrator(ModelSpec model, Setup setup, std::vector<TableSample> base, OnlineCalibrationOptions options = {})
      : model_(std::move(model)), setup_(std::move(setup)), base_(std::move(base)), options_(options) {
    detail::check_window(options_);
    (void)TableCostModel(model_, setup_, base_);  // the same checks the model makes
  }

  /// Adds one step's samples (the oldest step leaves a full window); the new model and the
  /// (module, pass) pairs whose series changed.
  CostUpdate<TableCostModel> add_step(std::span<const LatencySample> samples) {
    std::vector<TableSample> step;
    for (const LatencySample& s : samples) {
      if (auto t = table_sample(s)) step.push_back(*t);
      else ++skipped_;
    }
    CostChange change;
    mark(change, step);
    window_.push_back(std::move(step));
    if (window_.size() > static_cast<std::size_t>(options_.window)) {
      mark(change, window_.front());
      window_.pop_front();
    }
    return {model(), std::move(change)};
  }

  /// The base table with the window's entries (see the header comment).
  [[nodiscard]] TableCostModel model() const {
    std::vector<TableSample> measured;
    for (const auto& s : window_) measured.insert(measured.end(), s.begin(), s.end());
    std::vector<TableSample> table;
    for (const TableSample& b : base_) {
      bool replaced = false;
      for (const TableSample& m : measured)
        replaced = replaced || (m.module == b.module && m.pass == b.pass && m.strategy == b.strategy && m.tokens == b.tokens);
      if (!replaced) table.push_back(b);
    }
    table.insert(table.end(), measured.begin(), measured.end());
    return TableCostModel(model_, setup_, std::move(table));
  }

  /// Measured stages that mixed memory techniques (not attributable to one series).
  [[nodiscard]] std::size_t skipped() const noexcept { return skipped_; }

 private:
  static void mark(CostChange& change, const std::vector<TableSample>& samples) {
    for (const TableSample& t : samples) {
      change.add(t.module, t.pass);
      if (t.pass == Pass::backward_input || t.pass == Pass::backward_weight) change.add(t.module, Pass::backward);
    }
  }

  ModelSpec model_;
  Setup setup_;
  std::vector<TableSample> base_;
  OnlineCalibrationOptions options_;
  std::deque<std::vector<TableSample>> window_;
  std::size_t skipped_ = 0;
};

}  // namespace pipeweaver
