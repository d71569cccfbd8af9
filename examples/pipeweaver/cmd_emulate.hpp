#pragma once
// `pipeweaver emulate --plan F --model F --setup F [--format table|json]`
// Checks the plan's structure (schedule/validator.hpp), emulates it under the analytic cost model
// (emulate/emulator.hpp) and prints the step time, the step's lower bound for the plan's
// partition and sub-microbatches, and per rank busy / idle time and memory. JSON output:
//   {"plan", "model", "setup", "step_ms", "lower_bound_ms", "peak_memory_gib", "fits_memory",
//    "ranks": [{"rank", "busy_ms", "idle_ms", "static_memory_gib", "peak_memory_gib", "fits_memory"}]}
// Bad input (unreadable or malformed file, a plan for another model or setup, a broken plan):
// pipeweaver::Error (main.cpp: one line on stderr, exit status 2).
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <range/v3/view/enumerate.hpp>
#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/schedule/validator.hpp"

namespace pwcli {

struct EmulateArgs {
  std::string plan, model, setup;
  std::string format = "table";
};

/// Runs `emulate`; returns 0. Throws pipeweaver::Error on bad input (main.cpp prints it on one line, exit 2).
inline int run_emulate(const EmulateArgs& a, std::ostream& out = std::cout) {
  namespace pw = pipeweaver;
  {
    if (a.format != "table" && a.format != "json")
      throw pw::input_error("--format is '" + a.format + "'", {.path = "--format", .expected = "table or json"});
    const pw::ModelSpec model = pw::io::read_model(a.model);
    const pw::Setup setup = pw::io::read_setup(a.setup);
    pw::io::check_compatible(model, setup, a.setup);
    const pw::Plan plan = pw::io::read_plan(a.plan);
    if (plan.model != model.name)
      throw pw::input_error("the plan was built for model '" + plan.model + "'", {.file = a.plan, .path = "/model", .expected = "'" + model.name + "' (the model of --model)"});
    if (plan.setup != setup.name)
      throw pw::input_error("the plan was built for setup '" + plan.setup + "'", {.file = a.plan, .path = "/setup", .expected = "'" + setup.name + "' (the setup of --setup)"});
    // Everything below reads the plan's numbers: an error without a file (a broken rule, a
    // strategy, token counts whose times leave 64 bits) is the plan file's.
    const pw::AnalyticCostModel cost(model, setup);
    pw::EmulationResult r;
    pw::Nanoseconds lb{0};
    try {
      pw::validate(plan, model);
      r = pw::emulate(plan, model, setup, cost);
      lb = pw::lower_bound(plan, model, cost).value;
    } catch (const pw::Error& e) {
      throw pw::in_file(e, a.plan);
    }
    if (a.format == "json") {
      nlohmann::ordered_json j;
      j["plan"] = plan.name;
      j["model"] = model.name;
      j["setup"] = setup.name;
      j["step_ms"] = pw::to_ms(r.step_time);
      j["lower_bound_ms"] = pw::to_ms(lb);
      j["peak_memory_gib"] = pw::to_gib(r.peak_memory());
      j["fits_memory"] = r.fits_memory();
      j["ranks"] = nlohmann::ordered_json::array();
      for (const auto& [i, s] : ranges::views::enumerate(r.ranks)) {
        j["ranks"].push_back({{"rank", i},
                              {"busy_ms", pw::to_ms(s.busy)},
                              {"idle_ms", pw::to_ms(s.idle)},
                              {"static_memory_gib", pw::to_gib(s.static_memory)},
                              {"peak_memory_gib", pw::to_gib(s.peak_memory)},
                              {"fits_memory", s.fits_memory}});
      }
      out << j.dump(2) << "\n";
    } else {
      out << fmt::format("plan {} · {} · {} · {} microbatches · {} actions\n", plan.name, model.name, setup.name,
                         plan.microbatches, r.actions);
      out << fmt::format("step {:.1f} ms · lower bound {:.1f} ms · peak memory {:.2f} GiB of {:.2f} · {}\n",
                         pw::to_ms(r.step_time), pw::to_ms(lb), pw::to_gib(r.peak_memory()), pw::to_gib(r.memory_capacity),
                         r.fits_memory() ? "fits" : "DOES NOT FIT");
      out << fmt::format("  {:>4} {:>10} {:>10} {:>7} {:>11} {:>10}\n", "rank", "busy ms", "idle ms", "idle %", "static GiB", "peak GiB");
      for (const auto& [i, s] : ranges::views::enumerate(r.ranks)) {
        out << fmt::format("  {:>4} {:>10.1f} {:>10.1f} {:>7.1f} {:>11.2f} {:>10.2f}{}\n", i, pw::to_ms(s.busy), pw::to_ms(s.idle),
                           r.step_time.count() > 0 ? 100.0 * static_cast<double>(s.idle.count()) / static_cast<double>(r.step_time.count()) : 0.0,
                           pw::to_gib(s.static_memory), pw::to_gib(s.peak_memory), s.fits_memory ? "" : "  (over)");
      }
    }
    return 0;
  }
}

/// Registers `emulate` on `app`, parsing into `args` (main.cpp runs run_emulate(args) when it was parsed).
inline CLI::App* add_emulate(CLI::App& app, EmulateArgs& args) {
  CLI::App* cmd = app.add_subcommand("emulate", "Emulate a plan file: step time, per-rank busy/idle time and memory");
  cmd->add_option("--plan", args.plan, "plan file (JSON or binary)")->required();
  cmd->add_option("--model", args.model, "model JSON file")->required();
  cmd->add_option("--setup", args.setup, "setup JSON file")->required();
  cmd->add_option("--format", args.format, "table or json (default table)");
  return cmd;
}

}  // namespace pwcli
