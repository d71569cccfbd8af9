#pragma once
// Dual-queue interleaving: a greedy list scheduler that turns
// segment priorities into a per-rank order of stages.
//
// A stage enters its rank's forward or backward queue once every input is scheduled; its ready
// time is  max over inputs u of end(u) + transfer(u, v)  (transfer is zero on one rank). Each
// rank r keeps t_last (end of its last stage) and the type it ran last. Repeatedly:
//   * take the rank whose next possible start  s_r = max(t_last_r, earliest ready time among its
//     eligible queued stages)  is smallest (ties: lowest rank);
//   * among its stages ready by s_r: if both queues have one, alternate F and B from the type
//     run last (1F1B-like); otherwise take the one queue that has one; within a queue the
//     highest priority goes first (ties: lowest node index). When nothing is ready before
//     t_last this is the stage ready earliest, so independent work fills bubbles;
//   * a forward whose activation bytes would push the rank over its budget is skipped (the
//     highest-priority ready forward that fits runs instead); when none fits, the forward queue
//     pauses until a backward of that rank releases memory (the node that frees a forward's
//     bytes under the rule of schedule/activation_memory.hpp: the whole backward, the weight part
//     of a split one, or the input part of a frozen module) or a forward that fits arrives. With admission groups (InterleaveInput::group, e.g. the microbatch), a group's
//     first forward on a rank reserves room for all its forwards there, so a started group never
//     blocks on memory and pausing cannot deadlock as long as each group fits alone. If every
//     rank is nevertheless stalled by forwards that do not fit, the forward that can start
//     earliest runs anyway and the result reports memory_respected = false (the caller treats
//     that as infeasible or retries with more frugal strategies).
// Deferred weight gradients (InterleaveInput::defer_weight, for a graph with split backwards):
// the backward_weight parts go to a third queue, per rank, that is served only when the rank
// has neither a forward that fits nor an input-gradient backward ready by its start: the weight
// parts fill the bubbles the pipeline leaves (zero-bubble's B/W split), highest priority first.
// A deferred weight part keeps its forward's activations (it is the node that frees them), so
// when no ready forward fits, the rank runs a weight part instead of pausing: memory bounds how
// far they are deferred. Whatever the order, each stays after its input part (its only input).
// Without defer_weight a weight part runs as soon as it is ready, i.e. right after its input
// part, as the second half of a whole backward (but the input gradient leaves the rank earlier).
// Because the rank with the smallest possible start is always served, every stage that could be
// ready by that start is already queued: it is a true list scheduler (no lookahead needed).
// O(n·(P + log n)) per call when forwards fit (plus a scan of the ready forwards when the
// top one does not); buffers are kept in the object and reused across calls.
// std-only (compiles under nvcc).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

struct InterleaveInput {
  std::span<const std::int64_t> priority{};     ///< per node, higher runs first
  std::span<const Nanoseconds> latency{};       ///< per node
  std::span<const Bytes> activation_bytes{};    ///< per node (read for forwards); empty: no memory limit
  std::span<const Bytes> memory_budget{};     ///< per rank, static memory already subtracted; empty: unlimited
  std::span<const MemoryStrategy> strategy{};   ///< per node, copied into the schedule; empty: none
  /// Per node, an admission group >= 0 (e.g. its microbatch); empty: every forward on its own.
  /// See "admission control" below: groups keep memory pausing from deadlocking.
  std::span<const std::int32_t> group{};
  /// backward_weight parts wait in their own queue and fill bubbles (see the header comment);
  /// false: each runs right after its backward_input part.
  bool defer_weight = false;
};

struct InterleaveResult {
  Schedule schedule{};
  std::vector<Nanoseconds> start{};  ///< per node
  std::vector<Nanoseconds> end{};    ///< per node
  Nanoseconds step_time{0};        ///< latest end
  std::vector<Bytes> peak_activation{};  ///< per rank, largest sum of held activation bytes
  bool memory_respected = true;    ///< false when a forward had to overflow its rank's budget
  bool complete = true;            ///< false when some node never became ready (a dependency cycle)
};

class DualQueueInterleaver {
 public:
  /// Precomputes what depends only on `graph` (which backward releases which forward's
  /// activations); later runs on the same graph object skip that work. Call it again if the
  /// graph changes while this interleaver is kept (runs on another graph recompute it each time).
  void prepare(const StageGraph& graph) {
    check_graph(graph);
    prepare_release(graph);
    prepared_ = &graph;
  }

