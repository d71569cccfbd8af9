#pragma once
// `pipeweaver run --backend host --model F --setup F --dataset F [--seed N] [--steps K]
//                 --time-scale X [--budget-ms T | --iterations I] [--threads N] [--search-seed S]
//                 [--lookahead L] [--grace-ms G] [--realtime] [--true-slowdown S] [--calibrate]
//                 [--format table|json]`
// Executes K planned training steps (steps 0..K-1 of the dataset under seed N) on the host
// backend in emulated time (host/timed.hpp): P rank threads run the generic executor, stage
// callbacks sleep for X × their cost-model latency and transfers arrive X × their modeled
// transfer time after they are sent, so a step should last X × its emulated step time; the
// command reports, per step, the measured step time and X × the emulated one.
//
// How a step is planned and distributed is the host backend's trainer loop (host/training.hpp):
// rank 0 plans through an AsyncPlanner (one background thread, lookahead L, default 2; step 0
// waits for its search, a later step waits up to G ms (default 100) for a late one and then takes
// the fallback, which is reported) and broadcasts each plan in its binary form; barriers start
// and end every step on all ranks, and the measured step time is the wall-clock between them.
// --realtime runs the rank threads under SCHED_FIFO (Linux, CAP_SYS_NICE): they stand in for
// devices, whose progress the planner's search and other processes must not delay.
// Honest comparison: the emulated time is the planner's own emulation of the plan (the same
// StageCostCache latencies the callbacks sleep for, and the same link model: a directed link
// carries one transfer at a time, in the sender's order). The plan's byte counts become link
// time, not copies: the executor's buffers hold 16 bytes per item, so copying them costs next
// to nothing. Without --true-slowdown, the difference measured − emulated is therefore what the
// executor, the threads and the OS add; it is never negative by construction.
//
// Online calibration. --true-slowdown S (default 1) makes the ranks' stages take S × what the
// planner's model says: they sleep for a "true" analytic model whose α factors are S × the
// planner's (the link model is the same), so the planner's emulated step time is off. --calibrate
// times every stage call (ExecutorOptions::time_stages) and, after each step, refits the
// planner's α factors on the last 4 steps' stage times (AnalyticCalibrator, host/calibration.hpp);
// the plans searched afterwards use the refitted model (with lookahead L, from step L + 1 on).
// The table then adds, per step, the cost-model version the plan was made with and the α factors
// after the step, and a summary: the error of the steps planned with the initial model against
// that of the steps planned with a calibrated one.
//
// JSON output: {"steps": [{"step", "measured_ms", "emulated_ms", "fallback"}], "backend",
//   "model", "setup", "dataset", "time_scale", "mean_relative_error", "max_relative_error"
//   (of |measured − emulated| / emulated over the steps), "plan_wait_ms", "gap_ms",
//   "plan_search_ms", "plan_source" (one entry per step), "max_wait_ms", "max_gap_ms" (over
//   steps 1..K-1), "plans_ready_in_time", "plans_after_wait", "fallbacks"} (the last three
//   count every step; step 0 always waits for its search), "true_slowdown"; with --calibrate also
//   "cost_version" (per step: the model version its plan was made with) and "calibration" (per
//   step: {"after_step", "samples", "alpha_flops", "alpha_memory", "alpha_network",
//   "rms_relative_error"}: the fit after that step).
// Bad input (a backend other than host, an unreadable file, out-of-range numbers):
// pipeweaver::Error (main.cpp: one line on stderr, exit status 2).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/cost/online_calibration.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/host/calibration.hpp"
#include "pipeweaver/host/timed.hpp"
#include "pipeweaver/host/training.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/ir/plan_binary.hpp"

#include "common.hpp"
#include "search_options.hpp"

