#pragma once
// Plans as readable JSON. The document:
//   {"version": 1, "name": "dip", "model": "vlm-s", "setup": "h800-tp4-pp4", "microbatches": 8,
//    "partition": {"name": "dip", "ranks": 4,
//                  "modules": [{"sub_microbatch_items": 4,
//                               "chunks": [{"first_layer": 0, "layer_count": 6, "rank": 0}, ...]}, ...]},
//    "sub_microbatches": [{"module": 0, "microbatch": 0, "item_tokens": [676, 1024],
//                          "context_tokens": [...], "items": [[0, 0], [0, 1]]}, ...],
//    "transfers": [{"from": 0, "to": 1, "bytes": 123,
//                   "producer": {"module": 0, "chunk": 0, "sub_microbatch": 0, "pass": "forward"},
//                   "consumer": {...}}, ...],
//    "ranks": [[{"op": "forward", "module": 0, "chunk": 0, "sub_microbatch": 0}, {"op": "send", "transfer": 0},
//               {"op": "backward_input", ..., "strategy": {"full_recompute": 2}}, ...], ...]}
// Ids are indices (modules into the model, sub-microbatches into "sub_microbatches", transfers
// into "transfers"); "items" are [sample, item] origins (item -1: a whole sample);
// "context_tokens", "items" and "strategy" (and each of its three counts) may be left out when
// empty or zero. An action's "op" is forward, backward, backward_input, backward_weight, send,
// recv or wait. Reading rejects unknown keys, wrong types, out-of-range numbers and another
// "version" with Error{input} naming the source and the JSON path, and so do the bounds of
// ir/plan_limits.hpp (checked on every plan read, JSON or binary). write_plan writes one
// sub-microbatch, transfer or action per line; read_plan also accepts the binary form
// (schedule/plan_binary.hpp), recognized by its magic.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/io/detail/json_reader.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"
#include "pipeweaver/ir/plan_limits.hpp"

