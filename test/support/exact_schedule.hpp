#pragma once
// An exact solver for the schedule of one small step, for tests and benchmarks only (not the
// planner): given the stage graph of a fixed partition and sub-microbatch split, every stage's
// latency under a fixed memory strategy and every edge's transfer time, it finds per-rank orders
// (a Schedule) whose emulated step time is the least possible under the schedule emulator's
// rules (emulate/schedule_emulator.hpp):
//  * a rank runs its stages one at a time in its order; a stage starts at the later of its
//    rank's previous end and the arrival of every input;
//  * an input on another rank arrives by a transfer on the directed link (from, to), issued when
//    its producer ends; transfers on a link run one at a time in the order their producers run
//    on the sending rank (for one producer, in the order of its outputs), each taking its
//    transfer time;
//  * the step time is the latest end of any stage or transfer.
// Memory capacity is not a constraint here (a relaxation: the optimum found is at most the
// optimum of the plans that fit; callers report whether it fits).
//
// Search space and why it contains an optimum. For fixed per-rank orders the rules above give
// every stage's start, the earliest consistent with the orders ("semi-active"), so the optimum
// over all plans of the step is the optimum over all per-rank orders that do not deadlock. The
// solver builds orders by appending one stage at a time to its rank's order; a stage may be
// appended once all its inputs are, so every deadlock-free order tuple, and only those, can be
// built. Appending a stage fixes its start, its end and, because link order is issue order on
// the sending rank, the times of its outgoing transfers: a partial order tuple determines the
// times of every stage it holds, exactly as the emulator computes them, whatever order the
// ranks' appends were interleaved in. The depth-first search tries every stage that may be
// appended next, so every deadlock-free order tuple is reached unless a prune below cuts it off,
// and each prune only cuts off tuples no better than one the search keeps.
//
// Pruning.
//  * Bound. Each a valid lower bound on every completion of a partial tuple: est(j), the
//    earliest start of an unappended stage: its rank's current end, the arrivals of inputs
//    already appended (their transfer times are fixed), and over unappended inputs i
//    est(i) + p_i on the same rank, or max(est(i) + p_i, the link's current end) + x(i, j)
//    across ranks (x = transfer time; a link only gets busier); tail(j), the longest chain of
//    latencies and transfer times after j ends (as in the tight bound of
//    emulate/lower_bound.hpp); per rank, Jackson's preemptive one-machine schedule of its
//    unappended stages with releases est and delivery times tail (the argument of the tight
//    bound's proof applies to every completion, whose stages start at or after est); the same
//    per directed link, whose messages also run one at a time (a message of producer i to j:
//    release est(i) + p_i, or the link's end, length x(i, j), delivery p_j + tail(j)); and the
//    step time so far. A partial tuple whose bound is not below the best step
//    found is dropped: the solver looks for strictly better schedules only, so ties keep the
//    incumbent (e.g. the caller's plan).
//  * Immediate selections (after Carlier and Pinson's job-shop branch-and-bound). Only
//    completions with a step below the best found, ub, are sought. If two unappended stages i, j
//    of one rank have est(j) + p_j + p_i + tail(i) >= ub, then in every such completion i runs
//    before j (else i ends at or after est(j) + p_j + p_i and the step reaches ub), so j's head
//    rises to est(i) + p_i and i's tail to p_j + tail(j); raised heads and tails propagate along
//    the graph, and the rule is applied again (a few rounds). Every head and tail so derived is
//    valid for all completions below ub, so the bound above, computed with them, still prunes
//    soundly. Likewise a stage is not appended next when that would put another stage i of its
//    rank after it with start + p_j + p_i + tail(i) >= ub.
//  * Dominance. The future of a partial tuple depends only on the set S of stages appended and on
//    the times it fixed: each rank's end, each link's end, the arrival so far at every unappended
//    stage with an appended input, and the step time so far. A completion (a sequence of
//    appends) valid after one partial tuple is valid after any other with the same S, and every
//    time it produces is a max and sum of those times and fixed latencies, so it is monotone in
//    them. Hence if a tuple A visited earlier has the same S and every one of those times <= B's,
//    the best completion of A is no worse than B's, and B is dropped. By induction on the number
//    of stages left, then on the visiting order, the best step found at the end is <= the best
//    completion of every visited tuple (A's subtree was searched, or A was itself dropped for a
//    bound or by an earlier tuple), so dropping B loses no optimum. Identical states reached by
//    appending independent stages in another order are the common case this removes. Before
//    comparing, a time that cannot influence the future is replaced by one with the same future
//    (normalized_key): that keeps the comparison sound and lets more tuples compare.
//  * Symmetry. Two sub-microbatches whose stages have the same ranks, latencies and inner
//    structure, and edges to the same outside stages with the same transfer times (images of one
//    microbatch with the same token counts, typically), are interchangeable: swapping all their
//    stages maps every order tuple to one with the same times. So some optimal tuple runs the
//    first stage of each such group in sub-microbatch id order on their rank (relabel any
//    optimum until it does), and the search appends them only in that order.
// When the node limit ends the search early nothing is claimed: the result is the best found.
// No test framework here: bench/ includes it too.
#include <pipeweaver/core/error.hpp>
#include <pipeweaver/core/memory_strategy.hpp>
#include <pipeweaver/core/units.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>
#include <pipeweaver/emulate/stage_cost_cache.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace pwtest {
namespace pw = pipeweaver;