namespace pwcli {

struct RunArgs {
  std::string backend = "host";
  std::string model, setup, dataset;
  std::uint64_t seed = 0;
  int steps = 10;
  double time_scale = 0;
  SearchArgs search;
  int lookahead = 2;
  double grace_ms = 100;
  bool realtime = false;
  double true_slowdown = 1;
  bool calibrate = false;
  std::string format = "table";
};

/// One executed step.
struct RunStep {
  int step = 0;
  double measured_ms = 0, emulated_ms = 0;  ///< emulated: X × the plan's emulated step time
  bool fallback = false;
  double wait_ms = 0;  ///< time rank 0 waited for the plan when the step was due
  double gap_ms = 0;   ///< end of the previous step to the start of this one (0 for step 0)
  double search_ms = 0;  ///< wall-clock the planner spent on this plan (its search or the fallback)
  std::string source;  ///< "dip" or the baseline that won (or the fallback baseline)
  std::uint64_t cost_version = 0;  ///< the planner's cost-model version the plan was made with
};

/// The calibration after one step (--calibrate).
struct RunCalibration {
  int after_step = 0;
  std::size_t samples = 0;
  pipeweaver::AnalyticOptions alpha{};  ///< the fitted factors
  double rms_relative_error = 0;        ///< of the fit over its window
};

struct RunReport {
  std::vector<RunStep> steps;
  pipeweaver::AsyncPlannerStats async;  ///< steps 1..K-1
  std::vector<RunCalibration> calibration;  ///< one per step with --calibrate
};


namespace detail {

inline void check_run_args(const RunArgs& a) {
  namespace pw = pipeweaver;
  auto bad = [](const std::string& what, const std::string& path, const std::string& expected) {
    throw pw::input_error(what, {.path = path, .expected = expected});
  };
  if (a.backend != "host")
    bad("--backend is '" + a.backend + "'", "--backend", "host (the only backend of this build; it runs every plan on the CPU)");
  if (a.format != "table" && a.format != "json") bad("--format is '" + a.format + "'", "--format", "table or json");
  if (a.steps < 1 || a.steps > 100000) bad("--steps is " + std::to_string(a.steps), "--steps", "an integer in [1, 100000]");
  if (!(std::isfinite(a.time_scale) && a.time_scale > 0 && a.time_scale <= 1000))
    bad("--time-scale is " + fmt::format("{}", a.time_scale), "--time-scale", "a number in (0, 1000] (wall-clock seconds per emulated second)");
  if (a.lookahead < 1 || a.lookahead > 64) bad("--lookahead is " + std::to_string(a.lookahead), "--lookahead", "an integer in [1, 64]");
  if (!(std::isfinite(a.grace_ms) && a.grace_ms >= 0 && a.grace_ms <= 3.6e6))
    bad("--grace-ms is " + fmt::format("{}", a.grace_ms), "--grace-ms", "a number of milliseconds in [0, 3600000]");
  if (!(std::isfinite(a.true_slowdown) && a.true_slowdown >= 0.01 && a.true_slowdown <= 100))
    bad("--true-slowdown is " + fmt::format("{}", a.true_slowdown), "--true-slowdown", "a number in [0.01, 100]");
}

/// The analytic model whose α factors are `slowdown` × those of `base` (every stage latency
/// scales by it; the link model is unchanged).
inline pipeweaver::AnalyticCostModel slowed(const pipeweaver::AnalyticCostModel& base, double slowdown) {
  pipeweaver::AnalyticOptions o = base.options();
  o.alpha_flops *= slowdown;
  o.alpha_memory *= slowdown;
  o.alpha_network *= slowdown;
  return pipeweaver::AnalyticCostModel(base.model(), base.setup(), o);
}

inline double ms(std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1e6; }

}  // namespace detail

/// Executes the steps on the host trainer loop (host/training.hpp) with ranks in emulated time
/// (host/timed.hpp), their stages taking the `truth` model's latencies (calibrated with the
/// planner's own cost model when `calibrate`). `planner` must have chosen its placement.
inline RunReport execute_timed_steps(pipeweaver::Planner<pipeweaver::AnalyticCostModel>& planner,
                                     const pipeweaver::AnalyticCostModel& truth, bool calibrate,
                                     const std::vector<pipeweaver::Batch>& batches, double scale, int lookahead,
                                     std::chrono::nanoseconds grace, bool realtime = false) {
  using C = pipeweaver::AnalyticCostModel;
  namespace pw = pipeweaver;
  namespace host = pipeweaver::host;
  const int P = planner.setup().pipeline_stages;
  host::TrainingOptions options;
  options.lookahead = lookahead;
  options.grace = grace;
  options.realtime = realtime;
  options.host.timeout = std::chrono::minutes(10);  // longer than any legitimate wait of a step
  options.host.channel_capacity = std::size_t{1} << 20;  // a send never blocks on a full channel
  options.host.executor.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) {
    return std::size_t{16};  // the plan's bytes are modeled as link time (host/timed.hpp)
  };
  RunReport report;
  pw::AnalyticCalibrator calibrator(planner.model(), planner.setup(), planner.cost()->options());
  if (calibrate)
    options.calibrate = host::calibrate_planner(planner, calibrator, scale, [&](const host::CalibrationRecord& r) {
      report.calibration.push_back(RunCalibration{r.step, r.samples, calibrator.options(), calibrator.last_fit().rms_relative_error});
    });
  host::LinkClocks clocks(P);
  const auto make_rank = [&](host::World& world, pw::RankId r) {
    return host::EmulatedTimeRank<C>(world, r, clocks, truth, planner.model(), scale);
  };
  const host::TrainingReport t = host::run_training(planner, std::span<const pw::Batch>(batches), planner.model(), P, make_rank, options);
  for (const host::TrainingStep& s : t.steps)
    report.steps.push_back(RunStep{.step = s.step,
                                   .measured_ms = pw::to_ms(s.measured),
                                   .emulated_ms = detail::ms(host::scaled(s.planned, scale)),
                                   .fallback = s.fallback,
                                   .wait_ms = pw::to_ms(s.plan_wait),
                                   .gap_ms = pw::to_ms(s.gap),
                                   .search_ms = pw::to_ms(s.search),
                                   .source = s.source,
                                   .cost_version = s.cost_version});
  report.async = t.planning;
  return report;
}

