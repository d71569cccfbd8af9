#pragma once
// The flat rank program (ir/flat_program.hpp) as JSON: docs/flat_program.md documents the
// schema, every field and an example. In short:
//   {"format": "pipeweaver-flat-program", "version": 1, "plan": "dip", "model": "tiny-vlm",
//    "setup": "cpu-pp4", "ranks": 4, "microbatches": 4,
//    "modules": [{"name": "vit", "layers": 4, "feeds": "llm", "trainable": true,
//                 "sub_microbatch_items": 2, "chunks": [{"first_layer": 0, "layer_count": 1, "rank": 0}, ...]}, ...],
//    "programs": [{"rank": 0, "actions": [
//       {"op": "forward", "stage": STAGE, "strategy": {"full_recompute": 0, "selective_recompute": 0, "offload": 0}},
//       {"op": "send", "transfer": 3, "peer": 1, "bytes": 4096, "stage": STAGE, "peer_stage": STAGE}, ...]}, ...]}
//   STAGE = {"module": "vit", "chunk": 0, "first_layer": 0, "layer_count": 1, "rank": 0, "pass": "forward",
//            "microbatch": 0, "sub_microbatch": 5, "tokens": 20,
//            "items": [{"sample": 0, "item": 1, "tokens": 12, "context_tokens": 0}, ...]}
// Every field is always written (compute actions have no transfer fields, transfer actions no
// strategy). write_flat_program writes one action per line. The reader checks types, ranges,
// unknown keys, the format name and version, and that every module a stage names is in
// "modules", and throws Error(input) naming the source and the JSON path.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/io/detail/json_reader.hpp"
#include "pipeweaver/ir/flat_program.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver::io {

/// The value of the document's "format" key.
inline constexpr std::string_view flat_program_format = "pipeweaver-flat-program";

namespace detail {

inline nlohmann::ordered_json flat_stage_json(const FlatStage& s) {
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  for (const FlatItem& i : s.items)
    items.push_back({{"sample", i.sample}, {"item", i.item}, {"tokens", i.tokens}, {"context_tokens", i.context_tokens}});
  return {{"module", s.module},
          {"chunk", s.chunk},
          {"first_layer", s.first_layer},
          {"layer_count", s.layer_count},
          {"rank", s.rank.value()},
          {"pass", std::string(to_string(s.pass))},
          {"microbatch", s.microbatch.value()},
          {"sub_microbatch", s.sub_microbatch.value()},
          {"tokens", s.tokens},
          {"items", std::move(items)}};
}

inline nlohmann::ordered_json flat_action_json(const FlatAction& a) {
  nlohmann::ordered_json j;
  j["op"] = std::string(to_string(a.op));
  if (is_compute(a.op)) {
    j["stage"] = flat_stage_json(a.stage);
    j["strategy"] = {{"full_recompute", a.strategy.full_recompute},
                     {"selective_recompute", a.strategy.selective_recompute},
                     {"offload", a.strategy.offload}};
  } else {
    j["transfer"] = a.transfer.value();
    j["peer"] = a.peer.value();
    j["bytes"] = a.bytes.count();
    j["stage"] = flat_stage_json(a.stage);
    j["peer_stage"] = flat_stage_json(a.peer_stage);
  }
  return j;
}

inline nlohmann::ordered_json flat_module_json(const FlatModule& m) {
  nlohmann::ordered_json chunks = nlohmann::ordered_json::array();
  for (const Chunk& c : m.chunks) chunks.push_back({{"first_layer", c.first_layer}, {"layer_count", c.layer_count}, {"rank", c.rank.value()}});
  nlohmann::ordered_json j = {{"name", m.name}, {"layers", m.layers}};
  j["feeds"] = m.feeds.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(m.feeds);
  j["trainable"] = m.trainable;
  j["sub_microbatch_items"] = m.sub_microbatch_items;
  j["chunks"] = std::move(chunks);
  return j;
}

inline constexpr std::int64_t flat_i32_max = std::numeric_limits<std::int32_t>::max();
inline constexpr std::int64_t flat_i64_max = std::numeric_limits<std::int64_t>::max();

/// Reads the document back; module names resolve against `modules` (already read).
class FlatProgramReader {
 public:
  FlatProgramReader(const nlohmann::json& j, std::string file) : j_(j), file_(std::move(file)) {}

