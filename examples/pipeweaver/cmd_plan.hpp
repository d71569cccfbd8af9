#pragma once
// `pipeweaver plan --model F --setup F (--dataset F [--seed N] [--step K] | --batch F)
//                  [--budget-ms T | --iterations I] [--threads N] [--search-seed S]
//                  [--out plan.json] [--flat-out F] [--trace F] [--svg F] [--format table|json]`
// Plans one step with the Planner (plan/planner.hpp) under the analytic cost model: step K of
// the dataset under seed N (the placement and the baselines are chosen on the dataset's profile
// steps), or the batch of a --batch file (io/batch_json.hpp; the placement is chosen on that
// batch). Default budget: 1000 ms of wall-clock; --iterations I searches exactly I MCTS
// iterations instead (reproducible). JSON output:
//   {"model", "setup", "source", "placement", "microbatches", "step_ms", "lower_bound_ms",
//    "search_ms", "iterations", "peak_memory_gib", "fits_memory", "setup_ms"}
// (source: "dip" when the search's plan won, else the baseline that beat it; setup_ms: the
// wall-clock of constructing the Planner, i.e. the one-off placement choice and baseline
// preparation a trainer pays once before training, not per step). --out writes the
// plan (JSON), --flat-out its flat rank program (io/flat_program_json.hpp, docs/flat_program.md:
// per rank, every action with its module name, items, tokens, peers and bytes resolved), --trace a
// Chrome trace and --svg an SVG timeline of its emulation.
// Bad input: pipeweaver::Error (main.cpp: one line on stderr naming the file and the problem, exit 2).
#include <chrono>
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
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/io/batch_json.hpp"
#include "pipeweaver/io/chrome_trace.hpp"
#include "pipeweaver/io/flat_program_json.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/svg_timeline.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/planner/planner.hpp"

#include "common.hpp"
#include "search_options.hpp"

