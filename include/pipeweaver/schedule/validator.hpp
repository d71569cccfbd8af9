#pragma once
// The plan validator. validate(plan, model) checks the structure and throws
// Error{invalid_plan} at the first broken rule, with context.path "rank R, action A" (or
// "transfer T", "partition ...", "rank R" for a stage missing from it) and a message naming the
// action and the rule. The checks run in this order (a later group assumes the earlier hold):
//  1. plan level: the partition covers every module's layers (check_partition), one action
//     list per rank, sub-microbatches name real modules and microbatches; each transfer goes
//     between two different ranks in range, from its producer's rank to its consumer's rank,
//     along an edge of the step's stage graph;
//  2. each action alone, rank by rank in list order: a Forward/Backward is a stage of the step
//     (the graph built from the plan's sub-microbatches; split backward if any Backward is
//     split), on the rank the partition gives, not seen before, with a memory strategy that
//     fits its chunk's layers; a Send sits on its transfer's
//     `from` rank, a Recv and a Wait on its `to` rank; no transfer sent or received twice;
//  3. matching, transfer by transfer: exactly one Send and one Recv, and at least one Wait;
//  4. completeness: every stage of the step appears (reported on the rank that should run it);
//  5. order per directed rank pair: the k-th Recv on `to` from `from` is the k-th Send on
//     `from` to `to` (reported at the Recv);
//  6. order within a rank: a stage after each same-rank input and after a Wait for a transfer
//     of each remote input (from that input's stage, to this rank); a backward's strategy
//     equals its forward's; a Send after its producing stage; a Wait after its Recv;
//  7. deadlock freedom under the strictest executor: each rank runs its list one action at a
//     time; a Send and its Recv complete together once both ranks have reached them
//     (rendezvous: no buffering anywhere); a Wait once its transfer completed. Plan semantics
//     (ir/plan.hpp) only relax these, so a plan that passes runs on any executor.
//     Lowered plans always pass (their actions follow one global order).
// Cost: O(A log A) for A actions and transfers (the rank-pair order is checked per link that
// carries messages, the deadlock walk wakes a rank only when what it waits for happened), and
// memory in proportion to the plan, whatever its numbers say.
// validate(plan, model, setup, cost) adds memory: on each rank, static memory (the
// chunk_state_bytes of every chunk it holds) plus the activation_bytes of every Forward still
// held under the rule of schedule/activation_memory.hpp (until the last backward part of its
// stage: the Backward, or backward_weight, or a frozen module's backward_input when it has no
// weight part; a Forward with no backward on the rank holds its activations only while it runs)
// must stay <= memory_capacity(setup) at each Forward's start. Received buffers and gradients
// are not counted. peak_memory_by_rank gives the per-rank peak of the same walk without
// throwing. std-only (nvcc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/plan_limits.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/ir/sub_microbatch_index.hpp"

