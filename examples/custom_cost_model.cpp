// Plugging your own cost model into the planner.
//
// pipeweaver never names a concrete cost model: the search, the emulator and the validator are
// templates over the CostModel concept (core/concepts.hpp). Any type with these four const
// member functions works, with no base class and nothing to register:
//   latency(stage, sub_microbatch, strategy)          -> pipeweaver::Nanoseconds
//   activation_bytes(stage, sub_microbatch, strategy) -> pipeweaver::Bytes
//   output_bytes(stage, sub_microbatch)               -> pipeweaver::Bytes
//   transfer_time(bytes)                              -> pipeweaver::Nanoseconds
//
// Here the model is what a trainer typically has: a table of per-layer forward latencies
// measured on its own cluster for one item of a few sizes (interpolated linearly in between),
// a fixed launch cost per layer, and simple activation-memory formulas.
//
// Usage: custom_cost_model [workloads-dir]   (default: the repository's examples/workloads)
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>

namespace pw = pipeweaver;

/// One measurement: the forward of ONE layer on ONE item of `tokens` tokens took `micros`
/// (launch overhead excluded).
struct Measured {
  std::int64_t tokens;
  double micros;
};

class MeasuredCostModel {
 public:
  /// `table[module name]`: measurements sorted by tokens. `launch_us`: fixed cost per layer and
  /// stage. Memory: `bytes_per_token[module name]` activation bytes one layer keeps per token.
  MeasuredCostModel(const pw::ModelSpec& model, std::map<std::string, std::vector<Measured>> table,
                    std::map<std::string, double> bytes_per_token, double launch_us, double link_gb_per_s)
      : launch_us_(launch_us), link_bytes_per_ns_(link_gb_per_s) {
    for (const auto& m : model.modules) {
      rows_.push_back(table.at(m.name));
      bytes_per_token_.push_back(bytes_per_token.at(m.name));
      hidden_.push_back(static_cast<double>(m.hidden));
    }
  }

  template <class Stage, class Sub>
  [[nodiscard]] pw::Nanoseconds latency(const Stage& s, const Sub& m, const pw::MemoryStrategy& st) const {
    double layer = launch_us_;  // one layer's forward on the whole sub-microbatch
    for (std::int64_t t : m.item_tokens()) layer += per_item(s.module().index(), t);
    const double layers = s.layer_count();
    double us = layer * layers;
    if (s.pass() == pw::Pass::backward) {
      us = 2 * layer * layers;                   // backward ~ twice the forward
      us += layer * st.full_recompute;           // recomputed layers rerun their forward
      us += 0.25 * layer * st.selective_recompute;
      us += 0.10 * layer * st.offload;           // copy-back not fully hidden
    } else if (s.pass() != pw::Pass::forward) {  // a split backward's halves
      us = layer * layers + (s.pass() == pw::Pass::backward_input ? layer * st.full_recompute : 0.0);
    }
    return pw::Nanoseconds{static_cast<std::int64_t>(us * 1e3)};
  }

  template <class Stage, class Sub>
  [[nodiscard]] pw::Bytes activation_bytes(const Stage& s, const Sub& m, const pw::MemoryStrategy& st) const {
    const double per_layer = bytes_per_token_[s.module().index()] * tokens(m);
    const double input_only = 2.0 * hidden_[s.module().index()] * tokens(m);  // bf16 layer input
    const int kept = s.layer_count() - st.full_recompute - st.selective_recompute - st.offload;
    const double bytes = per_layer * kept + input_only * st.full_recompute + 0.6 * per_layer * st.selective_recompute;
    return pw::Bytes{static_cast<std::int64_t>(bytes)};
  }

  template <class Stage, class Sub>
  [[nodiscard]] pw::Bytes output_bytes(const Stage& s, const Sub& m) const {
    return pw::Bytes{static_cast<std::int64_t>(2.0 * hidden_[s.module().index()] * tokens(m))};
  }

