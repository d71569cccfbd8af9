// Dual-queue interleaver: 1F1B closed form, an independent event simulation of the produced
// order, memory pausing against an independent per-rank replay, and bubble filling.
#include <doctest/doctest.h>

#include <pipeweaver/schedule/dual_queue_interleaver.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pw = pipeweaver;

namespace {

struct Rng {  // splitmix64
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::int64_t uniform(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
};

/// Hand-built step graph: `encoders` modules of `enc_chunks` chunks, each with `enc_smbs`
/// sub-microbatches per microbatch, feeding a backbone of `bb_chunks` chunks with one
/// sub-microbatch per microbatch. Chunk c on rank c mod P.
struct Built {
  pw::StageGraph g;
  std::vector<int> microbatch;  // per node
};
Built build(int P, int microbatches, int bb_chunks, int encoders = 0, int enc_chunks = 0, int enc_smbs = 1) {
  Built b;
  auto add = [&](int module, int chunk, int smb, pw::Pass pass, int mb) {
    pw::StageNode n;
    n.stage = pw::StageRef{pw::ModuleId{module}, chunk, pw::SubMicrobatchId{smb}, pass};
    n.rank = pw::RankId{chunk % P};
    b.g.nodes.push_back(n);
    b.microbatch.push_back(mb);
    return static_cast<pw::NodeIndex>(b.g.nodes.size() - 1);
  };
  auto edge = [&](pw::NodeIndex from, pw::NodeIndex to) {
    b.g.nodes[static_cast<std::size_t>(to)].inputs.push_back(from);
    b.g.nodes[static_cast<std::size_t>(from)].outputs.push_back(to);
  };
  int smb = 0;
  for (int mb = 0; mb < microbatches; ++mb) {
    std::vector<std::pair<pw::NodeIndex, pw::NodeIndex>> enc_ends;  // (last forward, last backward)
    for (int e = 0; e < encoders; ++e)
      for (int s = 0; s < enc_smbs; ++s, ++smb) {
        std::vector<pw::NodeIndex> f, bw;
        for (int c = 0; c < enc_chunks; ++c) f.push_back(add(e, c, smb, pw::Pass::forward, mb));
        for (int c = 0; c < enc_chunks; ++c) bw.push_back(add(e, c, smb, pw::Pass::backward, mb));
        for (int c = 1; c < enc_chunks; ++c) edge(f[static_cast<std::size_t>(c - 1)], f[static_cast<std::size_t>(c)]);
        for (int c = 0; c + 1 < enc_chunks; ++c) edge(bw[static_cast<std::size_t>(c + 1)], bw[static_cast<std::size_t>(c)]);
        for (int c = 0; c < enc_chunks; ++c) edge(f[static_cast<std::size_t>(c)], bw[static_cast<std::size_t>(c)]);
        enc_ends.push_back({f.back(), bw.back()});
      }
    std::vector<pw::NodeIndex> f, bw;
    for (int c = 0; c < bb_chunks; ++c) f.push_back(add(encoders, c, smb, pw::Pass::forward, mb));
    for (int c = 0; c < bb_chunks; ++c) bw.push_back(add(encoders, c, smb, pw::Pass::backward, mb));
    ++smb;
    for (int c = 1; c < bb_chunks; ++c) edge(f[static_cast<std::size_t>(c - 1)], f[static_cast<std::size_t>(c)]);
    for (int c = 0; c + 1 < bb_chunks; ++c) edge(bw[static_cast<std::size_t>(c + 1)], bw[static_cast<std::size_t>(c)]);
    for (int c = 0; c < bb_chunks; ++c) edge(f[static_cast<std::size_t>(c)], bw[static_cast<std::size_t>(c)]);
    for (auto [ef, eb] : enc_ends) {
      edge(ef, f.front());
      edge(bw.front(), eb);
    }
  }
  return b;
}

/// Independent replay: ranks run their lists in order; a node starts when its rank is free
/// and every input has ended (+ transfer across ranks). Returns false on a deadlock.
bool replay(const pw::StageGraph& g, const pw::Schedule& s, std::span<const pw::Nanoseconds> lat, auto transfer,
            std::vector<std::int64_t>& start, std::vector<std::int64_t>& end) {
  const std::size_t n = g.nodes.size();
  start.assign(n, -1);
  end.assign(n, -1);
  std::vector<std::size_t> pos(s.ranks.size(), 0);
  std::vector<std::int64_t> clock(s.ranks.size(), 0);
  std::size_t done = 0;
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      while (pos[r] < s.ranks[r].size()) {
        const auto v = s.ranks[r][pos[r]].node;
        std::int64_t t = clock[r];
        bool ok = true;
        for (auto u : g.nodes[static_cast<std::size_t>(v)].inputs) {
          if (end[static_cast<std::size_t>(u)] < 0) {
            ok = false;
            break;
          }
          std::int64_t arr = end[static_cast<std::size_t>(u)];
          if (g.nodes[static_cast<std::size_t>(u)].rank != g.nodes[static_cast<std::size_t>(v)].rank) arr += transfer(u, v).count();
          t = std::max(t, arr);
        }
        if (!ok) break;
        start[static_cast<std::size_t>(v)] = t;
        end[static_cast<std::size_t>(v)] = t + lat[static_cast<std::size_t>(v)].count();
        clock[r] = end[static_cast<std::size_t>(v)];
        ++pos[r];
        ++done;
        progress = true;
      }
    }
  }
  return done == n;
}

