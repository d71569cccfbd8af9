#pragma once
// `pipeweaver compare --model F --dataset F --setup F [--seed N] [--steps K]
//                     [--format table|json] [--trace-dir DIR]`
//                     [--budget-ms T | --iterations I] [--threads N] [--search-seed S]
// Emulates every baseline (plan/compare.hpp) and the searched plan `dip` (plan/planner.hpp:
// the best of the search and the baselines; its placement is chosen on the same profile steps)
// on steps 0..K-1 of the dataset under `seed`. The baselines' static choices are made once on
// profile steps (fixed profile seed). JSON output is one object:
//   {"model", "dataset", "setup", "seed", "unavailable": {"<name>": "why"},
//    "steps": [{"step", "microbatches", "lower_bound_ms", "classic_lower_bound_ms",
//     "plans": {"<name>": {"step_ms", "peak_memory_gib", "fits_memory", "search_ms"}}}]}
// (lower_bound_ms: the tight bound over every compared partition, emulate/lower_bound.hpp;
// classic_lower_bound_ms: max(work / P, longest chain), partition-independent.)
// (search_ms: wall-clock of dip's planner call; 0 for a baseline, which is not searched;
// unavailable: the baselines that cannot place this model on this setup, e.g. optimus with fewer
// backbone layers than pipeline stages: the others and dip still run).
// (peak_memory_gib: maximum over ranks). --trace-dir DIR writes, per step k and plan p,
// DIR/step<k>-<p>.trace.json (Chrome trace, opens in Perfetto), DIR/step<k>-<p>.svg (timeline)
// and DIR/step<k>-<p>.plan.json (the plan, for `pipeweaver emulate`).
// Bad input: pipeweaver::Error (main.cpp: one line on stderr naming the file and the problem, exit 2).
#include <algorithm>
#include <cstdint>
#include <filesystem>
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
#include "pipeweaver/io/chrome_trace.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/svg_timeline.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/planner/planner.hpp"

#include "options.hpp"
#include "common.hpp"
#include "search_options.hpp"

