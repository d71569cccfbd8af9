#pragma once
// Readers of the workload interchange format (examples/workloads/README.md): models, setups,
// datasets and the suite of reference cases. Unknown keys are errors; every error is
// Error(input) naming the file, the JSON path (RFC 6901, e.g. "/modules/1/feeds") and what was
// expected. The consistency rules themselves live in std-only validators (model/validate.hpp,
// data/sampler.hpp) so that specs built in code are held to the same rules.
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/sampler.hpp"
#include "pipeweaver/io/detail/json_reader.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/model/validate.hpp"

namespace pipeweaver::io {

/// One reference case of a suite: files resolved relative to the suite file's folder.
struct SuiteCase {
  std::string name{};
  std::filesystem::path model{};
  std::filesystem::path dataset{};
  std::filesystem::path setup{};
};

/// suite.json: the reference cases (model x dataset x setup).
struct Suite {
  std::string name{};
  std::string description{};
  std::vector<SuiteCase> cases{};
};

/// The three specs of one case, read and checked against each other.
struct Workload {
  ModelSpec model{};
  DatasetSpec dataset{};
  Setup setup{};
};

namespace detail {

template <class F>
decltype(auto) adding_file(std::string_view file, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const Error& e) {
    throw in_file(e, file);
  }
}

template <class Enum, std::size_t N>
Enum read_enum(const CheckedObject& o, std::string_view key, const std::pair<std::string_view, Enum> (&table)[N]) {
  std::string expected = "one of";
  for (std::size_t i = 0; i < N; ++i) expected += std::string(i ? ", " : " ") + "\"" + std::string(table[i].first) + "\"";
  const auto& v = o.at(key, expected);
  if (!v.is_string()) o.fail(key, "found " + json_type_name(v), expected);
  const auto s = v.get<std::string>();
  for (const auto& [name, value] : table)
    if (name == s) return value;
  o.fail(key, "unknown " + std::string(key) + " \"" + s + "\"", expected);
}

/// The name and the optional description every workload file (model, setup, dataset, suite) starts with.
template <class T>
void read_name(const CheckedObject& root, T& out) {
  out.name = root.string("name");
  out.description = root.string_or("description", "");
}

inline ModelSpec model_from_json(const nlohmann::json& j, std::string_view source) {
  const std::string file(source);
  CheckedObject root(j, "", file, {"name", "description", "modules"}, "a model (a JSON object)");
  ModelSpec model;
  read_name(root, model);
  const auto& mods = root.array("modules", /*non_empty=*/true);
  if (mods.size() > static_cast<std::size_t>(limits::max_modules))  // before the by-name lookups below
    root.fail("modules", std::to_string(mods.size()) + " modules", "at most " + std::to_string(limits::max_modules));
  std::vector<std::optional<std::string>> feeds(mods.size());
  for (std::size_t i = 0; i < mods.size(); ++i) {
    CheckedObject o(mods[i], "/modules/" + std::to_string(i), file,
                    {"name", "role", "modality", "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "ffn", "attention",
                     "cross_attention", "vocab", "feeds", "output_tokens_per_input_token", "trainable"},
                    "a module (a JSON object)");
    ModuleSpec m;
    m.name = o.string("name");
    if (auto prev = model.find(m.name))  // before "feeds" are resolved by name
      o.fail("name", "duplicate module name \"" + m.name + "\" (also /modules/" + std::to_string(prev->value()) + ")",
             "a name no other module has");
    static constexpr std::pair<std::string_view, ModuleRole> roles[] = {
        {"encoder", ModuleRole::encoder}, {"backbone", ModuleRole::backbone}, {"generator", ModuleRole::generator}};
    static constexpr std::pair<std::string_view, FfnKind> ffns[] = {{"gelu", FfnKind::gelu}, {"swiglu", FfnKind::swiglu}};
    static constexpr std::pair<std::string_view, AttentionKind> attns[] = {{"causal", AttentionKind::causal},
                                                                           {"bidirectional", AttentionKind::bidirectional}};
    m.role = read_enum(o, "role", roles);
    m.modality = o.string("modality");
    m.layers = static_cast<int>(o.integer("layers", 1, limits::max_layers));
    m.hidden = o.integer("hidden", 1, limits::max_hidden);
    m.ffn_hidden = o.integer("ffn_hidden", 1, limits::max_hidden);
    m.heads = static_cast<int>(o.integer("heads", 1, limits::max_heads));
    m.kv_heads = static_cast<int>(o.integer("kv_heads", 1, limits::max_heads));
    m.ffn = read_enum(o, "ffn", ffns);
    m.attention = read_enum(o, "attention", attns);
    m.cross_attention = o.boolean_or("cross_attention", false);
    if (o.has("vocab")) m.vocab = o.integer("vocab", 1, limits::max_vocab);
    if (o.has("feeds")) feeds[i] = o.string("feeds");
    if (o.has("output_tokens_per_input_token")) {
      if (m.role != ModuleRole::encoder)
        o.fail("output_tokens_per_input_token", "output_tokens_per_input_token is given for a " + std::string(to_string(m.role)),
               "this key only on encoders");
      m.output_tokens_per_input_token = o.number("output_tokens_per_input_token");
    }
    m.trainable = o.boolean_or("trainable", true);
    model.modules.push_back(std::move(m));
  }
  for (std::size_t i = 0; i < mods.size(); ++i) {
    if (!feeds[i]) continue;
    const auto id = model.find(*feeds[i]);
    if (!id)
      throw input_error("feeds \"" + *feeds[i] + "\", which is not a module of this model", {.file = file, .path = "/modules/" + std::to_string(i) + "/feeds", .expected = "one of " + module_names(model)});
    model.modules[i].feeds = *id;
  }
  adding_file(source, [&] { validate(model); });
  return model;
}

inline LinkSpec link_from_json(const CheckedObject& o) {
  return LinkSpec{.gb_per_s = o.number("gb_per_s"), .latency_us = o.number("latency_us")};
}

inline Setup setup_from_json(const nlohmann::json& j, std::string_view source) {
  const std::string file(source);
  CheckedObject root(j, "", file,
                     {"name", "description", "pipeline_stages", "tensor_parallel", "data_parallel", "device", "links",
                      "microbatch", "microbatches_per_step", "optimizer_bytes_per_param"},
                     "a setup (a JSON object)");
  Setup s;
  read_name(root, s);
  s.pipeline_stages = static_cast<int>(root.integer("pipeline_stages", 1, limits::max_pipeline_stages));
  s.tensor_parallel = root.has("tensor_parallel") ? static_cast<int>(root.integer("tensor_parallel", 1, limits::max_tensor_parallel)) : 1;
  s.data_parallel = root.has("data_parallel") ? static_cast<int>(root.integer("data_parallel", 1, limits::max_data_parallel)) : 1;
  {
    auto d = root.object("device", {"name", "bf16_tflops", "hbm_gb_per_s", "memory_gib", "reserved_gib"}, "a device (a JSON object)");
    s.device.name = d.string_or("name", "");
    s.device.bf16_tflops = d.number("bf16_tflops");
    s.device.hbm_gb_per_s = d.number("hbm_gb_per_s");
    s.device.memory_gib = d.number("memory_gib");
    s.device.reserved_gib = d.has("reserved_gib") ? d.number("reserved_gib") : 0.0;
  }
  {
    auto links = root.object("links", {"pipeline", "tensor_parallel"}, "links (a JSON object)");
    s.pipeline_link = link_from_json(links.object("pipeline", {"gb_per_s", "latency_us"}, "a link {gb_per_s, latency_us}"));
    if (links.has("tensor_parallel"))
      s.tensor_parallel_link =
          link_from_json(links.object("tensor_parallel", {"gb_per_s", "latency_us"}, "a link {gb_per_s, latency_us}"));
  }
  {
    auto mb = root.object("microbatch", {"module", "max_tokens", "max_items"}, "a microbatch budget (a JSON object)");
    s.microbatch.module = mb.string("module");
    s.microbatch.max_tokens = mb.integer("max_tokens", 1, limits::max_microbatch_tokens);
    if (mb.has("max_items")) s.microbatch.max_items = mb.integer("max_items", 1, limits::max_microbatch_items);
  }
  s.microbatches_per_step = static_cast<int>(root.integer("microbatches_per_step", 1, limits::max_microbatches_per_step));
  s.optimizer_bytes_per_param = root.number("optimizer_bytes_per_param");
  adding_file(source, [&] { validate(s); });
  return s;
}

inline std::vector<double> numbers_from_json(const CheckedObject& o, std::string_view key, bool non_empty) {
  const auto& a = o.array(key, non_empty);
  std::vector<double> out;
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out.push_back(o.number_value(a[i], o.child_path(key) + "/" + std::to_string(i)));
  return out;
}

inline Distribution distribution_from_json(const nlohmann::json& j, const std::string& path, const std::string& file) {
  static constexpr std::string_view kinds[] = {"fixed", "uniform", "lognormal", "poisson", "choice"};
  const std::string expected_kind = "exactly one of fixed, uniform, lognormal, poisson, choice";
  CheckedObject o(j, path, file, {"fixed", "uniform", "lognormal", "poisson", "choice", "scale", "min", "max"},
                  "a distribution such as {\"fixed\": 1} or {\"uniform\": [lo, hi]}");
  std::string_view kind;
  for (auto k : kinds)
    if (o.has(k)) {
      if (!kind.empty()) o.fail(k, "a second distribution kind (\"" + std::string(kind) + "\" is given too)", expected_kind);
      kind = k;
    }
  if (kind.empty()) o.fail_at(path, "no distribution kind", expected_kind);
  Distribution d;
  if (kind == "fixed") {
    d.kind = FixedDist{o.number("fixed")};
  } else if (kind == "uniform") {
    const auto& a = o.array("uniform");
    if (a.size() != 2) o.fail("uniform", "uniform has " + std::to_string(a.size()) + " elements", "[lo, hi]: two integers");
    const auto p = o.child_path("uniform");
    const std::int64_t big = std::numeric_limits<std::int64_t>::max();
    d.kind = UniformDist{o.integer_value(a[0], p + "/0", 0, big), o.integer_value(a[1], p + "/1", 0, big)};
  } else if (kind == "lognormal") {
    auto l = o.object("lognormal", {"median", "sigma"}, "{\"median\": m, \"sigma\": s}");
    d.kind = LognormalDist{l.number("median"), l.number("sigma")};
  } else if (kind == "poisson") {
    auto p = o.object("poisson", {"mean"}, "{\"mean\": m}");
    d.kind = PoissonDist{p.number("mean")};
  } else {
    auto c = o.object("choice", {"values", "weights"}, "{\"values\": [...], \"weights\": [...]}");
    ChoiceDist ch;
    ch.values = numbers_from_json(c, "values", true);
    if (c.has("weights")) {
      ch.weights = numbers_from_json(c, "weights", true);
    }
    d.kind = std::move(ch);
  }
  if (o.has("scale")) d.scale = o.number("scale");
  if (o.has("min")) d.min = o.number("min");
  if (o.has("max")) d.max = o.number("max");
  return d;
}

inline DatasetSpec dataset_from_json(const nlohmann::json& j, std::string_view source) {
  const std::string file(source);
  CheckedObject root(j, "", file, {"name", "description", "mixture"}, "a dataset (a JSON object)");
  DatasetSpec d;
  read_name(root, d);
  const auto& mix = root.array("mixture", /*non_empty=*/true);
  for (std::size_t i = 0; i < mix.size(); ++i) {
    const std::string at = "/mixture/" + std::to_string(i);
    CheckedObject o(mix[i], at, file, {"name", "weight", "text", "items"}, "a source (a JSON object)");
    SourceSpec s;
    s.name = o.string_or("name", "");
    s.weight = o.number("weight");
    s.text = distribution_from_json(o.at("text", "a distribution"), at + "/text", file);
    if (o.has("items")) {
      const auto& items = o.at("items", "an object");
      if (!items.is_object()) o.fail("items", "found " + json_type_name(items), "an object {modality: {count, tokens}}");
      for (const auto& [modality, spec] : items.items()) {  // std::map order: sorted by modality
        CheckedObject io(spec, o.child_path("items") + "/" + json_pointer_token(modality), file, {"count", "tokens"},
                         "{\"count\": distribution, \"tokens\": distribution}");
        s.items.push_back(ItemsSpec{modality, distribution_from_json(io.at("count", "a distribution"), io.child_path("count"), file),
                                    distribution_from_json(io.at("tokens", "a distribution"), io.child_path("tokens"), file)});
      }
    }
    d.mixture.push_back(std::move(s));
  }
  adding_file(source, [&] { validate(d); });
  return d;
}

inline Suite suite_from_json(const nlohmann::json& j, std::string_view source) {
  const std::string file(source);
  const std::filesystem::path base = std::filesystem::path(file).parent_path();
  CheckedObject root(j, "", file, {"name", "description", "cases"}, "a suite (a JSON object)");
  Suite suite;
  read_name(root, suite);
  const auto& cases = root.array("cases", /*non_empty=*/true);
  if (cases.size() > static_cast<std::size_t>(limits::max_suite_cases))  // before the duplicate-name checks below
    root.fail("cases", std::to_string(cases.size()) + " cases", "at most " + std::to_string(limits::max_suite_cases));
  for (std::size_t i = 0; i < cases.size(); ++i) {
    CheckedObject c(cases[i], "/cases/" + std::to_string(i), file, {"name", "model", "dataset", "setup"}, "a case (a JSON object)");
    SuiteCase sc;
    sc.name = c.string("name");
    for (const auto& prev : suite.cases)
      if (prev.name == sc.name) c.fail("name", "duplicate case name \"" + sc.name + "\"", "a name no other case has");
    auto resolve = [&](std::string_view key) {
      const std::string p = c.string(key);
      if (p.empty()) c.fail(key, "empty path", "a path relative to the suite file");
      return base / std::filesystem::path(p);  // an absolute p replaces base
    };
    sc.model = resolve("model");
    sc.dataset = resolve("dataset");
    sc.setup = resolve("setup");
    suite.cases.push_back(std::move(sc));
  }
  return suite;
}

}  // namespace detail

