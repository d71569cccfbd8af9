#pragma once
// `pipeweaver sample --dataset F --setup F --model F --seed N --steps K [--format table|json]`:
// the microbatches of each step with, per module, token and item counts and compute time
// (forward + backward over all of the module's layers on one sub-microbatch holding all its
// items, under the analytic cost model), each microbatch's total, and the step's imbalance
// (max / mean of the per-microbatch times). The model is needed too: per-module counts depend
// on which modules consume which items and how many tokens encoders hand on.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <pipeweaver/core/memory_strategy.hpp>
#include <pipeweaver/core/pass.hpp>
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/ir/partition.hpp>
#include <pipeweaver/ir/stage.hpp>

#include "common.hpp"
#include "options.hpp"

namespace pwcli {

struct SampleOptions {
  std::string model;
  std::string dataset;
  std::string setup;
  std::uint64_t seed = 0;
  int steps = 1;
  int first_step = 0;
  Format format = Format::table;
};

inline CLI::App* add_sample(CLI::App& app, SampleOptions& o) {
  auto* cmd = app.add_subcommand("sample", "Sample training steps from a dataset and show their microbatches");
  cmd->add_option("--dataset", o.dataset, "Dataset file (datasets/*.json)")->required();
  cmd->add_option("--setup", o.setup, "Setup file (setups/*.json): the microbatch budget")->required();
  cmd->add_option("--model", o.model, "Model file (models/*.json): which modules get which tokens")->required();
  add_seed_option(*cmd, "--seed", o.seed, "Seed of the sample stream (default 0)");
  add_integer_option(*cmd, "--steps", o.steps, 1, 100000, "Number of steps (default 1)");
  add_integer_option(*cmd, "--first-step", o.first_step, 0, 1 << 30, "First step (each step has its own stream; default 0)");
  add_format_option(*cmd, o.format);
  return cmd;
}

/// Per module of one microbatch: tokens, items, forward + backward time.
struct ModuleCell {
  std::int64_t tokens = 0;
  std::int64_t items = 0;
  pipeweaver::Nanoseconds time{0};
};

inline int run_sample(const SampleOptions& o) {
  using namespace pipeweaver;
  const ModelSpec model = io::read_model(o.model);
  const DatasetSpec dataset = io::read_dataset(o.dataset);
  const Setup setup = io::read_setup(o.setup);
  io::check_compatible(model, setup, o.setup);
  io::check_compatible(model, dataset, o.dataset);
  const AnalyticCostModel cost(model, setup);

  // One chunk per module on rank 0 and one sub-microbatch per (microbatch, module): the time
  // of a module's whole forward + backward on all of its items in the microbatch.
  Partition whole;
  whole.name = "whole-modules";
  whole.ranks = 1;
  for (const ModuleSpec& m : model.modules)
    whole.modules.push_back(ModulePlacement{{Chunk{0, m.layers, RankId{0}}}, 0});

  const std::size_t n_modules = model.modules.size();
  nlohmann::json steps = nlohmann::json::array();
  double worst_imbalance = 0, sum_imbalance = 0;
  int total_truncated = 0;
  for (int k = 0; k < o.steps; ++k) {
    const int step = o.first_step + k;
    Batch batch;
    try {
      batch = sample_step(model, dataset, setup, o.seed, step);
    } catch (const Error& e) {
      throw pipeweaver::in_file(e, o.setup);  // budget problems are the setup's (with this dataset)
    }
    // Costs of the step's token counts: an error is the dataset's (a time beyond 64 bits).
    const auto cells = attributed(o.dataset, o.setup, [&] {
      const auto smbs = split(model, whole, batch);
      std::vector<std::vector<ModuleCell>> cells(batch.microbatches.size(), std::vector<ModuleCell>(n_modules));
      for (const SubMicrobatchSpec& smb : smbs) {
        const ModuleSpec& m = model.module(smb.module());
        const StageSpec fwd{smb.module(), 0, RankId{0}, Pass::forward, 0, m.layers};
        const StageSpec bwd{smb.module(), 0, RankId{0}, Pass::backward, 0, m.layers};
        ModuleCell& c = cells[smb.microbatch().index()][smb.module().index()];
        c.tokens += smb.total_tokens();
        c.items += static_cast<std::int64_t>(smb.item_tokens().size());
        c.time += cost.latency(fwd, smb, MemoryStrategy{}) + cost.latency(bwd, smb, MemoryStrategy{});
      }
      return cells;
    });
    std::vector<double> mb_ms;
    nlohmann::json mbs = nlohmann::json::array();
    for (std::size_t i = 0; i < batch.microbatches.size(); ++i) {
      Nanoseconds total{0};
      nlohmann::json mods = nlohmann::json::array();
      for (std::size_t j = 0; j < n_modules; ++j) {
        total += cells[i][j].time;
        mods.push_back({{"module", model.modules[j].name},
                        {"tokens", cells[i][j].tokens},
                        {"items", cells[i][j].items},
                        {"time_ms", to_ms(cells[i][j].time)}});
      }
      mb_ms.push_back(to_ms(total));
      mbs.push_back({{"microbatch", i},
                     {"samples", batch.microbatches[i].samples.size()},
                     {"modules", mods},
                     {"time_ms", to_ms(total)}});
    }
    double max_ms = 0, sum_ms = 0;
    for (double t : mb_ms) {
      max_ms = std::max(max_ms, t);
      sum_ms += t;
    }
    const double mean_ms = mb_ms.empty() ? 0 : sum_ms / static_cast<double>(mb_ms.size());
    const double imbalance = mean_ms > 0 ? max_ms / mean_ms : 1.0;
    worst_imbalance = std::max(worst_imbalance, imbalance);
    sum_imbalance += imbalance;
    total_truncated += batch.truncated_samples;
    steps.push_back({{"step", step},
                     {"microbatches", mbs},
                     {"truncated_samples", batch.truncated_samples},
                     {"max_microbatch_ms", max_ms},
                     {"mean_microbatch_ms", mean_ms},
                     {"imbalance", imbalance}});
  }

  if (o.format == Format::json) {
    const nlohmann::json out = {{"model", model.name},
                                {"dataset", dataset.name},
                                {"setup", setup.name},
                                {"seed", o.seed},
                                {"budget", {{"module", setup.microbatch.module}, {"max_tokens", setup.microbatch.max_tokens}}},
                                {"steps", steps},
                                {"truncated_samples", total_truncated},
                                {"mean_imbalance", sum_imbalance / o.steps},
                                {"max_imbalance", worst_imbalance}};
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  fmt::print("model {}, dataset {}, setup {}, seed {}: microbatches of at most {} \"{}\" tokens{}\n", model.name,
             dataset.name, setup.name, o.seed, setup.microbatch.max_tokens, setup.microbatch.module,
             setup.microbatch.max_items ? fmt::format(" and {} items", *setup.microbatch.max_items) : std::string());
  fmt::print("time = forward + backward of all of a module's layers on the microbatch's items (analytic model, TP={})\n",
             setup.tensor_parallel);
  for (const auto& s : steps) {
    std::size_t samples = 0;
    for (const auto& mb : s["microbatches"]) samples += mb["samples"].get<std::size_t>();
    fmt::print("\nstep {}: {} microbatches, {} samples, {} truncated; imbalance {:.3f} (max {:.2f} ms / mean {:.2f} ms)\n",
               s["step"].get<int>(), s["microbatches"].size(), samples, s["truncated_samples"].get<int>(),
               s["imbalance"].get<double>(), s["max_microbatch_ms"].get<double>(), s["mean_microbatch_ms"].get<double>());
    std::string header = fmt::format("  {:>4} {:>7}", "mb", "samples");
    for (const auto& m : model.modules)
      header += fmt::format(" | {:>8} {:>6} {:>9}", m.name.substr(0, 8) + " tok", "items", "ms");
    header += fmt::format(" | {:>9}", "total ms");
    fmt::print("{}\n", header);
    for (const auto& mb : s["microbatches"]) {
      std::string line = fmt::format("  {:>4} {:>7}", mb["microbatch"].get<int>(), mb["samples"].get<int>());
      for (const auto& c : mb["modules"])
        line += fmt::format(" | {:>8} {:>6} {:>9.2f}", c["tokens"].get<std::int64_t>(), c["items"].get<std::int64_t>(),
                            c["time_ms"].get<double>());
      line += fmt::format(" | {:>9.2f}", mb["time_ms"].get<double>());
      fmt::print("{}\n", line);
    }
  }
  fmt::print("\n{} step(s): imbalance mean {:.3f}, worst {:.3f}; {} truncated sample(s)\n", o.steps,
             sum_imbalance / o.steps, worst_imbalance, total_truncated);
  return 0;
}

}  // namespace pwcli
