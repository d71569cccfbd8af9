#pragma once
// `pipeweaver run --backend host --model F --setup F --dataset F [--seed N] [--steps K]
//                 --time-scale X [--budget-ms T | --iterations I] [--threads N] [--search-seed S]
//                 [--lookahead L] [--grace-ms G] [--realtime] [--format table|json]`
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
// to nothing. The difference measured − emulated is therefore what the executor, the threads
// and the OS add; it is never negative by construction.
//
// JSON output: {"steps": [{"step", "measured_ms", "emulated_ms", "fallback"}], "backend",
//   "model", "setup", "dataset", "time_scale", "mean_relative_error", "max_relative_error"
//   (of |measured − emulated| / emulated over the steps), "plan_wait_ms", "gap_ms",
//   "plan_search_ms", "plan_source" (one entry per step), "max_wait_ms", "max_gap_ms" (over
//   steps 1..K-1), "plans_ready_in_time", "plans_after_wait", "fallbacks"} (the last three
//   count every step; step 0 always waits for its search).
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
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/host/timed.hpp"
#include "pipeweaver/host/training.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/ir/plan_binary.hpp"

#include "common.hpp"
#include "options.hpp"
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
};

struct RunReport {
  std::vector<RunStep> steps;
  pipeweaver::AsyncPlannerStats async;  ///< steps 1..K-1
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
}

inline double ms(std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1e6; }

}  // namespace detail

/// Executes the steps on the host trainer loop (host/training.hpp) with ranks in emulated time
/// (host/timed.hpp). `planner` must have chosen its placement.
template <class C>
RunReport execute_timed_steps(const pipeweaver::Planner<C>& planner, const std::vector<pipeweaver::Batch>& batches,
                              double scale, int lookahead, std::chrono::nanoseconds grace, bool realtime = false) {
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
  host::LinkClocks clocks(P);
  const auto make_rank = [&](host::World& world, pw::RankId r) {
    return host::EmulatedTimeRank<C>(world, r, clocks, planner.cost(), planner.model(), scale);
  };
  const host::TrainingReport t = host::run_training(planner, std::span<const pw::Batch>(batches), planner.model(), P, make_rank, options);
  RunReport report;
  for (const host::TrainingStep& s : t.steps)
    report.steps.push_back(RunStep{.step = s.step,
                                   .measured_ms = pw::to_ms(s.measured),
                                   .emulated_ms = detail::ms(host::scaled(s.planned, scale)),
                                   .fallback = s.fallback,
                                   .wait_ms = pw::to_ms(s.plan_wait),
                                   .gap_ms = pw::to_ms(s.gap),
                                   .search_ms = pw::to_ms(s.search),
                                   .source = s.source});
  report.async = t.planning;
  return report;
}

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
  const pw::Planner<pw::AnalyticCostModel> planner =
      attributed(a.dataset, a.setup, [&] { return pw::Planner<pw::AnalyticCostModel>(model, setup, cost, dataset, options); });
  const RunReport rep = execute_timed_steps(planner, batches, a.time_scale, a.lookahead,
                                            std::chrono::nanoseconds{static_cast<std::int64_t>(a.grace_ms * 1e6)}, a.realtime);

  double sum_err = 0, max_err = 0;
  for (const RunStep& s : rep.steps) {
    const double e = s.emulated_ms > 0 ? std::abs(s.measured_ms - s.emulated_ms) / s.emulated_ms : 0.0;
    sum_err += e;
    max_err = std::max(max_err, e);
  }
  const double mean_err = sum_err / static_cast<double>(rep.steps.size());
  double max_wait_later = 0, max_gap = 0;
  for (std::size_t k = 1; k < rep.steps.size(); ++k) {
    max_wait_later = std::max(max_wait_later, rep.steps[k].wait_ms);
    max_gap = std::max(max_gap, rep.steps[k].gap_ms);
  }

  if (a.format == "json") {
    nlohmann::ordered_json j;
    j["steps"] = nlohmann::ordered_json::array();
    for (const RunStep& s : rep.steps)
      j["steps"].push_back({{"step", s.step}, {"measured_ms", s.measured_ms}, {"emulated_ms", s.emulated_ms}, {"fallback", s.fallback}});
    j["backend"] = a.backend;
    j["model"] = model.name;
    j["setup"] = setup.name;
    j["dataset"] = dataset.name;
    j["time_scale"] = a.time_scale;
    j["mean_relative_error"] = mean_err;
    j["max_relative_error"] = max_err;
    j["plan_wait_ms"] = nlohmann::ordered_json::array();
    j["gap_ms"] = nlohmann::ordered_json::array();
    j["plan_search_ms"] = nlohmann::ordered_json::array();
    j["plan_source"] = nlohmann::ordered_json::array();
    for (const RunStep& s : rep.steps) {
      j["plan_wait_ms"].push_back(s.wait_ms);
      j["gap_ms"].push_back(s.gap_ms);
      j["plan_search_ms"].push_back(s.search_ms);
      j["plan_source"].push_back(s.source);
    }
    j["max_wait_ms"] = max_wait_later;
    j["max_gap_ms"] = max_gap;
    j["plans_ready_in_time"] = rep.async.plans_ready_in_time;
    j["plans_after_wait"] = rep.async.plans_after_wait;
    j["fallbacks"] = rep.async.fallbacks;
    out << j.dump(2) << "\n";
  } else {
    out << fmt::format("run · {} · {} · {} · host backend, {} rank threads · time scale {} · {} steps\n", model.name, setup.name,
                       dataset.name, setup.pipeline_stages, a.time_scale, rep.steps.size());
    out << fmt::format("  {:>4} {:>18} {:>8} {:>10} {:>8} {:>8} {:>12} {:>12} {:>8}\n", "step", "plan", "fallback", "search ms", "wait ms",
                       "gap ms", "emulated ms", "measured ms", "error %");
    for (const RunStep& s : rep.steps)
      out << fmt::format("  {:>4} {:>18} {:>8} {:>10.1f} {:>8.1f} {:>8.1f} {:>12.1f} {:>12.1f} {:>+8.2f}\n", s.step, s.source,
                         s.fallback ? "yes" : "no", s.search_ms, s.wait_ms, s.gap_ms, s.emulated_ms, s.measured_ms,
                         s.emulated_ms > 0 ? 100.0 * (s.measured_ms - s.emulated_ms) / s.emulated_ms : 0.0);
    out << fmt::format("mean |measured - emulated| / emulated: {:.2f} % (max {:.2f} %)\n", 100.0 * mean_err, 100.0 * max_err);
    out << fmt::format("asynchronous planning ({} steps; step 0 waits for its search): {} ready in time, {} after a wait, "
                       "{} fallbacks; longest wait after step 0 {:.1f} ms, longest gap between steps {:.1f} ms\n",
                       rep.steps.size(), rep.async.plans_ready_in_time, rep.async.plans_after_wait, rep.async.fallbacks, max_wait_later,
                       max_gap);
  }
  return 0;
}