/// A model from JSON text; `source_name` names it in errors (usually its file).
[[nodiscard]] inline ModelSpec parse_model(std::string_view text, std::string_view source_name) {
  return detail::model_from_json(detail::parse_json_text(text, source_name), source_name);
}
/// A setup from JSON text.
[[nodiscard]] inline Setup parse_setup(std::string_view text, std::string_view source_name) {
  return detail::setup_from_json(detail::parse_json_text(text, source_name), source_name);
}
/// A dataset from JSON text.
[[nodiscard]] inline DatasetSpec parse_dataset(std::string_view text, std::string_view source_name) {
  return detail::dataset_from_json(detail::parse_json_text(text, source_name), source_name);
}
/// A suite from JSON text; case paths are resolved relative to source_name's folder.
[[nodiscard]] inline Suite parse_suite(std::string_view text, std::string_view source_name) {
  return detail::suite_from_json(detail::parse_json_text(text, source_name), source_name);
}

[[nodiscard]] inline ModelSpec read_model(const std::filesystem::path& path) {
  return parse_model(detail::read_text_file(path), path.string());
}
[[nodiscard]] inline Setup read_setup(const std::filesystem::path& path) {
  return parse_setup(detail::read_text_file(path), path.string());
}
[[nodiscard]] inline DatasetSpec read_dataset(const std::filesystem::path& path) {
  return parse_dataset(detail::read_text_file(path), path.string());
}
[[nodiscard]] inline Suite read_suite(const std::filesystem::path& path) {
  return parse_suite(detail::read_text_file(path), path.string());
}

/// Checks that `setup` fits `model` (see check_compatible(const ModelSpec&, const Setup&) in
/// model/validate.hpp); errors name `setup_source` and the setup's JSON path.
inline void check_compatible(const ModelSpec& model, const Setup& setup, std::string_view setup_source) {
  detail::adding_file(setup_source, [&] { check_compatible(model, setup); });
}
/// Checks that every item modality of `dataset` is consumed by `model`; errors name
/// `dataset_source`.
inline void check_compatible(const ModelSpec& model, const DatasetSpec& dataset, std::string_view dataset_source) {
  detail::adding_file(dataset_source, [&] { check_compatible(model, dataset); });
}

/// Reads a case's model, dataset and setup and checks them against each other.
[[nodiscard]] inline Workload read_case(const SuiteCase& c) {
  Workload w{read_model(c.model), read_dataset(c.dataset), read_setup(c.setup)};
  check_compatible(w.model, w.setup, c.setup.string());
  check_compatible(w.model, w.dataset, c.dataset.string());
  return w;
}


}  // namespace pipeweaver::io