  [[nodiscard]] FlatProgram read() {
    const CheckedObject o(j_, "", file_, {"format", "version", "plan", "model", "setup", "ranks", "microbatches", "modules", "programs"},
                          "a flat program object");
    if (o.string("format") != flat_program_format)
      o.fail("format", "not a flat program (\"" + o.string("format") + "\")", "\"" + std::string(flat_program_format) + "\"");
    const auto version = o.integer("version", 0, std::numeric_limits<std::uint32_t>::max());
    if (version != FlatProgram::format_version)
      o.fail("version", "unsupported flat program version " + std::to_string(version), "version " + std::to_string(FlatProgram::format_version));
    FlatProgram p;
    p.plan = o.string("plan");
    p.model = o.string("model");
    p.setup = o.string("setup");
    p.ranks = static_cast<int>(o.integer("ranks", 0, flat_i32_max));
    p.microbatches = static_cast<int>(o.integer("microbatches", 0, flat_i32_max));
    const auto& modules = o.array("modules");
    for (std::size_t m = 0; m < modules.size(); ++m) p.modules.push_back(module(modules[m], o.child_path("modules") + "/" + std::to_string(m)));
    modules_ = &p.modules;
    const auto& programs = o.array("programs");
    if (programs.size() != static_cast<std::size_t>(p.ranks))
      o.fail("programs", std::to_string(programs.size()) + " rank programs", "one per rank (" + std::to_string(p.ranks) + ")");
    for (std::size_t r = 0; r < programs.size(); ++r) p.programs.push_back(program(programs[r], o.child_path("programs") + "/" + std::to_string(r), r));
    return p;
  }

 private:
  [[nodiscard]] FlatModule module(const nlohmann::json& j, const std::string& path) const {
    const CheckedObject o(j, path, file_, {"name", "layers", "feeds", "trainable", "sub_microbatch_items", "chunks"}, "a module");
    FlatModule m;
    m.name = o.string("name");
    m.layers = static_cast<int>(o.integer("layers", 0, flat_i32_max));
    const auto& feeds = o.at("feeds", "a module name or null");
    if (!feeds.is_null() && !feeds.is_string()) o.fail("feeds", "found " + json_type_name(feeds), "a module name or null");
    if (feeds.is_string()) m.feeds = feeds.get<std::string>();
    m.trainable = o.boolean("trainable");
    m.sub_microbatch_items = o.integer("sub_microbatch_items", 0, flat_i64_max);
    const auto& chunks = o.array("chunks");
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const CheckedObject co(chunks[c], o.child_path("chunks") + "/" + std::to_string(c), file_, {"first_layer", "layer_count", "rank"}, "a chunk");
      m.chunks.push_back(Chunk{static_cast<int>(co.integer("first_layer", 0, flat_i32_max)),
                               static_cast<int>(co.integer("layer_count", 0, flat_i32_max)),
                               RankId{static_cast<RankId::rep>(co.integer("rank", 0, flat_i32_max))}});
    }
    return m;
  }

  [[nodiscard]] FlatRankProgram program(const nlohmann::json& j, const std::string& path, std::size_t index) const {
    const CheckedObject o(j, path, file_, {"rank", "actions"}, "a rank program");
    FlatRankProgram p;
    p.rank = RankId{static_cast<RankId::rep>(o.integer("rank", static_cast<std::int64_t>(index), static_cast<std::int64_t>(index)))};
    const auto& actions = o.array("actions");
    p.actions.reserve(actions.size());
    for (std::size_t a = 0; a < actions.size(); ++a) p.actions.push_back(action(actions[a], o.child_path("actions") + "/" + std::to_string(a)));
    return p;
  }