namespace pipeweaver::io {

namespace detail {

inline nlohmann::json stage_ref_json(const StageRef& s) {
  return {{"module", s.module.value()}, {"chunk", s.chunk}, {"sub_microbatch", s.sub_microbatch.value()}, {"pass", std::string(to_string(s.pass))}};
}

inline void put_strategy(nlohmann::json& j, const MemoryStrategy& s) {
  if (s.is_none()) return;
  nlohmann::json o = nlohmann::json::object();
  if (s.full_recompute != 0) o["full_recompute"] = s.full_recompute;
  if (s.selective_recompute != 0) o["selective_recompute"] = s.selective_recompute;
  if (s.offload != 0) o["offload"] = s.offload;
  j["strategy"] = std::move(o);
}

inline nlohmann::json action_json(const Action& a) {
  nlohmann::json j;
  if (const auto* f = std::get_if<Forward>(&a)) {
    j = {{"op", "forward"}, {"module", f->module.value()}, {"chunk", f->chunk}, {"sub_microbatch", f->sub_microbatch.value()}};
    put_strategy(j, f->strategy);
  } else if (const auto* b = std::get_if<Backward>(&a)) {
    j = {{"op", std::string(to_string(b->pass))}, {"module", b->module.value()}, {"chunk", b->chunk}, {"sub_microbatch", b->sub_microbatch.value()}};
    put_strategy(j, b->strategy);
  } else if (const auto* s = std::get_if<Send>(&a)) {
    j = {{"op", "send"}, {"transfer", s->transfer.value()}};
  } else if (const auto* r = std::get_if<Recv>(&a)) {
    j = {{"op", "recv"}, {"transfer", r->transfer.value()}};
  } else {
    j = {{"op", "wait"}, {"transfer", std::get<Wait>(a).transfer.value()}};
  }
  return j;
}

inline nlohmann::json sub_microbatch_json(const SubMicrobatchSpec& s) {
  nlohmann::json j = {{"module", s.module().value()}, {"microbatch", s.microbatch().value()},
                      {"item_tokens", std::vector<std::int64_t>(s.item_tokens().begin(), s.item_tokens().end())}};
  if (!s.context_tokens().empty()) j["context_tokens"] = std::vector<std::int64_t>(s.context_tokens().begin(), s.context_tokens().end());
  if (!s.items().empty()) {
    nlohmann::json items = nlohmann::json::array();
    for (const ItemRef& r : s.items()) items.push_back({r.sample, r.item});
    j["items"] = std::move(items);
  }
  return j;
}

inline nlohmann::json transfer_json(const Transfer& t) {
  return {{"from", t.from.value()}, {"to", t.to.value()}, {"producer", stage_ref_json(t.producer)},
          {"consumer", stage_ref_json(t.consumer)}, {"bytes", t.bytes.count()}};
}

inline nlohmann::json partition_json(const Partition& p) {
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& m : p.modules) {
    nlohmann::json chunks = nlohmann::json::array();
    for (const auto& c : m.chunks) chunks.push_back({{"first_layer", c.first_layer}, {"layer_count", c.layer_count}, {"rank", c.rank.value()}});
    modules.push_back({{"sub_microbatch_items", m.sub_microbatch_items}, {"chunks", std::move(chunks)}});
  }
  return {{"name", p.name}, {"ranks", p.ranks}, {"modules", std::move(modules)}};
}

inline constexpr std::int64_t i32_max = std::numeric_limits<std::int32_t>::max();

inline const nlohmann::json& array_value(const CheckedObject& o, const nlohmann::json& v, const std::string& path) {
  if (!v.is_array()) o.fail_at(path, "found " + json_type_name(v), "an array");
  return v;
}

inline std::vector<std::int64_t> int64_list(const CheckedObject& o, std::string_view key) {
  std::vector<std::int64_t> out;
  if (!o.has(key)) return out;
  const auto& a = o.array(key);
  for (std::size_t i = 0; i < a.size(); ++i)
    out.push_back(o.integer_value(a[i], o.child_path(key) + "/" + std::to_string(i), 0, std::numeric_limits<std::int64_t>::max()));
  return out;
}

inline Pass pass_from_name(const CheckedObject& o, const std::string& path, std::string_view name, bool allow_forward) {
  for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
    if (to_string(p) == name && (allow_forward || p != Pass::forward)) return p;
  o.fail_at(path, "unknown pass \"" + std::string(name) + "\"",
            allow_forward ? "forward, backward, backward_input or backward_weight" : "backward, backward_input or backward_weight");
}

inline StageRef stage_ref_from_json(const CheckedObject& parent, std::string_view key) {
  const CheckedObject o = parent.object(key, {"module", "chunk", "sub_microbatch", "pass"}, "a stage {module, chunk, sub_microbatch, pass}");
  StageRef s;
  s.module = ModuleId{static_cast<ModuleId::rep>(o.integer("module", 0, i32_max))};
  s.chunk = static_cast<int>(o.integer("chunk", 0, i32_max));
  s.sub_microbatch = SubMicrobatchId{static_cast<SubMicrobatchId::rep>(o.integer("sub_microbatch", 0, i32_max))};
  s.pass = pass_from_name(o, o.child_path("pass"), o.string("pass"), true);
  return s;
}

inline MemoryStrategy strategy_from_json(const CheckedObject& parent) {
  MemoryStrategy s;
  if (!parent.has("strategy")) return s;
  const CheckedObject o = parent.object("strategy", {"full_recompute", "selective_recompute", "offload"}, "a memory strategy");
  auto count = [&](std::string_view k) -> std::int16_t {
    return o.has(k) ? static_cast<std::int16_t>(o.integer(k, 0, std::numeric_limits<std::int16_t>::max())) : std::int16_t{0};
  };
  s.full_recompute = count("full_recompute");
  s.selective_recompute = count("selective_recompute");
  s.offload = count("offload");
  return s;
}

inline Action action_from_json(const nlohmann::json& j, const std::string& path, const std::string& file) {
  std::string op;
  if (j.is_object()) {
    const auto it = j.find("op");
    if (it == j.end())
      throw input_error("missing required key \"op\"", {.file = file, .path = path + "/op", .expected = "the action's kind"});
    if (!it->is_string())
      throw input_error("found " + json_type_name(*it), {.file = file, .path = path + "/op", .expected = "a string"});
    op = it->get<std::string>();
  }
  if (op == "send" || op == "recv" || op == "wait") {
    const CheckedObject o(j, path, file, {"op", "transfer"}, "an action");
    const TransferId t{static_cast<TransferId::rep>(o.integer("transfer", 0, i32_max))};
    if (op == "send") return Send{t};
    if (op == "recv") return Recv{t};
    return Wait{t};
  }
  const CheckedObject o(j, path, file, {"op", "module", "chunk", "sub_microbatch", "strategy"}, "an action");
  for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight}) {
    if (to_string(p) != op) continue;
    const ModuleId m{static_cast<ModuleId::rep>(o.integer("module", 0, i32_max))};
    const int c = static_cast<int>(o.integer("chunk", 0, i32_max));
    const SubMicrobatchId s{static_cast<SubMicrobatchId::rep>(o.integer("sub_microbatch", 0, i32_max))};
    const MemoryStrategy st = strategy_from_json(o);
    if (p == Pass::forward) return Forward{m, c, s, st};
    return Backward{m, c, s, st, p};
  }
  o.fail("op", "unknown action \"" + op + "\"", "forward, backward, backward_input, backward_weight, send, recv or wait");
}

}  // namespace detail

