// emulate() and emulate_schedule() against an independent brute-force reference: a naive
// simulator that advances time one nanosecond at a time over small integer durations and, at
// every tick, checks each action's eligibility. Random small valid plans: random stage DAGs over
// up to 4 ranks and two modules, random per-rank orders (random linear extensions), random
// latencies <= 20, random transfer times with link contention, split and whole backwards.
#include <doctest/doctest.h>

#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <numeric>

#include "emulate/emu_support.hpp"
#include "support/splitmix.hpp"

namespace pw = pipeweaver;
using namespace emu_test;

namespace {

using Rng = pwtest::SplitMix;

struct Case {
  pw::ModelSpec model;
  pw::Setup setup;
  pw::Partition part;
  std::vector<pw::SubMicrobatchSpec> smbs;
  pw::StageGraph graph;
  pw::Schedule schedule;
  std::map<std::pair<pw::NodeIndex, pw::NodeIndex>, std::int64_t> edge_bytes;
  TableCost cost;
  pw::Plan plan;
};

Case random_case(std::uint64_t seed) {
  Rng rng{seed};
  Case c;
  const int P = rng.uniform(1, 4);
  const int modules = rng.uniform(1, 2);
  c.model.name = "random";
  c.part.ranks = P;
  for (int m = 0; m < modules; ++m) {
    const int chunks = rng.uniform(1, 5);
    pw::ModuleSpec ms = chain_model(1).modules[0];
    ms.name = m == 0 ? "llm" : "vit";
    ms.role = m == 0 ? pw::ModuleRole::backbone : pw::ModuleRole::encoder;
    ms.layers = chunks * 2;
    c.model.modules.push_back(ms);
    pw::ModulePlacement mp;
    for (int k = 0; k < chunks; ++k) mp.chunks.push_back(pw::Chunk{2 * k, 2, pw::RankId{rng.uniform(0, P - 1)}});
    c.part.modules.push_back(mp);
  }
  c.setup = test_setup(P);
  const int S = rng.uniform(1, 4);
  for (int s = 0; s < S; ++s)
    c.smbs.emplace_back(pw::ModuleId{rng.uniform(0, modules - 1)}, pw::MicrobatchId{s}, std::vector<std::int64_t>{100 + s});

  // Stages; per (module, chunk, smb): F, then optionally B or Bi + Bw.
  std::vector<pw::StageRef> stages;
  std::vector<std::pair<int, int>> must;  // (before, after) indices into `stages`
  for (int s = 0; s < S; ++s) {
    const pw::ModuleId m = c.smbs[static_cast<std::size_t>(s)].module();
    for (int k = 0; k < c.part.chunk_count(m); ++k) {
      const pw::SubMicrobatchId sid{s};
      const int f = static_cast<int>(stages.size());
      stages.push_back({m, k, sid, pw::Pass::forward});
      const int kind = rng.uniform(0, 2);  // 0: forward only, 1: backward, 2: split backward
      if (kind == 1) {
        must.emplace_back(f, static_cast<int>(stages.size()));
        stages.push_back({m, k, sid, pw::Pass::backward});
      } else if (kind == 2) {
        must.emplace_back(f, static_cast<int>(stages.size()));
        must.emplace_back(static_cast<int>(stages.size()), static_cast<int>(stages.size()) + 1);
        stages.push_back({m, k, sid, pw::Pass::backward_input});
        stages.push_back({m, k, sid, pw::Pass::backward_weight});
      }
    }
  }
  const int n = static_cast<int>(stages.size());
  // A random topological rank of each stage that respects the mandatory pairs.
  std::vector<int> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = n - 1; i > 0; --i) std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(rng.uniform(0, i))]);
  std::vector<int> position(static_cast<std::size_t>(n));
  for (bool fixed = false; !fixed;) {
    fixed = true;
    for (int i = 0; i < n; ++i) position[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])] = i;
    for (auto [a, b] : must)
      if (position[static_cast<std::size_t>(a)] > position[static_cast<std::size_t>(b)]) {
        std::swap(perm[static_cast<std::size_t>(position[static_cast<std::size_t>(a)])], perm[static_cast<std::size_t>(position[static_cast<std::size_t>(b)])]);
        fixed = false;
        break;
      }
  }
  c.graph.nodes.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto& node = c.graph.nodes[static_cast<std::size_t>(i)];
    node.stage = stages[static_cast<std::size_t>(i)];
    node.rank = c.part.chunk(node.stage.module, node.stage.chunk).rank;
  }
  const int density = rng.uniform(10, 50);
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) {
      const int a = perm[static_cast<std::size_t>(i)], b = perm[static_cast<std::size_t>(j)];
      const bool mandatory = std::find(must.begin(), must.end(), std::pair{a, b}) != must.end();
      if (mandatory || rng.chance(density)) {
        c.graph.nodes[static_cast<std::size_t>(b)].inputs.push_back(a);
        c.graph.nodes[static_cast<std::size_t>(a)].outputs.push_back(b);
      }
    }
  // Per-rank order: a random linear extension of the DAG restricted to each rank.
  c.schedule.ranks.resize(static_cast<std::size_t>(P));
  std::vector<int> indeg(static_cast<std::size_t>(n));
  std::vector<int> ready;
  for (int i = 0; i < n; ++i) {
    indeg[static_cast<std::size_t>(i)] = static_cast<int>(c.graph.nodes[static_cast<std::size_t>(i)].inputs.size());
    if (indeg[static_cast<std::size_t>(i)] == 0) ready.push_back(i);
  }
  while (!ready.empty()) {
    const auto k = static_cast<std::size_t>(rng.uniform(0, static_cast<int>(ready.size()) - 1));
    const int v = ready[k];
    ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(k));
    const auto& node = c.graph.nodes[static_cast<std::size_t>(v)];
    c.schedule.ranks[node.rank.index()].push_back(pw::ScheduledStage{v, {}});
    for (auto o : node.outputs)
      if (--indeg[static_cast<std::size_t>(o)] == 0) ready.push_back(o);
  }
  // Costs: random latencies (some zero), activations, edge sizes; transfer = bytes * k ns.
  c.cost.ns_per_byte = rng.uniform(0, 4);
  for (const auto& node : c.graph.nodes) {
    const auto& ch = c.part.chunk(node.stage.module, node.stage.chunk);
    const std::int64_t tok = c.smbs[node.stage.sub_microbatch.index()].item_tokens()[0];
    c.cost.latency_table[{node.stage.module.value(), ch.first_layer, static_cast<int>(node.stage.pass), tok}] =
        rng.chance(5) ? 0 : rng.uniform(1, 20);
    if (node.stage.pass == pw::Pass::forward)
      c.cost.activation_table[{node.stage.module.value(), ch.first_layer, tok}] = rng.uniform(0, 50);
  }
  for (std::size_t i = 0; i < c.graph.nodes.size(); ++i)
    for (auto o : c.graph.nodes[i].outputs) c.edge_bytes[{static_cast<pw::NodeIndex>(i), o}] = rng.uniform(0, 5);
  c.plan = mini_lower(c.model, c.part, c.smbs, c.graph, c.schedule,
                      [&](pw::NodeIndex p, pw::NodeIndex q) { return pw::Bytes{c.edge_bytes.at({p, q})}; });
  c.plan.setup = c.setup.name;
  return c;
}

