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
// How a step is planned and distributed, as a trainer would do it:
//  * rank 0 is the planning rank. Step 0's plan is searched synchronously (nothing can run
//    before it); steps 1.. go through an AsyncPlanner (one background thread, lookahead L,
//    default 2): while step k executes, the plans of steps k+1 .. k+L are searched from their
//    batch metadata. When step k+1 is due and its search is not done, rank 0 waits up to G ms
//    (default 100) and then takes the fallback plan (the best baseline), which is reported;
//  * rank 0 broadcasts each plan in its binary form (schedule/plan_binary.hpp) through the
//    in-process broadcast (host/broadcast.hpp); every other rank decodes it, compiles its
//    action list (execute/executor.hpp) and looks up its stage latencies; a planning failure is
//    broadcast as an empty message, so every rank stops with the error;
//  * a barrier starts the step on every rank at once and another ends it: the measured step
//    time is the wall-clock between the two. What happens between steps is reported apart:
//    the wait for the plan (0 when its search was done in time), and the gap from the end of
//    the previous step to the start of this one (the wait, the broadcast, decoding, compiling
//    the action lists and looking up the stage latencies);
//  * --realtime runs the rank threads under SCHED_FIFO once they have their first plan (Linux,
//    needs CAP_SYS_NICE): they stand in for devices, whose progress the planner's search and
//    other processes on the machine must not delay. Without it, a busy machine delays their
//    wake-ups, which shows as a larger measured − emulated difference.
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
//   count steps 1..K-1, the asynchronous ones).
// Bad input (a backend other than host, an unreadable file, out-of-range numbers):
// pipeweaver::Error (main.cpp: one line on stderr, exit status 2).
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <future>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/host/timed.hpp"
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

/// Executes the steps (see the header comment). `planner` must have chosen its placement.
template <class C>
RunReport execute_timed_steps(const pipeweaver::Planner<C>& planner, const std::vector<pipeweaver::Batch>& batches,
                              double scale, int lookahead, std::chrono::nanoseconds grace, bool realtime = false) {
  namespace pw = pipeweaver;
  namespace host = pipeweaver::host;
  using Clock = host::TimedClock;
  const pw::ModelSpec& model = planner.model();
  const C& cost = planner.cost();
  const int P = planner.setup().pipeline_stages;
  const int K = static_cast<int>(batches.size());

  host::Options options;
  options.timeout = std::chrono::minutes(10);  // longer than any legitimate wait of a step
  options.channel_capacity = std::size_t{1} << 20;  // a send never blocks on a full channel
  options.executor.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) {
    return std::size_t{16};  // the plan's bytes are modeled as link time (host/timed.hpp)
  };
  host::World world(P, options);
  host::LinkClocks clocks(P);
  host::InProcessBroadcast broadcast(P, std::chrono::minutes(10));

  pw::AsyncPlannerOptions ao;
  ao.threads = 1;
  ao.lookahead = lookahead;
  ao.grace = pw::Nanoseconds{grace.count()};
  pw::AsyncPlanner<pw::Planner<C>> async(planner, ao);
  int submitted = 1;  // step 0 is planned synchronously
  auto top_up = [&] {
    while (submitted < K && async.outstanding() < lookahead) async.submit(batches[static_cast<std::size_t>(submitted++)]);
  };
  top_up();  // the searches of steps 1..L start now, alongside step 0's

  RunReport report;
  report.steps.resize(static_cast<std::size_t>(K));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(P));
  std::atomic<bool> failed{false};
  bool stop_at_start = false, stop_at_end = false;
  Clock::time_point step_start{}, step_end{};
  int step_index = 0;
  std::barrier start_barrier(P, [&]() noexcept {
    stop_at_start = failed.load();
    step_start = Clock::now();
    if (step_index > 0) report.steps[static_cast<std::size_t>(step_index)].gap_ms = detail::ms(step_start - step_end);
  });
  std::barrier end_barrier(P, [&]() noexcept {
    step_end = Clock::now();
    report.steps[static_cast<std::size_t>(step_index)].measured_ms = detail::ms(step_end - step_start);
    ++step_index;
    stop_at_end = failed.load();
  });

  // Rank 0: the step's plan (searched, or fallback) and its broadcast to the other ranks.
  auto plan_on_root = [&](int k, const pw::BroadcastHook& hook) -> pw::Plan {
    pw::PlanResult r;
    std::vector<std::byte> bytes;
    std::exception_ptr error;
    try {
      const auto t0 = Clock::now();
      if (k == 0) {
        r = planner.plan(batches[0]);
      } else {
        r = async.next();
      }
      RunStep& s = report.steps[static_cast<std::size_t>(k)];
      s.step = k;
      s.wait_ms = k == 0 ? detail::ms(Clock::now() - t0) : detail::ms(std::chrono::nanoseconds{async.stats().last_wait.count()});
      s.fallback = r.fallback;
      s.source = r.source;
      s.search_ms = detail::ms(std::chrono::nanoseconds{r.search_time.count()});
      s.emulated_ms = detail::ms(host::scaled(r.step_time, scale));
      top_up();
      bytes = pw::to_binary(r.plan);
    } catch (...) {
      error = std::current_exception();
      bytes.clear();  // an empty message: no plan this step
    }
    hook(bytes);
    if (error) std::rethrow_exception(error);
    return std::move(r.plan);
  };

  auto rank_main = [&](int r) {
    host::reduce_timer_slack();
    const pw::RankId me{r};
    host::TimedRuntime runtime(world, me, clocks);
    pw::Executor<host::TimedRuntime> executor(runtime, options.executor);
    host::SleepingCallbacks callbacks;
    pw::StageCostCache<C> cache(cost, model);  // the emulator's lookup, kept across steps
    const pw::BroadcastHook hook = pw::bind_broadcast(broadcast, me, pw::RankId{0});
    auto fail = [&] {
      errors[static_cast<std::size_t>(r)] = std::current_exception();
      failed.store(true);
    };
    for (int k = 0; k < K; ++k) {
      pw::Plan plan;
      try {
        plan = r == 0 ? plan_on_root(k, hook) : pw::receive_plan(hook);
        // After step 0's plan, which rank 0 searches in this thread: no search at high priority.
        if (k == 0 && realtime && !host::set_realtime_priority(1))
          throw pw::input_error("--realtime: the system refused SCHED_FIFO for rank " + std::to_string(r), {.path = "--realtime", .expected = "CAP_SYS_NICE (e.g. root), or no --realtime"});
        clocks.prepare(plan, me, cost, scale);
        callbacks.prepare(plan, me, cache, scale);
        runtime.begin_step(plan.transfers.size());
        executor.prepare(plan, model);
      } catch (...) {
        fail();
      }
      start_barrier.arrive_and_wait();
      if (stop_at_start) return;
      try {
        executor.run(callbacks, k);
      } catch (...) {
        fail();
      }
      end_barrier.arrive_and_wait();
      if (stop_at_end) return;
    }
  };

  // The ranks start together once all exist: a rank thread that cannot be created must not
  // leave the others waiting at a barrier for it.
  std::promise<bool> go;
  std::shared_future<bool> started = go.get_future().share();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(P));
  try {
    for (int r = 0; r < P; ++r)
      threads.emplace_back([&, r] {
        if (started.get()) rank_main(r);
      });
  } catch (...) {
    go.set_value(false);
    for (auto& t : threads) t.join();
    throw;
  }
  go.set_value(true);
  for (auto& t : threads) t.join();
  report.async = async.stats();

  // The root cause: the lowest rank's error that is not a consequence of another rank's.
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& e : errors) {
      if (!e) continue;
      if (pass == 1) std::rethrow_exception(e);
      try {
        std::rethrow_exception(e);
      } catch (const pw::Error& x) {
        if (x.kind() != pw::ErrorKind::cancelled) throw;
      } catch (...) {
        throw;
      }
    }
  return report;
}

