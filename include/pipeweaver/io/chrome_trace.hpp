#pragma once
// Chrome trace JSON (the Trace Event Format; opens in Perfetto and chrome://tracing) of an
// emulated plan: process "ranks" with one track (tid) per rank's compute stream, process
// "links" with one track per directed link that carries a transfer, an "X" slice per compute
// action ("F vit c2 s17") and per transfer, and a flow arrow (ph "s" -> "f") per transfer from
// its producing stage to its consuming stage. Times are microseconds (Chrome's unit) with
// nanosecond precision. Needs EmulateOptions::record_timeline.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

namespace detail {

inline void trace_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(ch)));
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

/// Nanoseconds as microseconds with three decimals, exactly (no floating point).
inline void trace_json_micros(std::string& out, Nanoseconds t) {
  const std::int64_t ns = t.count();
  const std::int64_t whole = ns / 1000, frac = (ns < 0 ? -ns : ns) % 1000;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%lld.%03lld", (ns < 0 && whole == 0) ? "-" : "", static_cast<long long>(whole),
                static_cast<long long>(frac));
  out += buf;
}

inline void require_emulation_timeline(const Plan& plan, const EmulationResult& result, const char* what) {
  bool has_actions = false;
  for (const auto& r : plan.ranks) has_actions = has_actions || !r.empty();
  if (has_actions && result.timeline.empty())
    throw input_error(std::string(what) + " needs the emulation's timeline", {.expected = "emulate(..., EmulateOptions{.record_timeline = true})"});
}

}  // namespace detail

