// Soak of the asynchronous planner: tiny-vlm on cpu-pp4, N steps (default 10,000) of mixed
// batches (three datasets, 1 to 8 microbatches, a fresh sample stream per step), planned by an
// AsyncPlanner; every third step is taken at once with next() and so usually falls back to the
// best baseline, the others wait for their search. Per window of steps it prints the largest
// resident set seen, the process's threads and the fallbacks; at the end the stage-cost caches'
// counters and trims. The run passes when the largest RSS of the last window is within 10% (and
// 16 MiB) of the first window after warm-up, the thread count never changes after start-up, and
// the caches stayed within their caps (exit status 1 otherwise).
//   soak [steps] [window]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <pipeweaver/pipeweaver.hpp>

namespace pw = pipeweaver;

namespace {

/// VmRSS of this process in KiB (Linux), 0 where unknown.
std::int64_t rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      std::int64_t v = 0;
      in >> v;
      return v;
    }
    std::getline(in, key);
  }
  return 0;
}

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// Step k's batch: dataset k mod 3, its own seed, the first 1 + (k mod 8) microbatches.
pw::Batch batch_for(const pw::ModelSpec& model, const std::vector<pw::DatasetSpec>& datasets, const pw::Setup& setup, int k) {
  pw::Batch b = pw::sample_step(model, datasets[static_cast<std::size_t>(k) % datasets.size()], setup, static_cast<std::uint64_t>(k), k);
  b.microbatches.resize(std::min<std::size_t>(b.microbatches.size(), static_cast<std::size_t>(1 + k % 8)));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 10000;
  const int window = argc > 2 ? std::atoi(argv[2]) : 1000;
  if (steps < 2 * window || window < 1) {
    std::fprintf(stderr, "usage: soak [steps >= 2 x window] [window >= 1]\n");
    return 2;
  }
  const std::string w = PIPEWEAVER_EXAMPLE_WORKLOADS;
  const pw::ModelSpec model = pw::io::read_model(w + "/models/tiny-vlm.json");
  const pw::Setup setup = pw::io::read_setup(w + "/setups/cpu-pp4.json");
  const std::vector<pw::DatasetSpec> datasets{pw::io::read_dataset(w + "/datasets/vlm-captions.json"),
                                              pw::io::read_dataset(w + "/datasets/vlm-docs.json"),
                                              pw::io::read_dataset(w + "/datasets/vlm-web-mix.json")};
  const pw::AnalyticCostModel cost(model, setup);
  pw::PlannerOptions po;
  po.budget = std::chrono::nanoseconds{0};
  po.iterations = 8;
  po.cache.max_entries = std::size_t{1} << 16;  // small caps, so that a soak of minutes passes them
  po.cache.max_shape_values = std::size_t{1} << 18;
  const pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, datasets[0], po);
  pw::AsyncPlanner async(planner, {.threads = 1, .lookahead = 2, .grace = std::chrono::nanoseconds{0}});

  const std::size_t threads_at_start = thread_count();
  bool threads_constant = true;
  std::vector<std::int64_t> window_peak;
  std::int64_t peak = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  for (int k = 0; k < 2; ++k) async.submit(batch_for(model, datasets, setup, k));
  std::printf("%8s %12s %8s %10s %12s\n", "steps", "max RSS MiB", "threads", "fallbacks", "ms per step");
  for (int k = 0; k < steps; ++k) {
    const pw::PlanResult r = k % 3 == 2 ? async.next() : async.next_when_ready();
    if (r.plan.ranks.empty()) return 1;
    if (k + 2 < steps) async.submit(batch_for(model, datasets, setup, k + 2));
    peak = std::max(peak, rss_kib());
    threads_constant = threads_constant && thread_count() == threads_at_start;
    if ((k + 1) % window == 0) {
      window_peak.push_back(peak);
      const auto now = std::chrono::steady_clock::now();
      std::printf("%8d %12.1f %8zu %10lld %12.2f\n", k + 1, static_cast<double>(peak) / 1024, thread_count(),
                  static_cast<long long>(async.stats().fallbacks),
                  std::chrono::duration<double, std::milli>(now - last).count() / window);
      std::fflush(stdout);
      last = now;
      peak = 0;
    }
  }
  const pw::AsyncPlannerStats st = async.stats();
  async.cancel();
  const pw::StageCostCacheStats cs = planner.cache_stats();
  std::printf("plans ready in time %lld, after a wait %lld, fallbacks %lld, failures %lld; %.1f s in all\n",
              static_cast<long long>(st.plans_ready_in_time), static_cast<long long>(st.plans_after_wait),
              static_cast<long long>(st.fallbacks), static_cast<long long>(st.failures),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::printf("stage-cost caches: %zu entries, %zu shapes, %llu trims, hit rate %.3f (caps %zu entries per cache)\n", cs.entries,
              cs.shapes, static_cast<unsigned long long>(cs.trims), cs.hit_rate(), po.cache.max_entries);
  // Warm-up: the first window; flat: the last window's peak within 10% and 16 MiB of the second's.
  const double first = static_cast<double>(window_peak[1]), final_peak = static_cast<double>(window_peak.back());
  const bool flat = final_peak <= first * 1.10 + 16 * 1024;
  // Two workspaces (the background search's, the fallback's), each at most its cap plus what one call adds.
  const bool caches_capped = cs.entries <= 3 * po.cache.max_entries;
  std::printf("RSS after warm-up %.1f MiB, at the end %.1f MiB (%+.1f%%): %s; threads %s; caches %s\n", first / 1024,
              final_peak / 1024, 100.0 * (final_peak - first) / first, flat ? "flat" : "GROWING",
              threads_constant ? "constant" : "CHANGED", caches_capped ? "within their caps" : "OVER THEIR CAPS");
  return flat && threads_constant && caches_capped && st.failures == 0 ? 0 : 1;
}
