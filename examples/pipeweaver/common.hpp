#pragma once
// Shared pieces of the pipeweaver tool's subcommands: output format, loading workload files
// with their cross-checks, and small formatting helpers.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/io/workload_json.hpp>

namespace pwcli {

enum class Format { table, json };

/// Adds `--format table|json` to a subcommand.
inline void add_format_option(CLI::App& cmd, Format& format) {
  cmd.add_option_function<std::string>(
         "--format", [&format](const std::string& s) { format = s == "json" ? Format::json : Format::table; },
         "Output format: table (default) or json")
      ->check(CLI::IsMember({"table", "json"}));
}

/// Runs `f`; an Error that names no file is given one: `setup` for what the machines cannot do
/// (Error(infeasible): memory, a budget below one item), `data` for the rest (the token counts
/// of a dataset's steps, a batch or a plan: a time or size beyond 64 bits, a sample the model
/// cannot take). The error keeps its kind, path and expectation.
template <class F>
decltype(auto) attributed(const std::string& data, const std::string& setup, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const pipeweaver::Error& e) {
    throw pipeweaver::in_file(e, e.kind() == pipeweaver::ErrorKind::infeasible ? setup : data);
  }
}

/// 8030261248 -> "8.03B"
inline std::string human_count(double n) {
  if (n >= 1e12) return fmt::format("{:.2f}T", n / 1e12);
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

inline std::string gib(pipeweaver::Bytes b) { return fmt::format("{:.2f} GiB", pipeweaver::to_gib(b)); }

}  // namespace pwcli
