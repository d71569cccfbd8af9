#pragma once
// Test support for test/emulate: a table-driven cost model, hand-built stage graphs of a
// homogeneous chain, GPipe / 1F1B / interleaved-1F1B schedule generators, and a minimal
// sender-inserted lowering (Schedule -> Plan) written independently of schedule/lowering.hpp.
#include <doctest/doctest.h>

#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/model/setup.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include "support/chain_model.hpp"
#include "support/greedy_schedule.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace emu_test {
namespace pw = pipeweaver;

/// Latencies from a table keyed by (module, first_layer, pass, first item's tokens), with
/// defaults F and B; activation bytes per forward; transfer time = bytes * ns_per_byte.
struct TableCost {
  std::int64_t f = 10;
  std::int64_t b = 20;
  std::int64_t activation = 100;
  std::int64_t output = 0;
  std::int64_t ns_per_byte = 0;
  std::map<std::tuple<int, int, int, std::int64_t>, std::int64_t> latency_table;
  std::map<std::tuple<int, int, std::int64_t>, std::int64_t> activation_table;
  mutable std::int64_t calls = 0;  // cost-model evaluations (cache tests)

  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M& m, const pw::MemoryStrategy&) const {
    ++calls;
    const auto key = std::tuple{s.module().value(), s.first_layer(), static_cast<int>(s.pass()),
                                m.item_tokens().empty() ? std::int64_t{0} : m.item_tokens()[0]};
    if (auto it = latency_table.find(key); it != latency_table.end()) return pw::Nanoseconds{it->second};
    return pw::Nanoseconds{s.pass() == pw::Pass::forward ? f : b};
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S& s, const M& m, const pw::MemoryStrategy&) const {
    const auto key = std::tuple{s.module().value(), s.first_layer(),
                                m.item_tokens().empty() ? std::int64_t{0} : m.item_tokens()[0]};
    if (auto it = activation_table.find(key); it != activation_table.end()) return pw::Bytes{it->second};
    return pw::Bytes{activation};
  }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const { return pw::Bytes{output}; }
  pw::Nanoseconds transfer_time(pw::Bytes bytes) const { return pw::Nanoseconds{bytes.count() * ns_per_byte}; }
};
static_assert(pw::CostModel<TableCost, pw::StageSpec, pw::SubMicrobatchSpec>);

/// One backbone module of `layers` layers (tiny shapes: static memory stays small).
inline pw::ModelSpec chain_model(int layers) { return pwtest::tiny_chain_model(layers); }

inline pw::Setup test_setup(int ranks) {
  pw::Setup s;
  s.name = "test-pp" + std::to_string(ranks);
  s.pipeline_stages = ranks;
  s.device.memory_gib = 80;
  s.device.reserved_gib = 0;
  s.microbatches_per_step = 1;
  return s;
}

/// Partition of one module into ranks * v chunks of `layers_per_chunk` layers, chunk c on c mod P.
inline pw::Partition interleaved_partition(int ranks, int v, int layers_per_chunk) {
  pw::Partition p;
  p.name = "test";
  p.ranks = ranks;
  pw::ModulePlacement mp;
  for (int c = 0; c < ranks * v; ++c)
    mp.chunks.push_back(pw::Chunk{c * layers_per_chunk, layers_per_chunk, pw::RankId{c % ranks}});
  p.modules.push_back(mp);
  return p;
}

/// One sub-microbatch per microbatch, each with a distinct single item.
inline std::vector<pw::SubMicrobatchSpec> one_per_microbatch(int microbatches, std::int64_t tokens = 16) {
  std::vector<pw::SubMicrobatchSpec> out;
  for (int m = 0; m < microbatches; ++m)
    out.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{m}, std::vector<std::int64_t>{tokens});
  return out;
}

/// Stage graph of a chain (module 0, chunks 0..C-1) for sub-microbatches 0..S-1, built by hand:
/// F(c) <- F(c-1); B(C-1) <- F(C-1); B(c) <- B(c+1), F(c). Node order: smb, pass, chunk.
inline pw::StageGraph chain_graph(const pw::Partition& part, int smbs) {
  pw::StageGraph g;
  const int C = part.chunk_count(pw::ModuleId{0});
  auto id = [&](int s, int pass, int c) { return static_cast<pw::NodeIndex>((s * 2 + pass) * C + c); };
  for (int s = 0; s < smbs; ++s)
    for (int pass = 0; pass < 2; ++pass)
      for (int c = 0; c < C; ++c) {
        pw::StageNode n;
        n.stage = pw::StageRef{pw::ModuleId{0}, c, pw::SubMicrobatchId{s}, pass == 0 ? pw::Pass::forward : pw::Pass::backward};
        n.rank = part.chunk(pw::ModuleId{0}, c).rank;
        if (pass == 0 && c > 0) n.inputs.push_back(id(s, 0, c - 1));
        if (pass == 1) {
          if (c + 1 < C) n.inputs.push_back(id(s, 1, c + 1));
          n.inputs.push_back(id(s, 0, c));
        }
        g.nodes.push_back(n);
      }
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    for (auto i : g.nodes[n].inputs) g.nodes[static_cast<std::size_t>(i)].outputs.push_back(static_cast<pw::NodeIndex>(n));
  return g;
}

/// (global chunk, microbatch, is_backward) per rank, in execution order.
struct Step {
  int chunk;
  int mb;
  bool backward;
};
using RankOrders = std::vector<std::vector<Step>>;

inline RankOrders gpipe_order(int P, int M) {
  RankOrders o(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    for (int m = 0; m < M; ++m) o[static_cast<std::size_t>(r)].push_back({r, m, false});
    for (int m = 0; m < M; ++m) o[static_cast<std::size_t>(r)].push_back({r, m, true});
  }
  return o;
}

