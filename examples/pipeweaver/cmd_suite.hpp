#pragma once
// `pipeweaver suite --suite F [--steps K] [--seeds N] [--budget-ms T | --iterations I]
//                   [--threads N] [--search-seed S] [--split-backward] [--repack]
//                   [--format table|json]`
// Runs the comparison of `compare` (every baseline and the searched plan `dip`) over every case
// of a suite file: steps 0..K-1 under the sampling seeds 1..N (seed 0 is the profile seed the
// static choices are made on, so the compared steps are not the profile steps). Per case and
// step it records each plan's emulated step time; per case it reports geometric means over its
// steps of
//   speedup vs B  = B step_ms / dip step_ms          (for each baseline B)
//   dip / LB      = dip step_ms / lower_bound_ms     (the tight bound)
//   dip / old LB  = dip step_ms / classic_lower_bound_ms
//   dip / own LB  = dip step_ms / the tight bound of dip's own partition and sub-microbatches
//   seed / search = best seed order's step_ms / searched step_ms
//   ceiling vs B  = B step_ms / lower_bound_ms       (for each baseline B)
// The lower bound of a step (emulate/lower_bound.hpp) is the smallest tight bound over every
// partition compared (dip's and each baseline's), so no plan over those partitions beats it:
// "ceiling vs B" is the largest speedup over B that any such plan could show, whatever the
// search does. The classic bound is max(work / P, longest chain), partition-independent.
// "dip / own LB" judges the schedule alone: no plan over dip's partition and sub-microbatch
// split beats that bound, so what is left above it is the schedule's gap (or the bound's slack),
// while "dip / LB" also counts the partition's.
// "seed / search" is what the MCTS search adds over its seed orders: the best of the seed orders
// (1F1B-like, interleaved-like, encoder-in-bubbles: search/segments.hpp), each scored by the
// search's own evaluator on dip's placement (fitting memory first, then time), against the plan
// the search returned on the same placement (PlanResult::searched_step_time), whether or not a
// baseline then won the step.
// Also per case: the mean and maximum search time, whether dip fitted memory on every step and
// whether it was never slower than a baseline that fitted; the last row is the geometric mean
// over cases (each case weighs the same). JSON output:
//   {"suite", "steps", "seeds", "budget_ms" | "iterations", "threads", "split_backward", "repack",
//    "cases": [{"name", "steps", "speedup": {"<baseline>": x}, "ceiling": {"<baseline>": x},
//               "dip_over_lower_bound", "dip_over_classic_lower_bound", "dip_over_own_lower_bound",
//               "seed_over_search",
//               "search_ms_mean", "search_ms_max", "dip_fits_memory", "dip_never_slower",
//               "sources": {"<source>": count}, "split_plans", "repacked_plans",
//               "step_records": [{"seed", "step", "step_ns": {"dip": ns, "<baseline>": ns},
//                                 "lower_bound_ns", "classic_lower_bound_ns", "own_lower_bound_ns",
//                                 "best_seed_ns", "searched_ns", "source", "split_backward", "repacked"}]}],
//    "geomean": {"speedup": {"<baseline>": x}, "ceiling": {"<baseline>": x}, "dip_over_lower_bound",
//                "dip_over_classic_lower_bound", "dip_over_own_lower_bound", "seed_over_search"}}
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
#include "pipeweaver/search/schedule_evaluator.hpp"
#include "pipeweaver/search/segments.hpp"

#include "cmd_plan.hpp"
#include "options.hpp"

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

