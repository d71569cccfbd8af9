#pragma once
// An SVG timeline of an emulated plan, meant to be put in a paper as is: one row per rank, each
// compute action a box in its module's color (forward light, backward saturated, the
// weight-gradient part of a split backward dark), idle time (bubbles) as the gray row
// background, microbatch numbers in boxes wide enough to hold them, a time axis in ms with
// light gridlines, per-rank busy share and peak memory at the right, a legend, and the step
// time in the title. Needs EmulateOptions::record_timeline.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/io/chrome_trace.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver::io {

struct SvgTimelineOptions {
  int width = 1200;           ///< pixels
  int row_height = 26;        ///< pixels per rank row
  bool label_microbatches = true;
  std::string title{};          ///< default: "<plan> · <model> · <setup> — step <t> ms"
};

namespace detail {

struct SvgRgb {
  int r, g, b;
};
[[nodiscard]] inline SvgRgb svg_mix(SvgRgb a, SvgRgb b, double t) {
  auto m = [t](int x, int y) { return static_cast<int>(std::lround(x + (y - x) * t)); };
  return {m(a.r, b.r), m(a.g, b.g), m(a.b, b.b)};
}
[[nodiscard]] inline std::string svg_hex(SvgRgb c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c.r, c.g, c.b);
  return buf;
}
/// Module color: backbone blue, encoders orange/red/brown, generators green/purple
/// (seaborn "deep": distinct, print-friendly).
[[nodiscard]] inline SvgRgb svg_module_color(const ModelSpec& model, ModuleId m) {
  static constexpr SvgRgb blue{76, 114, 176}, orange{221, 132, 82}, green{85, 168, 104}, purple{129, 114, 179},
      red{196, 78, 82}, brown{147, 120, 96}, gray{140, 140, 140};
  if (!m.valid() || m.index() >= model.modules.size()) return gray;
  int same_role_before = 0;
  for (std::size_t i = 0; i < m.index(); ++i) same_role_before += model.modules[i].role == model.modules[m.index()].role;
  switch (model.modules[m.index()].role) {
    case ModuleRole::backbone: return same_role_before == 0 ? blue : purple;
    case ModuleRole::encoder: {
      static constexpr SvgRgb enc[] = {orange, red, brown};
      return enc[same_role_before % 3];
    }
    case ModuleRole::generator: return same_role_before == 0 ? green : purple;
  }
  return gray;
}
[[nodiscard]] inline SvgRgb svg_pass_color(SvgRgb base, Pass p) {
  static constexpr SvgRgb white{255, 255, 255}, black{0, 0, 0};
  switch (p) {
    case Pass::forward: return svg_mix(base, white, 0.5);
    case Pass::backward:
    case Pass::backward_input: return base;
    case Pass::backward_weight: return svg_mix(base, black, 0.3);
  }
  return base;
}
inline void svg_xml_text(std::string& out, std::string_view s) {
  for (const char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
}
[[nodiscard]] inline std::string svg_fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
/// 1, 2 or 5 times a power of ten, giving about `target` ticks over `span`.
[[nodiscard]] inline double svg_nice_step(double span, int target) {
  if (span <= 0) return 1;
  const double raw = span / target;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double k : {1.0, 2.0, 5.0, 10.0})
    if (k * p >= raw) return k * p;
  return 10 * p;
}

}  // namespace detail