namespace pipeweaver {

namespace detail {

inline constexpr std::size_t no_pos = std::numeric_limits<std::size_t>::max();

struct ActionPos {
  std::size_t rank = no_pos;
  std::size_t pos = no_pos;
  [[nodiscard]] bool set() const noexcept { return rank != no_pos; }
};

[[nodiscard]] inline std::string where(std::size_t rank, std::size_t pos) {
  return "rank " + std::to_string(rank) + ", action " + std::to_string(pos);
}

[[nodiscard]] inline std::optional<StageRef> stage_of_action(const Action& a) {
  if (const auto* f = std::get_if<Forward>(&a)) return StageRef{f->module, f->chunk, f->sub_microbatch, Pass::forward};
  if (const auto* b = std::get_if<Backward>(&a)) return StageRef{b->module, b->chunk, b->sub_microbatch, b->pass};
  return std::nullopt;
}

[[nodiscard]] inline MemoryStrategy strategy_of_action(const Action& a) {
  if (const auto* f = std::get_if<Forward>(&a)) return f->strategy;
  if (const auto* b = std::get_if<Backward>(&a)) return b->strategy;
  return {};
}

[[nodiscard]] inline TransferId transfer_of_action(const Action& a) {
  if (const auto* s = std::get_if<Send>(&a)) return s->transfer;
  if (const auto* r = std::get_if<Recv>(&a)) return r->transfer;
  if (const auto* w = std::get_if<Wait>(&a)) return w->transfer;
  return TransferId{-1};
}

/// Error{invalid_plan} at action p of rank r, naming the action and the broken rule.
[[noreturn]] inline void fail_action(const Plan& plan, const ModelSpec& model, std::size_t r, std::size_t p,
                                     const std::string& rule, std::string expected = {}) {
  throw invalid_plan_error(action_label(plan, model, plan.ranks[r][p]) + ": " + rule, {.path = where(r, p), .expected = std::move(expected)});
}

/// Error{invalid_plan} at a place that is not an action (a transfer, the partition, a rank).
[[noreturn]] inline void fail_plan(std::string path, std::string message, std::string expected = {}) {
  throw invalid_plan_error(std::move(message), {.path = std::move(path), .expected = std::move(expected)});
}

/// What the structural checks learn about a plan, group by group (see the header comment).
struct PlanIndex {
  StageGraph graph;                           ///< the step's stages (group 1)
  std::vector<NodeIndex> producer, consumer;  ///< per transfer: its stages' nodes (group 1)
  std::vector<ActionPos> stage_pos;           ///< per node: where it runs (group 2)
  std::vector<MemoryStrategy> strategy;       ///< per node (group 2)
  std::vector<ActionPos> send_pos, recv_pos;  ///< per transfer (group 2)
  std::vector<std::vector<ActionPos>> waits;  ///< per transfer (group 2)
};

/// Group 1, the plan itself: bounds of every field, partition, one list per rank, microbatch ids
/// (each microbatch has a sub-microbatch), stage count bounded by the plan's stage actions; the
/// step's stage graph (split backward if any Backward is split).
[[nodiscard]] inline StageGraph plan_stage_graph(const Plan& plan, const ModelSpec& model) {
  try {
    check_plan_limits(plan);
  } catch (const Error& e) {
    throw invalid_plan_error(e.message(), e.context());
  }
  check_partition(model, plan.partition);
  const std::size_t P = static_cast<std::size_t>(plan.partition.ranks);
  if (plan.ranks.size() != P)
    fail_plan("plan '" + plan.name + "'", "has " + std::to_string(plan.ranks.size()) + " action lists",
              std::to_string(P) + " (one per rank of the partition)");
  const SubMicrobatchIndex index(plan.sub_microbatches, static_cast<int>(model.modules.size()), plan.microbatches);
  for (int mb = 0; mb < plan.microbatches; ++mb) {
    bool any = false;
    for (std::size_t m = 0; m < model.modules.size() && !any; ++m)
      any = !index.of(MicrobatchId{static_cast<MicrobatchId::rep>(mb)}, ModuleId{static_cast<ModuleId::rep>(m)}).empty();
    if (!any)
      fail_plan("plan '" + plan.name + "'", "microbatch " + std::to_string(mb) + " of " + std::to_string(plan.microbatches) + " has no sub-microbatches",
                "\"microbatches\" equal to the number of microbatches the sub-microbatches name");
  }
  bool split = false;
  std::int64_t stage_actions = 0;
  for (std::size_t r = 0; r < P; ++r)
    for (std::size_t p = 0; p < plan.ranks[r].size(); ++p) {
      if (std::holds_alternative<Forward>(plan.ranks[r][p])) ++stage_actions;
      if (const auto* b = std::get_if<Backward>(&plan.ranks[r][p])) {
        ++stage_actions;
        if (b->pass == Pass::forward) fail_action(plan, model, r, p, "a Backward with pass 'forward'", "backward, backward_input or backward_weight");
        if (b->pass != Pass::backward) split = true;
      }
    }
  // A plan that runs far fewer stages than its step has is refused before the graph of the step
  // is built (its size is then bounded by the plan's); a few missing ones are reported one by
  // one by the completeness check (group 4).
  const std::int64_t stages =
      count_stage_nodes(model, plan.partition, plan.sub_microbatches, modules_with_backward(model), split);
  if (stages > 2 * stage_actions + 4096)
    fail_plan("plan '" + plan.name + "'",
              "its partition and sub-microbatches make " + std::to_string(stages) + " stages but its ranks run " + std::to_string(stage_actions),
              "every stage of the step exactly once");
  return build_stage_graph(model, plan.partition, plan.sub_microbatches, StageGraphOptions{.split_backward = split});
}

/// Group 1, the transfers: ranks in range, producer's rank to consumer's rank, along an edge.
inline void check_transfers(const Plan& plan, const ModelSpec& model, PlanIndex& ix) {
  const std::size_t P = plan.ranks.size();
  const std::size_t T = plan.transfers.size();
  ix.producer.assign(T, -1);
  ix.consumer.assign(T, -1);
  for (std::size_t t = 0; t < T; ++t) {
    const Transfer& tr = plan.transfers[t];
    const std::string path = "transfer " + std::to_string(t);
    auto in_range = [&](RankId x) { return x.value() >= 0 && x.index() < P; };
    if (!in_range(tr.from) || !in_range(tr.to) || tr.from == tr.to)
      fail_plan(path, "goes from rank " + std::to_string(tr.from.value()) + " to rank " + std::to_string(tr.to.value()),
                "two different ranks below " + std::to_string(P));
    ix.producer[t] = ix.graph.find(tr.producer);
    ix.consumer[t] = ix.graph.find(tr.consumer);
    if (ix.producer[t] < 0) fail_plan(path, "its producer " + describe_stage(model, tr.producer) + " is not a stage of this step");
    if (ix.consumer[t] < 0) fail_plan(path, "its consumer " + describe_stage(model, tr.consumer) + " is not a stage of this step");
    const StageNode& pn = ix.graph.nodes[static_cast<std::size_t>(ix.producer[t])];
    const StageNode& cn = ix.graph.nodes[static_cast<std::size_t>(ix.consumer[t])];
    if (pn.rank != tr.from || cn.rank != tr.to)
      fail_plan(path, "goes from rank " + std::to_string(tr.from.value()) + " to rank " + std::to_string(tr.to.value()),
                "from its producer's rank " + std::to_string(pn.rank.value()) + " to its consumer's rank " + std::to_string(cn.rank.value()));
    if (!std::binary_search(cn.inputs.begin(), cn.inputs.end(), ix.producer[t]))
      fail_plan(path, describe_stage(model, tr.producer) + " does not feed " + describe_stage(model, tr.consumer),
                "a transfer along a dependency of the step");
    if (tr.bytes < Bytes{0}) fail_plan(path, "has " + std::to_string(tr.bytes.count()) + " bytes", "a non-negative size");
  }
}

/// Group 2 for a Send, Recv or Wait at (r, p): on the right rank, not sent or received twice.
inline void index_transfer_action(const Plan& plan, const ModelSpec& model, std::size_t r, std::size_t p, PlanIndex& ix) {
  const Action& a = plan.ranks[r][p];
  const std::size_t T = plan.transfers.size();
  const TransferId t = transfer_of_action(a);
  if (t.value() < 0 || t.index() >= T) fail_action(plan, model, r, p, "names a transfer that does not exist", "a transfer id below " + std::to_string(T));
  const Transfer& tr = plan.transfers[t.index()];
  if (std::holds_alternative<Send>(a)) {
    if (tr.from.index() != r) fail_action(plan, model, r, p, "Send on rank " + std::to_string(r), "on the transfer's sender, rank " + std::to_string(tr.from.value()));
    const ActionPos& first = ix.send_pos[t.index()];
    if (first.set())
      fail_action(plan, model, r, p, "second Send of this transfer (first at " + where(first.rank, first.pos) + ")", "exactly one Send per transfer");
    ix.send_pos[t.index()] = {r, p};
  } else if (std::holds_alternative<Recv>(a)) {
    if (tr.to.index() != r) fail_action(plan, model, r, p, "Recv on rank " + std::to_string(r), "on the transfer's receiver, rank " + std::to_string(tr.to.value()));
    const ActionPos& first = ix.recv_pos[t.index()];
    if (first.set())
      fail_action(plan, model, r, p, "second Recv of this transfer (first at " + where(first.rank, first.pos) + ")", "exactly one Recv per transfer");
    ix.recv_pos[t.index()] = {r, p};
  } else {
    if (tr.to.index() != r) fail_action(plan, model, r, p, "Wait on rank " + std::to_string(r), "on the transfer's receiver, rank " + std::to_string(tr.to.value()));
    ix.waits[t.index()].push_back({r, p});
  }
}

/// Group 2: each action alone, rank by rank in list order.
inline void index_actions(const Plan& plan, const ModelSpec& model, PlanIndex& ix) {
  const std::size_t N = ix.graph.nodes.size();
  const std::size_t T = plan.transfers.size();
  ix.stage_pos.assign(N, {});
  ix.strategy.assign(N, {});
  ix.send_pos.assign(T, {});
  ix.recv_pos.assign(T, {});
  ix.waits.assign(T, {});
  for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
    for (std::size_t p = 0; p < plan.ranks[r].size(); ++p) {
      const Action& a = plan.ranks[r][p];
      const auto st = stage_of_action(a);
      if (!st) {
        index_transfer_action(plan, model, r, p, ix);
        continue;
      }
      const NodeIndex n = ix.graph.find(*st);
      if (n < 0) fail_action(plan, model, r, p, "no such stage in this step (not in the stage graph of the plan's partition and sub-microbatches)");
      const auto nu = static_cast<std::size_t>(n);
      if (ix.graph.nodes[nu].rank.index() != r)
        fail_action(plan, model, r, p, "runs on rank " + std::to_string(r) + " but the partition places this chunk on rank " + std::to_string(ix.graph.nodes[nu].rank.value()),
                    "every stage on its chunk's rank");
      if (ix.stage_pos[nu].set())
        fail_action(plan, model, r, p, "duplicate stage: already at " + where(ix.stage_pos[nu].rank, ix.stage_pos[nu].pos), "every stage exactly once");
      if (const MemoryStrategy ms = strategy_of_action(a); ms.layers_changed() > plan.partition.chunk(st->module, st->chunk).layer_count)
        fail_action(plan, model, r, p, "strategy '" + to_string(ms) + "' changes more layers than the chunk's " +
                                           std::to_string(plan.partition.chunk(st->module, st->chunk).layer_count),
                    "recompute and offload counts summing to at most the chunk's layers");
      ix.stage_pos[nu] = {r, p};
      ix.strategy[nu] = strategy_of_action(a);
    }
  }
}

/// Group 3: per transfer exactly one Send and one Recv, and at least one Wait.
inline void check_matching(const Plan& plan, const ModelSpec& model, const PlanIndex& ix) {
  for (std::size_t t = 0; t < plan.transfers.size(); ++t) {
    const Transfer& tr = plan.transfers[t];
    const ActionPos &send = ix.send_pos[t], &recv = ix.recv_pos[t];
    if (!send.set() && !recv.set()) {
      if (!ix.waits[t].empty())
        fail_action(plan, model, ix.waits[t].front().rank, ix.waits[t].front().pos, "Wait without a Send or a Recv: the transfer is never sent",
                    "exactly one Send and one Recv per transfer");
      fail_plan("transfer " + std::to_string(t), "is never sent nor received", "exactly one Send and one Recv per transfer");
    }
    if (!recv.set())
      fail_action(plan, model, send.rank, send.pos, "missing Recv: rank " + std::to_string(tr.to.value()) + " never receives this transfer",
                  "exactly one Send and one Recv per transfer");
    if (!send.set())
      fail_action(plan, model, recv.rank, recv.pos, "missing Send: rank " + std::to_string(tr.from.value()) + " never sends this transfer",
                  "exactly one Send and one Recv per transfer");
    if (ix.waits[t].empty())
      fail_action(plan, model, recv.rank, recv.pos, "missing Wait: the received data is never waited for", "a Wait on the receiver before the consumer");
  }
}

/// Group 4: every stage of the step appears (reported on the rank that should run it).
inline void check_completeness(const ModelSpec& model, const PlanIndex& ix) {
  for (std::size_t n = 0; n < ix.graph.nodes.size(); ++n)
    if (!ix.stage_pos[n].set())
      fail_plan("rank " + std::to_string(ix.graph.nodes[n].rank.value()),
                "missing " + describe_stage(model, ix.graph.nodes[n].stage) + ": the plan never runs this stage of the step",
                "every stage exactly once");
}

/// Group 5: the k-th Recv on `to` from `from` is the k-th Send on `from` to `to`. Per link that
/// carries messages (not per rank pair: P^2 lists for P = 1024 would be most of the memory).
inline void check_link_order(const Plan& plan, const ModelSpec& model, const PlanIndex& ix) {
  const std::size_t P = plan.ranks.size();
  struct Event {
    std::size_t link = 0;  // from * P + to
    TransferId transfer{0};
    std::size_t pos = 0;   // position in the rank's list (of the Recv, for a receive)
  };
  std::vector<Event> sends, recvs;
  for (std::size_t r = 0; r < P; ++r)
    for (std::size_t p = 0; p < plan.ranks[r].size(); ++p) {
      if (const auto* s = std::get_if<Send>(&plan.ranks[r][p]))
        sends.push_back({r * P + plan.transfers[s->transfer.index()].to.index(), s->transfer, p});
      else if (const auto* v = std::get_if<Recv>(&plan.ranks[r][p]))
        recvs.push_back({plan.transfers[v->transfer.index()].from.index() * P + r, v->transfer, p});
    }
  // Stable: the events of one link stay in list order (each link's events come from one rank).
  const auto by_link = [](const Event& a, const Event& b) { return a.link < b.link; };
  std::stable_sort(sends.begin(), sends.end(), by_link);
  std::stable_sort(recvs.begin(), recvs.end(), by_link);
  // Matching (group 3) makes both lists the same transfers: the k-th of a link pair up.
  for (std::size_t i = 0; i < recvs.size() && i < sends.size(); ++i) {
    const Event &rv = recvs[i], &sd = sends[i];
    if (rv.transfer == sd.transfer) continue;
    const std::size_t from = rv.link / P, to = rv.link % P;
    std::size_t k = 0;
    while (k < i && recvs[i - k - 1].link == rv.link) ++k;
    const auto& sp = ix.send_pos[sd.transfer.index()];
    fail_action(plan, model, to, rv.pos,
                "crossed order: this is Recv number " + std::to_string(k) + " from rank " + std::to_string(from) + " but Send number " +
                    std::to_string(k) + " of rank " + std::to_string(from) + " to rank " + std::to_string(to) + " is transfer " +
                    std::to_string(sd.transfer.value()) + " (" + where(sp.rank, sp.pos) + ")",
                "Sends and Recvs of a rank pair in the same order");
  }
}

/// Group 6 for the stage at (r, p): after each input (same rank: earlier in the list; remote: a
/// Wait for a transfer of it earlier in the list), and with its forward's strategy.
inline void check_stage_order(const Plan& plan, const ModelSpec& model, const PlanIndex& ix,
                              const std::map<std::pair<NodeIndex, std::size_t>, std::size_t>& first_wait, std::size_t r,
                              std::size_t p, const StageRef& st) {
  const StageGraph& graph = ix.graph;
  const auto nu = static_cast<std::size_t>(graph.find(st));
  for (NodeIndex i : graph.nodes[nu].inputs) {
    const auto iu = static_cast<std::size_t>(i);
    const std::string input = describe_stage(model, graph.nodes[iu].stage);
    if (graph.nodes[iu].rank.index() == r) {
      if (ix.stage_pos[iu].pos > p)
        fail_action(plan, model, r, p, "stage before its input: " + input + " runs later on this rank (action " + std::to_string(ix.stage_pos[iu].pos) + ")",
                    "every input earlier in the list");
    } else {
      const auto w = first_wait.find({i, r});
      if (w == first_wait.end() || w->second > p)
        fail_action(plan, model, r, p,
                    "stage before its input: no Wait earlier on this rank for a transfer of " + input + " from rank " +
                        std::to_string(graph.nodes[iu].rank.value()),
                    "a Wait for each remote input earlier in the list");
    }
  }
  if (st.pass != Pass::forward) {
    const auto f = static_cast<std::size_t>(graph.find(StageRef{st.module, st.chunk, st.sub_microbatch, Pass::forward}));
    if (!(ix.strategy[f] == ix.strategy[nu]))
      fail_action(plan, model, r, p, "strategy '" + to_string(ix.strategy[nu]) + "' differs from its forward's '" + to_string(ix.strategy[f]) + "'",
                  "a backward's strategy equal to its forward's");
  }
}

/// Group 6: order within each rank (stages after their inputs, Sends after their producers,
/// Waits after their Recvs).
inline void check_rank_order(const Plan& plan, const ModelSpec& model, const PlanIndex& ix) {
  std::map<std::pair<NodeIndex, std::size_t>, std::size_t> first_wait;  // (producer node, rank) -> earliest Wait
  for (std::size_t t = 0; t < plan.transfers.size(); ++t)
    for (const auto& w : ix.waits[t]) {
      auto [it, fresh] = first_wait.try_emplace({ix.producer[t], w.rank}, w.pos);
      if (!fresh) it->second = std::min(it->second, w.pos);
    }
  for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
    for (std::size_t p = 0; p < plan.ranks[r].size(); ++p) {
      const Action& a = plan.ranks[r][p];
      if (const auto st = stage_of_action(a)) {
        check_stage_order(plan, model, ix, first_wait, r, p, *st);
      } else if (const auto* s = std::get_if<Send>(&a)) {
        const auto& pp = ix.stage_pos[static_cast<std::size_t>(ix.producer[s->transfer.index()])];
        if (pp.pos > p)
          fail_action(plan, model, r, p, "Send before its producer (which runs at action " + std::to_string(pp.pos) + ")", "a Send after the stage whose output it sends");
      } else if (const auto* w = std::get_if<Wait>(&a)) {
        const auto& rp = ix.recv_pos[w->transfer.index()];
        if (rp.pos > p)
          fail_action(plan, model, r, p, "Wait without a Recv before it (its Recv is at action " + std::to_string(rp.pos) + ")",
                      "a Wait after the Recv of its transfer");
      }
    }
  }
}

