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
  std::vector<std::vector<std::int32_t>> successors;
  std::vector<std::int32_t> indegree;
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
  std::vector<std::int32_t> best_sequence;
  double best_score = 0;
  int best_seed = -1;  ///< index of the seed order that is still the best, or -1 if the search improved on them
  std::int64_t iterations = 0;
  std::int64_t rollouts = 0;  ///< evaluations, seeds included
  std::size_t tree_nodes = 0;
  std::vector<MctsTracePoint> trace;
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

/// Runs the search. `make_evaluator(worker)` is called once per worker thread (0 .. threads-1)
/// and returns an object `e` with `double e(std::span<const std::int32_t> order)`: the order's
/// score in (0, 1] (higher is better; 0 for an unusable order). Seeds must be topological
/// orders of `dag`. Exceptions thrown by an evaluator are rethrown on the calling thread.
template <class MakeEvaluator>
[[nodiscard]] MctsResult mcts_search(const UnitDag& dag, std::span<const std::vector<std::int32_t>> seeds,
                                     MakeEvaluator&& make_evaluator, const MctsOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const bool timed = options.time_budget.count() > 0 || options.deadline != Clock::time_point::max();
  if (options.max_iterations <= 0 && !timed)
    throw input_error("MCTS needs an iteration budget, a time budget or a deadline", {.path = "MctsOptions", .expected = "max_iterations > 0, time_budget > 0 or a deadline"});
  if (options.threads < 1 || options.rollouts_per_expansion < 1 || options.round_size < 1)
    throw input_error("threads, rollouts_per_expansion and round_size must be positive", {.path = "MctsOptions", .expected = ">= 1 each"});
  const std::size_t U = dag.size();
  const auto T = static_cast<std::size_t>(options.threads);
  using Evaluator = std::decay_t<std::invoke_result_t<MakeEvaluator&, int>>;
  std::vector<Evaluator> evaluators;
  evaluators.reserve(T);
  for (std::size_t w = 0; w < T; ++w) evaluators.push_back(make_evaluator(static_cast<int>(w)));

  MctsResult res;
  std::vector<std::int32_t> guide_rank(U, 0);
  auto set_best = [&](const std::vector<std::int32_t>& seq, double score) {
    res.best_sequence = seq;
    res.best_score = score;
    for (std::size_t i = 0; i < seq.size(); ++i) guide_rank[static_cast<std::size_t>(seq[i])] = static_cast<std::int32_t>(i);
  };
  auto elapsed = [&] { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0); };
  // The end of a timed search: the earlier of t0 + time_budget and the deadline.
  Clock::time_point end = options.deadline;
  if (options.time_budget.count() > 0 && options.time_budget < end - t0) end = t0 + options.time_budget;
  auto time_is_up = [&] { return timed && Clock::now() >= end; };

  // Runs jobs 0 .. n-1 on the workers (job j on worker j mod T); results are written by index.
  auto run_parallel = [&](std::size_t n, auto&& job) {
    if (T == 1 || n <= 1) {
      for (std::size_t j = 0; j < n; ++j) job(j, evaluators[0]);
      return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&](std::size_t w) {
      try {
        for (std::size_t j = w; j < n; j += T) job(j, evaluators[w]);
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
  };

  // Seeds.
  std::vector<double> seed_scores(seeds.size(), 0);
  run_parallel(seeds.size(), [&](std::size_t j, Evaluator& ev) { seed_scores[j] = ev(std::span<const std::int32_t>(seeds[j])); });
  res.rollouts += static_cast<std::int64_t>(seeds.size());
  for (std::size_t j = 0; j < seeds.size(); ++j)
    if (res.best_sequence.empty() || seed_scores[j] > res.best_score) {
      set_best(seeds[j], seed_scores[j]);
      res.best_seed = static_cast<int>(j);
    }
  if (res.best_sequence.empty()) {  // no seeds: the index order completed topologically
    detail::OrderState st(dag);
    Rng rng = Rng::stream(options.seed, ~std::uint64_t{0});
    st.complete(rng, {}, 0.0);
    std::vector<double> s(1, 0);
    run_parallel(1, [&](std::size_t, Evaluator& ev) { s[0] = ev(std::span<const std::int32_t>(st.sequence())); });
    ++res.rollouts;
    set_best(st.sequence(), s[0]);
  }
  if (options.record_trace) res.trace.push_back({elapsed(), res.rollouts, res.best_score});

  detail::MctsTree tree(options.max_tree_nodes);
  const auto R = static_cast<std::size_t>(options.rollouts_per_expansion);
  struct Expansion {
    std::int32_t node;                 // tree node the rollouts start from
    std::vector<std::int32_t> prefix;  // its prefix
  };
  std::vector<Expansion> round;
  std::vector<std::vector<std::int32_t>> orders;
  std::vector<double> scores;
  std::vector<char> ran;  // per rollout of the round: run (1) or left undone past the time budget (0)
  std::uint64_t rollout_index = 0;
  detail::OrderState state(dag);

  while (true) {
    if (options.max_iterations > 0 && res.iterations >= options.max_iterations) break;
    if (time_is_up()) break;
    if (options.stop && options.stop()) break;
    std::int64_t this_round = options.round_size;
    if (options.max_iterations > 0) this_round = std::min<std::int64_t>(this_round, options.max_iterations - res.iterations);
    round.clear();
    for (std::int64_t e = 0; e < this_round; ++e) {
      const std::uint64_t iteration = static_cast<std::uint64_t>(res.iterations + e);
      Rng rng = Rng::stream(options.seed ^ 0x5eedf00dULL, iteration);
      state.reset();
      std::int32_t node = 0;
      // Selection.
      while (!state.done()) {
        const auto& nd = tree[node];
        const auto avail = static_cast<std::int32_t>(state.available().size());
        if (nd.children < avail && !tree.full()) {
          // Expansion: a random untried unit.
          std::vector<std::int32_t> untried;
          for (auto u : state.available()) {
            bool tried = false;
            for (std::int32_t c = nd.first_child; c >= 0; c = tree[c].next_sibling)
              if (tree[c].unit == u) tried = true;
            if (!tried) untried.push_back(u);
          }
          const std::int32_t u = untried[static_cast<std::size_t>(rng.below(untried.size()))];
          node = tree.add_child(node, u);
          state.place(u);
          break;
        }
        if (nd.children == 0) break;  // tree full: roll out from here
        const double ln_parent = detail::portable_log(static_cast<double>(std::max<std::int64_t>(nd.visits, 1)));
        std::int32_t best_child = -1;
        double best_ucb = -1;
        for (std::int32_t c = nd.first_child; c >= 0; c = tree[c].next_sibling) {
          const auto& ch = tree[c];
          const double n_child = static_cast<double>(std::max<std::int64_t>(ch.visits, 1));
          const double ucb = detail::portable_pow(ch.best, options.alpha) + options.beta * std::sqrt(ln_parent / n_child);
          if (ucb > best_ucb || (ucb == best_ucb && tree[c].unit < tree[best_child].unit)) {
            best_ucb = ucb;
            best_child = c;
          }
        }
        node = best_child;
        state.place(tree[node].unit);
      }
      // Book the visits now so that the rest of the round explores elsewhere.
      for (std::int32_t a = node; a >= 0; a = tree[a].parent) tree[a].visits += static_cast<std::int64_t>(R);
      round.push_back({node, state.sequence()});
    }
    // Rollouts, in parallel, by index.
    const std::size_t n = round.size() * R;
    orders.assign(n, {});
    scores.assign(n, 0);
    const auto guide = std::span<const std::int32_t>(guide_rank);
    const std::uint64_t base = rollout_index;
    ran.assign(n, 0);
    run_parallel(n, [&](std::size_t j, Evaluator& ev) {
      // Past the time budget, the rest of the round is left undone (the search ends after it),
      // so that a round never runs far beyond the budget. Never with an iteration budget alone.
      if (time_is_up()) return;
      detail::OrderState st(dag);
      for (auto u : round[j / R].prefix) st.place(u);
      Rng rng = Rng::stream(options.seed, base + j);
      st.complete(rng, guide, options.follow_best);
      orders[j] = st.sequence();
      scores[j] = ev(std::span<const std::int32_t>(orders[j]));
      ran[j] = 1;
    });
    rollout_index += n;
    // Apply in rollout order.
    // An expansion counts as an iteration when at least one of its rollouts ran; j ascends, so
    // its first rollout that ran is the first seen with its index j / R.
    std::size_t last_counted = n;  // no expansion yet
    for (std::size_t j = 0; j < n; ++j) {
      if (!ran[j]) continue;
      ++res.rollouts;
      if (j / R != last_counted) {
        last_counted = j / R;
        ++res.iterations;
      }
      for (std::int32_t a = round[j / R].node; a >= 0; a = tree[a].parent) tree[a].best = std::max(tree[a].best, scores[j]);
      if (scores[j] > res.best_score) {
        set_best(orders[j], scores[j]);
        res.best_seed = -1;
      }
    }
    if (options.record_trace) res.trace.push_back({elapsed(), res.rollouts, res.best_score});
    if (std::find(ran.begin(), ran.end(), char{0}) != ran.end()) break;  // cut short by the time budget
  }
  res.tree_nodes = tree.size();
  return res;
}

}  // namespace pipeweaver