/// Per-rank activation peak of an order: a forward adds its bytes, its stage's backward frees them.
std::vector<std::int64_t> replay_memory(const pw::StageGraph& g, const pw::Schedule& s, std::span<const pw::Bytes> act) {
  std::vector<std::int64_t> peak(s.ranks.size(), 0);
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    std::int64_t mem = 0;
    for (const auto& st : s.ranks[r]) {
      const auto& nd = g.nodes[static_cast<std::size_t>(st.node)];
      if (nd.stage.pass == pw::Pass::forward) {
        mem += act[static_cast<std::size_t>(st.node)].count();
        peak[r] = std::max(peak[r], mem);
      } else {
        for (std::size_t u = 0; u < g.nodes.size(); ++u) {
          const auto& f = g.nodes[u].stage;
          if (f.pass == pw::Pass::forward && f.module == nd.stage.module && f.chunk == nd.stage.chunk &&
              f.sub_microbatch == nd.stage.sub_microbatch)
            mem -= act[u].count();
        }
      }
    }
  }
  return peak;
}

void check_against_replay(const pw::StageGraph& g, const pw::InterleaveResult& res, std::span<const pw::Nanoseconds> lat,
                          auto transfer) {
  REQUIRE(res.complete);
  // Every node once, on its own rank.
  std::vector<int> seen(g.nodes.size(), 0);
  for (std::size_t r = 0; r < res.schedule.ranks.size(); ++r)
    for (const auto& st : res.schedule.ranks[r]) {
      ++seen[static_cast<std::size_t>(st.node)];
      CHECK(g.nodes[static_cast<std::size_t>(st.node)].rank.index() == r);
    }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  std::vector<std::int64_t> start, end;
  REQUIRE(replay(g, res.schedule, lat, transfer, start, end));
  std::int64_t step = 0;
  for (std::size_t v = 0; v < g.nodes.size(); ++v) {
    CHECK(res.start[v].count() == start[v]);
    CHECK(res.end[v].count() == end[v]);
    step = std::max(step, end[v]);
  }
  CHECK(res.step_time.count() == step);
}

}  // namespace