/// The best seed order's step time on the planner's placement (see the header comment): each
/// seed scored by the search's evaluator; fitting memory first, then the shortest step.
template <class C>
pipeweaver::Nanoseconds best_seed_step_time(const pipeweaver::Planner<C>& planner, pipeweaver::BaselineContext<C>& ctx,
                                            const pipeweaver::Batch& batch) {
  namespace pw = pipeweaver;
  const pw::Partition& part = planner.partition();
  const std::vector<pw::SubMicrobatchSpec> smbs = pw::split(planner.model(), part, batch);
  const pw::StageGraph graph = pw::build_stage_graph(planner.model(), part, smbs);
  const pw::SegmentUnits units = pw::segment_units(graph, smbs, part.ranks);
  const pw::StepTables tables =
      pw::build_step_tables(planner.model(), planner.setup(), part, smbs, graph, units, ctx.cache(), planner.options().search.tables);
  pw::ScheduleEvaluator evaluator(tables, planner.options().search.evaluator);
  bool best_fits = false;
  pw::Nanoseconds best = pw::Nanoseconds::max();
  for (const pw::SeedOrder& seed : pw::seed_orders(planner.model(), units, part.ranks)) {
    const pw::Evaluation e = evaluator.evaluate(seed.sequence);
    if ((e.feasible && !best_fits) || (e.feasible == best_fits && e.step_time < best)) {
      best = e.step_time;
      best_fits = e.feasible;
    }
  }
  return best;
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
  for (std::size_t i = 0; i < suite.cases.size(); ++i) {  // all inputs checked before any work
    try {
      workloads.push_back(pw::io::read_case(suite.cases[i]));
    } catch (const pw::Error& e) {  // the case's file is named; say which case of which suite named it
      throw pw::Error(e.kind(), e.message() + ", in the files of case '" + suite.cases[i].name + "' (" + a.suite + ": /cases/" + std::to_string(i) + ")", e.context());
    }
  }

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
  std::vector<double> all_lb, all_classic, all_own, all_seed;
  std::vector<std::string> names(pw::baseline_names.begin(), pw::baseline_names.end());
  for (std::size_t ci = 0; ci < suite.cases.size(); ++ci) {
    const pw::io::SuiteCase& c = suite.cases[ci];
    const pw::io::Workload& w = workloads[ci];
    const pw::AnalyticCostModel cost(w.model, w.setup);
    const std::string dataset_file = c.dataset.string(), setup_file = c.setup.string();
    const pw::Planner<pw::AnalyticCostModel> planner = attributed(
        dataset_file, setup_file, [&] { return pw::Planner<pw::AnalyticCostModel>(w.model, w.setup, cost, w.dataset, options); });
    pw::BaselineContext<pw::AnalyticCostModel> ctx(w.model, w.setup, cost);
    std::map<std::string, std::vector<double>> speedups, ceilings;
    std::vector<double> lb_ratio, classic_ratio, own_ratio, seed_ratio;
    std::map<std::string, int> sources;
    int split_plans = 0, repacked_plans = 0;
    double search_sum = 0, search_max = 0;
    bool fits = true, never_slower = true;
    int n = 0;
    nlohmann::ordered_json step_records = nlohmann::ordered_json::array();
    for (int seed = 1; seed <= a.seeds; ++seed)
      for (int step = 0; step < a.steps; ++step) {
        const pw::Batch batch = attributed(setup_file, setup_file, [&] {
          return pw::sample_step(w.model, w.dataset, w.setup, static_cast<std::uint64_t>(seed), step);
        });
        const pw::PlanResult r = attributed(dataset_file, setup_file, [&] { return planner.plan(batch); });
        const double dip = static_cast<double>(r.step_time.count());
        pw::Nanoseconds lb = r.lower_bound, classic = r.classic_lower_bound;
        std::vector<std::pair<std::string, double>> baseline_ms;
        for (const pw::PreparedBaseline& pb : planner.baselines()) {
          const pw::BaselinePlan b = attributed(dataset_file, setup_file, [&] { return pw::build_baseline_plan(ctx, pb.baseline, batch); });
          const pw::LowerBound own = pw::lower_bound(b.graph, pb.baseline.layout.partition, b.plan.sub_microbatches, ctx.cache());
          lb = std::min(lb, own.tight);
          classic = std::min(classic, own.value);
          const double ms = static_cast<double>(b.emulation.step_time.count());
          speedups[pb.baseline.name].push_back(ms / dip);
          baseline_ms.emplace_back(pb.baseline.name, ms);
          if (b.fits_memory && b.emulation.step_time < r.step_time) never_slower = false;
        }
        for (const auto& [name, ms] : baseline_ms) ceilings[name].push_back(ms / static_cast<double>(lb.count()));
        const pw::Nanoseconds seed_time = best_seed_step_time(planner, ctx, batch);
        const pw::Nanoseconds own_lb = pw::lower_bound(r.plan, w.model, cost).tight;  // dip's partition only
        own_ratio.push_back(dip / static_cast<double>(own_lb.count()));
        seed_ratio.push_back(static_cast<double>(seed_time.count()) / static_cast<double>(r.searched_step_time.count()));
        {
          nlohmann::ordered_json sr;
          sr["seed"] = seed;
          sr["step"] = step;
          sr["step_ns"]["dip"] = r.step_time.count();
          for (const auto& [name, ms] : baseline_ms) sr["step_ns"][name] = static_cast<std::int64_t>(ms);
          sr["lower_bound_ns"] = lb.count();
          sr["classic_lower_bound_ns"] = classic.count();
          sr["own_lower_bound_ns"] = own_lb.count();
          sr["best_seed_ns"] = seed_time.count();
          sr["searched_ns"] = r.searched_step_time.count();
          sr["source"] = r.source;
          sr["split_backward"] = pw::has_split_backward(r.plan);  // the plan defers weight parts
          sr["repacked"] = r.repacked;                            // the plan regroups the samples
          step_records.push_back(std::move(sr));
        }
        const pw::EmulationResult e = pw::emulate(r.plan, w.model, w.setup, ctx.cache());
        fits = fits && e.fits_memory();
        lb_ratio.push_back(dip / static_cast<double>(lb.count()));
        classic_ratio.push_back(dip / static_cast<double>(classic.count()));
        ++sources[r.source];
        split_plans += pw::has_split_backward(r.plan) ? 1 : 0;
        repacked_plans += r.repacked ? 1 : 0;
        const double ms = pw::to_ms(r.search_time);
        search_sum += ms;
        search_max = std::max(search_max, ms);
        ++n;
        progress << fmt::format("suite: {} seed {} step {}: dip {:.1f} ms ({}{}{}), lower bound {:.1f} ms (classic {:.1f}), best seed "
                                "{:.1f} ms, searched {:.1f} ms, search {:.0f} ms\n",
                                c.name, seed, step, pw::to_ms(r.step_time), r.source, pw::has_split_backward(r.plan) ? ", split" : "",
                                r.repacked ? ", repacked" : "", pw::to_ms(lb), pw::to_ms(classic), pw::to_ms(seed_time),
                                pw::to_ms(r.searched_step_time), ms);
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
    const double glb = geomean(lb_ratio), gclassic = geomean(classic_ratio), gown = geomean(own_ratio), gseed = geomean(seed_ratio);
    all_lb.push_back(glb);
    all_classic.push_back(gclassic);
    all_own.push_back(gown);
    all_seed.push_back(gseed);
    cj["dip_over_lower_bound"] = glb;
    cj["dip_over_classic_lower_bound"] = gclassic;
    cj["dip_over_own_lower_bound"] = gown;
    cj["seed_over_search"] = gseed;
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
  j["geomean"]["dip_over_classic_lower_bound"] = geomean(all_classic);
  j["geomean"]["dip_over_own_lower_bound"] = geomean(all_own);
  j["geomean"]["seed_over_search"] = geomean(all_seed);

  if (a.format == "json") {
    out << j.dump(2) << "\n";
    return 0;
  }
  out << fmt::format("suite {} · {} seeds x {} steps · {} · {} thread{}{}{}\n", suite.name, a.seeds, a.steps,
                     options.iterations > 0 ? fmt::format("{} iterations", options.iterations)
                                            : fmt::format("{:.0f} ms budget", static_cast<double>(options.budget.count()) / 1e6),
                     options.threads, options.threads == 1 ? "" : "s", options.split_backward ? " · split backward" : "",
                     options.repack ? " · repack" : "");
  out << "speedup of dip over each baseline (geometric mean over steps), dip / lower bound (tight over every partition\n"
         "compared, classic, tight of dip's own partition), best seed order / searched plan, search time\n";
  std::string header = fmt::format("  {:<22}", "case");
  for (const auto& name : names) header += fmt::format(" {:>16}", name);
  header += fmt::format(" {:>8} {:>8} {:>8} {:>11} {:>9} {:>9} {:>5} {:>6}", "dip/LB", "dip/old", "dip/own", "seed/search", "search ms", "max ms",
                        "fits", "never");
  out << header << "\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<22}", cj["name"].get<std::string>());
    for (const auto& name : names) line += fmt::format(" {:>16.3f}", cj["speedup"][name].get<double>());
    const auto ms = [&](const char* key) { return cj.contains(key) ? fmt::format("{:.0f}", cj[key].get<double>()) : std::string("-"); };
    line += fmt::format(" {:>8.3f} {:>8.3f} {:>8.3f} {:>11.4f} {:>9} {:>9} {:>5} {:>6}", cj["dip_over_lower_bound"].get<double>(),
                        cj["dip_over_classic_lower_bound"].get<double>(), cj["dip_over_own_lower_bound"].get<double>(),
                        cj["seed_over_search"].get<double>(), ms("search_ms_mean"),
                        ms("search_ms_max"), cj["dip_fits_memory"].get<bool>() ? "yes" : "NO", cj["dip_never_slower"].get<bool>() ? "yes" : "NO");
    out << line << "\n";
  }
  std::string g = fmt::format("  {:<22}", "geomean");
  for (const auto& name : names) g += fmt::format(" {:>16.3f}", j["geomean"]["speedup"][name].get<double>());
  g += fmt::format(" {:>8.3f} {:>8.3f} {:>8.3f} {:>11.4f}", j["geomean"]["dip_over_lower_bound"].get<double>(),
                   j["geomean"]["dip_over_classic_lower_bound"].get<double>(), j["geomean"]["dip_over_own_lower_bound"].get<double>(),
                   j["geomean"]["seed_over_search"].get<double>());
  out << g << "\n";
  out << "ceiling: largest speedup over each baseline that any plan could show (baseline / lower bound)\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<22}", cj["name"].get<std::string>());
    for (const auto& name : names) line += fmt::format(" {:>16.3f}", cj["ceiling"][name].get<double>());
    out << line << "\n";
  }
  std::string gc = fmt::format("  {:<22}", "geomean");
  for (const auto& name : names) gc += fmt::format(" {:>16.3f}", j["geomean"]["ceiling"][name].get<double>());
  out << gc << "\n";
  out << "sources of the dip plans (the search's own plan, or a baseline that beat it):\n";
  for (const auto& cj : j["cases"]) {
    std::string line = fmt::format("  {:<22}", cj["name"].get<std::string>());
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
  add_integer_option(*cmd, "--steps", args.steps, 1, 10000, "steps per seed (default 4)");
  add_integer_option(*cmd, "--seeds", args.seeds, 1, 10000, "sampling seeds 1..N (default 3)");
  add_search_options(*cmd, args.search);
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