  [[nodiscard]] pw::Nanoseconds transfer_time(pw::Bytes b) const {
    return pw::Nanoseconds{10'000 + static_cast<std::int64_t>(static_cast<double>(b.count()) / link_bytes_per_ns_)};
  }

 private:
  template <class Sub>
  static double tokens(const Sub& m) {
    double t = 0;
    for (std::int64_t x : m.item_tokens()) t += static_cast<double>(x);
    return t;
  }
  /// Linear interpolation in the module's table; beyond the last point, quadratic growth
  /// (attention dominates long items).
  [[nodiscard]] double per_item(std::size_t module, std::int64_t tokens) const {
    const auto& row = rows_[module];
    if (tokens <= row.front().tokens) return row.front().micros * static_cast<double>(tokens) / static_cast<double>(row.front().tokens);
    for (std::size_t i = 1; i < row.size(); ++i)
      if (tokens <= row[i].tokens) {
        const double f = static_cast<double>(tokens - row[i - 1].tokens) / static_cast<double>(row[i].tokens - row[i - 1].tokens);
        return row[i - 1].micros + f * (row[i].micros - row[i - 1].micros);
      }
    const double r = static_cast<double>(tokens) / static_cast<double>(row.back().tokens);
    return row.back().micros * r * r;
  }

  std::vector<std::vector<Measured>> rows_;
  std::vector<double> bytes_per_token_;
  std::vector<double> hidden_;
  double launch_us_;
  double link_bytes_per_ns_;  // 1 GB/s = 1 byte/ns
};

static_assert(pw::CostModel<MeasuredCostModel, pw::StageSpec, pw::SubMicrobatchSpec>);

int main(int argc, char** argv) {
  try {
    const std::string dir = argc > 1 ? argv[1] : PIPEWEAVER_EXAMPLE_WORKLOADS;
    const pw::ModelSpec model = pw::io::read_model(dir + "/models/tiny-vlm.json");
    const pw::Setup setup = pw::io::read_setup(dir + "/setups/cpu-pp4.json");
    const pw::DatasetSpec dataset = pw::io::read_dataset(dir + "/datasets/vlm-captions.json");
    pw::io::check_compatible(model, setup, "cpu-pp4.json");
    pw::io::check_compatible(model, dataset, "vlm-captions.json");

    // "Measured" on the user's own machine (illustrative figures), per module name.
    std::map<std::string, std::vector<Measured>> table;
    std::map<std::string, double> bytes_per_token;
    for (const auto& m : model.modules) {
      const double h = static_cast<double>(m.hidden) / 256.0;
      table[m.name] = {{64, 40 * h}, {256, 170 * h}, {1024, 900 * h}, {4096, 5200 * h}};
      bytes_per_token[m.name] = 34.0 * static_cast<double>(m.hidden);
    }
    const MeasuredCostModel cost(model, std::move(table), std::move(bytes_per_token), /*launch_us=*/30, /*link_gb_per_s=*/10);

    pw::PlannerOptions options;
    options.budget = std::chrono::nanoseconds{0};
    options.iterations = 20;  // reproducible: the same plan on every run
    options.threads = 2;
    const pw::Planner planner(model, setup, cost, dataset, options);

    for (int step = 0; step < 2; ++step) {
      const pw::Batch batch = pw::sample_step(model, dataset, setup, /*seed=*/1, step);
      const pw::PlanResult r = planner.plan(batch);
      std::cout << "step " << step << ": step time " << pw::to_ms(r.step_time) << " ms (plan '" << r.source
                << "', lower bound " << pw::to_ms(r.lower_bound) << " ms, fallback baseline "
                << pw::to_ms(planner.fallback(batch).step_time) << " ms, search " << pw::to_ms(r.search_time) << " ms, "
                << r.plan.ranks.size() << " ranks)\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "custom_cost_model: " << e.what() << "\n";
    return 1;
  }
}