/// Error summaries of a run: |measured − emulated| / emulated over all steps, and with
/// --calibrate over the steps planned with the initial model and with a calibrated one.
struct RunErrors {
  double mean = 0, max = 0;
  double max_wait_later = 0, max_gap = 0;  ///< over steps 1..K-1
  int initial_steps = 0, calibrated_steps = 0;
  double initial_mean = 0, calibrated_mean = 0;  ///< signed: (emulated − measured) / measured
};

namespace detail {

inline double relative_error(const RunStep& s) { return s.emulated_ms > 0 ? (s.measured_ms - s.emulated_ms) / s.emulated_ms : 0.0; }

inline RunErrors summarize(const RunReport& rep) {
  RunErrors e;
  for (const RunStep& s : rep.steps) {
    const double err = std::abs(relative_error(s));
    e.mean += err;
    e.max = std::max(e.max, err);
    const double off = s.measured_ms > 0 ? (s.emulated_ms - s.measured_ms) / s.measured_ms : 0.0;
    if (s.cost_version == 0) {
      e.initial_mean += off;
      ++e.initial_steps;
    } else {
      e.calibrated_mean += off;
      ++e.calibrated_steps;
    }
  }
  e.mean /= static_cast<double>(rep.steps.size());
  if (e.initial_steps > 0) e.initial_mean /= e.initial_steps;
  if (e.calibrated_steps > 0) e.calibrated_mean /= e.calibrated_steps;
  for (std::size_t k = 1; k < rep.steps.size(); ++k) {
    e.max_wait_later = std::max(e.max_wait_later, rep.steps[k].wait_ms);
    e.max_gap = std::max(e.max_gap, rep.steps[k].gap_ms);
  }
  return e;
}

struct RunNames {
  std::string model, setup, dataset;
  int ranks = 0;
};

inline void print_run_json(const RunArgs& a, const RunNames& n, const RunReport& rep, const RunErrors& e, std::ostream& out) {
  nlohmann::ordered_json j;
  j["steps"] = nlohmann::ordered_json::array();
  for (const RunStep& s : rep.steps)
    j["steps"].push_back({{"step", s.step}, {"measured_ms", s.measured_ms}, {"emulated_ms", s.emulated_ms}, {"fallback", s.fallback}});
  j["backend"] = a.backend;
  j["model"] = n.model;
  j["setup"] = n.setup;
  j["dataset"] = n.dataset;
  j["time_scale"] = a.time_scale;
  j["mean_relative_error"] = e.mean;
  j["max_relative_error"] = e.max;
  for (const char* key : {"plan_wait_ms", "gap_ms", "plan_search_ms", "plan_source"}) j[key] = nlohmann::ordered_json::array();
  for (const RunStep& s : rep.steps) {
    j["plan_wait_ms"].push_back(s.wait_ms);
    j["gap_ms"].push_back(s.gap_ms);
    j["plan_search_ms"].push_back(s.search_ms);
    j["plan_source"].push_back(s.source);
  }
  j["max_wait_ms"] = e.max_wait_later;
  j["max_gap_ms"] = e.max_gap;
  j["plans_ready_in_time"] = rep.async.plans_ready_in_time;
  j["plans_after_wait"] = rep.async.plans_after_wait;
  j["fallbacks"] = rep.async.fallbacks;
  j["true_slowdown"] = a.true_slowdown;
  if (a.calibrate) {
    j["cost_version"] = nlohmann::ordered_json::array();
    for (const RunStep& s : rep.steps) j["cost_version"].push_back(s.cost_version);
    j["calibration"] = nlohmann::ordered_json::array();
    for (const RunCalibration& c : rep.calibration)
      j["calibration"].push_back({{"after_step", c.after_step}, {"samples", c.samples}, {"alpha_flops", c.alpha.alpha_flops},
                                  {"alpha_memory", c.alpha.alpha_memory}, {"alpha_network", c.alpha.alpha_network},
                                  {"rms_relative_error", c.rms_relative_error}});
  }
  out << j.dump(2) << "\n";
}

inline void print_run_table(const RunArgs& a, const RunNames& n, const RunReport& rep, const RunErrors& e, std::ostream& out) {
  out << fmt::format("run · {} · {} · {} · host backend, {} rank threads · time scale {} · {} steps{}\n", n.model, n.setup, n.dataset,
                     n.ranks, a.time_scale, rep.steps.size(),
                     a.true_slowdown != 1 ? fmt::format(" · stages take {}x the planner's model", a.true_slowdown) : std::string{});
  out << fmt::format("  {:>4} {:>18} {:>8} {:>10} {:>8} {:>8} {:>12} {:>12} {:>8}", "step", "plan", "fallback", "search ms", "wait ms",
                     "gap ms", "emulated ms", "measured ms", "error %");
  if (a.calibrate) out << fmt::format(" {:>7} {:>24} {:>7}", "model", "alpha after (f, m, n)", "fit %");
  out << "\n";
  for (std::size_t k = 0; k < rep.steps.size(); ++k) {
    const RunStep& s = rep.steps[k];
    out << fmt::format("  {:>4} {:>18} {:>8} {:>10.1f} {:>8.1f} {:>8.1f} {:>12.1f} {:>12.1f} {:>+8.2f}", s.step, s.source,
                       s.fallback ? "yes" : "no", s.search_ms, s.wait_ms, s.gap_ms, s.emulated_ms, s.measured_ms, 100.0 * relative_error(s));
    if (a.calibrate && k < rep.calibration.size()) {
      const RunCalibration& c = rep.calibration[k];
      out << fmt::format(" {:>7} {:>24} {:>7.2f}", fmt::format("v{}", s.cost_version),
                         fmt::format("{:.3f}, {:.3f}, {:.3f}", c.alpha.alpha_flops, c.alpha.alpha_memory, c.alpha.alpha_network),
                         100.0 * c.rms_relative_error);
    }
    out << "\n";
  }
  out << fmt::format("mean |measured - emulated| / emulated: {:.2f} % (max {:.2f} %)\n", 100.0 * e.mean, 100.0 * e.max);
  if (a.calibrate)
    out << fmt::format("calibration: emulated vs measured {:+.1f} % over the {} steps planned with the initial model, "
                       "{:+.1f} % over the {} steps planned with a calibrated one\n",
                       100.0 * e.initial_mean, e.initial_steps, 100.0 * e.calibrated_mean, e.calibrated_steps);
  out << fmt::format("asynchronous planning ({} steps; step 0 waits for its search): {} ready in time, {} after a wait, "
                     "{} fallbacks; longest wait after step 0 {:.1f} ms, longest gap between steps {:.1f} ms\n",
                     rep.steps.size(), rep.async.plans_ready_in_time, rep.async.plans_after_wait, rep.async.fallbacks, e.max_wait_later,
                     e.max_gap);
}

}  // namespace detail