TEST_CASE("dual-queue on a single-module chain with equal F and B matches 1F1B's closed form") {
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  pw::DualQueueInterleaver dq;
  for (int P : {1, 2, 3, 4, 8})
    for (int M : {1, 2, 3, 4, 8, 16}) {
      CAPTURE(P);
      CAPTURE(M);
      auto b = build(P, M, P);
      const std::int64_t t = 7;
      std::vector<pw::Nanoseconds> lat(b.g.size(), pw::Nanoseconds{t});
      std::vector<std::int64_t> prio(b.g.size());
      for (std::size_t v = 0; v < b.g.size(); ++v) prio[v] = M - b.microbatch[v];  // microbatch order
      auto res = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = {}, .memory_budget = {}, .strategy = {}, .group = {}}, zero);
      CHECK(res.step_time.count() == (M + P - 1) * (t + t));
      check_against_replay(b.g, res, lat, zero);
    }
}

TEST_CASE("dual-queue never breaks a dependency (random multimodal graphs, random priorities)") {
  Rng rng{11};
  pw::DualQueueInterleaver dq;  // reused across calls on purpose
  for (int trial = 0; trial < 200; ++trial) {
    CAPTURE(trial);
    const int P = static_cast<int>(rng.uniform(1, 4));
    const int K = static_cast<int>(rng.uniform(1, 2));
    auto b = build(P, static_cast<int>(rng.uniform(1, 6)), P * K, static_cast<int>(rng.uniform(0, 2)),
                   P * static_cast<int>(rng.uniform(1, 2)), static_cast<int>(rng.uniform(1, 3)));
    std::vector<pw::Nanoseconds> lat(b.g.size());
    std::vector<std::int64_t> prio(b.g.size());
    for (std::size_t v = 0; v < b.g.size(); ++v) {
      lat[v] = pw::Nanoseconds{rng.uniform(0, 50)};
      prio[v] = rng.uniform(0, 5);
    }
    std::vector<std::int64_t> xfer(b.g.size() * b.g.size());
    for (auto& x : xfer) x = rng.uniform(0, 10);
    auto transfer = [&](pw::NodeIndex u, pw::NodeIndex v) {
      return pw::Nanoseconds{xfer[static_cast<std::size_t>(u) * b.g.size() + static_cast<std::size_t>(v)]};
    };
    auto res = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = {}, .memory_budget = {}, .strategy = {}, .group = {}}, transfer);
    check_against_replay(b.g, res, lat, transfer);
    CHECK(res.memory_respected);
  }
}

