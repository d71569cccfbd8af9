// Convergence of the schedule search: quality vs search time on one step (default vlm-l /
// vlm-web-mix / h800-tp8-pp8, seed 1, step 0, DIP partition), from MctsResult::trace (the best
// score after every round: score = lower_bound / step_time, so step = lower_bound / score).
// Runs the search with a long budget (default 30 s), a short one (default 1 s) and a tiny one
// (default 100 ms) on the same step and thread count, prints each with the best seed order's
// step (the search's state once the seeds are scored: what MCTS adds is the rest) and the trace,
// reports whether the short and tiny budgets' plans are within 3% and 1% of the long one's, and
// writes an SVG plot (step / lower bound vs seconds, log x). Step / tight bound uses the tight
// bound of this step and partition (emulate/lower_bound.hpp); the plot keeps the classic one.
//
// Usage: convergence [--model F --dataset F --setup F] [--seed N] [--step K] [--threads T]
//                    [--long-ms T] [--short-ms T] [--tiny-ms T] [--svg FILE] [--csv FILE]
//                    [--max-tree-nodes N]
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/search/schedule_search.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

std::string arg(int argc, char** argv, const char* name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

struct Series {
  std::string label;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (seconds, step / lower bound)
};

/// A small line plot: log10 x from 10 ms to the longest time, linear y.
void write_svg(const std::string& path, const std::string& title, const std::vector<Series>& series, double y_ref) {
  const double W = 760, H = 440, L = 70, R = 20, T = 40, B = 50;
  double x_max = 1, y_min = 1e9, y_max = 0;
  for (const auto& s : series)
    for (auto [x, y] : s.points) {
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  const double x_min = 0.01;
  y_min = std::min(y_min, y_ref) - 0.005;
  y_max = std::max(y_max, y_ref) + 0.005;
  auto px = [&](double x) { return L + (std::log10(std::max(x, x_min)) - std::log10(x_min)) / (std::log10(x_max) - std::log10(x_min)) * (W - L - R); };
  auto py = [&](double y) { return T + (y_max - y) / (y_max - y_min) * (H - T - B); };
  std::ofstream f(path);
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  f << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  f << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << title << "</text>\n";
  // Axes and grid.
  f << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  f << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (double x = x_min; x <= x_max * 1.0001; x *= 10) {
    f << "<line x1=\"" << px(x) << "\" y1=\"" << T << "\" x2=\"" << px(x) << "\" y2=\"" << H - B << "\" stroke=\"#ddd\"/>\n";
    char buf[32];
    std::snprintf(buf, sizeof buf, x < 1 ? "%.2g s" : "%.0f s", x);
    f << "<text x=\"" << px(x) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << buf << "</text>\n";
  }
  const double y_step = (y_max - y_min) > 0.1 ? 0.02 : 0.01;
  for (double y = std::ceil(y_min / y_step) * y_step; y <= y_max; y += y_step) {
    f << "<line x1=\"" << L << "\" y1=\"" << py(y) << "\" x2=\"" << W - R << "\" y2=\"" << py(y) << "\" stroke=\"#eee\"/>\n";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", y);
    f << "<text x=\"" << L - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << buf << "</text>\n";
  }
  f << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">search time (s, log scale)</text>\n";
  f << "<text x=\"16\" y=\"" << (T + H - B) / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " << (T + H - B) / 2
    << ")\">best step time / lower bound</text>\n";
  // 1.03 x the long run's final value: the "within 3%" line.
  f << "<line x1=\"" << L << "\" y1=\"" << py(y_ref) << "\" x2=\"" << W - R << "\" y2=\"" << py(y_ref)
    << "\" stroke=\"#c33\" stroke-dasharray=\"5,4\"/>\n";
  f << "<text x=\"" << L + 6 << "\" y=\"" << py(y_ref) - 4 << "\" text-anchor=\"start\" fill=\"#c33\">long run's final + 3%</text>\n";
  double legend_y = H - B - 14 - 18.0 * static_cast<double>(series.size() - 1);  // bottom left: the curves end bottom right
  const double legend_x = L + 40 + 190;
  for (const auto& s : series) {
    if (s.points.empty()) continue;
    f << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\" points=\"";
    for (std::size_t i = 0; i < s.points.size(); ++i) {
      // Step plot: the best so far holds until the next improvement.
      if (i > 0) f << px(s.points[i].first) << ',' << py(s.points[i - 1].second) << ' ';
      f << px(s.points[i].first) << ',' << py(s.points[i].second) << ' ';
    }
    f << "\"/>\n";
    f << "<line x1=\"" << legend_x - 190 << "\" y1=\"" << legend_y << "\" x2=\"" << legend_x - 165 << "\" y2=\"" << legend_y << "\" stroke=\"" << s.color
      << "\" stroke-width=\"2\"/><text x=\"" << legend_x - 160 << "\" y=\"" << legend_y + 4 << "\">" << s.label << "</text>\n";
    legend_y += 18;
  }
  f << "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string dir = PIPEWEAVER_EXAMPLE_WORKLOADS;
  const std::string model_path = arg(argc, argv, "--model", dir + "/models/vlm-l.json");
  const std::string dataset_path = arg(argc, argv, "--dataset", dir + "/datasets/vlm-web-mix.json");
  const std::string setup_path = arg(argc, argv, "--setup", dir + "/setups/h800-tp8-pp8.json");
  const auto seed = static_cast<std::uint64_t>(std::stoull(arg(argc, argv, "--seed", "1")));
  const int step = std::stoi(arg(argc, argv, "--step", "0"));
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));
  const double long_ms = std::stod(arg(argc, argv, "--long-ms", "30000"));
  const double short_ms = std::stod(arg(argc, argv, "--short-ms", "1000"));
  const double tiny_ms = std::stod(arg(argc, argv, "--tiny-ms", "100"));
  const std::string svg = arg(argc, argv, "--svg", "convergence.svg");
  const std::string csv = arg(argc, argv, "--csv", "");
  const auto max_tree_nodes = static_cast<std::size_t>(std::stoull(arg(argc, argv, "--max-tree-nodes", "200000")));

  const pw::ModelSpec model = pw::io::read_model(model_path);
  const pw::DatasetSpec dataset = pw::io::read_dataset(dataset_path);
  const pw::Setup setup = pw::io::read_setup(setup_path);
  const pw::AnalyticCostModel cost{model, setup};
  const pw::Batch batch = pw::sample_step(model, dataset, setup, seed, step);
  const pw::Partition partition = pw::dip_partition(model, setup, cost, batch).partition;
  const auto smbs = pw::split(model, partition, batch);
  const pw::StageGraph graph = pw::build_stage_graph(model, partition, smbs);
  pw::StageCostCache<pw::AnalyticCostModel> cache(cost, model);

  auto run = [&](double budget_ms) {
    pw::ScheduleSearchOptions o;
    o.mcts.max_iterations = 0;
    o.mcts.time_budget = std::chrono::nanoseconds(static_cast<std::int64_t>(budget_ms * 1e6));
    o.mcts.threads = threads;
    o.mcts.seed = seed;
    o.mcts.max_tree_nodes = max_tree_nodes;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = pw::search_schedule(model, setup, partition, smbs, graph, cache, o);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("budget %.0f ms: step %.1f ms, lower bound %.1f ms, step/LB %.4f, feasible %d, found by %s, %lld iterations, "
                "%lld rollouts, tree %zu nodes, wall %.2f s\n",
                budget_ms, pw::to_ms(r.step_time), pw::to_ms(r.bound.value),
                static_cast<double>(r.step_time.count()) / static_cast<double>(r.bound.value.count()), r.feasible ? 1 : 0,
                r.found_by.c_str(), static_cast<long long>(r.search.iterations), static_cast<long long>(r.search.rollouts),
                r.search.tree_nodes, wall);
    return r;
  };
  std::printf("%s / %s / %s, seed %llu step %d, %zu stage nodes, %d threads\n", model.name.c_str(), dataset.name.c_str(),
              setup.name.c_str(), static_cast<unsigned long long>(seed), step, graph.nodes.size(), threads);
  const auto tiny_run = run(tiny_ms);
  const auto short_run = run(short_ms);
  const auto long_run = run(long_ms);
  std::printf("\n%-12s %12s %12s %14s %12s %12s\n", "budget", "best seed ms", "step ms", "seed / search", "step / tight",
              "vs longest");
  for (const auto* r : {&tiny_run, &short_run, &long_run}) {
    const double seed_ms = pw::to_ms(r->bound.value) / r->search.trace.front().best_score;  // the seeds' best, from its score
    const double step_ms = pw::to_ms(r->step_time);
    std::printf("%-12s %12.1f %12.1f %14.4f %12.4f %+11.2f%%\n",
                (std::to_string(static_cast<long long>(r == &tiny_run ? tiny_ms : r == &short_run ? short_ms : long_ms)) + " ms").c_str(),
                seed_ms, step_ms, seed_ms / step_ms, step_ms / pw::to_ms(r->bound.tight),
                100 * (static_cast<double>(r->step_time.count()) / static_cast<double>(long_run.step_time.count()) - 1.0));
  }

  auto series_of = [&](const pw::ScheduleSearchResult& r, std::string label, std::string color) {
    Series s{std::move(label), std::move(color), {}};
    double last = -1;
    for (const auto& p : r.search.trace) {
      if (p.best_score <= 0) continue;
      const double ratio = 1.0 / p.best_score;  // step / lower bound
      const double sec = std::chrono::duration<double>(p.elapsed).count();
      if (ratio != last || &p == &r.search.trace.back()) s.points.push_back({std::max(sec, 0.01), ratio});
      last = ratio;
    }
    return s;
  };
  const Series ls = series_of(long_run, "budget " + std::to_string(static_cast<int>(long_ms / 1000)) + " s", "#1f77b4");
  const Series ss = series_of(short_run, "budget " + std::to_string(static_cast<int>(short_ms / 1000)) + " s (separate run)", "#ff7f0e");
  std::printf("\ntrace of the long run (improvements): seconds, rollouts, step/LB, step ms\n");
  for (const auto& p : long_run.search.trace)
    if (&p == &long_run.search.trace.front() || &p == &long_run.search.trace.back() ||
        p.best_score != (&p)[-1].best_score)
      std::printf("  %8.3f  %7lld  %.4f  %.1f\n", std::chrono::duration<double>(p.elapsed).count(), static_cast<long long>(p.rollouts),
                  1.0 / p.best_score, pw::to_ms(long_run.bound.value) / p.best_score);
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "run,seconds,rollouts,step_over_lb,step_ms\n";
    for (const auto* r : {&short_run, &long_run})
      for (const auto& p : r->search.trace)
        f << (r == &short_run ? "short" : "long") << ',' << std::chrono::duration<double>(p.elapsed).count() << ',' << p.rollouts << ','
          << 1.0 / p.best_score << ',' << pw::to_ms(r->bound.value) / p.best_score << '\n';
  }
  const double gap = static_cast<double>(short_run.step_time.count()) / static_cast<double>(long_run.step_time.count()) - 1.0;
  std::printf("\nshort-budget plan vs long-budget plan: %+.2f%% (%s 3%%)\n", 100 * gap, gap <= 0.03 ? "within" : "NOT within");
  const double tiny_gap = static_cast<double>(tiny_run.step_time.count()) / static_cast<double>(long_run.step_time.count()) - 1.0;
  std::printf("tiny-budget plan vs long-budget plan: %+.2f%% (%s 1%%)\n", 100 * tiny_gap, tiny_gap <= 0.01 ? "within" : "NOT within");
  const double final_ratio = static_cast<double>(long_run.step_time.count()) / static_cast<double>(long_run.bound.value.count());
  write_svg(svg, model.name + " / " + dataset.name + " / " + setup.name + ": best step time / lower bound vs search time (" +
                     std::to_string(threads) + " threads)",
            {ls, ss}, final_ratio * 1.03);
  std::printf("SVG written to %s\n", svg.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "convergence: %s\n", e.what());
  return 1;
}