struct Brute {
  std::int64_t step = 0;
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> compute;  // [rank][action] (start, end)
  std::vector<std::pair<std::int64_t, std::int64_t>> transfer;
  std::vector<std::int64_t> busy;
  std::vector<std::int64_t> activation_peak;
};

/// The naive reference: one tick = 1 ns; at each tick, repeat until nothing changes: finish
/// computes and transfers ending now, start the head of every idle link's queue, and let every
/// rank whose compute stream is idle take its next action if it is eligible now.
Brute brute_force(const pw::Plan& plan, const TableCost& cost) {
  const std::size_t P = plan.ranks.size();
  // Durations and memory straight from the cost model (no cache, no emulator code).
  std::vector<std::vector<std::int64_t>> dur(P), alloc(P), release(P);
  std::map<std::tuple<int, int, int>, std::pair<std::size_t, std::size_t>> forward_at;
  for (std::size_t r = 0; r < P; ++r) {
    dur[r].assign(plan.ranks[r].size(), 0);
    alloc[r].assign(plan.ranks[r].size(), 0);
    release[r].assign(plan.ranks[r].size(), 0);
    for (std::size_t i = 0; i < plan.ranks[r].size(); ++i) {
      const auto& a = plan.ranks[r][i];
      if (const auto* f = std::get_if<pw::Forward>(&a)) {
        const auto st = pw::StageSpec::of(plan.partition, f->module, f->chunk, pw::Pass::forward);
        const auto& smb = plan.sub_microbatch(f->sub_microbatch);
        dur[r][i] = cost.latency(st, smb, f->strategy).count();
        alloc[r][i] = cost.activation_bytes(st, smb, f->strategy).count();
        release[r][i] = alloc[r][i];  // until a backward claims it
        forward_at[{f->module.value(), f->chunk, f->sub_microbatch.value()}] = {r, i};
      } else if (const auto* b = std::get_if<pw::Backward>(&a)) {
        const auto st = pw::StageSpec::of(plan.partition, b->module, b->chunk, b->pass);
        dur[r][i] = cost.latency(st, plan.sub_microbatch(b->sub_microbatch), b->strategy).count();
      }
    }
  }
  for (std::size_t r = 0; r < P; ++r)
    for (std::size_t i = 0; i < plan.ranks[r].size(); ++i)
      if (const auto* b = std::get_if<pw::Backward>(&plan.ranks[r][i]); b && b->pass != pw::Pass::backward_input) {
        const auto [fr, fi] = forward_at.at({b->module.value(), b->chunk, b->sub_microbatch.value()});
        release[r][i] = alloc[fr][fi];
        release[fr][fi] = 0;
      }

  const std::size_t T = plan.transfers.size();
  Brute out;
  out.compute.resize(P);
  for (std::size_t r = 0; r < P; ++r) out.compute[r].assign(plan.ranks[r].size(), {-1, -1});
  out.transfer.assign(T, {-1, -1});
  out.busy.assign(P, 0);
  out.activation_peak.assign(P, 0);
  std::vector<std::int64_t> live(P, 0);
  std::vector<std::size_t> pos(P, 0);
  std::vector<long> running(P, -1);
  std::vector<std::int64_t> run_end(P, 0);
  std::vector<std::deque<std::size_t>> queue(P * P);
  std::vector<long> on_link(P * P, -1);
  std::vector<std::int64_t> link_end(P * P, 0);
  std::vector<bool> arrived(T, false);
  for (std::int64_t t = 0;; ++t) {
    REQUIRE(t < 100000);  // a valid plan finishes long before this
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t r = 0; r < P; ++r)
        if (running[r] >= 0 && run_end[r] == t) {
          live[r] -= release[r][static_cast<std::size_t>(running[r])];
          running[r] = -1;
          changed = true;
        }
      for (std::size_t l = 0; l < P * P; ++l) {
        if (on_link[l] >= 0 && link_end[l] == t) {
          arrived[static_cast<std::size_t>(on_link[l])] = true;
          on_link[l] = -1;
          changed = true;
        }
        if (on_link[l] < 0 && !queue[l].empty()) {
          const std::size_t tr = queue[l].front();
          queue[l].pop_front();
          on_link[l] = static_cast<long>(tr);
          link_end[l] = t + cost.transfer_time(plan.transfers[tr].bytes).count();
          out.transfer[tr] = {t, link_end[l]};
          changed = true;
        }
      }
      for (std::size_t r = 0; r < P; ++r)
        while (running[r] < 0 && pos[r] < plan.ranks[r].size()) {
          const auto& a = plan.ranks[r][pos[r]];
          if (std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a)) {
            const std::size_t i = pos[r];
            running[r] = static_cast<long>(i);
            run_end[r] = t + dur[r][i];
            out.compute[r][i] = {t, run_end[r]};
            out.busy[r] += dur[r][i];
            live[r] += alloc[r][i];
            out.activation_peak[r] = std::max(out.activation_peak[r], live[r]);
          } else if (const auto* s = std::get_if<pw::Send>(&a)) {
            const auto& tr = plan.transfer(s->transfer);
            queue[tr.from.index() * P + tr.to.index()].push_back(s->transfer.index());
          } else if (const auto* w = std::get_if<pw::Wait>(&a)) {
            if (!arrived[w->transfer.index()]) break;
          }
          ++pos[r];
          changed = true;
        }
    }
    bool done = true;
    for (std::size_t r = 0; r < P; ++r) done = done && pos[r] == plan.ranks[r].size() && running[r] < 0;
    for (std::size_t l = 0; l < P * P; ++l) done = done && on_link[l] < 0 && queue[l].empty();
    if (done) {
      out.step = t;
      break;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("emulate() agrees exactly with a brute-force per-nanosecond simulator on random plans") {
  int compared = 0, with_contention = 0;
  for (std::uint64_t seed = 1; seed <= 400; ++seed) {
    CAPTURE(seed);
    const Case c = random_case(seed);
    const auto res = pw::emulate(c.plan, c.model, c.setup, c.cost,
                                 {.record_timeline = true, .cache = {.enabled = true, .uniform_layers = false}});
    const Brute ref = brute_force(c.plan, c.cost);
    CHECK(res.step_time.count() == ref.step);
    for (std::size_t r = 0; r < c.plan.ranks.size(); ++r) {
      CHECK(res.ranks[r].busy.count() == ref.busy[r]);
      CHECK((res.ranks[r].peak_memory - res.ranks[r].static_memory).count() == ref.activation_peak[r]);
    }
    for (const auto& e : res.timeline) {
      if (e.kind == pw::TimelineEvent::Kind::compute) {
        const auto& [s, en] = ref.compute[e.rank.index()][static_cast<std::size_t>(e.action)];
        CHECK(e.start.count() == s);
        CHECK(e.end.count() == en);
      } else {
        const auto& [s, en] = ref.transfer[e.transfer.index()];
        CHECK(e.start.count() == s);
        CHECK(e.end.count() == en);
        // Link contention happened: the transfer started after its producer's data existed.
        const auto& tr = c.plan.transfers[e.transfer.index()];
        for (const auto& p : res.timeline)
          if (p.kind == pw::TimelineEvent::Kind::compute && p.stage == tr.producer && e.start > p.end) ++with_contention;
      }
    }
    // The fast path on the same graph and schedule gives the same stage times.
    std::vector<pw::Nanoseconds> lat(c.graph.size());
    for (std::size_t n = 0; n < lat.size(); ++n) {
      const auto& st = c.graph.nodes[n].stage;
      lat[n] = c.cost.latency(pw::StageSpec::of(c.part, st.module, st.chunk, st.pass), c.smbs[st.sub_microbatch.index()],
                              pw::MemoryStrategy{});
    }
    const auto fast = pw::emulate_schedule(c.graph, c.schedule, lat, [&](pw::NodeIndex p, pw::NodeIndex q) {
      return c.cost.transfer_time(pw::Bytes{c.edge_bytes.at({p, q})});
    });
    CHECK(fast.step_time == res.step_time);
    for (const auto& e : res.timeline) {
      if (e.kind != pw::TimelineEvent::Kind::compute) continue;
      std::size_t n = 0;
      while (!(c.graph.nodes[n].stage == e.stage)) ++n;
      CHECK(fast.start[n] == e.start);
      CHECK(fast.end[n] == e.end);
    }
    ++compared;
  }
  CHECK(compared == 400);
  CHECK(with_contention > 50);  // the random plans do exercise link contention
}