TEST_CASE("dual-queue pauses forwards to keep each rank's activations under its budget") {
  Rng rng{5};
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  pw::DualQueueInterleaver dq;
  int tightened = 0, respected_plain = 0;
  for (int trial = 0; trial < 100; ++trial) {
    CAPTURE(trial);
    const int P = static_cast<int>(rng.uniform(2, 4));
    const int M = static_cast<int>(rng.uniform(4, 10));
    auto b = build(P, M, P * static_cast<int>(rng.uniform(1, 2)), static_cast<int>(rng.uniform(0, 1)), P,
                   static_cast<int>(rng.uniform(1, 3)));
    std::vector<pw::Nanoseconds> lat(b.g.size());
    std::vector<std::int64_t> prio(b.g.size());
    std::vector<pw::Bytes> act(b.g.size());
    std::vector<pw::MemoryStrategy> strat(b.g.size());
    std::vector<std::int32_t> group(b.g.size());
    for (std::size_t v = 0; v < b.g.size(); ++v) {
      lat[v] = pw::Nanoseconds{rng.uniform(1, 30)};
      prio[v] = rng.uniform(0, 1) == 0 ? -b.microbatch[v] : rng.uniform(-10, 0);
      act[v] = pw::Bytes{rng.uniform(1, 10)};
      strat[v] = pw::MemoryStrategy{static_cast<std::int16_t>(v % 3), 0, 0};
      group[v] = b.microbatch[v];
    }
    // Unconstrained peaks, then a budget between the largest microbatch footprint and that peak.
    auto free_run = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = act, .memory_budget = {}, .strategy = strat, .group = {}}, zero);
    auto free_peak = replay_memory(b.g, free_run.schedule, act);
    std::vector<std::int64_t> group_max(static_cast<std::size_t>(P), 0);
    for (int mb = 0; mb < M; ++mb)
      for (int r = 0; r < P; ++r) {
        std::int64_t sum = 0;
        for (std::size_t v = 0; v < b.g.size(); ++v)
          if (b.microbatch[v] == mb && b.g.nodes[v].rank.value() == r && b.g.nodes[v].stage.pass == pw::Pass::forward)
            sum += act[v].count();
        group_max[static_cast<std::size_t>(r)] = std::max(group_max[static_cast<std::size_t>(r)], sum);
      }
    for (std::size_t r = 0; r < free_peak.size(); ++r) CHECK(free_run.peak_activation[r].count() == free_peak[r]);
    std::vector<pw::Bytes> budget(static_cast<std::size_t>(P));
    for (std::size_t r = 0; r < budget.size(); ++r) budget[r] = pw::Bytes{std::max(group_max[r], free_peak[r] / 2)};
    for (bool grouped : {false, true}) {
      CAPTURE(grouped);
      auto res = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = act, .memory_budget = budget, .strategy = strat,
                              .group = grouped ? std::span<const std::int32_t>(group) : std::span<const std::int32_t>()},
                        zero);
      check_against_replay(b.g, res, lat, zero);
      for (std::size_t r = 0; r < res.schedule.ranks.size(); ++r)
        for (const auto& st : res.schedule.ranks[r]) CHECK(st.strategy == strat[static_cast<std::size_t>(st.node)]);
      auto peak = replay_memory(b.g, res.schedule, act);
      for (std::size_t r = 0; r < peak.size(); ++r) {
        CHECK(res.peak_activation[r].count() == peak[r]);
        if (res.memory_respected) CHECK(peak[r] <= budget[r].count());
        if (grouped && free_peak[r] > budget[r].count()) ++tightened;
      }
      // With microbatch groups and every microbatch fitting alone, pausing never deadlocks.
      if (grouped) CHECK(res.memory_respected);
      else respected_plain += res.memory_respected ? 1 : 0;
    }
  }
  CHECK(tightened > 50);  // the budgets really bit
  MESSAGE("without groups, " << respected_plain << " of 100 runs kept memory without the fallback");
}

TEST_CASE("dual-queue falls back when one forward alone exceeds the budget") {
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  auto b = build(2, 3, 2);
  std::vector<pw::Nanoseconds> lat(b.g.size(), pw::Nanoseconds{5});
  std::vector<std::int64_t> prio(b.g.size(), 0);
  std::vector<pw::Bytes> act(b.g.size(), pw::Bytes{100});
  std::vector<pw::Bytes> budget(2, pw::Bytes{50});
  pw::DualQueueInterleaver dq;
  auto res = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = act, .memory_budget = budget, .strategy = {}, .group = {}}, zero);
  CHECK(res.complete);
  CHECK_FALSE(res.memory_respected);
  check_against_replay(b.g, res, lat, zero);
}