inline RankOrders one_f_one_b_order(int P, int M) {
  RankOrders o(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    auto& l = o[static_cast<std::size_t>(r)];
    const int warm = std::min(P - r - 1, M);
    int f = 0, b = 0;
    for (; f < warm; ++f) l.push_back({r, f, false});
    while (f < M) {
      l.push_back({r, f++, false});
      l.push_back({r, b++, true});
    }
    while (b < M) l.push_back({r, b++, true});
  }
  return o;
}

/// Megatron's interleaved 1F1B (virtual pipeline of v chunks per rank; M divisible by P).
inline RankOrders interleaved_order(int P, int v, int M) {
  RankOrders o(static_cast<std::size_t>(P));
  const int total = M * v;
  auto vchunk = [&](int k, bool forward) {
    const int c = (k % (P * v)) / P;
    return forward ? c : v - 1 - c;
  };
  auto mb = [&](int k) { return (k / (P * v)) * P + k % P; };
  for (int r = 0; r < P; ++r) {
    auto& l = o[static_cast<std::size_t>(r)];
    const int warm = std::min((P - r - 1) * 2 + (v - 1) * P, total);
    int f = 0, b = 0;
    auto F = [&] { l.push_back({vchunk(f, true) * P + r, mb(f), false}); ++f; };
    auto B = [&] { l.push_back({vchunk(b, false) * P + r, mb(b), true}); ++b; };
    for (int i = 0; i < warm; ++i) F();
    while (f < total) {
      F();
      B();
    }
    while (b < total) B();
  }
  return o;
}

/// The chain graph's Schedule for per-rank orders (all strategies none).
inline pw::Schedule chain_schedule(const pw::StageGraph& g, const pw::Partition& part, const RankOrders& orders) {
  const int C = part.chunk_count(pw::ModuleId{0});
  pw::Schedule s;
  s.ranks.resize(orders.size());
  for (std::size_t r = 0; r < orders.size(); ++r)
    for (const auto& st : orders[r]) {
      const auto n = static_cast<pw::NodeIndex>((st.mb * 2 + (st.backward ? 1 : 0)) * C + st.chunk);
      REQUIRE(g.nodes[static_cast<std::size_t>(n)].rank.index() == r);
      s.ranks[r].push_back(pw::ScheduledStage{n, {}});
    }
  return s;
}

/// Sender-inserted lowering, independent of schedule/lowering.hpp: ranks emit their stages in a
/// global order (repeatedly the lowest rank whose next stage has all inputs emitted); before a
/// stage, a Wait for each cross-rank input; after it, for each cross-rank output in
/// StageNode::outputs order, a new transfer whose Send goes on this rank and whose Recv is
/// appended to the receiver's list at the same moment. `bytes(p, n)` sizes the edge p -> n.
inline pw::Plan mini_lower(const pw::ModelSpec& model, const pw::Partition& part,
                           std::vector<pw::SubMicrobatchSpec> smbs, const pw::StageGraph& g, const pw::Schedule& sched,
                           const std::function<pw::Bytes(pw::NodeIndex, pw::NodeIndex)>& bytes) {
  pw::Plan plan;
  plan.name = "mini";
  plan.model = model.name;
  plan.partition = part;
  plan.sub_microbatches = std::move(smbs);
  const std::size_t P = sched.ranks.size();
  plan.ranks.resize(P);
  std::vector<std::uint8_t> emitted(g.nodes.size(), 0);
  std::map<std::pair<pw::NodeIndex, pw::NodeIndex>, pw::TransferId> edge_transfer;
  std::vector<std::size_t> pos(P, 0);
  for (;;) {
    bool progressed = false;
    bool all_done = true;
    for (std::size_t r = 0; r < P && !progressed; ++r) {
      if (pos[r] == sched.ranks[r].size()) continue;
      all_done = false;
      const auto& ss = sched.ranks[r][pos[r]];
      const auto& node = g.nodes[static_cast<std::size_t>(ss.node)];
      bool ready = true;
      for (auto i : node.inputs) ready = ready && emitted[static_cast<std::size_t>(i)];
      if (!ready) continue;
      for (auto i : node.inputs)
        if (g.nodes[static_cast<std::size_t>(i)].rank != node.rank)
          plan.ranks[r].push_back(pw::Wait{edge_transfer.at({i, ss.node})});
      if (node.stage.pass == pw::Pass::forward)
        plan.ranks[r].push_back(pw::Forward{node.stage.module, node.stage.chunk, node.stage.sub_microbatch, ss.strategy});
      else
        plan.ranks[r].push_back(pw::Backward{node.stage.module, node.stage.chunk, node.stage.sub_microbatch, ss.strategy, node.stage.pass});
      emitted[static_cast<std::size_t>(ss.node)] = 1;
      for (auto o : node.outputs) {
        const auto& on = g.nodes[static_cast<std::size_t>(o)];
        if (on.rank == node.rank) continue;
        const pw::TransferId t{static_cast<pw::TransferId::rep>(plan.transfers.size())};
        plan.transfers.push_back(pw::Transfer{node.rank, on.rank, node.stage, on.stage, bytes(ss.node, o)});
        edge_transfer[{ss.node, o}] = t;
        plan.ranks[r].push_back(pw::Send{t});
        plan.ranks[on.rank.index()].push_back(pw::Recv{t});
      }
      ++pos[r];
      progressed = true;
    }
    if (all_done) break;
    if (!progressed) throw std::runtime_error("mini_lower: the schedule deadlocks");
  }
  return plan;
}

using pwtest::greedy_schedule;

}  // namespace emu_test