  [[nodiscard]] FlatAction action(const nlohmann::json& j, const std::string& path) const {
    FlatAction a;
    a.op = op_of(j, path);
    if (is_compute(a.op)) {
      const CheckedObject o(j, path, file_, {"op", "stage", "strategy"}, "a compute action");
      a.stage = stage(o, "stage");
      if (a.stage.pass != pass_of(a.op)) o.fail("stage", "the stage's pass is " + std::string(to_string(a.stage.pass)), "the action's op");
      const CheckedObject so = o.object("strategy", {"full_recompute", "selective_recompute", "offload"}, "a memory strategy");
      const auto count = [&](std::string_view k) { return static_cast<std::int16_t>(so.integer(k, 0, std::numeric_limits<std::int16_t>::max())); };
      a.strategy = MemoryStrategy{count("full_recompute"), count("selective_recompute"), count("offload")};
      return a;
    }
    const CheckedObject o(j, path, file_, {"op", "transfer", "peer", "bytes", "stage", "peer_stage"}, "a transfer action");
    a.transfer = TransferId{static_cast<TransferId::rep>(o.integer("transfer", 0, flat_i32_max))};
    a.peer = RankId{static_cast<RankId::rep>(o.integer("peer", 0, flat_i32_max))};
    a.bytes = Bytes{o.integer("bytes", 0, flat_i64_max)};
    a.stage = stage(o, "stage");
    a.peer_stage = stage(o, "peer_stage");
    return a;
  }

  [[nodiscard]] FlatOp op_of(const nlohmann::json& j, const std::string& path) const {
    if (!j.is_object()) throw input_error("found " + json_type_name(j), {.file = file_, .path = path, .expected = "an action object"});
    const auto it = j.find("op");
    if (it == j.end() || !it->is_string())
      throw input_error(it == j.end() ? "missing required key \"op\"" : "found " + json_type_name(*it),
                        {.file = file_, .path = path + "/op", .expected = "the action's kind, a string"});
    const std::string op = it->get<std::string>();
    for (FlatOp f : {FlatOp::forward, FlatOp::backward, FlatOp::backward_input, FlatOp::backward_weight, FlatOp::send, FlatOp::recv, FlatOp::wait})
      if (to_string(f) == op) return f;
    throw input_error("unknown op \"" + op + "\"",
                      {.file = file_, .path = path + "/op", .expected = "forward, backward, backward_input, backward_weight, send, recv or wait"});
  }

  static Pass pass_of(FlatOp op) noexcept {
    switch (op) {
      case FlatOp::backward: return Pass::backward;
      case FlatOp::backward_input: return Pass::backward_input;
      case FlatOp::backward_weight: return Pass::backward_weight;
      default: return Pass::forward;
    }
  }

  [[nodiscard]] FlatStage stage(const CheckedObject& parent, std::string_view key) const {
    const CheckedObject o = parent.object(key, {"module", "chunk", "first_layer", "layer_count", "rank", "pass", "microbatch", "sub_microbatch", "tokens", "items"},
                                          "a stage");
    FlatStage s;
    s.module = o.string("module");
    bool known = false;
    for (std::size_t m = 0; m < modules_->size(); ++m)
      if ((*modules_)[m].name == s.module) {
        s.module_id = ModuleId{static_cast<ModuleId::rep>(m)};
        known = true;
        break;
      }
    if (!known) o.fail("module", "module \"" + s.module + "\" is not in \"modules\"", "the name of a module listed in \"modules\"");
    s.chunk = static_cast<int>(o.integer("chunk", 0, flat_i32_max));
    s.first_layer = static_cast<int>(o.integer("first_layer", 0, flat_i32_max));
    s.layer_count = static_cast<int>(o.integer("layer_count", 0, flat_i32_max));
    s.rank = RankId{static_cast<RankId::rep>(o.integer("rank", 0, flat_i32_max))};
    const std::string pass = o.string("pass");
    bool pass_known = false;
    for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
      if (to_string(p) == pass) s.pass = p, pass_known = true;
    if (!pass_known) o.fail("pass", "unknown pass \"" + pass + "\"", "forward, backward, backward_input or backward_weight");
    s.microbatch = MicrobatchId{static_cast<MicrobatchId::rep>(o.integer("microbatch", 0, flat_i32_max))};
    s.sub_microbatch = SubMicrobatchId{static_cast<SubMicrobatchId::rep>(o.integer("sub_microbatch", 0, flat_i32_max))};
    s.tokens = o.integer("tokens", 0, flat_i64_max);
    const auto& items = o.array("items");
    for (std::size_t i = 0; i < items.size(); ++i) {
      const CheckedObject io(items[i], o.child_path("items") + "/" + std::to_string(i), file_, {"sample", "item", "tokens", "context_tokens"}, "an item");
      s.items.push_back(FlatItem{static_cast<std::int32_t>(io.integer("sample", -1, flat_i32_max)),
                                 static_cast<std::int32_t>(io.integer("item", -1, flat_i32_max)), io.integer("tokens", 0, flat_i64_max),
                                 io.integer("context_tokens", 0, flat_i64_max)});
    }
    return s;
  }

