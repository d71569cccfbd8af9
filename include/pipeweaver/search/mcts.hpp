#pragma once
// Monte Carlo tree search over orders of segment units.
//
// The tree's root is the empty prefix; a node's children extend its prefix by one unit whose
// predecessors are all placed (only topological orders are built). Every node keeps its visit
// count and the BEST score of any rollout below it (max, not mean: we want one good schedule,
// not a good average). Scores are normalized by the evaluator into (0, 1] (e.g.
// lower_bound / step_time), so the selection rule
//     UCB(child) = s_child^alpha + beta · sqrt(ln N_parent / N_child)
// compares like with like at every depth.
//
// One iteration = select (descend by UCB while the node is fully expanded), expand (add one
// untried child, chosen at random), then `rollouts_per_expansion` random completions of the
// child's prefix, each scored by the evaluator, the max propagated up the path. Completions are
// biased towards the best order found so far: with probability `follow_best` the next unit is
// the available one that comes first in the incumbent, otherwise a uniformly random available
// unit. The seed orders are scored first and start the incumbent.
//
// Parallelism with determinism: iterations run in rounds of `round_size`. Selection and
// expansion of a round happen on the calling thread, in iteration order (each expansion books
// its rollouts' visits at once, so the next selection of the round looks elsewhere); then the
// round's rollouts run on `threads` workers, rollout j using the RNG stream (seed, j) and its
// own evaluator; then scores are applied to the tree in rollout order. With an iteration budget
// the result depends only on the inputs, the seed and round_size — not on the thread count or
// timing. A time budget (checked between rounds, and before each rollout: once it has passed,
// the round's remaining rollouts are left undone and the search ends) makes the iteration
// count, and so the result, depend on the machine's speed.
//
// The tree holds at most `max_tree_nodes` nodes; when full, iterations roll out from the leaf
// they reach without adding nodes, so memory stays bounded however long the search runs.
// Floating point: only + - * /, sqrt (exact in IEEE) and the portable exp/log of
// data/detail/portable_math.hpp, so choices are identical on every platform.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/data/detail/portable_math.hpp"
#include "pipeweaver/data/random.hpp"

namespace pipeweaver {

/// The DAG the orders must respect: per unit its successors and its number of predecessors.
struct UnitDag {
  std::vector<std::vector<std::int32_t>> successors{};
  std::vector<std::int32_t> indegree{};
  [[nodiscard]] std::size_t size() const noexcept { return indegree.size(); }
};

struct MctsOptions {
  std::uint64_t seed = 0;
  int threads = 1;
  std::int64_t max_iterations = 200;                  ///< expansions (each with its rollouts); <= 0: no limit
  std::chrono::nanoseconds time_budget{0};            ///< from the search's start; 0: no limit (a budget is required)
  /// Absolute end of the search (so that a caller's own work before it counts); max(): none.
  /// With time_budget too, the search ends at the earlier of the two.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  int rollouts_per_expansion = 10;
  int round_size = 4;                                 ///< expansions per round (see the header comment)
  double alpha = 8.0;                                 ///< exponent on the normalized score
  double beta = 0.2;                                  ///< exploration weight
  double follow_best = 0.85;                          ///< completion bias towards the incumbent
  std::size_t max_tree_nodes = 200000;
  bool record_trace = true;                           ///< best score after each round, for convergence plots
  /// Polled between rounds (after the seeds): true ends the search with the best found so far
  /// (cancellation / a caller's deadline). Empty: never.
  std::function<bool()> stop;
};

struct MctsTracePoint {
  std::chrono::nanoseconds elapsed{0};
  std::int64_t rollouts = 0;
  double best_score = 0;
};

struct MctsResult {
  std::vector<std::int32_t> best_sequence{};
  double best_score = 0;
  int best_seed = -1;  ///< index of the seed order that is still the best, or -1 if the search improved on them
  std::int64_t iterations = 0;
  std::int64_t rollouts = 0;  ///< evaluations, seeds included
  std::size_t tree_nodes = 0;
  std::vector<MctsTracePoint> trace{};
};

namespace detail {

/// Portable x^a for x > 0.
[[nodiscard]] inline double portable_pow(double x, double a) { return x <= 0 ? 0.0 : portable_exp(a * portable_log(x)); }

class MctsTree {
 public:
  struct Node {
    std::int32_t unit = -1;
    std::int32_t parent = -1;
    std::int32_t first_child = -1;
    std::int32_t next_sibling = -1;
    std::int32_t children = 0;
    std::int64_t visits = 0;
    double best = 0;
  };

