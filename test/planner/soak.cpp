// The short soak (examples/soak.cpp runs the long one): a real Planner behind an AsyncPlanner
// over a few hundred mixed steps of tiny-vlm on cpu-pp4, some taken at once (fallbacks), the
// rest after their search. The stage-cost caches are given small caps: they are trimmed and end
// within them, the planning threads are the only threads added, every plan is valid for its
// batch, and plans and fallbacks both occur.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <pipeweaver/pipeweaver.hpp>

#include "support/threads.hpp"

namespace pw = pipeweaver;

namespace {

using test_support::thread_count;

}  // namespace

TEST_CASE("soak: an async planner over 300 mixed steps keeps its caches within their caps and its threads constant") {
  const std::string w = PIPEWEAVER_WORKLOADS_DIR;
  const pw::ModelSpec model = pw::io::read_model(w + "/models/tiny-vlm.json");
  const pw::Setup setup = pw::io::read_setup(w + "/setups/cpu-pp4.json");
  const std::vector<pw::DatasetSpec> datasets{pw::io::read_dataset(w + "/datasets/vlm-captions.json"),
                                              pw::io::read_dataset(w + "/datasets/vlm-web-mix.json")};
  const pw::AnalyticCostModel cost(model, setup);
  pw::PlannerOptions po;
  po.budget = std::chrono::nanoseconds{0};
  po.iterations = 4;
  po.cache.max_entries = 2000;
  po.cache.max_shape_values = 20000;
  const pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, datasets[0], po);
  const std::size_t threads_before = thread_count();
  constexpr int steps = 300;
  std::vector<pw::Batch> batches;
  for (int k = 0; k < steps; ++k) {
    pw::Batch b = pw::sample_step(model, datasets[static_cast<std::size_t>(k) % 2], setup, static_cast<std::uint64_t>(k), k);
    b.microbatches.resize(std::min<std::size_t>(b.microbatches.size(), static_cast<std::size_t>(1 + k % 8)));
    batches.push_back(std::move(b));
  }
  {
    pw::AsyncPlanner async(planner, {.threads = 1, .lookahead = 2, .grace = std::chrono::nanoseconds{0}});
    CHECK(thread_count() == threads_before + 1);
    for (int k = 0; k < 2; ++k) async.submit(batches[static_cast<std::size_t>(k)]);
    for (int k = 0; k < steps; ++k) {
      const pw::PlanResult r = k % 3 == 2 ? async.next() : async.next_when_ready();
      // The plan is for this step's batch: one sub-microbatch at least per microbatch, all valid.
      CHECK(r.plan.microbatches == static_cast<int>(batches[static_cast<std::size_t>(k)].microbatches.size()));
      CHECK_NOTHROW(pw::validate(r.plan, model, setup, cost));
      if (k + 2 < steps) async.submit(batches[static_cast<std::size_t>(k) + 2]);
      CHECK(thread_count() == threads_before + 1);
    }
    const pw::AsyncPlannerStats st = async.stats();
    CHECK(st.failures == 0);
    CHECK(st.fallbacks > 0);
    CHECK(st.plans_ready_in_time + st.plans_after_wait > 0);
  }
  CHECK(thread_count() == threads_before);  // the planning thread joined
  const pw::StageCostCacheStats cs = planner.cache_stats();
  CHECK(cs.trims > 0);
  // At most two workspaces (the search's and the fallback's), each within its cap plus one call.
  CHECK(cs.entries <= 2 * po.cache.max_entries + 4000);
  CHECK(cs.hits > cs.misses);  // the caches still do their job between trims
}