TEST_CASE("dual-queue fills a bubble with a second module's independent work") {
  // Backbone over 2 ranks (chunk 0 on rank 0, chunk 1 on rank 1); rank 1 idles until the first
  // forward arrives. An independent one-chunk module on rank 1, at the lowest priority, fits there.
  auto b = build(2, 2, 2);
  const auto extra_f = static_cast<pw::NodeIndex>(b.g.nodes.size());
  for (pw::Pass pass : {pw::Pass::forward, pw::Pass::backward}) {
    pw::StageNode n;
    n.stage = pw::StageRef{pw::ModuleId{5}, 0, pw::SubMicrobatchId{99}, pass};
    n.rank = pw::RankId{1};
    b.g.nodes.push_back(n);
    b.microbatch.push_back(9);
  }
  b.g.nodes[static_cast<std::size_t>(extra_f) + 1].inputs.push_back(extra_f);
  b.g.nodes[static_cast<std::size_t>(extra_f)].outputs.push_back(extra_f + 1);
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  std::vector<pw::Nanoseconds> lat(b.g.size(), pw::Nanoseconds{10});
  lat[static_cast<std::size_t>(extra_f)] = pw::Nanoseconds{4};
  lat[static_cast<std::size_t>(extra_f) + 1] = pw::Nanoseconds{6};
  std::vector<std::int64_t> prio(b.g.size());
  for (std::size_t v = 0; v < b.g.size(); ++v) prio[v] = 10 - b.microbatch[v];
  pw::DualQueueInterleaver dq;
  auto res = dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = {}, .memory_budget = {}, .strategy = {}, .group = {}}, zero);
  check_against_replay(b.g, res, lat, zero);
  // Without the extra module the step is (M + P - 1)(F + B) = 3 · 20 = 60; the extra 10 ns of
  // work lands in rank 1's warm-up bubble [0, 10), so the step time does not grow.
  CHECK(res.step_time.count() == 60);
  CHECK(res.start[static_cast<std::size_t>(extra_f)].count() == 0);
  CHECK(res.end[static_cast<std::size_t>(extra_f) + 1].count() <= 10);
}

TEST_CASE("dual-queue rejects inconsistent input") {
  auto b = build(2, 2, 2);
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  std::vector<pw::Nanoseconds> lat(b.g.size(), pw::Nanoseconds{1});
  std::vector<std::int64_t> prio(b.g.size(), 0), short_prio(1, 0);
  std::vector<pw::Bytes> budget(1, pw::Bytes{10});
  pw::DualQueueInterleaver dq;
  CHECK_THROWS_AS((void)dq.run(b.g, {.priority = short_prio, .latency = lat, .activation_bytes = {}, .memory_budget = {}, .strategy = {}, .group = {}}, zero), pw::Error);
  CHECK_THROWS_AS((void)dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = {}, .memory_budget = budget, .strategy = {}, .group = {}}, zero), pw::Error);
  lat[0] = pw::Nanoseconds{-1};
  CHECK_THROWS_AS((void)dq.run(b.g, {.priority = prio, .latency = lat, .activation_bytes = {}, .memory_budget = {}, .strategy = {}, .group = {}}, zero), pw::Error);
}