  explicit MctsTree(std::size_t cap) : cap_(std::max<std::size_t>(cap, 1)) {
    nodes_.reserve(std::min<std::size_t>(cap_, 4096));
    nodes_.push_back(Node{});
  }
  [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }
  [[nodiscard]] bool full() const noexcept { return nodes_.size() >= cap_; }
  Node& operator[](std::int32_t i) { return nodes_[static_cast<std::size_t>(i)]; }
  const Node& operator[](std::int32_t i) const { return nodes_[static_cast<std::size_t>(i)]; }
  std::int32_t add_child(std::int32_t parent, std::int32_t unit) {
    const auto id = static_cast<std::int32_t>(nodes_.size());
    Node n;
    n.unit = unit;
    n.parent = parent;
    n.next_sibling = nodes_[static_cast<std::size_t>(parent)].first_child;
    nodes_.push_back(n);
    nodes_[static_cast<std::size_t>(parent)].first_child = id;
    ++nodes_[static_cast<std::size_t>(parent)].children;
    return id;
  }

 private:
  std::size_t cap_;
  std::vector<Node> nodes_;
};

/// Prefix state: placed units, remaining indegrees, available units (in insertion order).
class OrderState {
 public:
  explicit OrderState(const UnitDag& dag) : dag_(&dag) { reset(); }
  void reset() {
    deg_ = dag_->indegree;
    placed_.assign(dag_->size(), 0);
    avail_.clear();
    seq_.clear();
    for (std::size_t u = 0; u < dag_->size(); ++u)
      if (deg_[u] == 0) avail_.push_back(static_cast<std::int32_t>(u));
  }
  void place(std::int32_t u) {
    auto it = std::find(avail_.begin(), avail_.end(), u);
    if (it == avail_.end())
      throw input_error("unit " + std::to_string(u) + " placed before its predecessors", {.path = "MCTS order", .expected = "a topological order of the unit DAG"});
    avail_.erase(it);
    placed_[static_cast<std::size_t>(u)] = 1;
    seq_.push_back(u);
    for (auto b : dag_->successors[static_cast<std::size_t>(u)])
      if (--deg_[static_cast<std::size_t>(b)] == 0) avail_.push_back(b);
  }
  [[nodiscard]] const std::vector<std::int32_t>& available() const noexcept { return avail_; }
  [[nodiscard]] const std::vector<std::int32_t>& sequence() const noexcept { return seq_; }
  [[nodiscard]] bool done() const noexcept { return avail_.empty(); }

  /// Completes the order: with probability follow the unit ranked first by `guide_rank`, else a
  /// uniform random available unit.
  void complete(Rng& rng, std::span<const std::int32_t> guide_rank, double follow) {
    while (!avail_.empty()) {
      std::size_t pick = 0;
      if (!guide_rank.empty() && rng.uniform01() < follow) {
        for (std::size_t i = 1; i < avail_.size(); ++i)
          if (guide_rank[static_cast<std::size_t>(avail_[i])] < guide_rank[static_cast<std::size_t>(avail_[pick])]) pick = i;
      } else {
        pick = static_cast<std::size_t>(rng.below(avail_.size()));
      }
      place(avail_[pick]);
    }
  }

 private:
  const UnitDag* dag_;
  std::vector<std::int32_t> deg_;
  std::vector<char> placed_;
  std::vector<std::int32_t> avail_;
  std::vector<std::int32_t> seq_;
};

}  // namespace detail

namespace detail {

/// One search (see the header comment): the tree, the incumbent, the workers' evaluators, and
/// the phases of an iteration round as members.
template <class Evaluator>
class MctsSearch {
 public:
  using Clock = std::chrono::steady_clock;

  MctsSearch(const UnitDag& dag, std::vector<Evaluator> evaluators, const MctsOptions& options, Clock::time_point t0)
      : dag_(dag), options_(options), t0_(t0), evaluators_(std::move(evaluators)), guide_rank_(dag.size(), 0),
        tree_(options.max_tree_nodes), state_(dag), R_(static_cast<std::size_t>(options.rollouts_per_expansion)) {
    const bool timed = options.time_budget.count() > 0 || options.deadline != Clock::time_point::max();
    timed_ = timed;
    // The end of a timed search: the earlier of t0 + time_budget and the deadline.
    end_ = options.deadline;
    if (options.time_budget.count() > 0 && options.time_budget < end_ - t0_) end_ = t0_ + options.time_budget;
  }

  MctsResult run(std::span<const std::vector<std::int32_t>> seeds) {
    score_seeds(seeds);
    trace();
    while (!out_of_budget()) {
      select_round();
      run_rollouts();
      const bool cut_short = apply_round();
      trace();
      if (cut_short) break;  // the time budget ended the round early
    }
    res_.tree_nodes = tree_.size();
    return std::move(res_);
  }

 private:
  struct Expansion {
    std::int32_t node;                 // tree node the rollouts start from
    std::vector<std::int32_t> prefix;  // its prefix
  };