/// Runs `run`; returns 0. Throws pipeweaver::Error on bad input or a failed step.
inline int run_run(const RunArgs& a, std::ostream& out = std::cout) {
  namespace pw = pipeweaver;
  detail::check_run_args(a);
  const pw::PlannerOptions options = planner_options(a.search);
  const pw::ModelSpec model = pw::io::read_model(a.model);
  const pw::Setup setup = pw::io::read_setup(a.setup);
  pw::io::check_compatible(model, setup, a.setup);
  const pw::DatasetSpec dataset = pw::io::read_dataset(a.dataset);
  pw::io::check_compatible(model, dataset, a.dataset);
  const pw::AnalyticCostModel cost(model, setup);
  std::vector<pw::Batch> batches;
  for (int k = 0; k < a.steps; ++k) {
    try {
      batches.push_back(pw::sample_step(model, dataset, setup, a.seed, k));
    } catch (const pw::Error& e) {
      throw pipeweaver::in_file(e, a.dataset);
    }
  }
  // Placement and baselines chosen on the dataset's profile steps, before training starts.
  pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, dataset, options);
  const pw::AnalyticCostModel truth = detail::slowed(cost, a.true_slowdown);
  const RunReport rep = execute_timed_steps(planner, truth, a.calibrate, batches, a.time_scale, a.lookahead,
                                            std::chrono::nanoseconds{static_cast<std::int64_t>(a.grace_ms * 1e6)}, a.realtime);
  const RunErrors errors = detail::summarize(rep);
  const detail::RunNames names{model.name, setup.name, dataset.name, setup.pipeline_stages};
  if (a.format == "json") detail::print_run_json(a, names, rep, errors, out);
  else detail::print_run_table(a, names, rep, errors, out);
  return 0;
}