namespace pwcli {

struct CompareArgs {
  std::string model, dataset, setup;
  std::uint64_t seed = 0;
  int steps = 1;
  std::string format = "table";
  std::string trace_dir;
  SearchArgs search;
};

/// Runs `compare`; returns 0. Throws pipeweaver::Error on bad input (main.cpp prints it on one line, exit 2).
inline int run_compare(const CompareArgs& a, std::ostream& out = std::cout) {
  namespace pw = pipeweaver;
  {
    if (a.steps < 1)
      throw pw::input_error("--steps is " + std::to_string(a.steps), {.path = "--steps", .expected = "an integer >= 1"});
    if (a.format != "table" && a.format != "json")
      throw pw::input_error("--format is '" + a.format + "'", {.path = "--format", .expected = "table or json"});
    const pw::ModelSpec model = pw::io::read_model(a.model);
    const pw::Setup setup = pw::io::read_setup(a.setup);
    const pw::DatasetSpec dataset = pw::io::read_dataset(a.dataset);
    pw::io::check_compatible(model, setup, a.setup);
    pw::io::check_compatible(model, dataset, a.dataset);
    if (!a.trace_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(a.trace_dir, ec);
      if (ec || !std::filesystem::is_directory(a.trace_dir))
        throw pw::input_error("cannot create the trace directory: " + ec.message(), {.file = a.trace_dir, .path = "--trace-dir", .expected = "a writable directory"});
    }
    pw::PlannerOptions planner_opts = planner_options(a.search);
    const pw::AnalyticCostModel cost(model, setup);
    pw::CompareOptions options;
    options.record_timeline = !a.trace_dir.empty();
    const auto profile = attributed(a.setup, a.setup, [&] { return pw::profile_batches(model, dataset, setup, options); });
    planner_opts.compare = options;
    const pw::Planner<pw::AnalyticCostModel> planner =
        attributed(a.dataset, a.setup, [&] { return pw::Planner<pw::AnalyticCostModel>(model, setup, cost, profile, planner_opts); });
    // The planner chose the baselines' static splits on the same profile: reuse them (a baseline
    // that cannot place this model is reported, and the others run).
    pw::BaselineComparison cmp(model, setup, cost, planner.baselines(), options, planner.unavailable_baselines());

    nlohmann::ordered_json j;
    j["model"] = model.name;
    j["dataset"] = dataset.name;
    j["setup"] = setup.name;
    j["seed"] = a.seed;
    j["unavailable"] = nlohmann::ordered_json::object();
    for (const auto& u : cmp.unavailable()) j["unavailable"][u.name] = u.reason;
    j["steps"] = nlohmann::ordered_json::array();
    if (a.format == "table") {
      out << fmt::format("{} · {} · {} · seed {}\n", model.name, dataset.name, setup.name, a.seed);
      for (const auto& b : cmp.baselines())
        out << fmt::format("  {:<17} {}\n", b.baseline.name, b.baseline.description);
      for (const auto& u : cmp.unavailable()) out << fmt::format("  {:<17} cannot place the model: {}\n", u.name, u.reason);
    }
    for (int step = 0; step < a.steps; ++step) {
      const pw::Batch batch = attributed(a.setup, a.setup, [&] { return pw::sample_step(model, dataset, setup, a.seed, step); });
      std::map<std::string, double> search_ms;
      std::string dip_source;
      pw::StepComparison r = attributed(a.dataset, a.setup, [&] { return cmp.compare(batch, step); });
      {  // dip: the planner's plan for the step
        const pw::PlanResult d = attributed(a.dataset, a.setup, [&] { return planner.plan(batch); });
        pw::EmulateOptions eo;
        eo.record_timeline = options.record_timeline;
        pw::PlanComparison pc;
        pc.name = "dip";
        pc.emulation = attributed(a.dataset, a.setup, [&] { return pw::emulate(d.plan, model, setup, cost, eo); });
        pc.step_time = d.step_time;
        pc.peak_memory = pc.emulation.peak_memory();
        pc.fits_memory = pc.emulation.fits_memory();
        pc.plan = d.plan;
        r.lower_bound = std::min(r.lower_bound, d.lower_bound);
        r.classic_lower_bound = std::min(r.classic_lower_bound, d.classic_lower_bound);
        r.plans.push_back(std::move(pc));
        search_ms["dip"] = pw::to_ms(d.search_time);
        dip_source = d.source;
      }
      nlohmann::ordered_json s;
      s["step"] = step;
      s["microbatches"] = r.microbatches;
      s["lower_bound_ms"] = pw::to_ms(r.lower_bound);
      s["classic_lower_bound_ms"] = pw::to_ms(r.classic_lower_bound);
      s["plans"] = nlohmann::ordered_json::object();
      if (a.format == "table") {
        out << fmt::format("\nstep {} · {} microbatches · lower bound {:.1f} ms (classic {:.1f} ms)\n", step, r.microbatches,
                           pw::to_ms(r.lower_bound), pw::to_ms(r.classic_lower_bound));
        out << fmt::format("  {:<17} {:>10} {:>7} {:>10} {:>5} {:>10}\n", "plan", "step ms", "/ LB", "peak GiB", "fits", "recompute");
      }
      for (const pw::PlanComparison& p : r.plans) {
        s["plans"][p.name] = {{"step_ms", pw::to_ms(p.step_time)},
                              {"peak_memory_gib", pw::to_gib(p.peak_memory)},
                              {"fits_memory", p.fits_memory},
                              {"search_ms", search_ms.count(p.name) ? search_ms[p.name] : 0.0}};
        if (a.format == "table")
          out << fmt::format("  {:<17} {:>10.1f} {:>7.3f} {:>10.2f} {:>5} {:>10}\n", p.name, pw::to_ms(p.step_time),
                             r.lower_bound.count() > 0 ? static_cast<double>(p.step_time.count()) / static_cast<double>(r.lower_bound.count()) : 0.0,
                             pw::to_gib(p.peak_memory), p.fits_memory ? "yes" : "NO",
                             p.name == "dip" ? fmt::format("by {}, search {:.0f} ms", dip_source, search_ms["dip"]) : pw::to_string(p.recompute));
        if (!a.trace_dir.empty()) {
          const std::filesystem::path base = std::filesystem::path(a.trace_dir) / fmt::format("step{}-{}", step, p.name);
          pw::io::write_chrome_trace(base.string() + ".trace.json", p.plan, model, p.emulation);
          pw::io::write_svg_timeline(base.string() + ".svg", p.plan, model, p.emulation);
          pw::io::write_plan(base.string() + ".plan.json", p.plan);
        }
      }
      j["steps"].push_back(std::move(s));
    }
    if (a.format == "json") out << j.dump(2) << "\n";
    if (a.format == "table" && !a.trace_dir.empty()) out << "\ntraces and timelines written to " << a.trace_dir << "\n";
    return 0;
  }
}

/// Registers `compare` on `app`, parsing into `args` (main.cpp runs run_compare(args) when it was parsed).
inline CLI::App* add_compare(CLI::App& app, CompareArgs& args) {
  CLI::App* cmd = app.add_subcommand("compare", "Emulate every baseline schedule (gpipe, 1f1b, interleaved-1f1b, megatron, optimus) and the searched plan dip on training steps");
  cmd->add_option("--model", args.model, "model JSON file")->required();
  cmd->add_option("--dataset", args.dataset, "dataset JSON file")->required();
  cmd->add_option("--setup", args.setup, "setup JSON file")->required();
  add_seed_option(*cmd, "--seed", args.seed, "sampling seed (default 0)");
  add_integer_option(*cmd, "--steps", args.steps, 1, 100000, "steps to compare (default 1)");
  cmd->add_option("--format", args.format, "table or json (default table)");
  cmd->add_option("--trace-dir", args.trace_dir, "write a Chrome trace, an SVG timeline and the plan per plan and step here");
  add_search_options(*cmd, args.search);
  return cmd;
}

}  // namespace pwcli
