// Pure pieces of the baseline builders: the min-max split against brute force, the chain
// layout, and the classic per-rank orders (deadlock-free on a hand-built chain graph, warm-up
// counts and in-flight microbatches as Megatron defines them).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "baselines/chain_graph.hpp"
#include "pipeweaver/schedule/pipeline_orders.hpp"

using namespace pipeweaver;

namespace {

std::int64_t max_range(const std::vector<std::int64_t>& w, const std::vector<int>& bounds) {
  std::int64_t m = 0;
  for (std::size_t j = 0; j + 1 < bounds.size(); ++j) {
    std::int64_t s = 0;
    for (int i = bounds[j]; i < bounds[j + 1]; ++i) s += w[static_cast<std::size_t>(i)];
    m = std::max(m, s);
  }
  return m;
}

// Brute force over every placement of parts-1 cuts among n-1 gaps.
std::int64_t brute_min_max(const std::vector<std::int64_t>& w, int parts) {
  const int n = static_cast<int>(w.size());
  std::int64_t best = INT64_MAX;
  for (std::uint32_t mask = 0; mask < (1u << (n - 1)); ++mask) {
    if (__builtin_popcount(mask) != parts - 1) continue;
    std::vector<int> b{0};
    for (int g = 0; g < n - 1; ++g)
      if (mask & (1u << g)) b.push_back(g + 1);
    b.push_back(n);
    best = std::min(best, max_range(w, b));
  }
  return best;
}

}  // namespace

TEST_CASE("min_max_split equals brute force and returns a valid split") {
  std::uint64_t x = 12345;
  const auto next = [&x] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::int64_t>((x >> 33) % 100) + 1;
  };
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + trial % 12;
    std::vector<std::int64_t> w;
    for (int i = 0; i < n; ++i) w.push_back(next());
    for (int parts = 1; parts <= n; ++parts) {
      const auto b = min_max_split(w, parts);
      REQUIRE(b.size() == static_cast<std::size_t>(parts) + 1);
      CHECK(b.front() == 0);
      CHECK(b.back() == n);
      for (std::size_t j = 0; j + 1 < b.size(); ++j) CHECK(b[j] < b[j + 1]);
      CHECK(max_range(w, b) == brute_min_max(w, parts));
    }
  }
  CHECK_THROWS_AS((void)min_max_split(std::vector<std::int64_t>{1, 2}, 3), Error);
}

TEST_CASE("chain_layout: a range spanning two modules is one chunk of each on its rank") {
  ModelSpec model;
  ModuleSpec vit;
  vit.name = "vit";
  vit.role = ModuleRole::encoder;
  vit.modality = "image";
  vit.layers = 5;
  vit.feeds = ModuleId{1};
  ModuleSpec llm;
  llm.name = "llm";
  llm.layers = 7;
  model.modules = {vit, llm};
  const auto chain = chain_modules(model);
  REQUIRE(chain == std::vector<ModuleId>{ModuleId{0}, ModuleId{1}});
  SUBCASE("P ranges") {
    const ChainSplit s{2, 1, {0, 6, 12}};
    const auto layout = chain_layout(model, chain, s, "1f1b");
    REQUIRE(layout.partition.chunk_count(ModuleId{0}) == 1);
    REQUIRE(layout.partition.chunk_count(ModuleId{1}) == 2);
    CHECK(layout.partition.chunk(ModuleId{0}, 0) == Chunk{0, 5, RankId{0}});
    CHECK(layout.partition.chunk(ModuleId{1}, 0) == Chunk{0, 1, RankId{0}});
    CHECK(layout.partition.chunk(ModuleId{1}, 1) == Chunk{1, 6, RankId{1}});
    CHECK(layout.range_of_chunk[1] == std::vector<int>{0, 1});
  }
  SUBCASE("P·v ranges round-robin") {
    const ChainSplit s{2, 2, {0, 3, 6, 9, 12}};
    const auto layout = chain_layout(model, chain, s, "interleaved-1f1b");
    CHECK(layout.partition.chunk(ModuleId{0}, 0) == Chunk{0, 3, RankId{0}});
    CHECK(layout.partition.chunk(ModuleId{0}, 1) == Chunk{3, 2, RankId{1}});
    CHECK(layout.partition.chunk(ModuleId{1}, 0) == Chunk{0, 1, RankId{1}});
    CHECK(layout.partition.chunk(ModuleId{1}, 1) == Chunk{1, 3, RankId{0}});
    CHECK(layout.partition.chunk(ModuleId{1}, 2) == Chunk{4, 3, RankId{1}});
    CHECK(layout.range_of_chunk[0] == std::vector<int>{0, 1});
    CHECK(layout.range_of_chunk[1] == std::vector<int>{1, 2, 3});
  }
  CHECK_THROWS_AS((void)chain_layout(model, chain, ChainSplit{2, 1, {0, 12, 12}}, "x"), Error);
  CHECK_THROWS_AS((void)chain_layout(model, chain, ChainSplit{2, 1, {0, 5}}, "x"), Error);
}