  /// `transfer(from, to) -> Nanoseconds` for an edge between nodes on different ranks.
  template <class TransferFn>
  [[nodiscard]] InterleaveResult run(const StageGraph& graph, const InterleaveInput& in, TransferFn&& transfer) {
    InterleaveResult out;
    run(graph, in, transfer, out);
    return out;
  }

  /// As above, writing into `out` (its buffers are reused).
  template <class TransferFn>
  void run(const StageGraph& graph, const InterleaveInput& in, TransferFn&& transfer, InterleaveResult& out) {
    const std::size_t n = graph.nodes.size();
    const bool prepared = prepared_ == &graph && release_.size() == n;
    check(graph, in, prepared);
    if (!prepared) prepare_release(graph);
    reset(graph, in, out);
    std::size_t done = 0;
    while (done < n) {
      const Pick pick = pick_rank();
      if (pick.start == kInf) {
        out.complete = false;
        break;
      }
      const NodeIndex v = take_stage(graph, in, pick);
      if (v < 0) continue;  // the rank's forward queue paused
      commit(graph, in, transfer, pick, v, out);
      ++done;
    }
  }

 private:
  static constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max();
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

  /// A rank's queues of stages: forwards, backwards (whole or input parts), and weight parts.
  enum class Queue : std::uint8_t { forward, backward, weight };
  static constexpr std::size_t kQueues = 3;

  struct Entry {
    std::int64_t ready;
    std::int64_t priority;
    NodeIndex node;
  };
  // Pending heap: earliest ready first, then priority, then node. std heaps are max-heaps, so
  // the comparators say "a comes after b".
  static bool pend_after(const Entry& a, const Entry& b) {
    if (a.ready != b.ready) return a.ready > b.ready;
    if (a.priority != b.priority) return a.priority < b.priority;
    return a.node > b.node;
  }
  static bool rdy_after(const Entry& a, const Entry& b) {
    if (a.priority != b.priority) return a.priority < b.priority;
    return a.node > b.node;
  }
  struct RankState {
    std::vector<Entry> pend_[kQueues];  ///< per queue: stages not yet ready by the rank's clock (a heap)
    std::vector<Entry> rdy_[kQueues];   ///< per queue: stages ready by it (a heap)
    std::int64_t t_last = 0;
    std::int64_t mem = 0;       ///< activation bytes held now
    std::int64_t reserved = 0;  ///< bytes held + promised to admitted groups' later forwards
    std::int64_t paused_next = kInf;  ///< while paused: earliest ready time of a queued forward that fits
    bool last_forward = false;
    bool paused = false;
    [[nodiscard]] std::vector<Entry>& pending(Queue q) { return pend_[static_cast<std::size_t>(q)]; }
    [[nodiscard]] const std::vector<Entry>& pending(Queue q) const { return pend_[static_cast<std::size_t>(q)]; }
    [[nodiscard]] std::vector<Entry>& ready(Queue q) { return rdy_[static_cast<std::size_t>(q)]; }
    [[nodiscard]] const std::vector<Entry>& ready(Queue q) const { return rdy_[static_cast<std::size_t>(q)]; }
  };
  /// The rank served next: the smallest possible start (ties: lowest rank); `force` when every
  /// rank is stalled by forwards that do not fit and the earliest one runs over budget.
  struct Pick {
    std::int64_t start = kInf;
    std::size_t rank = 0;
    bool force = false;
  };

