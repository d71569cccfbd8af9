#pragma once
// `pipeweaver suite --suite F [--steps K] [--seeds N] [--budget-ms T | --iterations I]
//                   [--threads N] [--search-seed S] [--split-backward] [--repack]
//                   [--format table|json]`
// Runs the comparison of `compare` (every baseline and the searched plan `dip`) over every case
// of a suite file: steps 0..K-1 under the sampling seeds 1..N (seed 0 is the profile seed the
// static choices are made on, so the compared steps are not the profile steps). Per case and
// step it records each plan's emulated step time; per case it reports geometric means over its
// steps of
//   speedup vs B = B step_ms / dip step_ms        (for each baseline B)
//   dip / LB     = dip step_ms / lower_bound_ms
//   ceiling vs B = B step_ms / lower_bound_ms     (for each baseline B)
// The lower bound of a step is the smallest of the bounds of every partition compared (dip's and
// each baseline's), so no plan over those partitions beats it: "ceiling vs B" is the largest
// speedup over B that any such plan could show, whatever the search does.
// and the mean and maximum search time, whether dip fitted memory on every step and whether it
// was never slower than a baseline that fitted; the last row is the geometric mean over cases
// (each case weighs the same). JSON output:
//   {"suite", "steps", "seeds", "budget_ms" | "iterations", "threads", "split_backward", "repack",
//    "cases": [{"name", "steps", "speedup": {"<baseline>": x}, "ceiling": {"<baseline>": x},
//               "dip_over_lower_bound",
//               "search_ms_mean", "search_ms_max", "dip_fits_memory", "dip_never_slower",
//               "sources": {"<source>": count}, "split_plans", "repacked_plans",
//               "step_records": [{"seed", "step", "step_ns": {"dip": ns, "<baseline>": ns},
//                                 "lower_bound_ns", "source", "split_backward", "repacked"}]}],
//    "geomean": {"speedup": {"<baseline>": x}, "ceiling": {"<baseline>": x}, "dip_over_lower_bound"}}
// With --iterations the output holds no wall-clock figure (search_ms_mean and search_ms_max are
// left out), so it is the same, byte for byte, on every run and machine: its digest identifies the
// plans (the README records one).
// Bad input: pipeweaver::Error (main.cpp: one line on stderr naming the file, exit 2).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/planner/planner.hpp"

#include "cmd_plan.hpp"

namespace pwcli {

struct SuiteArgs {
  std::string suite;
  int steps = 4;
  int seeds = 3;
  SearchArgs search;
  std::string format = "table";
};

/// Geometric mean of positive values (0 for none).
inline double geomean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += std::log(x);
  return std::exp(s / static_cast<double>(v.size()));
}