/// The plan as JSON (see the header comment).
[[nodiscard]] inline nlohmann::json to_json(const Plan& plan) {
  nlohmann::json smbs = nlohmann::json::array(), transfers = nlohmann::json::array(), ranks = nlohmann::json::array();
  for (const auto& s : plan.sub_microbatches) smbs.push_back(detail::sub_microbatch_json(s));
  for (const auto& t : plan.transfers) transfers.push_back(detail::transfer_json(t));
  for (const auto& list : plan.ranks) {
    nlohmann::json actions = nlohmann::json::array();
    for (const auto& a : list) actions.push_back(detail::action_json(a));
    ranks.push_back(std::move(actions));
  }
  return {{"version", Plan::format_version}, {"name", plan.name}, {"model", plan.model}, {"setup", plan.setup},
          {"microbatches", plan.microbatches}, {"partition", detail::partition_json(plan.partition)},
          {"sub_microbatches", std::move(smbs)}, {"transfers", std::move(transfers)}, {"ranks", std::move(ranks)}};
}

/// Reads a plan from JSON; `source` names it in errors (a file name, "<stdin>", ...).
[[nodiscard]] inline Plan plan_from_json(const nlohmann::json& j, std::string_view source) {
  using detail::CheckedObject;
  using detail::i32_max;
  const std::string file(source);
  const CheckedObject o(j, "", file,
                        {"version", "name", "model", "setup", "microbatches", "partition", "sub_microbatches", "transfers", "ranks"}, "a plan object");
  const auto version = o.integer("version", 0, std::numeric_limits<std::uint32_t>::max());
  if (version != Plan::format_version)
    o.fail("version", "unsupported plan format version " + std::to_string(version), "version " + std::to_string(Plan::format_version));
  Plan plan;
  plan.name = o.string("name");
  plan.model = o.string("model");
  plan.setup = o.string("setup");
  plan.microbatches = static_cast<int>(o.integer("microbatches", 0, i32_max));

  const CheckedObject po = o.object("partition", {"name", "ranks", "modules"}, "a partition object");
  plan.partition.name = po.string("name");
  plan.partition.ranks = static_cast<int>(po.integer("ranks", 1, i32_max));
  const auto& modules = po.array("modules");
  for (std::size_t m = 0; m < modules.size(); ++m) {
    const std::string mp = po.child_path("modules") + "/" + std::to_string(m);
    const CheckedObject mo(modules[m], mp, file, {"sub_microbatch_items", "chunks"}, "a module placement");
    ModulePlacement placement;
    placement.sub_microbatch_items = mo.integer("sub_microbatch_items", 0, std::numeric_limits<std::int64_t>::max());
    const auto& chunks = mo.array("chunks");
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const CheckedObject co(chunks[c], mo.child_path("chunks") + "/" + std::to_string(c), file, {"first_layer", "layer_count", "rank"}, "a chunk");
      placement.chunks.push_back(Chunk{static_cast<int>(co.integer("first_layer", 0, i32_max)), static_cast<int>(co.integer("layer_count", 0, i32_max)),
                                       RankId{static_cast<RankId::rep>(co.integer("rank", 0, i32_max))}});
    }
    plan.partition.modules.push_back(std::move(placement));
  }

  const auto& smbs = o.array("sub_microbatches");
  for (std::size_t s = 0; s < smbs.size(); ++s) {
    const CheckedObject so(smbs[s], o.child_path("sub_microbatches") + "/" + std::to_string(s), file,
                           {"module", "microbatch", "item_tokens", "context_tokens", "items"}, "a sub-microbatch");
    const ModuleId module{static_cast<ModuleId::rep>(so.integer("module", 0, i32_max))};
    const MicrobatchId mb{static_cast<MicrobatchId::rep>(so.integer("microbatch", 0, i32_max))};
    (void)so.array("item_tokens");
    auto tokens = detail::int64_list(so, "item_tokens");
    auto context = detail::int64_list(so, "context_tokens");
    std::vector<ItemRef> items;
    if (so.has("items")) {
      const auto& a = so.array("items");
      for (std::size_t i = 0; i < a.size(); ++i) {
        const std::string ip = so.child_path("items") + "/" + std::to_string(i);
        if (!a[i].is_array() || a[i].size() != 2) so.fail_at(ip, "found " + detail::json_type_name(a[i]) + " of the wrong shape", "[sample, item]");
        items.push_back(ItemRef{static_cast<std::int32_t>(so.integer_value(a[i][0], ip + "/0", 0, i32_max)),
                                static_cast<std::int32_t>(so.integer_value(a[i][1], ip + "/1", -1, i32_max))});
      }
    }
    plan.sub_microbatches.emplace_back(module, mb, std::move(tokens), std::move(context), std::move(items));
  }

  const auto& transfers = o.array("transfers");
  for (std::size_t t = 0; t < transfers.size(); ++t) {
    const CheckedObject to(transfers[t], o.child_path("transfers") + "/" + std::to_string(t), file, {"from", "to", "producer", "consumer", "bytes"},
                           "a transfer");
    Transfer tr;
    tr.from = RankId{static_cast<RankId::rep>(to.integer("from", 0, i32_max))};
    tr.to = RankId{static_cast<RankId::rep>(to.integer("to", 0, i32_max))};
    tr.producer = detail::stage_ref_from_json(to, "producer");
    tr.consumer = detail::stage_ref_from_json(to, "consumer");
    tr.bytes = Bytes{to.integer("bytes", 0, std::numeric_limits<std::int64_t>::max())};
    plan.transfers.push_back(tr);
  }

  const auto& ranks = o.array("ranks");
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const std::string rp = o.child_path("ranks") + "/" + std::to_string(r);
    const auto& list = detail::array_value(o, ranks[r], rp);
    std::vector<Action> actions;
    actions.reserve(list.size());
    for (std::size_t a = 0; a < list.size(); ++a) actions.push_back(detail::action_from_json(list[a], rp + "/" + std::to_string(a), file));
    plan.ranks.push_back(std::move(actions));
  }
  try {
    check_plan_limits(plan);
  } catch (const Error& e) {
    throw in_file(e, file);
  }
  return plan;
}

