#pragma once
// The search options of `plan`, `compare` and `suite`: --budget-ms T | --iterations I,
// --threads N, --search-seed S, --split-backward, --repack, turned into PlannerOptions
// (planner/planner.hpp).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/planner/planner.hpp"

#include "options.hpp"

namespace pwcli {

/// Largest --iterations and --budget-ms: a billion MCTS iterations or an hour per step.
inline constexpr std::int64_t max_iterations = 1'000'000'000;
inline constexpr double max_budget_ms = 3.6e6;

/// Search options shared by `plan`, `compare` and `suite`.
struct SearchArgs {
  std::optional<double> budget_ms;
  std::optional<std::int64_t> iterations;
  int threads = 1;
  std::uint64_t search_seed = 0;
  bool split_backward = false;
  bool repack = false;
};

/// Registers --budget-ms / --iterations (mutually exclusive), --threads and --search-seed.
inline void add_search_options(CLI::App& cmd, SearchArgs& a) {
  auto* b = add_number_option(cmd, "--budget-ms", a.budget_ms, 0, max_budget_ms, true,
                              "search budget per step in milliseconds of wall-clock (default 1000)");
  auto* i = add_integer_option(cmd, "--iterations", a.iterations, 1, max_iterations,
                               "search exactly this many MCTS iterations per step (reproducible)");
  b->excludes(i);
  add_integer_option(cmd, "--threads", a.threads, 1, 256, "search worker threads (default 1)");
  add_seed_option(cmd, "--search-seed", a.search_seed, "seed of the search (default 0)");
  cmd.add_flag("--split-backward", a.split_backward,
               "also search with backwards split into input and weight parts, weight parts in the bubbles (zero-bubble's B/W split)");
  cmd.add_flag("--repack", a.repack, "also search with the step's samples regrouped into microbatches of even cost");
}

/// PlannerOptions from the search options; Error(input) on out-of-range values.
inline pipeweaver::PlannerOptions planner_options(const SearchArgs& a) {
  namespace pw = pipeweaver;
  pw::PlannerOptions o;
  if (a.threads < 1 || a.threads > 256)
    throw pw::input_error("--threads is " + std::to_string(a.threads), {.path = "--threads", .expected = "an integer in [1, 256]"});
  o.threads = a.threads;
  o.seed = a.search_seed;
  o.split_backward = a.split_backward;
  o.repack = a.repack;
  if (a.iterations) {
    if (*a.iterations < 1 || *a.iterations > max_iterations)
      throw pw::input_error("--iterations is " + std::to_string(*a.iterations), {.path = "--iterations", .expected = "an integer in [1, 1000000000]"});
    o.iterations = *a.iterations;
    o.budget = std::chrono::nanoseconds{0};
  } else {
    const double ms = a.budget_ms.value_or(1000.0);
    if (!(ms > 0 && ms <= max_budget_ms))
      throw pw::input_error("--budget-ms is " + fmt::format("{}", ms), {.path = "--budget-ms", .expected = "a number of milliseconds in (0, 3600000]"});
    o.budget = std::chrono::nanoseconds{static_cast<std::int64_t>(ms * 1e6)};
  }
  return o;
}

}  // namespace pwcli