  const nlohmann::json& j_;
  std::string file_;
  const std::vector<FlatModule>* modules_ = nullptr;
};

}  // namespace detail

/// The flat program as JSON (see the header comment and docs/flat_program.md).
[[nodiscard]] inline nlohmann::ordered_json to_json(const FlatProgram& p) {
  nlohmann::ordered_json modules = nlohmann::ordered_json::array(), programs = nlohmann::ordered_json::array();
  for (const FlatModule& m : p.modules) modules.push_back(detail::flat_module_json(m));
  for (const FlatRankProgram& r : p.programs) {
    nlohmann::ordered_json actions = nlohmann::ordered_json::array();
    for (const FlatAction& a : r.actions) actions.push_back(detail::flat_action_json(a));
    programs.push_back({{"rank", r.rank.value()}, {"actions", std::move(actions)}});
  }
  nlohmann::ordered_json j;
  j["format"] = std::string(flat_program_format);
  j["version"] = FlatProgram::format_version;
  j["plan"] = p.plan;
  j["model"] = p.model;
  j["setup"] = p.setup;
  j["ranks"] = p.ranks;
  j["microbatches"] = p.microbatches;
  j["modules"] = std::move(modules);
  j["programs"] = std::move(programs);
  return j;
}

/// Reads a flat program from JSON; `source` names it in errors.
[[nodiscard]] inline FlatProgram flat_program_from_json(const nlohmann::json& j, std::string_view source) {
  return detail::FlatProgramReader(j, std::string(source)).read();
}

/// Parses flat-program JSON text (errors name `source_name`).
[[nodiscard]] inline FlatProgram parse_flat_program(std::string_view text, std::string_view source_name) {
  return flat_program_from_json(detail::parse_json_text(text, source_name), source_name);
}

/// Writes the flat program as JSON, one module and one action per line. Error(input) naming the
/// file if it cannot be written.
inline void write_flat_program(const std::filesystem::path& path, const FlatProgram& program) {
  const nlohmann::ordered_json j = to_json(program);
  std::string out = "{\n";
  for (const char* key : {"format", "version", "plan", "model", "setup", "ranks", "microbatches"})
    out += "  \"" + std::string(key) + "\": " + j.at(key).dump() + ",\n";
  out += "  \"modules\": [";
  const auto& modules = j.at("modules");
  for (std::size_t m = 0; m < modules.size(); ++m) out += (m == 0 ? "\n    " : ",\n    ") + modules[m].dump();
  out += modules.empty() ? "],\n" : "\n  ],\n";
  out += "  \"programs\": [";
  const auto& programs = j.at("programs");
  for (std::size_t r = 0; r < programs.size(); ++r) {
    out += (r == 0 ? "\n    " : ",\n    ");
    out += "{\"rank\": " + programs[r].at("rank").dump() + ", \"actions\": [";
    const auto& actions = programs[r].at("actions");
    for (std::size_t a = 0; a < actions.size(); ++a) out += (a == 0 ? "\n      " : ",\n      ") + actions[a].dump();
    out += actions.empty() ? "]}" : "\n    ]}";
  }
  out += programs.empty() ? "]\n}\n" : "\n  ]\n}\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw input_error("cannot open the file for writing", {.file = path.string(), .expected = "a writable path"});
  f << out;
  f.flush();
  if (!f) throw input_error("cannot write the file", {.file = path.string(), .expected = "a writable path"});
}

/// Writes the flat program of `plan` for `model` (flatten, then write_flat_program).
inline void write_flat_program(const std::filesystem::path& path, const Plan& plan, const ModelSpec& model) {
  write_flat_program(path, flatten(plan, model));
}

/// Reads a flat-program file.
[[nodiscard]] inline FlatProgram read_flat_program(const std::filesystem::path& path) {
  return parse_flat_program(detail::read_text_file(path), path.string());
}

}  // namespace pipeweaver::io