/// The trace as a JSON string.
[[nodiscard]] inline std::string chrome_trace_json(const Plan& plan, const ModelSpec& model, const EmulationResult& result) {
  detail::require_emulation_timeline(plan, result, "a Chrome trace");
  constexpr int ranks_pid = 1, links_pid = 2;
  std::string out;
  out.reserve(256 + result.timeline.size() * 200);
  out += "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"plan\":";
  detail::trace_json_string(out, plan.name);
  out += ",\"model\":";
  detail::trace_json_string(out, plan.model);
  out += ",\"setup\":";
  detail::trace_json_string(out, plan.setup);
  out += ",\"step_ms\":" + std::to_string(to_ms(result.step_time));
  out += "},\"traceEvents\":[";
  bool first = true;
  auto begin_event = [&] {
    if (!first) out += ',';
    first = false;
    out += "\n{";
  };
  auto meta = [&](int pid, int tid, const char* kind, const std::string& name, int sort) {
    begin_event();
    out += "\"ph\":\"M\",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(tid) + ",\"name\":\"" + kind +
           "\",\"args\":{\"name\":";
    detail::trace_json_string(out, name);
    out += "}}";
    begin_event();
    out += "\"ph\":\"M\",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(tid) +
           ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":" + std::to_string(sort) + "}}";
  };
  begin_event();
  out += "\"ph\":\"M\",\"pid\":1,\"name\":\"process_name\",\"args\":{\"name\":\"ranks (compute streams)\"}}";
  begin_event();
  out += "\"ph\":\"M\",\"pid\":2,\"name\":\"process_name\",\"args\":{\"name\":\"links (transfers)\"}}";
  const int P = plan.rank_count();
  for (int r = 0; r < P; ++r) meta(ranks_pid, r, "thread_name", "rank " + std::to_string(r), r);

  // Where each stage ran, for the flow arrows.
  std::map<std::tuple<int, int, int, int>, const TimelineEvent*> compute_of;
  auto key = [](const StageRef& s) {
    return std::tuple{s.module.value(), s.chunk, s.sub_microbatch.value(), static_cast<int>(s.pass)};
  };
  std::map<int, bool> links;
  for (const auto& e : result.timeline) {
    if (e.kind == TimelineEvent::Kind::compute) compute_of[key(e.stage)] = &e;
    else links[e.rank.value() * P + e.peer.value()] = true;
  }
  for (const auto& [link, used] : links)
    meta(links_pid, link, "thread_name", "link " + std::to_string(link / P) + "->" + std::to_string(link % P), link);

  for (const auto& e : result.timeline) {
    begin_event();
    const bool compute = e.kind == TimelineEvent::Kind::compute;
    const std::string name = compute ? stage_label(model, e.stage)
                                     : "t" + std::to_string(e.transfer.value()) + " " + stage_label(model, e.stage);
    out += "\"ph\":\"X\",\"name\":";
    detail::trace_json_string(out, name);
    out += ",\"cat\":";
    out += compute ? (e.stage.pass == Pass::forward ? "\"forward\"" : "\"backward\"") : "\"transfer\"";
    out += ",\"pid\":" + std::to_string(compute ? ranks_pid : links_pid);
    out += ",\"tid\":" + std::to_string(compute ? e.rank.value() : e.rank.value() * P + e.peer.value());
    out += ",\"ts\":";
    detail::trace_json_micros(out, e.start);
    out += ",\"dur\":";
    detail::trace_json_micros(out, e.end - e.start);
    out += ",\"args\":{\"module\":";
    detail::trace_json_string(out, module_label(model, e.stage.module));
    out += ",\"chunk\":" + std::to_string(e.stage.chunk) + ",\"sub_microbatch\":" + std::to_string(e.stage.sub_microbatch.value());
    if (e.stage.sub_microbatch.valid() && e.stage.sub_microbatch.index() < plan.sub_microbatches.size()) {
      const auto& smb = plan.sub_microbatches[e.stage.sub_microbatch.index()];
      out += ",\"microbatch\":" + std::to_string(smb.microbatch().value()) + ",\"items\":" +
             std::to_string(smb.item_tokens().size()) + ",\"tokens\":" + std::to_string(smb.total_tokens());
    }
    out += ",\"position\":" + std::to_string(e.action);
    if (compute) {
      if (e.stage.pass == Pass::forward) out += ",\"activation_bytes\":" + std::to_string(e.bytes.count());
    } else {
      out += ",\"bytes\":" + std::to_string(e.bytes.count()) + ",\"from\":" + std::to_string(e.rank.value()) +
             ",\"to\":" + std::to_string(e.peer.value());
    }
    out += "}}";
    if (compute) continue;
    // Flow: producing stage -> link slice -> consuming stage.
    const Transfer& tr = plan.transfers.at(e.transfer.index());
    const auto prod = compute_of.find(key(tr.producer));
    const auto cons = compute_of.find(key(tr.consumer));
    const std::string id = std::to_string(e.transfer.value());
    if (prod != compute_of.end()) {
      begin_event();
      out += "\"ph\":\"s\",\"name\":\"transfer\",\"cat\":\"transfer\",\"id\":" + id + ",\"pid\":1,\"tid\":" +
             std::to_string(tr.from.value()) + ",\"ts\":";
      detail::trace_json_micros(out, prod->second->start);
      out += "}";
    }
    if (cons != compute_of.end()) {
      begin_event();
      out += "\"ph\":\"f\",\"bp\":\"e\",\"name\":\"transfer\",\"cat\":\"transfer\",\"id\":" + id +
             ",\"pid\":1,\"tid\":" + std::to_string(tr.to.value()) + ",\"ts\":";
      detail::trace_json_micros(out, cons->second->start);
      out += "}";
    }
  }
  out += "\n]}\n";
  return out;
}

/// Writes the trace to `path`; Error{input} naming the file when it cannot be written.
inline void write_chrome_trace(const std::filesystem::path& path, const Plan& plan, const ModelSpec& model,
                               const EmulationResult& result) {
  const std::string text = chrome_trace_json(plan, model, result);
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f)
    throw input_error("cannot write the Chrome trace", {.file = path.string(), .expected = "a writable file path"});
}

}  // namespace pipeweaver