  // Per call: the result's buffers, every rank's queues and clock, the groups; the stages
  // without inputs are queued.
  void reset(const StageGraph& graph, const InterleaveInput& in, InterleaveResult& out) {
    const std::size_t n = graph.nodes.size();
    const auto Pu = static_cast<std::size_t>(std::max(static_cast<int>(in.memory_budget.size()), max_rank_ + 1));
    out.schedule.ranks.resize(Pu);
    for (auto& r : out.schedule.ranks) r.clear();
    out.start.assign(n, Nanoseconds{0});
    out.end.assign(n, Nanoseconds{0});
    out.peak_activation.assign(Pu, Bytes{0});
    out.memory_respected = true;
    out.complete = true;
    out.step_time = Nanoseconds{0};

    remaining_.resize(n);
    ready_.assign(n, 0);
    per_rank_.assign(Pu, 0);
    for (std::size_t v = 0; v < n; ++v) {
      remaining_[v] = static_cast<std::int32_t>(graph.nodes[v].inputs.size());
      ++per_rank_[static_cast<std::size_t>(graph.nodes[v].rank.value())];
    }
    ranks_.resize(Pu);
    for (std::size_t r = 0; r < Pu; ++r) {
      RankState& rs = ranks_[r];
      for (Queue q : {Queue::forward, Queue::backward, Queue::weight})
        for (auto* heap : {&rs.pending(q), &rs.ready(q)}) {
          heap->clear();
          heap->reserve(per_rank_[r]);
        }
      rs.t_last = 0;
      rs.last_forward = false;  // so that the first choice between F and B is a forward
      rs.paused = false;
      rs.paused_next = kInf;
      rs.mem = 0;
      rs.reserved = 0;
      out.schedule.ranks[r].reserve(per_rank_[r]);
    }

    next_.assign(Pu, kInf);
    dirty_.assign(Pu, 1);
    defer_weight_ = in.defer_weight;
    tracked_ = !in.activation_bytes.empty();
    limited_ = tracked_ && !in.memory_budget.empty();
    prepare_groups(graph, in, Pu);
    for (std::size_t v = 0; v < n; ++v)
      if (remaining_[v] == 0) enqueue(graph, in, static_cast<NodeIndex>(v));
  }

  // The rank that can start something earliest. A rank's next start only changes when it runs
  // something or receives a stage, so it is recomputed only then (dirty_). Stalled (only
  // forwards that do not fit remain queued): the earliest forward over budget, forced.
  Pick pick_rank() {
    Pick best;
    for (std::size_t r = 0; r < ranks_.size(); ++r) {
      if (dirty_[r]) {
        next_[r] = next_start(ranks_[r]);
        dirty_[r] = 0;
      }
      if (next_[r] < best.start) best = Pick{next_[r], r, false};
    }
    if (best.start != kInf) return best;
    for (std::size_t r = 0; r < ranks_.size(); ++r) {
      const std::int64_t s = any_forward_start(ranks_[r]);
      if (s < best.start) best = Pick{s, r, true};
    }
    return best;
  }

  // The picked rank's stage, taken off its queue: a ready weight part first unless they are
  // deferred; else alternate F and B from the type run last when both have a ready stage, else
  // the one that has; the forward is the highest-priority ready one that fits; a deferred weight
  // part when neither is there. -1 (and the forward queue paused) when nothing can run.
  NodeIndex take_stage(const StageGraph& graph, const InterleaveInput& in, const Pick& pick) {
    RankState& rs = ranks_[pick.rank];
    dirty_[pick.rank] = 1;
    promote(rs, Queue::forward, pick.start);
    promote(rs, Queue::backward, pick.start);
    promote(rs, Queue::weight, pick.start);
    const std::size_t f_pos = fitting_forward(graph, in, rs, pick.rank, pick.force);
    const bool f_ok = f_pos != kNone;
    const bool b_ok = !rs.ready(Queue::backward).empty();
    const bool w_ok = !rs.ready(Queue::weight).empty();
    if (w_ok && (!defer_weight_ || (!f_ok && !b_ok))) return take(rs.ready(Queue::weight), 0);
    if (!f_ok && !b_ok) {
      // Nothing fits now: pause the forward queue until a backward releases memory or a
      // forward that fits arrives.
      pause(graph, in, rs, pick.rank);
      return -1;
    }
    const bool take_forward = f_ok && (!b_ok || !rs.last_forward);
    rs.last_forward = take_forward;
    return take_forward ? take(rs.ready(Queue::forward), f_pos) : take(rs.ready(Queue::backward), 0);
  }

  // Position in the ready forward heap of the highest-priority forward that fits (the heap top
  // in the common case; any forward when forced), or kNone.
  std::size_t fitting_forward(const StageGraph& graph, const InterleaveInput& in, const RankState& rs, std::size_t r, bool force) const {
    const auto& ready = rs.ready(Queue::forward);
    if (ready.empty()) return kNone;
    if (force || fits(graph, in, rs, r, ready.front().node)) return 0;
    std::size_t f_pos = kNone;
    for (std::size_t i = 1; i < ready.size(); ++i)
      if ((f_pos == kNone || rdy_after(ready[f_pos], ready[i])) && fits(graph, in, rs, r, ready[i].node)) f_pos = i;
    return f_pos;
  }

