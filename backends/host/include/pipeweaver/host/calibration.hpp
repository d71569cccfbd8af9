#pragma once
// Online calibration in the host trainer loop: calibrate_planner(planner, calibrator, scale)
// makes the function TrainingOptions::calibrate expects. After each step it turns the step's
// measured stage times into latency samples (cost/online_calibration.hpp: durations divided by
// `scale`, the time scale of an emulated-time run, 1 for a real one), hands them to the
// calibrator (AnalyticCalibrator refits α, TableCalibrator adds and replaces entries) and, when
// the model changed, gives the planner the new model with what changed (Planner::update_cost):
// the searches that start afterwards use it, a search in flight keeps its own.
//
//   pw::AnalyticCalibrator calibrator(model, setup);
//   pw::host::TrainingOptions options;
//   options.calibrate = pw::host::calibrate_planner(planner, calibrator);
//   pw::host::run_training(planner, batches, model, P, make_rank, options);
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cost/calibration.hpp"
#include "pipeweaver/cost/online_calibration.hpp"
#include "pipeweaver/host/training.hpp"
#include "pipeweaver/planner/planner.hpp"

namespace pipeweaver::host {

/// A calibrator of cost models of type C: add_step(samples) gives the updated model and what
/// changed (AnalyticCalibrator for AnalyticCostModel, TableCalibrator for TableCostModel).
template <class K, class C>
concept OnlineCalibrator = requires(K& k, std::span<const LatencySample> samples) {
  { k.add_step(samples) } -> std::same_as<CostUpdate<C>>;
};

/// What one calibration after a step did.
struct CalibrationRecord {
  int step = 0;                    ///< the step whose stage times were used
  std::size_t samples = 0;         ///< stage calls measured
  bool changed = false;            ///< the model changed (the planner got it)
  std::uint64_t cost_version = 0;  ///< the planner's cost version afterwards
};

/// TrainingOptions::calibrate that feeds `calibrator` and updates `planner` (see the header
/// comment). The planner is held by a copy (copies share their state); the calibrator by
/// reference: it must outlive the training. `report`, if set, is told of every calibration.
template <class C, class K>
  requires OnlineCalibrator<K, C>
[[nodiscard]] std::function<void(const MeasuredStep&)> calibrate_planner(Planner<C> planner, K& calibrator, double time_scale = 1,
                                                                         std::function<void(const CalibrationRecord&)> report = {}) {
  if (!(time_scale > 0))
    throw input_error("calibration time scale " + std::to_string(time_scale), {.path = "calibrate_planner", .expected = "a number > 0"});
  return [planner, &calibrator, time_scale, report = std::move(report)](const MeasuredStep& m) mutable {
    if (m.plan == nullptr) throw input_error("a measured step without its plan", {.path = "MeasuredStep::plan", .expected = "the plan the step ran"});
    const std::vector<LatencySample> samples = latency_samples(*m.plan, m.stages, time_scale);
    CostUpdate<C> update = calibrator.add_step(samples);
    CalibrationRecord r{m.step, samples.size(), !update.change.empty(), 0};
    r.cost_version = r.changed ? planner.update_cost(std::move(update.model), std::move(update.change)) : planner.cost_version();
    if (report) report(r);
  };
}

}  // namespace pipeweaver::host