/// Parses plan JSON text (errors name `source_name`).
[[nodiscard]] inline Plan parse_plan(std::string_view text, std::string_view source_name) {
  return plan_from_json(detail::parse_json_text(text, source_name), source_name);
}

/// Writes the plan as JSON, one sub-microbatch, transfer or action per line. Error{input}
/// naming the file if it cannot be written.
inline void write_plan(const std::filesystem::path& path, const Plan& plan) {
  const nlohmann::json j = to_json(plan);
  std::string out = "{\n";
  bool first = true;
  for (const char* key : {"version", "name", "model", "setup", "microbatches", "partition", "sub_microbatches", "transfers", "ranks"}) {
    if (!first) out += ",\n";
    first = false;
    out += "  \"" + std::string(key) + "\": ";
    const auto& v = j.at(key);
    if (std::string_view(key) == "sub_microbatches" || std::string_view(key) == "transfers" || std::string_view(key) == "ranks") {
      out += "[";
      for (std::size_t i = 0; i < v.size(); ++i) {
        out += i == 0 ? "\n    " : ",\n    ";
        if (std::string_view(key) == "ranks") {
          out += "[";
          for (std::size_t a = 0; a < v[i].size(); ++a) out += (a == 0 ? "\n      " : ",\n      ") + v[i][a].dump();
          out += v[i].empty() ? "]" : "\n    ]";
        } else {
          out += v[i].dump();
        }
      }
      out += v.empty() ? "]" : "\n  ]";
    } else {
      out += v.dump();
    }
  }
  out += "\n}\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw input_error("cannot open the file for writing", {.file = path.string(), .expected = "a writable path"});
  f << out;
  f.flush();
  if (!f) throw input_error("cannot write the file", {.file = path.string(), .expected = "a writable path"});
}

/// Reads a plan file: JSON, or the binary form when the file starts with its magic "PWPL".
[[nodiscard]] inline Plan read_plan(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path);
  if (text.size() >= plan_binary_magic.size() && text.compare(0, 4, "PWPL") == 0) {
    std::vector<std::byte> bytes(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) bytes[i] = static_cast<std::byte>(text[i]);
    try {
      return plan_from_binary(bytes);
    } catch (const Error& e) {
      throw in_file(e, path.string());
    }
  }
  return parse_plan(text, path.string());
}


}  // namespace pipeweaver::io
