// The plan IR end to end on the reference workloads: a sampled step is split, its stage graph
// built, a random valid schedule lowered with the analytic cost model, and the plan validated
// and round-tripped through both serializations.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/plan_json.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/ir/plan_binary.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include <chrono>
#include <vector>

#include "support/dip_step.hpp"
#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

TEST_CASE("reference workloads: split, graph, lower, validate, serialize") {
  const auto suite = pw::io::read_suite(std::filesystem::path(PIPEWEAVER_WORKLOADS_DIR) / "suite.json");
  REQUIRE(!suite.cases.empty());
  std::uint64_t seed = 1;
  for (const auto& c : suite.cases) {
    CAPTURE(c.name);
    const auto w = pw::io::read_case(c);
    const pw::AnalyticCostModel cost(w.model, w.setup);
    const auto [batch, part, s] = dip_step(w, seed);
    const bool split_backward = seed % 2 == 0;
    const auto t0 = std::chrono::steady_clock::now();
    const auto g = pw::build_stage_graph(w.model, part, s, {.split_backward = split_backward});
    Rng rng(seed++);
    const auto sched = random_schedule(g, part, rng, false);
    const auto t1 = std::chrono::steady_clock::now();
    const auto plan = pw::lower(w.model, part, s, g, sched, cost, "random", w.setup.name);
    const auto t2 = std::chrono::steady_clock::now();
    pw::validate(plan, w.model);
    const auto t3 = std::chrono::steady_clock::now();
    std::size_t actions = 0;
    for (const auto& list : plan.ranks) actions += list.size();
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    MESSAGE(c.name << ": " << s.size() << " sub-microbatches, " << g.size() << " stages, " << actions << " actions; graph+schedule " << ms(t0, t1) << " ms, lower "
                   << ms(t1, t2) << " ms, validate " << ms(t2, t3) << " ms");
    const auto peaks = pw::peak_memory_by_rank(plan, w.model, w.setup, cost);
    CHECK(peaks.size() == static_cast<std::size_t>(w.setup.pipeline_stages));
    for (auto p : peaks) CHECK(p > pw::Bytes{0});
    CHECK(pw::plan_from_binary(pw::to_binary(plan)) == plan);
    CHECK(pw::io::plan_from_json(pw::io::to_json(plan), "mem") == plan);
    // Every sampled item is in exactly one sub-microbatch of its module.
    std::size_t items = 0, expected = 0;
    for (const auto& sm : s) items += sm.item_tokens().size();
    for (const auto& mb : batch.microbatches)
      for (std::size_t m = 0; m < w.model.size(); ++m) expected += pw::module_items(w.model, pw::ModuleId{static_cast<int>(m)}, mb).size();
    CHECK(items == expected);
  }
}