  [[nodiscard]] bool time_is_up() const { return timed_ && Clock::now() >= end_; }
  [[nodiscard]] bool out_of_budget() const {
    if (options_.max_iterations > 0 && res_.iterations >= options_.max_iterations) return true;
    return time_is_up() || (options_.stop && options_.stop());
  }
  void trace() {
    if (options_.record_trace)
      res_.trace.push_back({std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0_), res_.rollouts, res_.best_score});
  }
  void set_best(const std::vector<std::int32_t>& seq, double score) {
    res_.best_sequence = seq;
    res_.best_score = score;
    for (std::size_t i = 0; i < seq.size(); ++i) guide_rank_[static_cast<std::size_t>(seq[i])] = static_cast<std::int32_t>(i);
  }

  /// Runs jobs 0 .. n-1 on the workers (job j on worker j mod T); results are written by index,
  /// so the outcome does not depend on the thread count. Rethrows a worker's first exception.
  template <class Job>
  void run_parallel(std::size_t n, Job&& job) {
    const std::size_t T = evaluators_.size();
    if (T == 1 || n <= 1) {
      for (std::size_t j = 0; j < n; ++j) job(j, evaluators_[0]);
      return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&](std::size_t w) {
      try {
        for (std::size_t j = w; j < n; j += T) job(j, evaluators_[w]);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    for (std::size_t w = 1; w < std::min(T, n); ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
  }

  /// The seeds start the incumbent (without seeds: the index order completed topologically).
  void score_seeds(std::span<const std::vector<std::int32_t>> seeds) {
    std::vector<double> seed_scores(seeds.size(), 0);
    run_parallel(seeds.size(), [&](std::size_t j, Evaluator& ev) { seed_scores[j] = ev(std::span<const std::int32_t>(seeds[j])); });
    res_.rollouts += static_cast<std::int64_t>(seeds.size());
    for (std::size_t j = 0; j < seeds.size(); ++j)
      if (res_.best_sequence.empty() || seed_scores[j] > res_.best_score) {
        set_best(seeds[j], seed_scores[j]);
        res_.best_seed = static_cast<int>(j);
      }
    if (!res_.best_sequence.empty()) return;
    OrderState st(dag_);
    Rng rng = Rng::stream(options_.seed, ~std::uint64_t{0});
    st.complete(rng, {}, 0.0);
    std::vector<double> s(1, 0);
    run_parallel(1, [&](std::size_t, Evaluator& ev) { s[0] = ev(std::span<const std::int32_t>(st.sequence())); });
    ++res_.rollouts;
    set_best(st.sequence(), s[0]);
  }

  /// The child of `node` with the highest UCB (ties: the lower unit).
  [[nodiscard]] std::int32_t best_child(std::int32_t node) const {
    const auto& nd = tree_[node];
    const double ln_parent = portable_log(static_cast<double>(std::max<std::int64_t>(nd.visits, 1)));
    std::int32_t best = -1;
    double best_ucb = -1;
    for (std::int32_t c = nd.first_child; c >= 0; c = tree_[c].next_sibling) {
      const auto& ch = tree_[c];
      const double n_child = static_cast<double>(std::max<std::int64_t>(ch.visits, 1));
      const double ucb = portable_pow(ch.best, options_.alpha) + options_.beta * std::sqrt(ln_parent / n_child);
      if (ucb > best_ucb || (ucb == best_ucb && tree_[c].unit < tree_[best].unit)) {
        best_ucb = ucb;
        best = c;
      }
    }
    return best;
  }

  /// Selection and expansion of one iteration, on the calling thread: descend by UCB while the
  /// node is fully expanded, then add one random untried child (unless the tree is full).
  [[nodiscard]] Expansion select_and_expand(std::uint64_t iteration) {
    Rng rng = Rng::stream(options_.seed ^ 0x5eedf00dULL, iteration);
    state_.reset();
    std::int32_t node = 0;
    while (!state_.done()) {
      const auto& nd = tree_[node];
      const auto avail = static_cast<std::int32_t>(state_.available().size());
      if (nd.children < avail && !tree_.full()) {
        std::vector<std::int32_t> untried;
        for (auto u : state_.available()) {
          bool tried = false;
          for (std::int32_t c = nd.first_child; c >= 0; c = tree_[c].next_sibling)
            if (tree_[c].unit == u) tried = true;
          if (!tried) untried.push_back(u);
        }
        const std::int32_t u = untried[static_cast<std::size_t>(rng.below(untried.size()))];
        node = tree_.add_child(node, u);
        state_.place(u);
        break;
      }
      if (nd.children == 0) break;  // tree full: roll out from here
      node = best_child(node);
      state_.place(tree_[node].unit);
    }
    // Book the visits now so that the rest of the round explores elsewhere.
    for (std::int32_t a = node; a >= 0; a = tree_[a].parent) tree_[a].visits += static_cast<std::int64_t>(R_);
    return {node, state_.sequence()};
  }

  void select_round() {
    std::int64_t this_round = options_.round_size;
    if (options_.max_iterations > 0) this_round = std::min<std::int64_t>(this_round, options_.max_iterations - res_.iterations);
    round_.clear();
    for (std::int64_t e = 0; e < this_round; ++e) round_.push_back(select_and_expand(static_cast<std::uint64_t>(res_.iterations + e)));
  }

  /// The round's rollouts on the workers, rollout j with the RNG stream (seed, j). Past the time
  /// budget, the rest of the round is left undone (never with an iteration budget alone).
  void run_rollouts() {
    const std::size_t n = round_.size() * R_;
    orders_.assign(n, {});
    scores_.assign(n, 0);
    ran_.assign(n, 0);
    const auto guide = std::span<const std::int32_t>(guide_rank_);
    const std::uint64_t base = rollout_index_;
    run_parallel(n, [&](std::size_t j, Evaluator& ev) {
      if (time_is_up()) return;
      OrderState st(dag_);
      for (auto u : round_[j / R_].prefix) st.place(u);
      Rng rng = Rng::stream(options_.seed, base + j);
      st.complete(rng, guide, options_.follow_best);
      orders_[j] = st.sequence();
      scores_[j] = ev(std::span<const std::int32_t>(orders_[j]));
      ran_[j] = 1;
    });
    rollout_index_ += n;
  }

  /// Applies the round's scores to the tree in rollout order; true when some rollout was left
  /// undone. An expansion counts as an iteration when at least one of its rollouts ran.
  bool apply_round() {
    const std::size_t n = ran_.size();
    std::size_t last_counted = n;  // no expansion yet
    for (std::size_t j = 0; j < n; ++j) {
      if (!ran_[j]) continue;
      ++res_.rollouts;
      if (j / R_ != last_counted) {
        last_counted = j / R_;
        ++res_.iterations;
      }
      for (std::int32_t a = round_[j / R_].node; a >= 0; a = tree_[a].parent) tree_[a].best = std::max(tree_[a].best, scores_[j]);
      if (scores_[j] > res_.best_score) {
        set_best(orders_[j], scores_[j]);
        res_.best_seed = -1;
      }
    }
    return std::find(ran_.begin(), ran_.end(), char{0}) != ran_.end();
  }

  const UnitDag& dag_;
  const MctsOptions& options_;
  const Clock::time_point t0_;  ///< the search's start (before the evaluators were made)
  bool timed_ = false;
  Clock::time_point end_;
  std::vector<Evaluator> evaluators_;
  MctsResult res_;
  std::vector<std::int32_t> guide_rank_;  ///< per unit: its position in the incumbent
  MctsTree tree_;
  OrderState state_;
  std::size_t R_;
  std::vector<Expansion> round_;
  std::vector<std::vector<std::int32_t>> orders_;
  std::vector<double> scores_;
  std::vector<char> ran_;  ///< per rollout of the round: run (1) or left undone past the time budget (0)
  std::uint64_t rollout_index_ = 0;
};

}  // namespace detail

/// Runs the search. `make_evaluator(worker)` is called once per worker thread (0 .. threads-1)
/// and returns an object `e` with `double e(std::span<const std::int32_t> order)`: the order's
/// score in (0, 1] (higher is better; 0 for an unusable order). Seeds must be topological
/// orders of `dag`. Exceptions thrown by an evaluator are rethrown on the calling thread.
template <class MakeEvaluator>
[[nodiscard]] MctsResult mcts_search(const UnitDag& dag, std::span<const std::vector<std::int32_t>> seeds,
                                     MakeEvaluator&& make_evaluator, const MctsOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool timed = options.time_budget.count() > 0 || options.deadline != std::chrono::steady_clock::time_point::max();
  if (options.max_iterations <= 0 && !timed)
    throw input_error("MCTS needs an iteration budget, a time budget or a deadline",
                      {.path = "MctsOptions", .expected = "max_iterations > 0, time_budget > 0 or a deadline"});
  if (options.threads < 1 || options.rollouts_per_expansion < 1 || options.round_size < 1)
    throw input_error("threads, rollouts_per_expansion and round_size must be positive", {.path = "MctsOptions", .expected = ">= 1 each"});
  using Evaluator = std::decay_t<std::invoke_result_t<MakeEvaluator&, int>>;
  std::vector<Evaluator> evaluators;
  evaluators.reserve(static_cast<std::size_t>(options.threads));
  for (int w = 0; w < options.threads; ++w) evaluators.push_back(make_evaluator(w));
  return detail::MctsSearch<Evaluator>(dag, std::move(evaluators), options, t0).run(seeds);
}

}  // namespace pipeweaver