/// One step's scheduling problem: the stage graph (its nodes' ranks), per node its latency and
/// strategy (copied into the schedule), per edge its transfer time (parallel to
/// graph->nodes[u].outputs; used when the ranks differ).
struct ExactProblem {
  const pw::StageGraph* graph = nullptr;
  int ranks = 1;
  std::vector<pw::Nanoseconds> latency{};
  std::vector<std::vector<pw::Nanoseconds>> out_transfer{};
  std::vector<pw::MemoryStrategy> strategy{};
};

struct ExactOptions {
  std::int64_t node_limit = 5'000'000;  ///< search nodes (partial order tuples) before giving up
  pw::Schedule incumbent{};             ///< a known schedule (e.g. the planner's); none: no ranks
  std::int64_t memo_values = 64'000'000;  ///< dominance memory (8 bytes each); when full, no more states are kept
  std::size_t memo_per_set = 256;       ///< time vectors kept per set of appended stages
};

struct ExactResult {
  pw::Schedule schedule{};                    ///< the best schedule found
  pw::Nanoseconds step_time = pw::Nanoseconds::max();  ///< its emulated step time
  bool optimal = false;                       ///< the search ended within its node limit
  std::int64_t nodes = 0;                     ///< search nodes visited
  std::int64_t dominated = 0;                 ///< partial tuples dropped by dominance
  pw::Nanoseconds root_bound{0};              ///< the pruning bound of the empty tuple (without selections: <= the optimum)
  bool improved = false;                      ///< the best is not the incumbent
};

/// Step time of `schedule` under the problem's latencies and transfer times (the emulator's).
[[nodiscard]] inline pw::Nanoseconds exact_problem_step_time(const ExactProblem& p, const pw::Schedule& schedule) {
  const auto transfer = [&](pw::NodeIndex u, pw::NodeIndex v) {
    const auto& outs = p.graph->nodes[static_cast<std::size_t>(u)].outputs;
    for (std::size_t i = 0; i < outs.size(); ++i)
      if (outs[i] == v) return p.out_transfer[static_cast<std::size_t>(u)][i];
    return pw::Nanoseconds{0};
  };
  return pw::emulate_schedule(*p.graph, schedule, std::span<const pw::Nanoseconds>(p.latency), transfer).step_time;
}