TEST_CASE("dual-queue: prepare() and reuse across graphs give the same results as a fresh interleaver") {
  Rng rng{23};
  pw::DualQueueInterleaver kept;  // prepared on one graph, then used on others too
  std::vector<Built> graphs;
  for (int i = 0; i < 4; ++i)
    graphs.push_back(build(static_cast<int>(rng.uniform(2, 4)), static_cast<int>(rng.uniform(3, 7)), 4, 1, 4, static_cast<int>(rng.uniform(1, 3))));
  kept.prepare(graphs[0].g);
  for (int trial = 0; trial < 40; ++trial) {
    CAPTURE(trial);
    const auto& b = graphs[static_cast<std::size_t>(trial % 3 == 0 ? 0 : rng.uniform(1, 3))];
    int P = 0;
    for (const auto& nd : b.g.nodes) P = std::max(P, nd.rank.value() + 1);
    std::vector<pw::Nanoseconds> lat(b.g.size());
    std::vector<std::int64_t> prio(b.g.size());
    std::vector<pw::Bytes> act(b.g.size());
    std::vector<std::int32_t> group(b.g.size());
    for (std::size_t v = 0; v < b.g.size(); ++v) {
      lat[v] = pw::Nanoseconds{rng.uniform(1, 30)};
      prio[v] = rng.uniform(-10, 0);
      act[v] = pw::Bytes{rng.uniform(1, 10)};
      group[v] = b.microbatch[v];
    }
    std::vector<pw::Bytes> budget(static_cast<std::size_t>(P), pw::Bytes{rng.uniform(10, 60)});
    auto transfer = [](pw::NodeIndex u, pw::NodeIndex v) { return pw::Nanoseconds{(u * 7 + v * 3) % 11}; };
    const pw::InterleaveInput in{prio, lat, act, budget, {}, group};
    pw::DualQueueInterleaver fresh;
    const auto want = fresh.run(b.g, in, transfer);
    const auto got = kept.run(b.g, in, transfer);
    CHECK(got.step_time == want.step_time);
    CHECK(got.memory_respected == want.memory_respected);
    CHECK(got.start == want.start);
    CHECK(got.peak_activation == want.peak_activation);
    for (std::size_t r = 0; r < want.schedule.ranks.size(); ++r) CHECK(got.schedule.ranks[r] == want.schedule.ranks[r]);
    check_against_replay(b.g, got, lat, transfer);
  }
  // A prepared graph still has its input checked on every call.
  std::vector<std::int64_t> short_prio(3, 0);
  std::vector<pw::Nanoseconds> lat(graphs[0].g.size(), pw::Nanoseconds{1});
  CHECK_THROWS_AS((void)kept.run(graphs[0].g, pw::InterleaveInput{short_prio, lat, {}, {}, {}, {}},
                                 [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; }),
                  pw::Error);
  std::vector<std::int64_t> prio(graphs[0].g.size(), 0);
  lat[1] = pw::Nanoseconds{-1};
  kept.prepare(graphs[0].g);
  CHECK_THROWS_AS((void)kept.run(graphs[0].g, pw::InterleaveInput{prio, lat, {}, {}, {}, {}},
                                 [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; }),
                  pw::Error);
  // A too-small memory budget vector is caught even on a prepared graph.
  lat[1] = pw::Nanoseconds{1};
  std::vector<pw::Bytes> one_rank(1, pw::Bytes{100});
  CHECK_THROWS_AS((void)kept.run(graphs[0].g, pw::InterleaveInput{prio, lat, {}, one_rank, {}, {}},
                                 [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; }),
                  pw::Error);
}

namespace {

/// `b` with every backward split: the node becomes the input part (its edges kept) and a new
/// weight part on the same rank follows it (its only input).
Built split_backwards(const Built& b) {
  Built out = b;
  for (std::size_t v = 0; v < b.g.nodes.size(); ++v) {
    auto& n = out.g.nodes[v];
    if (n.stage.pass != pw::Pass::backward) continue;
    n.stage.pass = pw::Pass::backward_input;
    pw::StageNode w;
    w.stage = n.stage;
    w.stage.pass = pw::Pass::backward_weight;
    w.rank = n.rank;
    w.inputs.push_back(static_cast<pw::NodeIndex>(v));
    n.outputs.push_back(static_cast<pw::NodeIndex>(out.g.nodes.size()));
    out.g.nodes.push_back(w);
    out.microbatch.push_back(b.microbatch[v]);
  }
  return out;
}

/// Per-rank activation peak of an order on a graph whose backwards are all split: a forward
/// adds its bytes, the weight part of its stage frees them.
std::vector<std::int64_t> replay_split_memory(const pw::StageGraph& g, const pw::Schedule& s, std::span<const pw::Bytes> act) {
  std::vector<std::int64_t> peak(s.ranks.size(), 0);
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    std::int64_t mem = 0;
    for (const auto& st : s.ranks[r]) {
      const auto& nd = g.nodes[static_cast<std::size_t>(st.node)];
      if (nd.stage.pass == pw::Pass::forward) {
        mem += act[static_cast<std::size_t>(st.node)].count();
        peak[r] = std::max(peak[r], mem);
      } else if (nd.stage.pass == pw::Pass::backward_weight) {
        for (std::size_t u = 0; u < g.nodes.size(); ++u) {
          const auto& f = g.nodes[u].stage;
          if (f.pass == pw::Pass::forward && f.module == nd.stage.module && f.chunk == nd.stage.chunk &&
              f.sub_microbatch == nd.stage.sub_microbatch)
            mem -= act[u].count();
        }
      }
    }
  }
  return peak;
}