  // Runs v on the picked rank: its times, its place in the schedule, the rank's memory, and its
  // outputs' readiness (queued once every input is scheduled).
  template <class TransferFn>
  void commit(const StageGraph& graph, const InterleaveInput& in, TransferFn& transfer, const Pick& pick, NodeIndex v,
              InterleaveResult& out) {
    RankState& rs = ranks_[pick.rank];
    const auto vu = static_cast<std::size_t>(v);
    if (pick.force) out.memory_respected = false;
    const std::int64_t start = std::max(rs.t_last, ready_[vu]);
    const std::int64_t end = start + in.latency[vu].count();
    out.start[vu] = Nanoseconds{start};
    out.end[vu] = Nanoseconds{end};
    out.step_time = std::max(out.step_time, Nanoseconds{end});
    out.schedule.ranks[pick.rank].push_back({v, in.strategy.empty() ? MemoryStrategy{} : in.strategy[vu]});
    rs.t_last = end;
    if (tracked_) account_memory(graph, in, rs, pick.rank, v, out);
    for (NodeIndex u : graph.nodes[vu].outputs) {
      const auto uu = static_cast<std::size_t>(u);
      std::int64_t arrive = end;
      if (rank_[uu] != rank_[vu]) arrive += Nanoseconds{transfer(v, u)}.count();
      ready_[uu] = std::max(ready_[uu], arrive);
      if (--remaining_[uu] == 0) enqueue(graph, in, u);
    }
  }

  // Memory of rank r after v starts: a holding forward is admitted and adds its bytes; the node
  // that frees a forward's bytes releases them.
  void account_memory(const StageGraph& graph, const InterleaveInput& in, RankState& rs, std::size_t r, NodeIndex v,
                      InterleaveResult& out) {
    const auto vu = static_cast<std::size_t>(v);
    if (forward_[vu] && holds(v)) {
      rs.reserved += admission_cost(graph, in, rs, r, v);
      admit(graph, in, r, v);
      rs.paused = false;  // recomputed at the next decision if nothing fits any more
      rs.mem += in.activation_bytes[vu].count();
      out.peak_activation[r] = std::max(out.peak_activation[r], Bytes{rs.mem});
    } else if (!forward_[vu] && holder_[vu] >= 0) {
      const std::int64_t freed = in.activation_bytes[static_cast<std::size_t>(holder_[vu])].count();
      rs.mem -= freed;
      rs.reserved -= freed;
      rs.paused = false;
    }
  }

  static std::int64_t queue_start(const RankState& rs, Queue q) {
    std::int64_t e = kInf;
    if (!rs.ready(q).empty()) e = rs.t_last;
    if (!rs.pending(q).empty()) e = std::min(e, std::max(rs.t_last, rs.pending(q).front().ready));
    return e;
  }
  static std::int64_t next_start(const RankState& rs) {
    const std::int64_t f = rs.paused ? (rs.paused_next == kInf ? kInf : std::max(rs.t_last, rs.paused_next))
                                     : queue_start(rs, Queue::forward);
    return std::min({f, queue_start(rs, Queue::backward), queue_start(rs, Queue::weight)});
  }
  static std::int64_t any_forward_start(const RankState& rs) { return queue_start(rs, Queue::forward); }