namespace detail {

/// The set of appended stages of a partial tuple, as a key of the dominance memory.
struct StageSet {
  static constexpr std::size_t words = 8;  ///< up to 512 stages
  std::array<std::uint64_t, words> bits{};
  friend bool operator==(const StageSet&, const StageSet&) = default;
};
struct StageSetHash {
  std::size_t operator()(const StageSet& s) const noexcept {
    std::uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (std::uint64_t w : s.bits) h = (h ^ w) * 0xff51afd7ed558ccdULL + (h >> 29);
    return static_cast<std::size_t>(h);
  }
};

/// The branch-and-bound of solve_exact (see the header comment), phase by phase: the static
/// tables, the state of a partial tuple, its bound, its dominance check, its children, the search.
class ExactSearch {
 public:
  ExactSearch(const ExactProblem& p, const ExactOptions& o) : p_(p), o_(o), N_(p.graph->nodes.size()), P_(static_cast<std::size_t>(p.ranks)) {
    check_problem();
    order_ = pw::detail::topological_order(*p.graph);
    tail_ = pw::heads_and_tails(*p.graph, std::span<const pw::Nanoseconds>(p.latency), [&](pw::NodeIndex u, pw::NodeIndex v) {
              return transfer(static_cast<std::size_t>(u), static_cast<std::size_t>(v));
            }).tail;
    est_.resize(N_);
    jobs_.resize(P_);
    link_jobs_.resize(P_ * P_);
    on_rank_.resize(P_);
    find_symmetric_sub_microbatches();
  }

  ExactResult run() {
    State root;
    root.rank_free.assign(P_, pw::Nanoseconds{0});
    root.link_free.assign(P_ * P_, pw::Nanoseconds{0});
    root.ready.assign(N_, pw::Nanoseconds{0});
    root.pending.resize(N_);
    for (std::size_t n = 0; n < N_; ++n) root.pending[n] = static_cast<std::int32_t>(p_.graph->nodes[n].inputs.size());
    res_.root_bound = bound(root);  // before any incumbent: no selections, a bound on every schedule
    if (!o_.incumbent.ranks.empty()) {
      res_.schedule = o_.incumbent;
      res_.step_time = exact_problem_step_time(p_, o_.incumbent);
    }
    stack_.assign(N_ + 1, State{});
    stack_[0] = std::move(root);
    sequence_.clear();
    search(0);
    res_.optimal = res_.nodes <= o_.node_limit;
    return std::move(res_);
  }

 private:
  struct State {
    std::vector<pw::Nanoseconds> rank_free, link_free, ready;
    std::vector<std::int32_t> pending;
    StageSet done{};
    pw::Nanoseconds step{0};
    std::size_t placed = 0;
    [[nodiscard]] bool has(std::size_t n) const { return (done.bits[n / 64] >> (n % 64)) & 1u; }
  };
  struct Child {
    pw::Nanoseconds start;
    int rank;
    pw::Nanoseconds tail;
    std::size_t node;
  };

  void check_problem() const {
    const auto& g = *p_.graph;
    if (p_.ranks < 1 || p_.latency.size() != N_ || p_.out_transfer.size() != N_ || p_.strategy.size() != N_)
      throw pw::input_error("exact schedule problem with " + std::to_string(p_.latency.size()) + " latencies for " + std::to_string(N_) + " nodes",
                            {.path = "ExactProblem", .expected = "one latency, strategy and transfer list per node, and at least one rank"});
    if (N_ > StageSet::words * 64)
      throw pw::input_error("exact schedule problem with " + std::to_string(N_) + " stages", {.path = "ExactProblem::graph", .expected = "at most 512 stages"});
    for (std::size_t n = 0; n < N_; ++n)
      if (p_.out_transfer[n].size() != g.nodes[n].outputs.size() || g.nodes[n].rank.value() < 0 || g.nodes[n].rank.value() >= p_.ranks)
        throw pw::input_error("node " + std::to_string(n) + " has " + std::to_string(p_.out_transfer[n].size()) + " transfer times",
                              {.path = "ExactProblem::out_transfer", .expected = "one per output, and a rank below " + std::to_string(p_.ranks)});
  }