namespace pwcli {

struct PlanArgs {
  std::string model, setup, dataset, batch;
  std::uint64_t seed = 0;
  int step = 0;
  SearchArgs search;
  std::string out, flat_out, trace, svg;
  std::string format = "table";
};

/// Runs `plan`; returns 0. Throws pipeweaver::Error on bad input.
inline int run_plan(const PlanArgs& a, std::ostream& out = std::cout) {
  namespace pw = pipeweaver;
  if (a.format != "table" && a.format != "json")
    throw pw::input_error("--format is '" + a.format + "'", {.path = "--format", .expected = "table or json"});
  if (a.dataset.empty() == a.batch.empty())
    throw pw::input_error(a.dataset.empty() ? "neither --dataset nor --batch given" : "both --dataset and --batch given", {.path = "--dataset / --batch", .expected = "exactly one of them"});
  if (a.step < 0)
    throw pw::input_error("--step is " + std::to_string(a.step), {.path = "--step", .expected = "an integer >= 0"});
  const pw::PlannerOptions options = planner_options(a.search);
  const pw::ModelSpec model = pw::io::read_model(a.model);
  const pw::Setup setup = pw::io::read_setup(a.setup);
  pw::io::check_compatible(model, setup, a.setup);
  const pw::AnalyticCostModel cost(model, setup);

  pw::Batch batch;
  std::optional<pw::Planner<pw::AnalyticCostModel>> planner;
  std::chrono::steady_clock::duration setup_time{};
  if (!a.dataset.empty()) {
    const pw::DatasetSpec dataset = pw::io::read_dataset(a.dataset);
    pw::io::check_compatible(model, dataset, a.dataset);
    batch = pw::sample_step(model, dataset, setup, a.seed, a.step);
    const auto start = std::chrono::steady_clock::now();
    planner.emplace(model, setup, cost, dataset, options);
    setup_time = std::chrono::steady_clock::now() - start;
  } else {
    batch = pw::io::read_batch(a.batch);
    pw::io::check_batch(model, setup, batch, a.batch);
    try {
      const auto start = std::chrono::steady_clock::now();
      planner.emplace(model, setup, cost, std::vector<pw::Batch>{batch}, options);
      setup_time = std::chrono::steady_clock::now() - start;
    } catch (const pw::Error& e) {
      if (e.kind() != pw::ErrorKind::input) throw;
      throw pipeweaver::in_file(e, a.batch);  // e.g. a sample over the microbatch budget
    }
  }
  const double setup_ms = std::chrono::duration<double, std::milli>(setup_time).count();
  const pw::PlanResult r = planner->plan(batch);
  pw::EmulateOptions eo;
  eo.record_timeline = !a.trace.empty() || !a.svg.empty();
  const pw::EmulationResult e = pw::emulate(r.plan, model, setup, cost, eo);
  if (!a.out.empty()) pw::io::write_plan(a.out, r.plan);
  if (!a.flat_out.empty()) pw::io::write_flat_program(a.flat_out, r.plan, model);
  if (!a.trace.empty()) pw::io::write_chrome_trace(a.trace, r.plan, model, e);
  if (!a.svg.empty()) pw::io::write_svg_timeline(a.svg, r.plan, model, e);

  if (a.format == "json") {
    nlohmann::ordered_json j;
    j["model"] = model.name;
    j["setup"] = setup.name;
    j["source"] = r.source;
    j["placement"] = planner->partition().name;
    j["microbatches"] = batch.microbatches.size();
    j["step_ms"] = pw::to_ms(r.step_time);
    j["lower_bound_ms"] = pw::to_ms(r.lower_bound);
    j["search_ms"] = pw::to_ms(r.search_time);
    j["iterations"] = r.iterations;
    j["peak_memory_gib"] = pw::to_gib(e.peak_memory());
    j["fits_memory"] = e.fits_memory();
    j["setup_ms"] = setup_ms;
    out << j.dump(2) << "\n";
  } else {
    out << fmt::format("{} · {} · {} microbatches · placement {}\n", model.name, setup.name, batch.microbatches.size(),
                       planner->partition().name);
    out << fmt::format("plan {} · step {:.1f} ms · lower bound {:.1f} ms ({:.3f}x) · peak memory {:.2f} GiB of {:.2f}{}\n",
                       r.source, pw::to_ms(r.step_time), pw::to_ms(r.lower_bound),
                       r.lower_bound.count() > 0 ? static_cast<double>(r.step_time.count()) / static_cast<double>(r.lower_bound.count()) : 0.0,
                       pw::to_gib(e.peak_memory()), pw::to_gib(e.memory_capacity), e.fits_memory() ? "" : " (DOES NOT FIT)");
    out << fmt::format("search {:.0f} ms · {} iterations · {} thread{} · planner set-up (once, before training) {:.0f} ms\n",
                       pw::to_ms(r.search_time), r.iterations, options.threads, options.threads == 1 ? "" : "s", setup_ms);
    if (!a.out.empty()) out << "plan written to " << a.out << "\n";
    if (!a.flat_out.empty()) out << "flat rank program written to " << a.flat_out << "\n";
    if (!a.trace.empty()) out << "Chrome trace written to " << a.trace << "\n";
    if (!a.svg.empty()) out << "SVG timeline written to " << a.svg << "\n";
  }
  return 0;
}

/// Registers `plan` on `app`, parsing into `args`.
inline CLI::App* add_plan(CLI::App& app, PlanArgs& args) {
  CLI::App* cmd = app.add_subcommand("plan", "Search the plan of one training step (dip) and report it against its lower bound");
  cmd->add_option("--model", args.model, "model JSON file")->required();
  cmd->add_option("--setup", args.setup, "setup JSON file")->required();
  auto* ds = cmd->add_option("--dataset", args.dataset, "dataset JSON file (with --seed and --step)");
  auto* bt = cmd->add_option("--batch", args.batch, "batch JSON file: {\"microbatches\": [[sample, ...], ...]}");
  ds->excludes(bt);
  cmd->add_option("--seed", args.seed, "sampling seed (default 0)")->needs(ds);
  cmd->add_option("--step", args.step, "step of the dataset (default 0)")->needs(ds);
  add_search_options(*cmd, args.search);
  cmd->add_option("--out", args.out, "write the plan (JSON) here");
  cmd->add_option("--flat-out", args.flat_out, "write the plan's flat rank program (JSON, docs/flat_program.md) here");
  cmd->add_option("--trace", args.trace, "write a Chrome trace (Perfetto) of the plan's emulation here");
  cmd->add_option("--svg", args.svg, "write an SVG timeline of the plan's emulation here");
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