  // Admission control. Without groups, a forward needs room for its own bytes. With groups
  // (e.g. microbatches), the first forward of a group on a rank reserves the bytes of all the
  // group's forwards there, and the group's later forwards are covered: a group that started
  // can always finish, so forwards never block the backwards that would free memory.
  [[nodiscard]] std::int64_t admission_cost(const StageGraph& g, const InterleaveInput& in, const RankState&, std::size_t r,
                                            NodeIndex v) const {
    const auto vu = static_cast<std::size_t>(v);
    if (!holds(v)) return 0;
    if (in.group.empty()) return in.activation_bytes[vu].count();
    (void)g;
    const std::size_t slot = static_cast<std::size_t>(in.group[vu]) * ranks_.size() + r;
    return admitted_[slot] ? 0 : group_bytes_[slot];
  }
  void admit(const StageGraph&, const InterleaveInput& in, std::size_t r, NodeIndex v) {
    if (in.group.empty()) return;
    admitted_[static_cast<std::size_t>(in.group[static_cast<std::size_t>(v)]) * ranks_.size() + r] = 1;
  }
  [[nodiscard]] bool fits(const StageGraph& g, const InterleaveInput& in, const RankState& rs, std::size_t r, NodeIndex v) const {
    if (!limited_) return true;
    return rs.reserved + admission_cost(g, in, rs, r, v) <= in.memory_budget[r].count();
  }
  void pause(const StageGraph& g, const InterleaveInput& in, RankState& rs, std::size_t r) {
    rs.paused = true;
    rs.paused_next = kInf;
    for (const auto* heap : {&rs.ready(Queue::forward), &rs.pending(Queue::forward)})
      for (const Entry& e : *heap)
        if (fits(g, in, rs, r, e.node)) rs.paused_next = std::min(rs.paused_next, e.ready);
  }
  void prepare_groups(const StageGraph& g, const InterleaveInput& in, std::size_t P) {
    if (in.group.empty() || !tracked_) return;
    std::int32_t G = 0;
    for (std::size_t v = 0; v < g.nodes.size(); ++v) G = std::max(G, in.group[v] + 1);
    group_bytes_.assign(static_cast<std::size_t>(G) * P, 0);
    admitted_.assign(static_cast<std::size_t>(G) * P, 0);
    for (std::size_t v = 0; v < g.nodes.size(); ++v)
      if (g.nodes[v].stage.pass == Pass::forward && holds(static_cast<NodeIndex>(v)))
        group_bytes_[static_cast<std::size_t>(in.group[v]) * P + g.nodes[v].rank.index()] += in.activation_bytes[v].count();
  }
  static void promote(RankState& rs, Queue q, std::int64_t s) {
    auto& pend = rs.pending(q);
    auto& rdy = rs.ready(q);
    while (!pend.empty() && pend.front().ready <= s) {
      std::pop_heap(pend.begin(), pend.end(), pend_after);
      rdy.push_back(pend.back());
      pend.pop_back();
      std::push_heap(rdy.begin(), rdy.end(), rdy_after);
    }
  }
  /// Removes entry `i` of a ready heap (0 = its top) and returns its node.
  static NodeIndex take(std::vector<Entry>& heap, std::size_t i) {
    const NodeIndex v = heap[i].node;
    if (i == 0) {
      std::pop_heap(heap.begin(), heap.end(), rdy_after);
      heap.pop_back();
    } else {
      heap[i] = heap.back();
      heap.pop_back();
      std::make_heap(heap.begin(), heap.end(), rdy_after);
    }
    return v;
  }
  void enqueue(const StageGraph& g, const InterleaveInput& in, NodeIndex v) {
    const auto vu = static_cast<std::size_t>(v);
    const auto r = static_cast<std::size_t>(rank_[vu]);
    auto& rs = ranks_[r];
    dirty_[r] = 1;
    const bool forward = forward_[vu] != 0;
    const Queue q = forward ? Queue::forward : weight_[vu] ? Queue::weight : Queue::backward;
    auto& pend = rs.pending(q);
    pend.push_back({ready_[vu], in.priority[vu], v});
    std::push_heap(pend.begin(), pend.end(), pend_after);
    if (forward && rs.paused && fits(g, in, rs, r, v)) rs.paused_next = std::min(rs.paused_next, ready_[vu]);
  }
  [[nodiscard]] bool holds(NodeIndex forward) const { return release_[static_cast<std::size_t>(forward)] >= 0; }

  // release_[forward] = the node that frees its activations (activation_release_nodes; -1: none,
  // the forward holds nothing after it runs); holder_[node] = the forward whose activations it
  // frees (-1: none).
  void prepare_release(const StageGraph& g) {
    prepared_ = nullptr;
    const std::size_t n = g.nodes.size();
    release_ = activation_release_nodes(g);
    holder_.assign(n, -1);
    for (std::size_t v = 0; v < n; ++v)
      if (release_[v] >= 0) holder_[static_cast<std::size_t>(release_[v])] = static_cast<NodeIndex>(v);
    rank_.resize(n);
    forward_.resize(n);
    weight_.resize(n);
    max_rank_ = -1;
    for (std::size_t v = 0; v < n; ++v) {
      rank_[v] = g.nodes[v].rank.value();
      max_rank_ = std::max(max_rank_, rank_[v]);
      forward_[v] = g.nodes[v].stage.pass == Pass::forward ? 1 : 0;
      weight_[v] = g.nodes[v].stage.pass == Pass::backward_weight ? 1 : 0;
    }
  }