  /// Symmetry (header comment): sub-microbatches whose stages have the same ranks, latencies,
  /// edges to the same outside stages with the same transfer times, and the same structure
  /// inside are interchangeable; in each group (by id) the first stage of the k-th may be
  /// appended only after the first stage of the (k − 1)-th. Sets after_[n] to that stage or -1.
  void find_symmetric_sub_microbatches() {
    const auto& g = *p_.graph;
    after_.assign(N_, -1);
    std::map<int, std::vector<std::size_t>> nodes_of;  // sub-microbatch -> its nodes, by (pass, chunk)
    for (std::size_t n = 0; n < N_; ++n) nodes_of[g.nodes[n].stage.sub_microbatch.value()].push_back(n);
    std::map<std::vector<std::int64_t>, std::vector<std::size_t>> groups;  // signature -> first nodes
    for (auto& [smb, nodes] : nodes_of) {
      std::sort(nodes.begin(), nodes.end(), [&](std::size_t a, std::size_t b) {
        const auto& x = g.nodes[a].stage;
        const auto& y = g.nodes[b].stage;
        return std::tie(x.pass, x.chunk, a) < std::tie(y.pass, y.chunk, b);
      });
      std::map<std::size_t, std::int64_t> local;
      for (std::size_t k = 0; k < nodes.size(); ++k) local[nodes[k]] = static_cast<std::int64_t>(k);
      std::vector<std::int64_t> sig{g.nodes[nodes[0]].stage.module.value()};
      const auto edge = [&](std::size_t other) {  // inside: -1 - local index; outside: the node
        const auto it = local.find(other);
        return it != local.end() ? -1 - it->second : static_cast<std::int64_t>(other);
      };
      for (const std::size_t n : nodes) {
        const auto& node = g.nodes[n];
        sig.insert(sig.end(), {-7, static_cast<std::int64_t>(node.stage.pass), node.stage.chunk, node.rank.value(), p_.latency[n].count()});
        for (const pw::NodeIndex i : node.inputs) sig.push_back(edge(static_cast<std::size_t>(i)));
        sig.push_back(-8);
        for (std::size_t k = 0; k < node.outputs.size(); ++k)
          sig.insert(sig.end(), {edge(static_cast<std::size_t>(node.outputs[k])), p_.out_transfer[n][k].count()});
      }
      groups[sig].push_back(nodes[0]);
    }
    for (const auto& [sig, firsts] : groups)
      for (std::size_t k = 1; k < firsts.size(); ++k) after_[firsts[k]] = static_cast<std::int64_t>(firsts[k - 1]);
  }

  [[nodiscard]] pw::Nanoseconds transfer(std::size_t u, std::size_t v) const {
    const auto& outs = p_.graph->nodes[u].outputs;
    for (std::size_t i = 0; i < outs.size(); ++i)
      if (static_cast<std::size_t>(outs[i]) == v) return p_.out_transfer[u][i];
    return pw::Nanoseconds{0};
  }

  /// The pruning bound of a partial tuple (header comment). Leaves est_ and q_ (heads and tails
  /// of the unappended stages, tightened by immediate selections) for children().
  [[nodiscard]] pw::Nanoseconds bound(const State& s) {
    selected_head_.assign(N_, pw::Nanoseconds{0});
    heads(s);
    q_ = tail_;
    const pw::Nanoseconds ub = res_.step_time;
    for (int round = 0; round < 8 && ub != pw::Nanoseconds::max() && select(s, ub); ++round) {
      heads(s);
      tails(s);
    }
    const auto& g = *p_.graph;
    for (auto& j : jobs_) j.clear();
    for (auto& j : link_jobs_) j.clear();
    for (std::size_t n = 0; n < N_; ++n) {
      if (s.has(n)) continue;
      const std::size_t r = g.nodes[n].rank.index();
      jobs_[r].push_back({est_[n], p_.latency[n], q_[n]});
      for (std::size_t k = 0; k < g.nodes[n].outputs.size(); ++k) {  // its messages: jobs of their links
        const auto o = static_cast<std::size_t>(g.nodes[n].outputs[k]);
        const std::size_t to = g.nodes[o].rank.index();
        if (to == r) continue;
        link_jobs_[r * P_ + to].push_back({std::max(est_[n] + p_.latency[n], s.link_free[r * P_ + to]), p_.out_transfer[n][k],
                                           p_.latency[o] + q_[o]});
      }
    }
    pw::Nanoseconds b = s.step;
    for (auto& j : jobs_) b = std::max(b, pw::detail::preemptive_one_machine(j));
    for (auto& j : link_jobs_) b = std::max(b, pw::detail::preemptive_one_machine(j));
    return b;
  }