/// Runs `suite`; returns 0. Throws pipeweaver::Error on bad input.
inline int run_suite(const SuiteArgs& a, std::ostream& out = std::cout, std::ostream& progress = std::cerr) {
  namespace pw = pipeweaver;
  if (a.format != "table" && a.format != "json")
    throw pw::input_error("--format is '" + a.format + "'", {.path = "--format", .expected = "table or json"});
  if (a.steps < 1 || a.steps > 10000)
    throw pw::input_error("--steps is " + std::to_string(a.steps), {.path = "--steps", .expected = "an integer in [1, 10000]"});
  if (a.seeds < 1 || a.seeds > 10000)
    throw pw::input_error("--seeds is " + std::to_string(a.seeds), {.path = "--seeds", .expected = "an integer in [1, 10000]"});
  const pw::PlannerOptions options = planner_options(a.search);
  const pw::io::Suite suite = pw::io::read_suite(a.suite);
  std::vector<pw::io::Workload> workloads;
  for (const pw::io::SuiteCase& c : suite.cases) workloads.push_back(pw::io::read_case(c));  // all inputs checked before any work

  nlohmann::ordered_json j;
  j["suite"] = suite.name;
  j["steps"] = a.steps;
  j["seeds"] = a.seeds;
  if (options.iterations > 0) j["iterations"] = options.iterations;
  else j["budget_ms"] = static_cast<double>(options.budget.count()) / 1e6;
  j["threads"] = options.threads;
  j["split_backward"] = options.split_backward;
  j["repack"] = options.repack;
  j["cases"] = nlohmann::ordered_json::array();

  std::map<std::string, std::vector<double>> all_speedups, all_ceilings;  // per baseline, per case
  std::vector<double> all_lb;
  std::vector<std::string> names(pw::baseline_names.begin(), pw::baseline_names.end());
  for (std::size_t ci = 0; ci < suite.cases.size(); ++ci) {
    const pw::io::SuiteCase& c = suite.cases[ci];
    const pw::io::Workload& w = workloads[ci];
    const pw::AnalyticCostModel cost(w.model, w.setup);
    const pw::Planner<pw::AnalyticCostModel> planner(w.model, w.setup, cost, w.dataset, options);
    pw::BaselineContext<pw::AnalyticCostModel> ctx(w.model, w.setup, cost);
    std::map<std::string, std::vector<double>> speedups, ceilings;
    std::vector<double> lb_ratio;
    std::map<std::string, int> sources;
    int split_plans = 0, repacked_plans = 0;
    double search_sum = 0, search_max = 0;
    bool fits = true, never_slower = true;
    int n = 0;
    nlohmann::ordered_json step_records = nlohmann::ordered_json::array();
    for (int seed = 1; seed <= a.seeds; ++seed)
      for (int step = 0; step < a.steps; ++step) {
        const pw::Batch batch = pw::sample_step(w.model, w.dataset, w.setup, static_cast<std::uint64_t>(seed), step);
        const pw::PlanResult r = planner.plan(batch);
        const double dip = static_cast<double>(r.step_time.count());
        pw::Nanoseconds lb = r.lower_bound;
        std::vector<std::pair<std::string, double>> baseline_ms;
        for (const pw::PreparedBaseline& pb : planner.baselines()) {
          const pw::BaselinePlan b = pw::build_baseline_plan(ctx, pb.baseline, batch);
          lb = std::min(lb, pw::lower_bound(b.graph, pb.baseline.layout.partition, b.plan.sub_microbatches, ctx.cache()).value);
          const double ms = static_cast<double>(b.emulation.step_time.count());
          speedups[pb.baseline.name].push_back(ms / dip);
          baseline_ms.emplace_back(pb.baseline.name, ms);
          if (b.fits_memory && b.emulation.step_time < r.step_time) never_slower = false;
        }
        for (const auto& [name, ms] : baseline_ms) ceilings[name].push_back(ms / static_cast<double>(lb.count()));
        {
          nlohmann::ordered_json sr;
          sr["seed"] = seed;
          sr["step"] = step;
          sr["step_ns"]["dip"] = r.step_time.count();
          for (const auto& [name, ms] : baseline_ms) sr["step_ns"][name] = static_cast<std::int64_t>(ms);
          sr["lower_bound_ns"] = lb.count();
          sr["source"] = r.source;
          sr["split_backward"] = pw::has_split_backward(r.plan);  // the plan defers weight parts
          sr["repacked"] = r.repacked;                            // the plan regroups the samples
          step_records.push_back(std::move(sr));
        }
        const pw::EmulationResult e = pw::emulate(r.plan, w.model, w.setup, ctx.cache());
        fits = fits && e.fits_memory();
        lb_ratio.push_back(dip / static_cast<double>(lb.count()));
        ++sources[r.source];
        split_plans += pw::has_split_backward(r.plan) ? 1 : 0;
        repacked_plans += r.repacked ? 1 : 0;
        const double ms = pw::to_ms(r.search_time);
        search_sum += ms;
        search_max = std::max(search_max, ms);
        ++n;
        progress << fmt::format("suite: {} seed {} step {}: dip {:.1f} ms ({}{}{}), lower bound {:.1f} ms, search {:.0f} ms\n", c.name,
                                seed, step, pw::to_ms(r.step_time), r.source, pw::has_split_backward(r.plan) ? ", split" : "",
                                r.repacked ? ", repacked" : "", pw::to_ms(lb), ms);
      }
    nlohmann::ordered_json cj;
    cj["name"] = c.name;
    cj["steps"] = n;
    cj["speedup"] = nlohmann::ordered_json::object();
    cj["ceiling"] = nlohmann::ordered_json::object();
    for (const auto& name : names) {
      const double g = geomean(speedups[name]);
      cj["speedup"][name] = g;
      all_speedups[name].push_back(g);
      const double cg = geomean(ceilings[name]);
      cj["ceiling"][name] = cg;
      all_ceilings[name].push_back(cg);
    }
    const double glb = geomean(lb_ratio);
    all_lb.push_back(glb);
    cj["dip_over_lower_bound"] = glb;
    if (options.iterations == 0) {  // wall-clock: only where a time budget makes runs differ anyway
      cj["search_ms_mean"] = search_sum / n;
      cj["search_ms_max"] = search_max;
    }
    cj["dip_fits_memory"] = fits;
    cj["dip_never_slower"] = never_slower;
    cj["sources"] = nlohmann::ordered_json::object();
    for (const auto& [s, k] : sources) cj["sources"][s] = k;
    cj["split_plans"] = split_plans;
    cj["repacked_plans"] = repacked_plans;
    cj["step_records"] = std::move(step_records);
    j["cases"].push_back(std::move(cj));
  }
  j["geomean"]["speedup"] = nlohmann::ordered_json::object();
  for (const auto& name : names) j["geomean"]["speedup"][name] = geomean(all_speedups[name]);
  j["geomean"]["ceiling"] = nlohmann::ordered_json::object();
  for (const auto& name : names) j["geomean"]["ceiling"][name] = geomean(all_ceilings[name]);
  j["geomean"]["dip_over_lower_bound"] = geomean(all_lb);

  if (a.format == "json") {
    out << j.dump(2) << "\n";
    return 0;
  }
  out << fmt::format("suite {} · {} seeds x {} steps · {} · {} thread{}{}{}\n", suite.name, a.seeds, a.steps,
                     options.iterations > 0 ? fmt::format("{} iterations", options.iterations)
                                            : fmt::format("{:.0f} ms budget", static_cast<double>(options.budget.count()) / 1e6),
                     options.threads, options.threads == 1 ? "" : "s", options.split_backward ? " · split backward" : "",
                     options.repack ? " · repack" : "");
  out << "speedup of dip over each baseline (geometric mean over steps), dip / lower bound, search time\n";
  std::string header = fmt::format("  {:<16}", "case");
  for (const auto& name : names) header += fmt::format(" {:>16}", name);
  header += fmt::format(" {:>8} {:>9} {:>9} {:>5} {:>6}", "dip/LB", "search ms", "max ms", "fits", "never");
  out << header << "\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<16}", cj["name"].get<std::string>());
    for (const auto& name : names) line += fmt::format(" {:>16.3f}", cj["speedup"][name].get<double>());
    const auto ms = [&](const char* key) { return cj.contains(key) ? fmt::format("{:.0f}", cj[key].get<double>()) : std::string("-"); };
    line += fmt::format(" {:>8.3f} {:>9} {:>9} {:>5} {:>6}", cj["dip_over_lower_bound"].get<double>(), ms("search_ms_mean"), ms("search_ms_max"),
                        cj["dip_fits_memory"].get<bool>() ? "yes" : "NO", cj["dip_never_slower"].get<bool>() ? "yes" : "NO");
    out << line << "\n";
  }
  std::string g = fmt::format("  {:<16}", "geomean");
  for (const auto& name : names) g += fmt::format(" {:>16.3f}", j["geomean"]["speedup"][name].get<double>());
  g += fmt::format(" {:>8.3f}", j["geomean"]["dip_over_lower_bound"].get<double>());
  out << g << "\n";
  out << "ceiling: largest speedup over each baseline that any plan could show (baseline / lower bound)\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<16}", cj["name"].get<std::string>());
    for (const auto& name : names) line += fmt::format(" {:>16.3f}", cj["ceiling"][name].get<double>());
    out << line << "\n";
  }
  std::string gc = fmt::format("  {:<16}", "geomean");
  for (const auto& name : names) gc += fmt::format(" {:>16.3f}", j["geomean"]["ceiling"][name].get<double>());
  out << gc << "\n";
  out << "sources of the dip plans (the search's own plan, or a baseline that beat it):\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<16}", cj["name"].get<std::string>());
    for (const auto& [s, k] : cj["sources"].items()) line += fmt::format(" {}={}", s, k.get<int>());
    if (options.split_backward) line += fmt::format(" · split {}", cj["split_plans"].get<int>());
    if (options.repack) line += fmt::format(" · repacked {}", cj["repacked_plans"].get<int>());
    out << line << "\n";
  }
  return 0;
}

/// Registers `suite` on `app`, parsing into `args`.
inline CLI::App* add_suite(CLI::App& app, SuiteArgs& args) {
  CLI::App* cmd = app.add_subcommand("suite", "Compare dip with every baseline over a suite of cases: per-case and geometric-mean ratios");
  cmd->add_option("--suite", args.suite, "suite JSON file (e.g. examples/workloads/suite.json)")->required();
  cmd->add_option("--steps", args.steps, "steps per seed (default 4)");
  cmd->add_option("--seeds", args.seeds, "sampling seeds 1..N (default 3)");
  add_search_options(*cmd, args.search);
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