  // Per call: the input against the graph. With `graph_checked` (a prepared graph, whose
  // structure check_graph validated once) only the input's own values are scanned.
  void check(const StageGraph& g, const InterleaveInput& in, bool graph_checked) const {
    const std::size_t n = g.nodes.size();
    auto need = [&](std::size_t got, const char* what) {
      if (got != n)
        throw input_error(std::string(what) + " has " + std::to_string(got) + " entries for " + std::to_string(n) + " stage nodes", {.path = std::string("InterleaveInput::") + what, .expected = "one entry per node"});
    };
    need(in.priority.size(), "priority");
    need(in.latency.size(), "latency");
    if (!in.activation_bytes.empty()) need(in.activation_bytes.size(), "activation_bytes");
    if (!in.strategy.empty()) need(in.strategy.size(), "strategy");
    if (!in.group.empty()) {
      need(in.group.size(), "group");
      for (std::size_t v = 0; v < n; ++v)
        if (in.group[v] < 0 || static_cast<std::size_t>(in.group[v]) > n)
          throw input_error("admission group " + std::to_string(in.group[v]) + " out of range", {.path = "node " + std::to_string(v), .expected = "0 <= group <= node count"});
    }
    const bool ranks_ok = graph_checked && (in.memory_budget.empty() || max_rank_ < static_cast<int>(in.memory_budget.size()));
    if (ranks_ok) {
      for (std::size_t v = 0; v < n; ++v)
        if (in.latency[v] < Nanoseconds{0})
          throw input_error("negative latency", {.path = "node " + std::to_string(v), .expected = "latency >= 0"});
      return;
    }
    for (std::size_t v = 0; v < n; ++v) {
      const StageNode& nd = g.nodes[v];
      auto where = [v] { return "node " + std::to_string(v); };  // built only on error: this runs per call
      if (nd.rank.value() < 0 || (!in.memory_budget.empty() && nd.rank.index() >= in.memory_budget.size()))
        throw input_error("rank " + std::to_string(nd.rank.value()) + " out of range", {.path = where(), .expected = "0 <= rank < " + std::to_string(in.memory_budget.size()) + " (memory_budget entries)"});
      if (in.latency[v] < Nanoseconds{0})
        throw input_error("negative latency", {.path = where(), .expected = "latency >= 0"});
    }
    check_graph(g);
  }

  // The graph's own structure: ranks >= 0, edges in range.
  static void check_graph(const StageGraph& g) {
    const std::size_t n = g.nodes.size();
    for (std::size_t v = 0; v < n; ++v) {
      const StageNode& nd = g.nodes[v];
      auto where = [v] { return "node " + std::to_string(v); };
      if (nd.rank.value() < 0)
        throw input_error("rank " + std::to_string(nd.rank.value()) + " out of range", {.path = where(), .expected = "0 <= rank"});
      for (NodeIndex u : nd.inputs)
        if (u < 0 || static_cast<std::size_t>(u) >= n)
          throw input_error("input " + std::to_string(u) + " out of range", {.path = where(), .expected = "0 <= input < " + std::to_string(n)});
      for (NodeIndex u : nd.outputs)
        if (u < 0 || static_cast<std::size_t>(u) >= n)
          throw input_error("output " + std::to_string(u) + " out of range", {.path = where(), .expected = "0 <= output < " + std::to_string(n)});
    }
  }

  const StageGraph* prepared_ = nullptr;  ///< graph whose release_/holder_ are kept (prepare())
  std::vector<std::size_t> per_rank_;
  std::vector<std::int64_t> next_;  ///< per rank: cached next_start
  std::vector<char> dirty_;         ///< per rank: next_ must be recomputed
  std::vector<RankState> ranks_;
  std::vector<std::int32_t> remaining_;
  std::vector<std::int64_t> ready_;
  std::vector<NodeIndex> release_, holder_;
  std::vector<std::int32_t> rank_;  ///< per node (prepared with release_)
  std::int32_t max_rank_ = -1;
  std::vector<char> forward_;       ///< per node: a forward stage
  std::vector<char> weight_;        ///< per node: a backward_weight part
  std::vector<std::int64_t> group_bytes_;  ///< [group * P + rank]: bytes of the group's forwards on the rank
  std::vector<char> admitted_;             ///< [group * P + rank]
  bool tracked_ = false, limited_ = false, defer_weight_ = false;
};

}  // namespace pipeweaver