/// Group 7: deadlock freedom under strict rendezvous semantics (see the header comment). Each
/// rank runs until it blocks; a blocked rank is woken only when what it waits for happened (its
/// transfer completed, or its peer reached the matching Send or Recv), so the walk costs
/// O(actions + transfers).
inline void check_deadlock_free(const Plan& plan, const ModelSpec& model, const PlanIndex& ix) {
  const std::size_t P = plan.ranks.size();
  std::vector<std::size_t> cur(P, 0);
  std::vector<char> done(plan.transfers.size(), 0);
  std::vector<std::vector<std::size_t>> waiting(plan.transfers.size());  // ranks blocked on a Wait
  std::vector<std::size_t> queue;
  std::vector<char> queued(P, 1);
  for (std::size_t r = P; r-- > 0;) queue.push_back(r);
  const auto wake = [&](std::size_t r) {
    if (!queued[r]) {
      queued[r] = 1;
      queue.push_back(r);
    }
  };
  while (!queue.empty()) {
    const std::size_t r = queue.back();
    queue.pop_back();
    queued[r] = 0;
    const auto& list = plan.ranks[r];
    while (cur[r] < list.size()) {
      const Action& a = list[cur[r]];
      if (std::holds_alternative<Forward>(a) || std::holds_alternative<Backward>(a)) {
        ++cur[r];
      } else if (const auto* w = std::get_if<Wait>(&a)) {
        if (!done[w->transfer.index()]) {
          waiting[w->transfer.index()].push_back(r);
          break;
        }
        ++cur[r];
      } else {
        const TransferId t = transfer_of_action(a);
        const auto& peer = std::holds_alternative<Send>(a) ? ix.recv_pos[t.index()] : ix.send_pos[t.index()];
        if (cur[peer.rank] != peer.pos) break;  // the peer finds this rank here when it gets there
        done[t.index()] = 1;
        ++cur[r];
        ++cur[peer.rank];
        wake(peer.rank);
        for (std::size_t x : waiting[t.index()]) wake(x);
        waiting[t.index()].clear();
      }
    }
  }
  for (std::size_t r = 0; r < P; ++r) {
    if (cur[r] >= plan.ranks[r].size()) continue;
    const Action& a = plan.ranks[r][cur[r]];
    const TransferId t = transfer_of_action(a);
    std::string why;
    if (std::holds_alternative<Wait>(a)) {
      why = "its transfer never completes";
    } else {
      const bool is_send = std::holds_alternative<Send>(a);
      const auto& peer = is_send ? ix.recv_pos[t.index()] : ix.send_pos[t.index()];
      why = std::string("its ") + (is_send ? "Recv" : "Send") + " at " + where(peer.rank, peer.pos) + " is never reached (rank " +
            std::to_string(peer.rank) + " is stuck at action " + std::to_string(cur[peer.rank]) + ")";
    }
    fail_action(plan, model, r, cur[r], "deadlock: the rank blocks here forever, " + why, "a plan whose ranks can all run to the end");
  }
}

}  // namespace detail

