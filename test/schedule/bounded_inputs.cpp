// Plans and steps at and beyond the bounds: the stage graph's feeding links against a brute
// force over every pair (a second implementation of "shares a sample"), and the regression
// cases of the hostile-input campaign, each refused with Error(invalid_plan) before anything is
// allocated in proportion to the number at fault.
#include <doctest/doctest.h>

#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

/// Sub-microbatches whose items come from random samples of their microbatch (some without
/// origins), so feeding sub-microbatches overlap fed ones arbitrarily.
std::vector<pw::SubMicrobatchSpec> scattered(const pw::ModelSpec& model, int microbatches, Rng& rng) {
  std::vector<pw::SubMicrobatchSpec> out;
  for (int mb = 0; mb < microbatches; ++mb)
    for (std::size_t m = 0; m < model.modules.size(); ++m) {
      const auto k = rng.in(1, 4);
      for (std::int64_t s = 0; s < k; ++s) {
        const auto n = rng.in(1, 4);
        std::vector<std::int64_t> tokens;
        std::vector<pw::ItemRef> items;
        const bool origins = rng.in(0, 5) > 0;
        for (std::int64_t i = 0; i < n; ++i) {
          tokens.push_back(rng.in(1, 64));
          if (origins) items.push_back(pw::ItemRef{static_cast<std::int32_t>(rng.in(0, 6)), 0});
        }
        out.emplace_back(pw::ModuleId{static_cast<int>(m)}, pw::MicrobatchId{mb}, tokens, std::vector<std::int64_t>{}, items);
      }
    }
  return out;
}

/// The brute force: a fed first-chunk forward's inputs are the last-chunk forwards of every
/// sub-microbatch of a feeding module in the same microbatch that shares a sample with it (or
/// where either has no origins).
std::set<std::pair<int, int>> brute_links(const pw::ModelSpec& model, const std::vector<pw::SubMicrobatchSpec>& s) {
  std::set<std::pair<int, int>> out;
  const auto samples = [](const pw::SubMicrobatchSpec& x) {
    std::set<std::int32_t> r;
    for (const auto& it : x.items()) r.insert(it.sample);
    return r;
  };
  for (std::size_t b = 0; b < s.size(); ++b)
    for (std::size_t a = 0; a < s.size(); ++a) {
      const auto& fa = model.modules[s[a].module().index()].feeds;
      if (!fa || *fa != s[b].module() || s[a].microbatch() != s[b].microbatch()) continue;
      const auto sa = samples(s[a]), sb = samples(s[b]);
      bool share = sa.empty() || sb.empty();
      for (auto x : sa) share = share || sb.count(x);
      if (share) out.insert({static_cast<int>(a), static_cast<int>(b)});
    }
  return out;
}

void expect_invalid(const pw::Plan& plan, const pw::ModelSpec& model, const std::string& part) {
  try {
    pw::validate(plan, model);
    FAIL("accepted");
  } catch (const pw::Error& e) {
    INFO(std::string(e.what()));
    CHECK(e.kind() == pw::ErrorKind::invalid_plan);
    CHECK(std::string(e.what()).find(part) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("feeding links of the stage graph equal a brute force over every pair of sub-microbatches") {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    Rng rng(seed);
    const pw::ModelSpec model = seed % 2 ? vlm(2, 3) : t2v(2, 3);
    const pw::Partition part = interleaved(model, 2, std::vector<int>(model.modules.size(), 2));
    const auto s = scattered(model, 3, rng);
    const auto g = pw::build_stage_graph(model, part, s);
    std::set<std::pair<int, int>> found;
    for (const auto& n : g.nodes) {
      if (n.stage.pass != pw::Pass::forward || n.stage.chunk != 0) continue;
      for (pw::NodeIndex i : n.inputs) {
        const auto& in = g.nodes[static_cast<std::size_t>(i)].stage;
        if (in.module != n.stage.module) found.insert({in.sub_microbatch.value(), n.stage.sub_microbatch.value()});
      }
    }
    CHECK(found == brute_links(model, s));
  }
}

TEST_CASE("32,767 one-layer chunks and 32,770 sub-microbatches: refused by the stage count, before allocating") {
  pw::ModelSpec model;
  model.name = "deep";
  model.modules.push_back(module("llm", pw::ModuleRole::backbone, "text", 32767));
  model.modules[0].vocab = 16;
  pw::Partition part = interleaved(model, 4, {32767});
  std::vector<pw::SubMicrobatchSpec> s;
  for (int i = 0; i < 32770; ++i) s.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{i}, std::vector<std::int64_t>{1});
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)pw::build_stage_graph(model, part, s);
    FAIL("built");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::invalid_plan);
    CHECK(std::string(e.what()).find("more than 4194304 stages") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));  // no billion-node graph was built
  // The plan of the campaign (every value within the other limits) gets the same answer.
  pw::Plan plan;
  plan.name = "x";
  plan.microbatches = 32770;
  plan.partition = part;
  plan.sub_microbatches = s;
  plan.ranks.resize(4);
  expect_invalid(plan, model, "stages");
}