  /// est_ of every unappended stage: its rank's end, the arrivals from appended inputs, the
  /// chains through unappended inputs, and (after selections) the stages selected before it.
  void heads(const State& s) {
    const auto& g = *p_.graph;
    for (const pw::NodeIndex v : order_) {
      const auto n = static_cast<std::size_t>(v);
      if (s.has(n)) continue;
      pw::Nanoseconds e = std::max({s.ready[n], s.rank_free[g.nodes[n].rank.index()], selected_head_[n]});
      for (const pw::NodeIndex i : g.nodes[n].inputs) {
        const auto iu = static_cast<std::size_t>(i);
        if (s.has(iu)) continue;
        const std::size_t from = g.nodes[iu].rank.index(), to = g.nodes[n].rank.index();
        if (from == to) e = std::max(e, est_[iu] + p_.latency[iu]);
        else e = std::max(e, std::max(est_[iu] + p_.latency[iu], s.link_free[from * P_ + to]) + transfer(iu, n));
      }
      est_[n] = e;
    }
  }

  /// q_ of every unappended stage, raised along the graph from its outputs' (reverse topological).
  void tails(const State& s) {
    const auto& g = *p_.graph;
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      const auto n = static_cast<std::size_t>(*it);
      if (s.has(n)) continue;
      for (std::size_t k = 0; k < g.nodes[n].outputs.size(); ++k) {
        const auto o = static_cast<std::size_t>(g.nodes[n].outputs[k]);
        const pw::Nanoseconds x = g.nodes[o].rank != g.nodes[n].rank ? p_.out_transfer[n][k] : pw::Nanoseconds{0};
        q_[n] = std::max(q_[n], x + p_.latency[o] + q_[o]);
      }
    }
  }

  /// Immediate selections (header comment): on one rank, when running j before i would make
  /// every completion reach `ub` (est_j + p_j + p_i + q_i >= ub), i runs before j in every
  /// completion that beats ub, so j's head rises to est_i + p_i and i's tail to p_j + q_j.
  /// Returns whether anything rose (heads() and tails() then propagate it along the graph).
  [[nodiscard]] bool select(const State& s, pw::Nanoseconds ub) {
    const auto& g = *p_.graph;
    for (auto& l : on_rank_) l.clear();
    for (std::size_t n = 0; n < N_; ++n)
      if (!s.has(n)) on_rank_[g.nodes[n].rank.index()].push_back(n);
    bool changed = false;
    for (const auto& list : on_rank_)
      for (const std::size_t i : list)
        for (const std::size_t j : list) {
          if (i == j || est_[j] + p_.latency[j] + p_.latency[i] + q_[i] < ub) continue;
          if (est_[i] + p_.latency[i] > selected_head_[j]) {
            selected_head_[j] = est_[i] + p_.latency[i];
            changed = changed || selected_head_[j] > est_[j];
          }
          if (p_.latency[j] + q_[j] > q_[i]) {
            q_[i] = p_.latency[j] + q_[j];
            changed = true;
          }
        }
    return changed;
  }

