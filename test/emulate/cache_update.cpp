// StageCostCache::update_cost: after a cost-model update naming (module, pass) pairs, exactly the
// entries of those pairs are evaluated again (under the new model) and every other entry is
// answered from the cache; "everything" re-evaluates every entry; an empty change none. The
// truth: a cost model that counts its own evaluations and whose two versions differ in exactly
// the pairs named.
#include <doctest/doctest.h>

#include <pipeweaver/emulate/stage_cost_cache.hpp>

#include <array>
#include <memory>
#include <vector>

namespace pw = pipeweaver;

namespace {

/// latency = scale[module][pass] × (tokens + 10·layers) ns; counts calls to latency().
struct CountingCost {
  std::array<std::array<std::int64_t, 4>, 2> scale{{{1, 2, 3, 4}, {5, 6, 7, 8}}};
  std::shared_ptr<long> calls = std::make_shared<long>(0);

  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M& m, const pw::MemoryStrategy& st) const {
    ++*calls;
    std::int64_t t = 0;
    for (auto n : m.item_tokens()) t += n;
    return pw::Nanoseconds{scale[s.module().index()][static_cast<std::size_t>(s.pass())] * (t + 10 * s.layer_count() + st.full_recompute)};
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M& m, const pw::MemoryStrategy&) const {
    return pw::Bytes{static_cast<std::int64_t>(m.item_tokens().size())};
  }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const {
    return pw::Bytes{0};
  }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return pw::Nanoseconds{0}; }
};
static_assert(pw::CostModel<CountingCost, pw::StageSpec, pw::SubMicrobatchSpec>);

pw::ModelSpec two_modules() {
  pw::ModelSpec m;
  m.modules.resize(2);
  m.modules[0].name = "enc";
  m.modules[0].layers = 4;
  m.modules[1].name = "llm";
  m.modules[1].layers = 4;
  return m;
}

struct Lookup {
  pw::StageSpec stage;
  pw::SubMicrobatchSpec smb;
  pw::MemoryStrategy strategy;
};

/// Every (module, pass) on two shapes, two layer ranges and two strategies: 64 distinct entries.
std::vector<Lookup> lookups() {
  std::vector<Lookup> out;
  for (int m = 0; m < 2; ++m)
    for (pw::Pass p : {pw::Pass::forward, pw::Pass::backward, pw::Pass::backward_input, pw::Pass::backward_weight})
      for (std::int64_t t : {16, 48})
        for (int first : {0, 2})
          for (int recompute : {0, 2})
            out.push_back(Lookup{pw::StageSpec{pw::ModuleId{m}, first / 2, pw::RankId{0}, p, first, 2},
                                 pw::SubMicrobatchSpec{pw::ModuleId{m}, pw::MicrobatchId{0}, {t, t}},
                                 pw::MemoryStrategy::full(recompute)});
  return out;
}

}  // namespace

TEST_CASE("stage-cost cache: an update drops exactly the entries of the pairs it names") {
  const pw::ModelSpec model = two_modules();
  CountingCost before;
  pw::StageCostCache<CountingCost> cache(before, model);
  const std::vector<Lookup> all = lookups();
  for (const Lookup& l : all) (void)cache.stage_cost(l.stage, l.smb, l.strategy);
  REQUIRE(*before.calls == static_cast<long>(all.size()));
  REQUIRE(cache.stats().entries == all.size());

  // The new model differs from the old in (enc, forward) and (llm, backward_weight) only.
  CountingCost after = before;
  after.calls = std::make_shared<long>(0);
  after.scale[0][0] = 11;
  after.scale[1][3] = 13;
  pw::CostChange change;
  change.add(pw::ModuleId{0}, pw::Pass::forward);
  change.add(pw::ModuleId{1}, pw::Pass::backward_weight);
  const auto shapes = cache.stats().shapes;
  cache.update_cost(after, change);
  CHECK(cache.stats().invalidated == 16);  // 2 pairs x 8 entries each
  CHECK(cache.stats().entries == all.size() - 16);
  CHECK(cache.stats().shapes == shapes);

  long recomputed = 0;
  for (const Lookup& l : all) {
    CAPTURE(l.stage.module().value());
    CAPTURE(pw::to_string(l.stage.pass()));
    const long calls = *after.calls;
    const pw::StageCost c = cache.stage_cost(l.stage, l.smb, l.strategy);
    const bool named = change.affects(l.stage.module(), l.stage.pass());
    CHECK(*after.calls - calls == (named ? 1 : 0));  // named: evaluated under the new model; else reused
    recomputed += named ? 1 : 0;
    const long own = *after.calls;
    CHECK(c.latency == after.latency(l.stage, l.smb, l.strategy));  // right under the new model either way
    *after.calls = own;
  }
  CHECK(recomputed == 16);
  CHECK(*before.calls == static_cast<long>(all.size()));  // the old model is never asked again

  SUBCASE("everything") {
    CountingCost third = after;
    third.calls = std::make_shared<long>(0);
    cache.update_cost(third, pw::CostChange::everything());
    for (const Lookup& l : all) (void)cache.stage_cost(l.stage, l.smb, l.strategy);
    CHECK(*third.calls == static_cast<long>(all.size()));
  }
  SUBCASE("nothing") {
    CountingCost same = after;
    same.calls = std::make_shared<long>(0);
    cache.update_cost(same, pw::CostChange{});
    for (const Lookup& l : all) (void)cache.stage_cost(l.stage, l.smb, l.strategy);
    CHECK(*same.calls == 0);
  }
}