/// Structural validation (see the header comment). Throws Error{invalid_plan}.
inline void validate(const Plan& plan, const ModelSpec& model) {
  detail::PlanIndex ix;
  ix.graph = detail::plan_stage_graph(plan, model);  // 1. plan level
  detail::check_transfers(plan, model, ix);
  detail::index_actions(plan, model, ix);            // 2. each action alone
  detail::check_matching(plan, model, ix);           // 3. matching
  detail::check_completeness(model, ix);             // 4. completeness
  detail::check_link_order(plan, model, ix);         // 5. one order per directed rank pair
  detail::check_rank_order(plan, model, ix);         // 6. order within each rank
  detail::check_deadlock_free(plan, model, ix);      // 7. deadlock freedom
}

namespace detail {

/// Weights, gradients and optimizer state of the chunks the partition puts on rank r.
[[nodiscard]] inline Bytes rank_static_bytes(const Plan& plan, const ModelSpec& model, const Setup& setup, std::size_t r) {
  const Partition& part = plan.partition;
  Bytes state{0};
  for (std::size_t m = 0; m < part.modules.size() && m < model.modules.size(); ++m)
    for (const Chunk& ch : part.modules[m].chunks)
      if (ch.rank.index() == r) state += chunk_state_bytes(model, ModuleId{static_cast<ModuleId::rep>(m)}, setup, ch.first_layer, ch.layer_count);
  return state;
}

/// Throws Error{invalid_plan} at the first stage of rank r's list that the plan's partition and
/// sub-microbatches lack (its Backwards first, then its Forwards).
inline void check_memory_stages(const Plan& plan, const ModelSpec& model, std::size_t r) {
  const auto known = [&](const StageRef& st) {
    const auto s = st.sub_microbatch;
    if (s.value() < 0 || s.index() >= plan.sub_microbatches.size()) return false;
    const ModuleId m = plan.sub_microbatches[s.index()].module();
    if (m != st.module || m.value() < 0 || m.index() >= plan.partition.modules.size()) return false;
    return st.chunk >= 0 && static_cast<std::size_t>(st.chunk) < plan.partition.modules[m.index()].chunks.size();
  };
  const auto& list = plan.ranks[r];
  for (bool backwards : {true, false})
    for (std::size_t p = 0; p < list.size(); ++p) {
      const auto st = stage_of_action(list[p]);
      if (st && (st->pass != Pass::forward) == backwards && !known(*st))
        throw invalid_plan_error(action_label(plan, model, list[p]) + ": no such stage",
                                 {.path = where(r, p), .expected = "a stage of the plan's partition and sub-microbatches"});
    }
}

/// Walks every rank's memory under the rule of schedule/activation_memory.hpp; `throw_over`
/// makes static memory over the capacity, or the first Forward that starts over it, an Error.
/// Returns the per-rank peak (static + activations).
template <class C>
std::vector<Bytes> walk_memory(const Plan& plan, const ModelSpec& model, const Setup& setup, const C& cost, bool throw_over) {
  const Bytes capacity = memory_capacity(setup);
  std::vector<Bytes> peaks(plan.ranks.size(), Bytes{0});
  for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
    const Bytes state = rank_static_bytes(plan, model, setup, r);
    if (throw_over && state > capacity)
      throw invalid_plan_error("static memory " + std::to_string(state.count()) + " bytes (weights, gradients and optimizer state of its chunks) exceeds the capacity of " +
                      std::to_string(capacity.count()) + " bytes", {.path = "rank " + std::to_string(r), .expected = "at most " + std::to_string(capacity.count()) + " bytes"});
    check_memory_stages(plan, model, r);
    const auto& list = plan.ranks[r];
    std::vector<StageRef> stages;
    std::vector<std::size_t> action;  // per entry of `stages`: its position in `list`
    for (std::size_t p = 0; p < list.size(); ++p)
      if (const auto st = stage_of_action(list[p])) {
        stages.push_back(*st);
        action.push_back(p);
      }
    const auto forward_bytes = [&](std::size_t i) {
      const auto& f = std::get<Forward>(list[action[i]]);
      return cost.activation_bytes(StageSpec::of(plan.partition, f.module, f.chunk, Pass::forward),
                                   plan.sub_microbatches[f.sub_microbatch.index()], f.strategy);
    };
    const auto over_capacity = [&](std::size_t i, Bytes held) {
      const Bytes now = state + held;
      if (throw_over && now > capacity)
        throw invalid_plan_error(action_label(plan, model, list[action[i]]) + ": memory " + std::to_string(now.count()) + " bytes (static " + std::to_string(state.count()) +
                        " + activations " + std::to_string(held.count()) + ") exceeds the capacity of " + std::to_string(capacity.count()) + " bytes", {.path = where(r, action[i]), .expected = "at most " + std::to_string(capacity.count()) + " bytes on every rank at every moment"});
    };
    peaks[r] = rank_peak_memory(stages, activation_release_positions(stages), state, forward_bytes, over_capacity);
  }
  return peaks;
}

}  // namespace detail

/// Structural validation plus memory (see the header comment). Throws Error{invalid_plan}.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
void validate(const Plan& plan, const ModelSpec& model, const Setup& setup, const C& cost) {
  validate(plan, model);
  (void)detail::walk_memory(plan, model, setup, cost, true);
}

/// Per rank, the peak of static memory plus held activations over the rank's list (the walk of
/// the memory validation, without a limit). Throws Error{invalid_plan} only for an action that
/// names a stage the plan's partition and sub-microbatches lack.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] std::vector<Bytes> peak_memory_by_rank(const Plan& plan, const ModelSpec& model, const Setup& setup, const C& cost) {
  return detail::walk_memory(plan, model, setup, cost, false);
}

}  // namespace pipeweaver