  /// The times a partial tuple's future depends on, each replaced by a value that leaves that
  /// future unchanged where it cannot matter (so that more tuples compare): a rank's end when it
  /// has nothing left to run (0); a link's end when nothing more crosses it (0), else at least
  /// its sender's end (no later message is issued before that); an arrival at a stage that is
  /// not after its rank's end (0: the stage starts at its rank's end or later anyway); the step
  /// time so far when some stage left must end after it anyway (0).
  void normalized_key(const State& s) {
    const auto& g = *p_.graph;
    left_on_rank_.assign(P_, 0);
    left_on_link_.assign(P_ * P_, 0);
    pw::Nanoseconds surely_later{0};  // the end no remaining stage can avoid
    for (std::size_t n = 0; n < N_; ++n) {
      if (s.has(n)) continue;
      const std::size_t r = g.nodes[n].rank.index();
      ++left_on_rank_[r];
      for (const pw::NodeIndex o : g.nodes[n].outputs) ++left_on_link_[r * P_ + g.nodes[static_cast<std::size_t>(o)].rank.index()];
      surely_later = std::max(surely_later, std::max(s.ready[n], s.rank_free[r]) + p_.latency[n]);
    }
    key_.clear();
    key_.push_back(s.step > surely_later ? s.step.count() : 0);
    for (std::size_t r = 0; r < P_; ++r) key_.push_back(left_on_rank_[r] > 0 ? s.rank_free[r].count() : 0);
    for (std::size_t l = 0; l < P_ * P_; ++l)
      key_.push_back(left_on_link_[l] > 0 && l / P_ != l % P_ ? std::max(s.link_free[l], s.rank_free[l / P_]).count() : 0);
    for (std::size_t n = 0; n < N_; ++n)
      if (!s.has(n) && s.pending[n] < static_cast<std::int32_t>(g.nodes[n].inputs.size()))
        key_.push_back(s.ready[n] > s.rank_free[g.nodes[n].rank.index()] ? s.ready[n].count() : 0);
  }

  /// True when a partial tuple visited earlier with the same stages dominates `s` (header
  /// comment); otherwise `s` is remembered (while the memory lasts).
  [[nodiscard]] bool dominated(const State& s) {
    normalized_key(s);
    std::vector<std::int64_t>& kept = memo_[s.done];
    const std::size_t len = key_.size();
    for (std::size_t at = 0; at + len <= kept.size(); at += len) {
      bool all = true;
      for (std::size_t k = 0; all && k < len; ++k) all = kept[at + k] <= key_[k];
      if (all) return true;
    }
    if (kept.size() < o_.memo_per_set * len && memo_values_ + static_cast<std::int64_t>(len) <= o_.memo_values) {
      kept.insert(kept.end(), key_.begin(), key_.end());
      memo_values_ += static_cast<std::int64_t>(len);
    }
    return false;
  }

  /// The stages that may be appended next, earliest start first, then the longer tail; a stage
  /// is left out when running it now would push another stage of its rank, with its tail, to
  /// the best step found or beyond (the immediate selection of bound(), at the stage's start).
  [[nodiscard]] std::vector<Child> children(const State& s) const {
    const auto& g = *p_.graph;
    const pw::Nanoseconds ub = res_.step_time;
    std::vector<Child> out;
    for (std::size_t n = 0; n < N_; ++n) {
      if (s.has(n) || s.pending[n] > 0 || (after_[n] >= 0 && !s.has(static_cast<std::size_t>(after_[n])))) continue;
      const int r = g.nodes[n].rank.value();
      const pw::Nanoseconds start = std::max(s.rank_free[static_cast<std::size_t>(r)], s.ready[n]);
      bool forced_out = false;
      if (ub != pw::Nanoseconds::max())
        for (const std::size_t i : on_rank_[static_cast<std::size_t>(r)])
          if (i != n && start + p_.latency[n] + p_.latency[i] + q_[i] >= ub) {
            forced_out = true;
            break;
          }
      if (!forced_out) out.push_back({start, r, tail_[n], n});
    }
    std::sort(out.begin(), out.end(), [](const Child& a, const Child& b) {
      return std::tie(a.start, b.tail, a.rank, a.node) < std::tie(b.start, a.tail, b.rank, b.node);
    });
    return out;
  }