/// Registers `run` on `app`, parsing into `args`.
inline CLI::App* add_run(CLI::App& app, RunArgs& args) {
  CLI::App* cmd = app.add_subcommand("run", "Execute planned steps on the host backend in emulated time: measured vs emulated step time");
  cmd->add_option("--backend", args.backend, "execution backend: host (default; the only one of this build)");
  cmd->add_option("--model", args.model, "model JSON file")->required();
  cmd->add_option("--setup", args.setup, "setup JSON file")->required();
  cmd->add_option("--dataset", args.dataset, "dataset JSON file")->required();
  add_seed_option(*cmd, "--seed", args.seed, "sampling seed (default 0)");
  add_integer_option(*cmd, "--steps", args.steps, 1, 100000, "steps to execute (default 10)");
  add_number_option(*cmd, "--time-scale", args.time_scale, 0, 1000, true, "wall-clock seconds per emulated second (e.g. 0.1)")->required();
  add_search_options(*cmd, args.search);
  add_integer_option(*cmd, "--lookahead", args.lookahead, 1, 64, "steps planned ahead by the asynchronous planner (default 2)");
  add_number_option(*cmd, "--grace-ms", args.grace_ms, 0, 3.6e6, false, "wait at most this long for a late plan, then use the fallback (default 100)");
  cmd->add_flag("--realtime", args.realtime,
                "run the rank threads under SCHED_FIFO (Linux, CAP_SYS_NICE), so that the planner and other processes do not delay them");
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