/// Runs `run`; returns 0. Throws pipeweaver::Error on bad input or a failed step.
inline int run_run(const RunArgs& a, std::ostream& out = std::cout) {
  namespace pw = pipeweaver;
  detail::check_run_args(a);
  const pw::PlannerOptions options = planner_options(a.search);
  const pw::ModelSpec model = pw::read_model(a.model);
  const pw::Setup setup = pw::read_setup(a.setup);
  pw::check_compatible(model, setup, a.setup);
  const pw::DatasetSpec dataset = pw::read_dataset(a.dataset);
  pw::check_compatible(model, dataset, a.dataset);
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
  const pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, dataset, options);
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
    out << fmt::format("asynchronous planning (steps 1..{}): {} ready in time, {} after a wait, {} fallbacks; longest wait {:.1f} ms, "
                       "longest gap between steps {:.1f} ms\n",
                       rep.steps.size() - 1, rep.async.plans_ready_in_time, rep.async.plans_after_wait, rep.async.fallbacks, max_wait_later,
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
  cmd->add_option("--seed", args.seed, "sampling seed (default 0)");
  cmd->add_option("--steps", args.steps, "steps to execute (default 10)");
  cmd->add_option("--time-scale", args.time_scale, "wall-clock seconds per emulated second (e.g. 0.1)")->required();
  add_search_options(*cmd, args.search);
  cmd->add_option("--lookahead", args.lookahead, "steps planned ahead by the asynchronous planner (default 2)");
  cmd->add_option("--grace-ms", args.grace_ms, "wait at most this long for a late plan, then use the fallback (default 100)");
  cmd->add_flag("--realtime", args.realtime,
                "run the rank threads under SCHED_FIFO (Linux, CAP_SYS_NICE), so that the planner and other processes do not delay them");
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