/// The deferral rule, checked on the result's times: a weight part starts only when its rank has
/// no forward and no input part whose inputs have all arrived by then and that starts later.
/// Returns how many weight parts did not run right after their input part.
int check_weight_parts_fill_bubbles(const pw::StageGraph& g, const pw::InterleaveResult& res, auto transfer) {
  int deferred = 0;
  for (std::size_t r = 0; r < res.schedule.ranks.size(); ++r) {
    const auto& list = res.schedule.ranks[r];
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto w = static_cast<std::size_t>(list[i].node);
      if (g.nodes[w].stage.pass != pw::Pass::backward_weight) continue;
      const auto input = static_cast<std::size_t>(g.nodes[w].inputs.front());
      if (i == 0 || static_cast<std::size_t>(list[i - 1].node) != input) ++deferred;
      const std::int64_t t = res.start[w].count();
      for (std::size_t j = i + 1; j < list.size(); ++j) {
        const auto v = static_cast<std::size_t>(list[j].node);
        if (g.nodes[v].stage.pass == pw::Pass::backward_weight) continue;
        std::int64_t ready = 0;
        for (auto u : g.nodes[v].inputs) {
          std::int64_t arr = res.end[static_cast<std::size_t>(u)].count();
          if (g.nodes[static_cast<std::size_t>(u)].rank != g.nodes[v].rank) arr += transfer(u, static_cast<pw::NodeIndex>(v)).count();
          ready = std::max(ready, arr);
        }
        CHECK(ready > t);
      }
    }
  }
  return deferred;
}

}  // namespace

TEST_CASE("dual-queue with deferred weight parts: valid orders, weight parts only in bubbles") {
  Rng rng{31};
  pw::DualQueueInterleaver dq;
  int deferred = 0;
  for (int trial = 0; trial < 150; ++trial) {
    CAPTURE(trial);
    const int P = static_cast<int>(rng.uniform(1, 4));
    const auto b = split_backwards(build(P, static_cast<int>(rng.uniform(1, 6)), P * static_cast<int>(rng.uniform(1, 2)),
                                         static_cast<int>(rng.uniform(0, 2)), P, static_cast<int>(rng.uniform(1, 3))));
    std::vector<pw::Nanoseconds> lat(b.g.size());
    std::vector<std::int64_t> prio(b.g.size());
    for (std::size_t v = 0; v < b.g.size(); ++v) {
      lat[v] = pw::Nanoseconds{rng.uniform(1, 50)};
      prio[v] = rng.uniform(0, 5);
    }
    std::vector<std::int64_t> xfer(b.g.size() * b.g.size());
    for (auto& x : xfer) x = rng.uniform(0, 10);
    auto transfer = [&](pw::NodeIndex u, pw::NodeIndex v) {
      return pw::Nanoseconds{xfer[static_cast<std::size_t>(u) * b.g.size() + static_cast<std::size_t>(v)]};
    };
    auto res = dq.run(b.g, {.priority = prio, .latency = lat, .defer_weight = true}, transfer);
    check_against_replay(b.g, res, lat, transfer);
    deferred += check_weight_parts_fill_bubbles(b.g, res, transfer);
  }
  CHECK(deferred > 100);  // the weight parts really moved
}

