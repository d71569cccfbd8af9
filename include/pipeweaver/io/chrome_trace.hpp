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
#include <set>
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

namespace pipeweaver::io {

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

namespace detail {

/// Writes the trace's events into one string (see the header comment for the layout).
class ChromeTraceWriter {
 public:
  ChromeTraceWriter(const Plan& plan, const ModelSpec& model, const EmulationResult& result)
      : plan_(plan), model_(model), result_(result), P_(plan.rank_count()) {
    out_.reserve(256 + result.timeline.size() * 200);
    for (const auto& e : result.timeline)
      if (e.kind == TimelineEvent::Kind::compute) compute_of_[key(e.stage)] = &e;
  }

  std::string write() && {
    header();
    for (const auto& e : result_.timeline) {
      event(e);
      if (e.kind == TimelineEvent::Kind::transfer) flows(e);
    }
    out_ += "\n]}\n";
    return std::move(out_);
  }

 private:
  static constexpr int ranks_pid = 1, links_pid = 2;
  using Key = std::tuple<int, int, int, int>;
  static Key key(const StageRef& s) { return {s.module.value(), s.chunk, s.sub_microbatch.value(), static_cast<int>(s.pass)}; }

  void begin_event() {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += "\n{";
  }
  void meta(int pid, int tid, const std::string& name, int sort) {
    begin_event();
    out_ += "\"ph\":\"M\",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(tid) + ",\"name\":\"thread_name\",\"args\":{\"name\":";
    trace_json_string(out_, name);
    out_ += "}}";
    begin_event();
    out_ += "\"ph\":\"M\",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(tid) +
            ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":" + std::to_string(sort) + "}}";
  }

  /// The document's head, the two processes (ranks, links) and a named thread per rank and link.
  void header() {
    out_ += "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"plan\":";
    trace_json_string(out_, plan_.name);
    out_ += ",\"model\":";
    trace_json_string(out_, plan_.model);
    out_ += ",\"setup\":";
    trace_json_string(out_, plan_.setup);
    out_ += ",\"step_ms\":" + std::to_string(to_ms(result_.step_time));
    out_ += "},\"traceEvents\":[";
    begin_event();
    out_ += "\"ph\":\"M\",\"pid\":1,\"name\":\"process_name\",\"args\":{\"name\":\"ranks (compute streams)\"}}";
    begin_event();
    out_ += "\"ph\":\"M\",\"pid\":2,\"name\":\"process_name\",\"args\":{\"name\":\"links (transfers)\"}}";
    for (int r = 0; r < P_; ++r) meta(ranks_pid, r, "rank " + std::to_string(r), r);
    std::set<int> links;
    for (const auto& e : result_.timeline)
      if (e.kind == TimelineEvent::Kind::transfer) links.insert(e.rank.value() * P_ + e.peer.value());
    for (int link : links) meta(links_pid, link, "link " + std::to_string(link / P_) + "->" + std::to_string(link % P_), link);
  }

  /// One compute slice on its rank or one transfer slice on its link.
  void event(const TimelineEvent& e) {
    begin_event();
    const bool compute = e.kind == TimelineEvent::Kind::compute;
    const std::string name = compute ? stage_label(model_, e.stage) : "t" + std::to_string(e.transfer.value()) + " " + stage_label(model_, e.stage);
    out_ += "\"ph\":\"X\",\"name\":";
    trace_json_string(out_, name);
    out_ += ",\"cat\":";
    out_ += compute ? (e.stage.pass == Pass::forward ? "\"forward\"" : "\"backward\"") : "\"transfer\"";
    out_ += ",\"pid\":" + std::to_string(compute ? ranks_pid : links_pid);
    out_ += ",\"tid\":" + std::to_string(compute ? e.rank.value() : e.rank.value() * P_ + e.peer.value());
    out_ += ",\"ts\":";
    trace_json_micros(out_, e.start);
    out_ += ",\"dur\":";
    trace_json_micros(out_, e.end - e.start);
    out_ += ",\"args\":{\"module\":";
    trace_json_string(out_, module_label(model_, e.stage.module));
    out_ += ",\"chunk\":" + std::to_string(e.stage.chunk) + ",\"sub_microbatch\":" + std::to_string(e.stage.sub_microbatch.value());
    if (e.stage.sub_microbatch.valid() && e.stage.sub_microbatch.index() < plan_.sub_microbatches.size()) {
      const auto& smb = plan_.sub_microbatches[e.stage.sub_microbatch.index()];
      out_ += ",\"microbatch\":" + std::to_string(smb.microbatch().value()) + ",\"items\":" + std::to_string(smb.item_tokens().size()) +
              ",\"tokens\":" + std::to_string(smb.total_tokens());
    }
    out_ += ",\"position\":" + std::to_string(e.action);
    if (compute) {
      if (e.stage.pass == Pass::forward) out_ += ",\"activation_bytes\":" + std::to_string(e.bytes.count());
    } else {
      out_ += ",\"bytes\":" + std::to_string(e.bytes.count()) + ",\"from\":" + std::to_string(e.rank.value()) +
              ",\"to\":" + std::to_string(e.peer.value());
    }
    out_ += "}}";
  }

  /// Flow arrows of a transfer: producing stage -> link slice -> consuming stage.
  void flows(const TimelineEvent& e) {
    const Transfer& tr = plan_.transfers.at(e.transfer.index());
    const auto prod = compute_of_.find(key(tr.producer));
    const auto cons = compute_of_.find(key(tr.consumer));
    const std::string id = std::to_string(e.transfer.value());
    if (prod != compute_of_.end()) {
      begin_event();
      out_ += "\"ph\":\"s\",\"name\":\"transfer\",\"cat\":\"transfer\",\"id\":" + id + ",\"pid\":1,\"tid\":" + std::to_string(tr.from.value()) +
              ",\"ts\":";
      trace_json_micros(out_, prod->second->start);
      out_ += "}";
    }
    if (cons != compute_of_.end()) {
      begin_event();
      out_ += "\"ph\":\"f\",\"bp\":\"e\",\"name\":\"transfer\",\"cat\":\"transfer\",\"id\":" + id + ",\"pid\":1,\"tid\":" +
              std::to_string(tr.to.value()) + ",\"ts\":";
      trace_json_micros(out_, cons->second->start);
      out_ += "}";
    }
  }

  const Plan& plan_;
  const ModelSpec& model_;
  const EmulationResult& result_;
  int P_;
  std::string out_;
  bool first_ = true;
  std::map<Key, const TimelineEvent*> compute_of_;  ///< where each stage ran, for the flow arrows
};

}  // namespace detail

/// The trace as a JSON string.
[[nodiscard]] inline std::string chrome_trace_json(const Plan& plan, const ModelSpec& model, const EmulationResult& result) {
  detail::require_emulation_timeline(plan, result, "a Chrome trace");
  return detail::ChromeTraceWriter(plan, model, result).write();
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

}  // namespace pipeweaver::io