/// Registers `run` on `app`, parsing into `args`.
inline CLI::App* add_run(CLI::App& app, RunArgs& args) {
  CLI::App* cmd = app.add_subcommand("run", "Execute planned steps on the host backend in emulated time: measured vs emulated step time");
  cmd->add_option("--backend", args.backend, "execution backend: host (default; the only one of this build)");
  cmd->add_option("--model", args.model, "model JSON file")->required();
  cmd->add_option("--setup", args.setup, "setup JSON file")->required();
  cmd->add_option("--dataset", args.dataset, "dataset JSON file")->required();
  cmd->add_option("--seed", args.seed, "sampling seed (default 0)");
  cmd->add_option("--steps", args.steps, "steps to execute (default 10)");
  cmd->add_option("--time-scale", args.time_scale, "wall-clock seconds per emulated second (e.g. 0.1)")->required();
  add_search_options(*cmd, args.search);
  cmd->add_option("--lookahead", args.lookahead, "steps planned ahead by the asynchronous planner (default 2)");
  cmd->add_option("--grace-ms", args.grace_ms, "wait at most this long for a late plan, then use the fallback (default 100)");
  cmd->add_flag("--realtime", args.realtime,
                "run the rank threads under SCHED_FIFO (Linux, CAP_SYS_NICE), so that the planner and other processes do not delay them");
  cmd->add_option("--true-slowdown", args.true_slowdown,
                  "the stages take this many times the planner's model latencies (default 1)");
  cmd->add_flag("--calibrate", args.calibrate, "refit the planner's cost model on measured stage times between steps");
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
