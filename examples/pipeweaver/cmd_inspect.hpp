#pragma once
// `pipeweaver inspect --model F --setup F [--format table|json] [--seq-len N]`: parameters,
// forward FLOPs per token, static memory per module and per rank for an even split of every
// module's layers over the pipeline ranks, and activation memory per token.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <pipeweaver/core/memory_strategy.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/model/layer_math.hpp>
#include <pipeweaver/model/memory.hpp>

#include "common.hpp"
#include "options.hpp"

namespace pwcli {

struct InspectOptions {
  std::string model;
  std::string setup;
  Format format = Format::table;
  std::int64_t seq_len = 4096;
};

inline CLI::App* add_inspect(CLI::App& app, InspectOptions& o) {
  auto* cmd = app.add_subcommand("inspect", "Parameters, FLOPs per token and memory of a model under a setup");
  cmd->add_option("--model", o.model, "Model file (models/*.json)")->required();
  cmd->add_option("--setup", o.setup, "Setup file (setups/*.json)")->required();
  add_integer_option(*cmd, "--seq-len", o.seq_len, 1, std::int64_t{1} << 24,
                     "Tokens per item at which FLOPs and activations per token are given (default 4096)");
  add_format_option(*cmd, o.format);
  return cmd;
}

/// Layers of module `layers` on rank r of P when split evenly (the first L mod P ranks get one more).
inline std::pair<int, int> even_split(int layers, int ranks, int r) {
  const int base = layers / ranks, extra = layers % ranks;
  const int first = r * base + std::min(r, extra);
  return {first, base + (r < extra ? 1 : 0)};
}

inline int run_inspect(const InspectOptions& o) {
  using namespace pipeweaver;
  const ModelSpec model = io::read_model(o.model);
  const Setup setup = io::read_setup(o.setup);
  io::check_compatible(model, setup, o.setup);

  const int P = setup.pipeline_stages;
  const Bytes capacity = memory_capacity(setup);
  const std::vector<std::int64_t> seq{o.seq_len};
  nlohmann::json modules = nlohmann::json::array();
  std::vector<Bytes> rank_state(static_cast<std::size_t>(P), Bytes{0});
  for (std::size_t i = 0; i < model.modules.size(); ++i) {
    const ModuleId id{static_cast<ModuleId::rep>(i)};
    const ModuleSpec& m = model.module(id);
    const std::vector<std::int64_t> ctx = m.cross_attention ? seq : std::vector<std::int64_t>{};
    const double params = static_cast<double>(module_parameters(model, id));
    const double flops = forward_flops(m, model, 0, m.layers, seq, ctx) / static_cast<double>(o.seq_len);
    const Bytes state = chunk_state_bytes(model, id, setup, 0, m.layers);
    const Bytes act = stage_activation_bytes(model, setup.tensor_parallel, id, 0, m.layers, seq, ctx, MemoryStrategy{});
    for (int r = 0; r < P; ++r) {
      const auto [first, count] = even_split(m.layers, P, r);
      if (count > 0) rank_state[static_cast<std::size_t>(r)] += chunk_state_bytes(model, id, setup, first, count);
    }
    modules.push_back({{"module", m.name},
                       {"role", std::string(to_string(m.role))},
                       {"modality", m.modality},
                       {"layers", m.layers},
                       {"parameters", static_cast<std::int64_t>(params)},
                       {"forward_flops_per_token", flops},
                       {"training_flops_per_token", 3 * flops},
                       {"static_bytes", state.count()},
                       {"activation_bytes_per_token", static_cast<double>(act.count()) / static_cast<double>(o.seq_len)}});
  }
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < P; ++r) {
    const Bytes s = rank_state[static_cast<std::size_t>(r)];
    ranks.push_back({{"rank", r}, {"static_bytes", s.count()}, {"free_bytes", (capacity - s).count()}});
  }

  if (o.format == Format::json) {
    const nlohmann::json out = {{"model", model.name},
                                {"setup", setup.name},
                                {"parameters", model_parameters(model)},
                                {"seq_len", o.seq_len},
                                {"pipeline_stages", P},
                                {"tensor_parallel", setup.tensor_parallel},
                                {"data_parallel", setup.data_parallel},
                                {"capacity_bytes", capacity.count()},
                                {"modules", modules},
                                {"ranks", ranks}};
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  fmt::print("model {} ({} parameters) on setup {}: P={} TP={} DP={}, {} usable per device\n", model.name,
             human_count(static_cast<double>(model_parameters(model))), setup.name, P, setup.tensor_parallel,
             setup.data_parallel, gib(capacity));
  fmt::print("per module (FLOPs and activations per token at {}-token items; activations per TP rank, no recompute):\n",
             o.seq_len);
  fmt::print("  {:<12} {:<10} {:>6} {:>10} {:>14} {:>14} {:>14} {:>16}\n", "module", "role", "layers", "params",
             "fwd FLOP/tok", "train FLOP/tok", "static/device", "act bytes/tok");
  for (const auto& m : modules)
    fmt::print("  {:<12} {:<10} {:>6} {:>10} {:>14} {:>14} {:>14} {:>16}\n", m["module"].get<std::string>(),
               m["role"].get<std::string>(), m["layers"].get<int>(), human_count(m["parameters"].get<double>()),
               human_count(m["forward_flops_per_token"].get<double>()),
               human_count(m["training_flops_per_token"].get<double>()), gib(Bytes{m["static_bytes"].get<std::int64_t>()}),
               fmt::format("{:.0f}", m["activation_bytes_per_token"].get<double>()));
  fmt::print("static memory per rank, every module split evenly over the {} ranks (weights + grads + optimizer state):\n", P);
  for (const auto& r : ranks) {
    const Bytes s{r["static_bytes"].get<std::int64_t>()};
    fmt::print("  rank {:>3}: {:>12}   free for activations {:>12}{}\n", r["rank"].get<int>(), gib(s), gib(capacity - s),
               s > capacity ? "   (exceeds the device!)" : "");
  }
  return 0;
}

}  // namespace pwcli
