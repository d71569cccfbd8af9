#pragma once
// Consistency checks of a ModelSpec and a Setup, whoever built them (the JSON reader calls these
// and adds the file name; code that builds specs by hand can call them too). Every error is
// ErrorKind::input with the JSON path of the offending field, as in the interchange format
// (examples/workloads/README.md), and what would have been accepted.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"  // the bounds every check below refers to
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver {


namespace detail {

/// One reference token of a JSON pointer: "~" -> "~0", "/" -> "~1".
[[nodiscard]] inline std::string json_pointer_token(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

/// Shortest text that reads back as the same double (e.g. "0.25", "1e+300").
[[nodiscard]] inline std::string number_text(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

[[nodiscard]] inline std::string range_text(std::int64_t lo, std::int64_t hi) {
  return "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

inline void check_int_range(std::int64_t v, std::int64_t lo, std::int64_t hi, const std::string& what,
                            const std::string& path) {
  if (v < lo || v > hi)
    throw input_error(what + " is " + std::to_string(v) + ", out of range", {.path = path, .expected = range_text(lo, hi)});
}

/// A finite number > 0 (or >= 0 with allow_zero).
inline void check_positive(double v, bool allow_zero, const std::string& what, const std::string& path) {
  const bool ok = std::isfinite(v) && (allow_zero ? v >= 0 : v > 0);
  if (!ok)
    throw input_error(what + " is " + number_text(v), {.path = path, .expected = allow_zero ? "a finite number >= 0" : "a finite number > 0"});
}

/// A finite number in [lo, hi].
inline void check_number_range(double v, double lo, double hi, const std::string& what, const std::string& path) {
  if (!(std::isfinite(v) && v >= lo && v <= hi))
    throw input_error(what + " is " + number_text(v), {.path = path, .expected = "a number in [" + number_text(lo) + ", " + number_text(hi) + "]"});
}

[[nodiscard]] inline std::string module_names(const ModelSpec& m) {
  std::string s;
  for (const auto& mod : m.modules) {
    if (!s.empty()) s += ", ";
    s += "\"" + mod.name + "\"";
  }
  return s.empty() ? "(no modules)" : s;
}

}  // namespace detail

/// Checks a model: at least one module; unique non-empty names; positive shapes within
/// `limits`; hidden divisible by heads and heads by kv_heads; `feeds` naming another module
/// listed later (modules are in data-flow order), so no cycles; exactly one backbone; every
/// encoder feeds a module; a generator or a cross-attention module is fed by some module;
/// output_tokens_per_input_token in (0, 1024].
inline void validate(const ModelSpec& model) {
  using detail::check_int_range;
  if (model.modules.empty())
    throw input_error("the model has no modules", {.path = "/modules", .expected = "a non-empty array of modules"});
  if (static_cast<std::int64_t>(model.modules.size()) > limits::max_modules)
    throw input_error("the model has " + std::to_string(model.modules.size()) + " modules",
                      {.path = "/modules", .expected = "at most " + std::to_string(limits::max_modules)});
  const auto n = model.modules.size();
  int backbones = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ModuleSpec& m = model.modules[i];
    const std::string at = "/modules/" + std::to_string(i);
    if (m.name.empty())
      throw input_error("empty module name", {.path = at + "/name", .expected = "a non-empty string"});
    for (std::size_t j = 0; j < i; ++j)
      if (model.modules[j].name == m.name)
        throw input_error("duplicate module name \"" + m.name + "\" (also /modules/" + std::to_string(j) + ")", {.path = at + "/name", .expected = "a name no other module has"});
    if (m.modality.empty())
      throw input_error("empty modality", {.path = at + "/modality", .expected = "a non-empty string such as \"text\" or \"image\""});
    check_int_range(m.layers, 1, limits::max_layers, "layers", at + "/layers");
    check_int_range(m.hidden, 1, limits::max_hidden, "hidden", at + "/hidden");
    check_int_range(m.ffn_hidden, 1, limits::max_hidden, "ffn_hidden", at + "/ffn_hidden");
    check_int_range(m.heads, 1, limits::max_heads, "heads", at + "/heads");
    check_int_range(m.kv_heads, 1, limits::max_heads, "kv_heads", at + "/kv_heads");
    if (m.hidden % m.heads != 0)
      throw input_error("hidden " + std::to_string(m.hidden) + " is not divisible by heads " + std::to_string(m.heads), {.path = at + "/heads", .expected = "a divisor of hidden"});
    if (m.heads % m.kv_heads != 0)
      throw input_error("heads " + std::to_string(m.heads) + " is not divisible by kv_heads " + std::to_string(m.kv_heads), {.path = at + "/kv_heads", .expected = "a divisor of heads (grouped-query attention)"});
    if (m.vocab) check_int_range(*m.vocab, 1, limits::max_vocab, "vocab", at + "/vocab");
    if (m.role == ModuleRole::backbone) ++backbones;
    if (m.role == ModuleRole::encoder) {
      if (!m.feeds)
        throw input_error("encoder \"" + m.name + "\" feeds no module", {.path = at + "/feeds", .expected = "the name of the module that consumes this encoder's output"});
      const double r = m.output_tokens_per_input_token;
      if (!(std::isfinite(r) && r > 0 && r <= limits::max_output_tokens_per_input_token))
        throw input_error("output_tokens_per_input_token is " + detail::number_text(r), {.path = at + "/output_tokens_per_input_token", .expected = "a number in (0, 1024]"});
    }
    if (m.feeds) {
      const auto f = *m.feeds;
      if (!f.valid() || f.index() >= n)
        throw input_error("feeds names module #" + std::to_string(f.value()) + ", which does not exist", {.path = at + "/feeds", .expected = "one of " + detail::module_names(model)});
      if (f.index() <= i) {
        // Follow the chain from i: it returns to i exactly when the feeds form a cycle.
        std::string cycle = m.name;
        std::size_t cur = i;
        bool is_cycle = false;
        for (std::size_t steps = 0; steps <= n; ++steps) {
          const auto& nx = model.modules[cur].feeds;
          if (!nx || !nx->valid() || nx->index() >= n) break;
          cur = nx->index();
          cycle += " -> " + model.modules[cur].name;
          if (cur == i) {
            is_cycle = true;
            break;
          }
        }
        if (is_cycle)
          throw input_error("feeds form a cycle: " + cycle, {.path = at + "/feeds", .expected = "an acyclic data flow"});
        throw input_error("\"" + m.name + "\" feeds \"" + model.modules[f.index()].name + "\", which is listed before it", {.path = at + "/feeds", .expected = "a module listed after this one (modules are in data-flow order)"});
      }
    }
  }
  if (backbones != 1)
    throw input_error("the model has " + std::to_string(backbones) + " backbone modules", {.path = "/modules", .expected = "exactly one module with role \"backbone\""});
  for (std::size_t i = 0; i < n; ++i) {
    const ModuleSpec& m = model.modules[i];
    const bool fed = !model.feeders(ModuleId{static_cast<ModuleId::rep>(i)}).empty();
    const std::string at = "/modules/" + std::to_string(i);
    if (m.role == ModuleRole::generator && !fed)
      throw input_error("generator \"" + m.name + "\" is fed by no module", {.path = at + "/role", .expected = "a module whose \"feeds\" names this generator (its conditioning)"});
    if (m.cross_attention && !fed)
      throw input_error("\"" + m.name + "\" has cross_attention but no module feeds it", {.path = at + "/cross_attention", .expected = "false, or a module whose \"feeds\" names this one"});
  }
}

/// Checks a setup on its own: layout sizes, device and link figures, the microbatch budget
/// (module named, max_tokens > 0, max_items > 0 when given), a tensor-parallel link when
/// tensor_parallel > 1, optimizer_bytes_per_param > 0. Whether the budget module exists in a
/// model is check_compatible's business.
inline void validate(const Setup& s) {
  using detail::check_int_range;
  using detail::check_positive;
  check_int_range(s.pipeline_stages, 1, limits::max_pipeline_stages, "pipeline_stages", "/pipeline_stages");
  check_int_range(s.tensor_parallel, 1, limits::max_tensor_parallel, "tensor_parallel", "/tensor_parallel");
  check_int_range(s.data_parallel, 1, limits::max_data_parallel, "data_parallel", "/data_parallel");
  using detail::check_number_range;
  check_number_range(s.device.bf16_tflops, limits::min_device_rate, limits::max_device_rate, "bf16_tflops", "/device/bf16_tflops");
  check_number_range(s.device.hbm_gb_per_s, limits::min_device_rate, limits::max_device_rate, "hbm_gb_per_s", "/device/hbm_gb_per_s");
  check_positive(s.device.memory_gib, false, "memory_gib", "/device/memory_gib");
  check_number_range(s.device.memory_gib, 0, limits::max_memory_gib, "memory_gib", "/device/memory_gib");
  check_positive(s.device.reserved_gib, true, "reserved_gib", "/device/reserved_gib");
  if (!(s.device.reserved_gib < s.device.memory_gib))
    throw input_error("reserved_gib " + detail::number_text(s.device.reserved_gib) + " leaves no memory of memory_gib " +
                    detail::number_text(s.device.memory_gib), {.path = "/device/reserved_gib", .expected = "less than memory_gib"});
  check_number_range(s.pipeline_link.gb_per_s, limits::min_device_rate, limits::max_device_rate, "gb_per_s", "/links/pipeline/gb_per_s");
  check_number_range(s.pipeline_link.latency_us, 0, limits::max_link_latency_us, "latency_us", "/links/pipeline/latency_us");
  if (s.tensor_parallel_link) {
    check_number_range(s.tensor_parallel_link->gb_per_s, limits::min_device_rate, limits::max_device_rate, "gb_per_s",
                       "/links/tensor_parallel/gb_per_s");
    check_number_range(s.tensor_parallel_link->latency_us, 0, limits::max_link_latency_us, "latency_us", "/links/tensor_parallel/latency_us");
  } else if (s.tensor_parallel > 1) {
    throw input_error("tensor_parallel is " + std::to_string(s.tensor_parallel) + " but links.tensor_parallel is missing", {.path = "/links/tensor_parallel", .expected = "{\"gb_per_s\": ..., \"latency_us\": ...} when tensor_parallel > 1"});
  }
  if (s.microbatch.module.empty())
    throw input_error("empty microbatch module name", {.path = "/microbatch/module", .expected = "the name of a module of the model"});
  check_int_range(s.microbatch.max_tokens, 1, limits::max_microbatch_tokens, "max_tokens", "/microbatch/max_tokens");
  if (s.microbatch.max_items)
    check_int_range(*s.microbatch.max_items, 1, limits::max_microbatch_items, "max_items", "/microbatch/max_items");
  check_int_range(s.microbatches_per_step, 1, limits::max_microbatches_per_step, "microbatches_per_step",
                  "/microbatches_per_step");
  if (!(std::isfinite(s.optimizer_bytes_per_param) && s.optimizer_bytes_per_param > 0 &&
        s.optimizer_bytes_per_param <= limits::max_optimizer_bytes_per_param))
    throw input_error("optimizer_bytes_per_param is " + detail::number_text(s.optimizer_bytes_per_param), {.path = "/optimizer_bytes_per_param", .expected = "a number in (0, 1024]"});
}

namespace detail {
/// Every module splits evenly over the tensor-parallel group: its weight matrices by rows or
/// columns (hidden and ffn_hidden divisible by tensor_parallel) and at least one attention head
/// per rank. Heads that do not divide evenly are modeled as an even split of the attention work
/// (as with padded heads).
inline void check_tensor_parallel_split(const ModelSpec& model, const Setup& setup) {
  const std::int64_t t = setup.tensor_parallel;
  if (t <= 1) return;
  for (const ModuleSpec& m : model.modules) {
    const std::string why = "module \"" + m.name + "\" of model \"" + model.name + "\" has ";
    const std::string expected = "a tensor_parallel that divides every module's hidden and ffn_hidden and is at most its heads";
    if (m.hidden % t != 0)
      throw input_error(why + "hidden " + std::to_string(m.hidden) + ", which tensor_parallel " + std::to_string(t) + " does not divide",
                        {.path = "/tensor_parallel", .expected = expected});
    if (m.ffn_hidden % t != 0)
      throw input_error(why + "ffn_hidden " + std::to_string(m.ffn_hidden) + ", which tensor_parallel " + std::to_string(t) + " does not divide",
                        {.path = "/tensor_parallel", .expected = expected});
    if (m.heads < t)
      throw input_error(why + std::to_string(m.heads) + " heads, fewer than tensor_parallel " + std::to_string(t),
                        {.path = "/tensor_parallel", .expected = expected});
  }
}
}  // namespace detail

/// Checks that a setup fits a model: the microbatch budget's module exists, max_items is
/// given only for a module that consumes items (an encoder or a generator; the backbone
/// consumes text plus encoder outputs), and every module splits evenly over tensor_parallel
/// (detail::check_tensor_parallel_split). Paths refer to the setup file.
inline void check_compatible(const ModelSpec& model, const Setup& setup) {
  const auto id = model.find(setup.microbatch.module);
  if (!id)
    throw input_error("microbatch.module \"" + setup.microbatch.module + "\" is not a module of model \"" + model.name + "\"", {.path = "/microbatch/module", .expected = "one of " + detail::module_names(model)});
  const ModuleSpec& m = model.module(*id);
  if (setup.microbatch.max_items && m.role == ModuleRole::backbone)
    throw input_error("max_items is given but budget module \"" + m.name + "\" is the backbone, which consumes no items", {.path = "/microbatch/max_items", .expected = "no max_items, or an encoder or generator as microbatch.module"});
  detail::check_tensor_parallel_split(model, setup);
}

}  // namespace pipeweaver