  /// `s` with stage c.node appended to its rank's order: its end, its transfers (link order is
  /// issue order), its outputs' arrivals.
  void apply(State& s, const Child& c) const {
    const auto& node = p_.graph->nodes[c.node];
    const pw::Nanoseconds end = c.start + p_.latency[c.node];
    const auto r = static_cast<std::size_t>(c.rank);
    s.rank_free[r] = end;
    s.step = std::max(s.step, end);
    for (std::size_t i = 0; i < node.outputs.size(); ++i) {
      const auto o = static_cast<std::size_t>(node.outputs[i]);
      const std::size_t to = p_.graph->nodes[o].rank.index();
      pw::Nanoseconds arrival = end;
      if (to != r) {
        pw::Nanoseconds& link = s.link_free[r * P_ + to];
        link = std::max(end, link) + p_.out_transfer[c.node][i];
        arrival = link;
        s.step = std::max(s.step, arrival);
      }
      s.ready[o] = std::max(s.ready[o], arrival);
      --s.pending[o];
    }
    s.done.bits[c.node / 64] |= std::uint64_t{1} << (c.node % 64);
    ++s.placed;
  }

  void record(const State& s) {
    if (s.step >= res_.step_time) return;
    res_.step_time = s.step;
    res_.improved = true;
    res_.schedule.ranks.assign(P_, {});
    for (const Child& c : sequence_)
      res_.schedule.ranks[static_cast<std::size_t>(c.rank)].push_back(pw::ScheduledStage{static_cast<pw::NodeIndex>(c.node), p_.strategy[c.node]});
  }

  void search(std::size_t depth) {
    const State& s = stack_[depth];
    if (s.placed == N_) {
      record(s);
      return;
    }
    if (++res_.nodes > o_.node_limit) return;
    if (s.step >= res_.step_time || bound(s) >= res_.step_time) return;
    if (dominated(s)) {
      ++res_.dominated;
      return;
    }
    for (const Child& c : children(s)) {
      if (res_.nodes > o_.node_limit) return;
      stack_[depth + 1] = stack_[depth];
      apply(stack_[depth + 1], c);
      if (stack_[depth + 1].step >= res_.step_time) continue;
      sequence_.push_back(c);
      search(depth + 1);
      sequence_.pop_back();
    }
  }

  const ExactProblem& p_;
  const ExactOptions& o_;
  std::size_t N_, P_;
  std::vector<pw::NodeIndex> order_;
  std::vector<pw::Nanoseconds> tail_, est_, q_, selected_head_;
  std::vector<std::vector<std::size_t>> on_rank_;
  std::vector<std::int64_t> after_;  ///< symmetry: the stage that must be appended first, or -1
  std::vector<std::vector<pw::detail::OneMachineJob>> jobs_, link_jobs_;
  std::vector<State> stack_;
  std::vector<Child> sequence_;
  std::unordered_map<StageSet, std::vector<std::int64_t>, StageSetHash> memo_;
  std::vector<std::int64_t> key_;
  std::vector<int> left_on_rank_, left_on_link_;
  std::int64_t memo_values_ = 0;
  ExactResult res_;
};

}  // namespace detail

/// The least step time over every deadlock-free schedule of the problem (see the header
/// comment); `optimal` is false when the node limit ended the search first (then the result is
/// the best found, and root_bound a lower bound on the optimum).
[[nodiscard]] inline ExactResult solve_exact(const ExactProblem& problem, const ExactOptions& options = {}) {
  return detail::ExactSearch(problem, options).run();
}