TEST_CASE("unit orders: every unit exactly once, backward after its forward, Megatron warm-up") {
  for (int P : {1, 2, 3, 4, 8})
    for (int v : {1, 2, 3, 4})
      for (int M : {1, 2, 3, 5, 8, 9, 16}) {
        for (auto order : {PipelineOrder::gpipe, PipelineOrder::one_f_one_b, PipelineOrder::interleaved}) {
          if (order != PipelineOrder::interleaved && v != 1) continue;
          for (int r = 0; r < P; ++r) {
            const auto units = rank_unit_order(order, P, v, M, r);
            REQUIRE(units.size() == static_cast<std::size_t>(2 * M * v));
            std::vector<int> seen(static_cast<std::size_t>(2 * M * v), 0);
            int in_flight = 0, peak = 0;
            for (const auto& u : units) {
              REQUIRE(u.local_stage >= 0);
              REQUIRE(u.local_stage < v);
              REQUIRE(u.microbatch >= 0);
              REQUIRE(u.microbatch < M);
              const auto k = static_cast<std::size_t>((u.microbatch * v + u.local_stage) * 2 + (u.backward ? 1 : 0));
              ++seen[k];
              if (u.backward) CHECK(seen[k - 1] == 1);  // its forward ran before
              in_flight += u.backward ? -1 : 1;
              peak = std::max(peak, in_flight);
            }
            CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
            if (order == PipelineOrder::one_f_one_b) CHECK(peak == std::min(P - r, M));
            if (order == PipelineOrder::gpipe) CHECK(peak == M);
          }
        }
      }
}

TEST_CASE("classic orders never deadlock on a chain, including M not divisible by P") {
  for (int P : {1, 2, 3, 4, 8})
    for (int v : {1, 2, 4})
      for (int M : {1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17}) {
        const auto model = pwtest::chain_model(P * v * 2);
        const auto chain = chain_modules(model);
        ChainSplit split{P, v, {}};
        for (int j = 0; j <= P * v; ++j) split.bounds.push_back(2 * j);
        const auto layout = chain_layout(model, chain, split, "t");
        const auto smbs = pwtest::chain_sub_microbatches(M);
        const auto graph = pwtest::chain_graph(layout.partition, M);
        for (auto order : {PipelineOrder::gpipe, PipelineOrder::one_f_one_b, PipelineOrder::interleaved}) {
          if (order != PipelineOrder::interleaved && v != 1) continue;
          if (order == PipelineOrder::interleaved && v == 1) continue;
          CAPTURE(P);
          CAPTURE(v);
          CAPTURE(M);
          CAPTURE(static_cast<int>(order));
          // The orders are deadlock-free as they are (no extra warm-up needed).
          const auto s = pipeline_schedule(graph, smbs, layout, chain, order, UniformRecompute::none, M);
          CHECK(check_executable(graph, s).ok);
          const auto checked = pipeline_schedule_checked(graph, smbs, layout, chain, order, UniformRecompute::none);
          CHECK(check_executable(graph, checked).ok);
          if (check_executable(graph, s).ok) CHECK(checked.ranks == s.ranks);
        }
      }
}

TEST_CASE("check_executable finds a crossed order") {
  const auto model = pwtest::chain_model(4);
  const auto chain = chain_modules(model);
  const auto layout = chain_layout(model, chain, ChainSplit{2, 1, {0, 2, 4}}, "t");
  const auto graph = pwtest::chain_graph(layout.partition, 2);
  const auto smbs = pwtest::chain_sub_microbatches(2);
  auto s = pipeline_schedule(graph, smbs, layout, chain, PipelineOrder::one_f_one_b, UniformRecompute::none);
  REQUIRE(check_executable(graph, s).ok);
  // Rank 1 (order F0 B0 F1 B1) runs the backward of microbatch 0 before its forward: it is stuck
  // at position 0, and rank 0 (F0 F1 B0 B1) then waits at its first backward (position 2).
  std::swap(s.ranks[1][0], s.ranks[1][1]);
  const auto c = check_executable(graph, s);
  CHECK_FALSE(c.ok);
  CHECK(c.rank == 0);
  CHECK(c.position == 2);
  s.ranks[0].pop_back();  // a stage missing from the schedule
  CHECK_FALSE(check_executable(graph, s).ok);
}