TEST_CASE("dual-queue with deferred weight parts on a chain: never slower than unsplit 1F1B's (M + P - 1)(F + B)") {
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  pw::DualQueueInterleaver dq;
  for (int P : {1, 2, 3, 4, 8})
    for (int M : {1, 2, 3, 4, 8, 16}) {
      CAPTURE(P);
      CAPTURE(M);
      const auto b = split_backwards(build(P, M, P));
      const std::int64_t t = 7;  // F = input part = weight part
      std::vector<pw::Nanoseconds> lat(b.g.size(), pw::Nanoseconds{t});
      std::vector<std::int64_t> prio(b.g.size());
      for (std::size_t v = 0; v < b.g.size(); ++v) prio[v] = M - b.microbatch[v];
      auto res = dq.run(b.g, {.priority = prio, .latency = lat, .defer_weight = true}, zero);
      check_against_replay(b.g, res, lat, zero);
      CHECK(res.step_time.count() >= 3 * M * t);                   // each rank's own work
      CHECK(res.step_time.count() <= (M + P - 1) * (t + 2 * t));   // the whole backward is 2t
    }
}

TEST_CASE("dual-queue with deferred weight parts keeps each rank's activations under its budget") {
  Rng rng{41};
  auto zero = [](pw::NodeIndex, pw::NodeIndex) { return pw::Nanoseconds{0}; };
  pw::DualQueueInterleaver dq;
  int tightened = 0;
  for (int trial = 0; trial < 100; ++trial) {
    CAPTURE(trial);
    const int P = static_cast<int>(rng.uniform(2, 4));
    const int M = static_cast<int>(rng.uniform(4, 10));
    const auto b = split_backwards(build(P, M, P * static_cast<int>(rng.uniform(1, 2)), static_cast<int>(rng.uniform(0, 1)), P,
                                         static_cast<int>(rng.uniform(1, 3))));
    std::vector<pw::Nanoseconds> lat(b.g.size());
    std::vector<std::int64_t> prio(b.g.size());
    std::vector<pw::Bytes> act(b.g.size());
    std::vector<std::int32_t> group(b.g.size());
    for (std::size_t v = 0; v < b.g.size(); ++v) {
      lat[v] = pw::Nanoseconds{rng.uniform(1, 30)};
      prio[v] = -b.microbatch[v];
      act[v] = pw::Bytes{rng.uniform(1, 10)};
      group[v] = b.microbatch[v];
    }
    const pw::InterleaveInput free_in{.priority = prio, .latency = lat, .activation_bytes = act, .defer_weight = true};
    const auto free_run = dq.run(b.g, free_in, zero);
    const auto free_peak = replay_split_memory(b.g, free_run.schedule, act);
    std::vector<std::int64_t> group_max(static_cast<std::size_t>(P), 0);
    for (int mb = 0; mb < M; ++mb)
      for (int r = 0; r < P; ++r) {
        std::int64_t sum = 0;
        for (std::size_t v = 0; v < b.g.size(); ++v)
          if (b.microbatch[v] == mb && b.g.nodes[v].rank.value() == r && b.g.nodes[v].stage.pass == pw::Pass::forward) sum += act[v].count();
        group_max[static_cast<std::size_t>(r)] = std::max(group_max[static_cast<std::size_t>(r)], sum);
      }
    std::vector<pw::Bytes> budget(static_cast<std::size_t>(P));
    for (std::size_t r = 0; r < budget.size(); ++r) budget[r] = pw::Bytes{std::max(group_max[r], free_peak[r] / 3)};
    pw::InterleaveInput in = free_in;
    in.memory_budget = budget;
    in.group = group;
    const auto res = dq.run(b.g, in, zero);
    check_against_replay(b.g, res, lat, zero);
    CHECK(res.memory_respected);  // every microbatch fits alone: weight parts free memory, never a deadlock
    const auto peak = replay_split_memory(b.g, res.schedule, act);
    for (std::size_t r = 0; r < peak.size(); ++r) {
      CHECK(res.peak_activation[r].count() == peak[r]);
      CHECK(peak[r] <= budget[r].count());
      if (free_peak[r] > budget[r].count()) ++tightened;
    }
  }
  CHECK(tightened > 50);
}