/// The problem of a step: `graph` with latencies and transfer times from `latency` (per node) and
/// `transfer_time(u, v)` (cross-rank edges), strategies copied into the schedule.
template <class TransferTime>
[[nodiscard]] ExactProblem exact_problem(const pw::StageGraph& graph, int ranks, std::vector<pw::Nanoseconds> latency,
                                         const TransferTime& transfer_time, std::vector<pw::MemoryStrategy> strategy = {}) {
  ExactProblem p;
  p.graph = &graph;
  p.ranks = ranks;
  p.latency = std::move(latency);
  p.strategy = strategy.empty() ? std::vector<pw::MemoryStrategy>(graph.nodes.size()) : std::move(strategy);
  p.out_transfer.resize(graph.nodes.size());
  for (std::size_t u = 0; u < graph.nodes.size(); ++u)
    for (const pw::NodeIndex v : graph.nodes[u].outputs)
      p.out_transfer[u].push_back(graph.nodes[static_cast<std::size_t>(v)].rank != graph.nodes[u].rank
                                      ? transfer_time(static_cast<pw::NodeIndex>(u), v)
                                      : pw::Nanoseconds{0});
  return p;
}

/// A plan's step as an exact problem: the stage graph of its partition and sub-microbatches
/// (split backward when the plan splits), every stage at the strategy the plan gives it, transfer
/// times of edge_bytes (what lowering puts on each message), and the plan's own per-rank orders
/// as a schedule (the incumbent: its emulated time equals the plan's).
struct PlanProblem {
  std::unique_ptr<pw::StageGraph> graph{};  ///< owned here, at a stable address (problem.graph points to it)
  pw::Schedule plan_schedule{};
  ExactProblem problem{};
};

template <class C>
[[nodiscard]] PlanProblem plan_problem(const pw::Plan& plan, const pw::ModelSpec& model, pw::StageCostCache<C>& cache) {
  PlanProblem out;
  bool split = false;
  for (const auto& list : plan.ranks)
    for (const auto& a : list)
      if (const auto* b = std::get_if<pw::Backward>(&a); b && b->pass != pw::Pass::backward) split = true;
  out.graph = std::make_unique<pw::StageGraph>(
      pw::build_stage_graph(model, plan.partition, plan.sub_microbatches, pw::StageGraphOptions{.split_backward = split}));
  out.plan_schedule.ranks.resize(plan.ranks.size());
  for (std::size_t r = 0; r < plan.ranks.size(); ++r)
    for (const auto& a : plan.ranks[r]) {
      pw::StageRef ref;
      pw::MemoryStrategy st;
      if (const auto* f = std::get_if<pw::Forward>(&a)) {
        ref = {f->module, f->chunk, f->sub_microbatch, pw::Pass::forward};
        st = f->strategy;
      } else if (const auto* b = std::get_if<pw::Backward>(&a)) {
        ref = {b->module, b->chunk, b->sub_microbatch, b->pass};
        st = b->strategy;
      } else {
        continue;
      }
      const pw::NodeIndex n = out.graph->find(ref);
      if (n < 0) throw pw::invalid_plan_error("a plan stage is not in its stage graph", {.path = "rank " + std::to_string(r), .expected = "the stages of the plan's graph"});
      out.plan_schedule.ranks[r].push_back(pw::ScheduledStage{n, st});
    }
  std::vector<pw::MemoryStrategy> strategy(out.graph->nodes.size());
  for (const auto& list : out.plan_schedule.ranks)
    for (const auto& st : list) strategy[static_cast<std::size_t>(st.node)] = st.strategy;
  std::vector<pw::Nanoseconds> latency = pw::node_latencies(*out.graph, out.plan_schedule, plan.partition, plan.sub_microbatches, cache);
  const pw::StageGraph& g = *out.graph;
  out.problem = exact_problem(
      g, plan.partition.ranks, std::move(latency),
      [&](pw::NodeIndex u, pw::NodeIndex v) {
        return cache.cost().transfer_time(pw::edge_bytes(cache.cost(), plan.partition, plan.sub_microbatches,
                                                         g.nodes[static_cast<std::size_t>(u)], g.nodes[static_cast<std::size_t>(v)]));
      },
      std::move(strategy));
  return out;
}

}  // namespace pwtest