TEST_CASE("a plan's numbers are bounded before the validator allocates for them") {
  const pw::ModelSpec model = vlm(2, 4);
  const pw::Partition part = interleaved(model, 2, {1, 2}, {0, 0});
  Rng rng(5);
  const auto s = smbs(model, 2, {1, 1}, rng);
  const auto g = pw::build_stage_graph(model, part, s);
  const pw::Plan good = pw::lower(model, part, s, g, gpipe_schedule(g, 2), TinyCost{}, "gpipe", "setup");
  CHECK_NOTHROW(pw::validate(good, model));
  SUBCASE("a sub-microbatch of microbatch 400,000,000 (9.4 GB before it was checked)") {
    pw::Plan p = good;
    p.sub_microbatches[0] = pw::SubMicrobatchSpec(p.sub_microbatches[0].module(), pw::MicrobatchId{400000000},
                                                  std::vector<std::int64_t>(p.sub_microbatches[0].item_tokens().begin(), p.sub_microbatches[0].item_tokens().end()));
    expect_invalid(p, model, "/sub_microbatches/0/microbatch");
  }
  SUBCASE("6,000 ranks (ranks squared lists before)") {
    pw::Plan p = good;
    p.partition.ranks = 6000;
    p.ranks.resize(6000);
    expect_invalid(p, model, "/partition/ranks");
  }
  SUBCASE("2^31 - 1 microbatches claimed, 2 named") {
    pw::Plan p = good;
    p.microbatches = 2147483647;
    expect_invalid(p, model, "/microbatches");
    p.microbatches = 3;  // within the limit, but microbatch 2 has nothing
    expect_invalid(p, model, "microbatch 2 of 3 has no sub-microbatches");
  }
  SUBCASE("items and token lists of different lengths") {
    pw::Plan p = good;
    const auto& x = p.sub_microbatches[0];
    std::vector<std::int64_t> tokens(x.item_tokens().begin(), x.item_tokens().end());
    std::vector<pw::ItemRef> items(tokens.size() + 1, pw::ItemRef{0, -1});
    p.sub_microbatches[0] = pw::SubMicrobatchSpec(x.module(), x.microbatch(), tokens, {}, items);
    expect_invalid(p, model, "/sub_microbatches/0/items");
  }
  SUBCASE("a memory strategy that changes more layers than its chunk has") {
    pw::Plan p = good;
    for (auto& a : p.ranks[1])
      if (auto* f = std::get_if<pw::Forward>(&a)) {
        f->strategy.full_recompute = 5;  // chunks of this partition hold at most 2 layers
        break;
      }
    expect_invalid(p, model, "changes more layers than the chunk's");
  }
  SUBCASE("far fewer stage actions than the step has stages: refused before the graph is built") {
    pw::Plan p = good;
    std::vector<pw::SubMicrobatchSpec> many;
    for (std::size_t i = 0; i < 5000; ++i) many.push_back(p.sub_microbatches[i % p.sub_microbatches.size()]);
    p.sub_microbatches = many;
    expect_invalid(p, model, "stages but its ranks run");
  }
}