/// The timeline as an SVG document.
[[nodiscard]] inline std::string svg_timeline(const Plan& plan, const ModelSpec& model, const EmulationResult& result,
                                              const SvgTimelineOptions& options = {}) {
  using detail::svg_fixed;
  detail::require_emulation_timeline(plan, result, "an SVG timeline");
  const int P = plan.rank_count();
  const double left = 64, right = 170, top = 62, gap = 8;
  const double row = std::max(options.row_height, 8);
  const double W = std::max(options.width, 400);
  const double plot_w = W - left - right;
  const double rows_h = P * row + (P > 0 ? (P - 1) * gap : 0);
  const double step_ms = to_ms(result.step_time);
  const double span_ns = static_cast<double>(std::max<std::int64_t>(result.step_time.count(), 1));
  auto x_of = [&](Nanoseconds t) { return left + plot_w * static_cast<double>(t.count()) / span_ns; };
  auto y_of = [&](int r) { return top + r * (row + gap); };

  // Legend entries: modules and passes present.
  std::set<std::pair<int, int>> present;  // (module, pass)
  for (const auto& e : result.timeline)
    if (e.kind == TimelineEvent::Kind::compute) present.insert({e.stage.module.value(), static_cast<int>(e.stage.pass)});
  const double axis_y = top + rows_h + 10;
  const double legend_y = axis_y + 46;
  const int legend_per_row = std::max(1, static_cast<int>((W - left) / 190));
  const int legend_items = static_cast<int>(present.size()) + 1;
  const double H = legend_y + ((legend_items + legend_per_row - 1) / legend_per_row) * 20 + 12;

  std::string out;
  out.reserve(4096 + result.timeline.size() * 160);
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + svg_fixed(W, 0) + "\" height=\"" + svg_fixed(H, 0) +
         "\" viewBox=\"0 0 " + svg_fixed(W, 0) + " " + svg_fixed(H, 0) +
         "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  out += "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";

  // Title and subtitle.
  std::string title = options.title;
  if (title.empty()) {
    title = plan.name.empty() ? std::string("plan") : plan.name;
    if (!plan.model.empty()) title += " \u00b7 " + plan.model;
    if (!plan.setup.empty()) title += " \u00b7 " + plan.setup;
    title += " \u2014 step " + svg_fixed(step_ms, 2) + " ms";
  }
  out += "<text x=\"" + svg_fixed(left, 1) + "\" y=\"24\" font-size=\"16\" font-weight=\"bold\" fill=\"#222\">";
  detail::svg_xml_text(out, title);
  out += "</text>\n";
  {
    Nanoseconds busy{0};
    for (const auto& r : result.ranks) busy += r.busy;
    const double bubble = result.step_time.count() > 0 && P > 0
                              ? 100.0 * (1.0 - static_cast<double>(busy.count()) / (static_cast<double>(result.step_time.count()) * P))
                              : 0.0;
    std::string sub = std::to_string(P) + " ranks \u00b7 " + std::to_string(plan.microbatches) + " microbatches \u00b7 " +
                      std::to_string(plan.sub_microbatches.size()) + " sub-microbatches \u00b7 bubbles " + svg_fixed(bubble, 1) +
                      "% \u00b7 peak memory " + svg_fixed(to_gib(result.peak_memory()), 1) + " GiB of " +
                      svg_fixed(to_gib(result.memory_capacity), 1) + " GiB" + (result.fits_memory() ? "" : " (does not fit)");
    out += "<text x=\"" + svg_fixed(left, 1) + "\" y=\"44\" font-size=\"12\" fill=\"#555\">";
    detail::svg_xml_text(out, sub);
    out += "</text>\n";
  }

  // Rows: the gray background is idle time.
  for (int r = 0; r < P; ++r) {
    out += "<rect x=\"" + svg_fixed(left, 1) + "\" y=\"" + svg_fixed(y_of(r), 1) + "\" width=\"" + svg_fixed(plot_w, 1) + "\" height=\"" +
           svg_fixed(row, 1) + "\" fill=\"#f1f1f1\" stroke=\"#cfcfcf\" stroke-width=\"0.8\"/>\n";
    out += "<text x=\"" + svg_fixed(left - 8, 1) + "\" y=\"" + svg_fixed(y_of(r) + row / 2 + 4, 1) +
           "\" font-size=\"12\" text-anchor=\"end\" fill=\"#222\">rank " + std::to_string(r) + "</text>\n";
    if (static_cast<std::size_t>(r) < result.ranks.size()) {
      const auto& rs = result.ranks[static_cast<std::size_t>(r)];
      const double busy_pct = result.step_time.count() > 0
                                  ? 100.0 * static_cast<double>(rs.busy.count()) / static_cast<double>(result.step_time.count())
                                  : 0.0;
      out += "<text x=\"" + svg_fixed(left + plot_w + 10, 1) + "\" y=\"" + svg_fixed(y_of(r) + row / 2 + 4, 1) +
             "\" font-size=\"11\" fill=\"" + (rs.fits_memory ? "#555" : "#c00") + "\">" + svg_fixed(busy_pct, 0) +
             "% busy \u00b7 " + svg_fixed(to_gib(rs.peak_memory), 1) + " GiB</text>\n";
    }
  }
  // Gridlines over the idle background, under the boxes.
  const double tick = detail::svg_nice_step(step_ms, 10);
  const int decimals = tick >= 1 ? 0 : (tick >= 0.1 ? 1 : 2);
  out += "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n";
  for (double t = 0; t <= step_ms + 1e-9; t += tick) {
    const double x = left + plot_w * (t / std::max(step_ms, 1e-12));
    out += "<line x1=\"" + svg_fixed(x, 1) + "\" y1=\"" + svg_fixed(top - 4, 1) + "\" x2=\"" + svg_fixed(x, 1) + "\" y2=\"" +
           svg_fixed(axis_y, 1) + "\"/>\n";
  }
  out += "</g>\n";
  // Compute boxes.
  // A thin white outline separates adjacent boxes, except boxes too narrow to keep their color.
  out += "<g>\n";
  for (const auto& e : result.timeline) {
    if (e.kind != TimelineEvent::Kind::compute || e.rank.value() < 0 || e.rank.value() >= P) continue;
    const double x0 = x_of(e.start), x1 = x_of(e.end);
    const detail::SvgRgb c = detail::svg_pass_color(detail::svg_module_color(model, e.stage.module), e.stage.pass);
    out += "<rect x=\"" + svg_fixed(x0, 2) + "\" y=\"" + svg_fixed(y_of(e.rank.value()), 1) + "\" width=\"" +
           svg_fixed(std::max(x1 - x0, 0.3), 2) + "\" height=\"" + svg_fixed(row, 1) + "\" fill=\"" + detail::svg_hex(c) +
           (x1 - x0 >= 4.0 ? "\" stroke=\"#ffffff\" stroke-width=\"0.6" : "") + "\"><title>";
    detail::svg_xml_text(out, stage_label(model, e.stage) + " \u00b7 " + svg_fixed(to_ms(e.start), 3) + "\u2013" +
                              svg_fixed(to_ms(e.end), 3) + " ms");
    out += "</title></rect>\n";
  }
  out += "</g>\n";
  if (options.label_microbatches) {
    out += "<g font-size=\"9\" text-anchor=\"middle\">\n";
    for (const auto& e : result.timeline) {
      if (e.kind != TimelineEvent::Kind::compute || e.rank.value() < 0 || e.rank.value() >= P) continue;
      if (!e.stage.sub_microbatch.valid() || e.stage.sub_microbatch.index() >= plan.sub_microbatches.size()) continue;
      const std::string label = std::to_string(plan.sub_microbatches[e.stage.sub_microbatch.index()].microbatch().value());
      const double x0 = x_of(e.start), x1 = x_of(e.end);
      if (x1 - x0 < 6.0 * static_cast<double>(label.size()) + 3) continue;
      const bool light = e.stage.pass == Pass::forward;
      out += "<text x=\"" + svg_fixed((x0 + x1) / 2, 2) + "\" y=\"" + svg_fixed(y_of(e.rank.value()) + row / 2 + 3, 1) +
             "\" fill=\"" + (light ? "#333" : "#fff") + "\">" + label + "</text>\n";
    }
    out += "</g>\n";
  }
  // Axis.
  out += "<line x1=\"" + svg_fixed(left, 1) + "\" y1=\"" + svg_fixed(axis_y, 1) + "\" x2=\"" + svg_fixed(left + plot_w, 1) + "\" y2=\"" +
         svg_fixed(axis_y, 1) + "\" stroke=\"#333\" stroke-width=\"1\"/>\n";
  for (double t = 0; t <= step_ms + 1e-9; t += tick) {
    const double x = left + plot_w * (t / std::max(step_ms, 1e-12));
    out += "<line x1=\"" + svg_fixed(x, 1) + "\" y1=\"" + svg_fixed(axis_y, 1) + "\" x2=\"" + svg_fixed(x, 1) + "\" y2=\"" +
           svg_fixed(axis_y + 4, 1) + "\" stroke=\"#333\" stroke-width=\"1\"/>\n";
    out += "<text x=\"" + svg_fixed(x, 1) + "\" y=\"" + svg_fixed(axis_y + 16, 1) +
           "\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">" + svg_fixed(t, decimals) + "</text>\n";
  }
  out += "<text x=\"" + svg_fixed(left + plot_w / 2, 1) + "\" y=\"" + svg_fixed(axis_y + 32, 1) +
         "\" font-size=\"12\" text-anchor=\"middle\" fill=\"#333\">time (ms)</text>\n";
  // Legend.
  int k = 0;
  auto legend = [&](const std::string& fill, const std::string& text) {
    const double x = left + (k % legend_per_row) * 190.0, y = legend_y + (k / legend_per_row) * 20.0;
    out += "<rect x=\"" + svg_fixed(x, 1) + "\" y=\"" + svg_fixed(y - 10, 1) + "\" width=\"14\" height=\"12\" fill=\"" + fill +
           "\" stroke=\"#cfcfcf\" stroke-width=\"0.8\"/>\n";
    out += "<text x=\"" + svg_fixed(x + 20, 1) + "\" y=\"" + svg_fixed(y, 1) + "\" font-size=\"12\" fill=\"#222\">";
    detail::svg_xml_text(out, text);
    out += "</text>\n";
    ++k;
  };
  for (const auto& [m, p] : present) {
    const Pass pass = static_cast<Pass>(p);
    const char* what = pass == Pass::forward ? "forward" : pass == Pass::backward ? "backward"
                       : pass == Pass::backward_input ? "backward (input grad)" : "backward (weight grad)";
    legend(detail::svg_hex(detail::svg_pass_color(detail::svg_module_color(model, ModuleId{m}), pass)),
           module_label(model, ModuleId{m}) + " " + what);
  }
  legend("#f1f1f1", "idle (bubble)");
  out += "</svg>\n";
  return out;
}

/// Writes the SVG to `path`; Error{input} naming the file when it cannot be written.
inline void write_svg_timeline(const std::filesystem::path& path, const Plan& plan, const ModelSpec& model,
                               const EmulationResult& result, const SvgTimelineOptions& options = {}) {
  const std::string text = svg_timeline(plan, model, result, options);
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f)
    throw input_error("cannot write the SVG timeline", {.file = path.string(), .expected = "a writable file path"});
}

}  // namespace pipeweaver::io
