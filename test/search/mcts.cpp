// MCTS over unit orders: finds a hidden optimum on a small synthetic problem, respects the unit
// DAG, never returns worse than its seeds, is deterministic across thread counts, keeps the tree
// bounded.
#include <doctest/doctest.h>

#include <pipeweaver/search/mcts.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace pw = pipeweaver;

namespace {

// 8 units: 0 -> 1 -> 2 must stay in order (a chain), the rest are free. The score is
// 1 / (1 + Kendall distance to a hidden target order), so the optimum (score 1) is the target.
pw::UnitDag dag8() {
  pw::UnitDag d;
  d.successors.assign(8, {});
  d.indegree.assign(8, 0);
  d.successors[0] = {1};
  d.successors[1] = {2};
  d.indegree[1] = 1;
  d.indegree[2] = 1;
  return d;
}
const std::vector<std::int32_t> target{5, 0, 7, 1, 3, 2, 6, 4};

struct KendallScore {
  const pw::UnitDag* dag;
  std::atomic<int>* bad_orders;
  double operator()(std::span<const std::int32_t> order) const {
    std::vector<int> pos(8, -1), tpos(8, -1);
    bool ok = order.size() == 8;
    for (std::size_t i = 0; i < order.size() && ok; ++i) {
      if (order[i] < 0 || order[i] >= 8 || pos[static_cast<std::size_t>(order[i])] >= 0) ok = false;
      else pos[static_cast<std::size_t>(order[i])] = static_cast<int>(i);
    }
    for (std::size_t a = 0; a < 8 && ok; ++a)
      for (auto b : dag->successors[a])
        if (pos[a] > pos[static_cast<std::size_t>(b)]) ok = false;
    if (!ok) {
      ++*bad_orders;
      return 0;
    }
    for (std::size_t i = 0; i < 8; ++i) tpos[static_cast<std::size_t>(target[i])] = static_cast<int>(i);
    int inv = 0;
    for (std::size_t a = 0; a < 8; ++a)
      for (std::size_t b = 0; b < 8; ++b)
        if (pos[a] < pos[b] && tpos[a] > tpos[b]) ++inv;
    return 1.0 / (1.0 + inv);
  }
};

}  // namespace

TEST_CASE("mcts finds the optimum of a small order problem and only builds topological orders") {
  auto dag = dag8();
  std::atomic<int> bad{0};
  std::vector<std::vector<std::int32_t>> seeds{{0, 1, 2, 3, 4, 5, 6, 7}};
  pw::MctsOptions opt;
  opt.seed = 3;
  opt.max_iterations = 400;
  auto res = pw::mcts_search(dag, seeds, [&](int) { return KendallScore{&dag, &bad}; }, opt);
  CHECK(bad.load() == 0);
  CHECK(res.best_score == doctest::Approx(1.0));
  CHECK(res.best_sequence == target);
  CHECK(res.best_seed == -1);
  CHECK(res.iterations == 400);
  CHECK(res.rollouts == 1 + 400 * 10);
  // The trace never decreases.
  for (std::size_t i = 1; i < res.trace.size(); ++i) CHECK(res.trace[i].best_score >= res.trace[i - 1].best_score);
}

TEST_CASE("mcts keeps a seed that is already optimal, and is deterministic across thread counts") {
  auto dag = dag8();
  std::atomic<int> bad{0};
  std::vector<std::vector<std::int32_t>> seeds{{0, 1, 2, 3, 4, 5, 6, 7}, target};
  pw::MctsOptions opt;
  opt.max_iterations = 20;
  auto res = pw::mcts_search(dag, seeds, [&](int) { return KendallScore{&dag, &bad}; }, opt);
  CHECK(res.best_seed == 1);
  CHECK(res.best_sequence == target);

  std::vector<std::vector<std::int32_t>> weak{{0, 1, 2, 3, 4, 5, 6, 7}};
  opt.max_iterations = 37;  // not a multiple of round_size
  opt.seed = 11;
  std::vector<pw::MctsResult> runs;
  for (int threads : {1, 2, 3}) {
    opt.threads = threads;
    runs.push_back(pw::mcts_search(dag, weak, [&](int) { return KendallScore{&dag, &bad}; }, opt));
  }
  for (const auto& r : runs) {
    CHECK(r.best_sequence == runs[0].best_sequence);
    CHECK(r.best_score == runs[0].best_score);
    CHECK(r.tree_nodes == runs[0].tree_nodes);
    CHECK(r.iterations == 37);
  }
  CHECK(bad.load() == 0);
}

TEST_CASE("mcts: bounded tree, budgets and bad options") {
  auto dag = dag8();
  std::atomic<int> bad{0};
  std::vector<std::vector<std::int32_t>> none;
  pw::MctsOptions opt;
  opt.max_iterations = 300;
  opt.max_tree_nodes = 25;
  auto res = pw::mcts_search(dag, none, [&](int) { return KendallScore{&dag, &bad}; }, opt);
  CHECK(res.tree_nodes <= 25);
  CHECK(res.iterations == 300);
  CHECK(res.best_score > 0);
  CHECK(bad.load() == 0);

  pw::MctsOptions timed;
  timed.max_iterations = 0;
  timed.time_budget = std::chrono::milliseconds(30);
  const auto t0 = std::chrono::steady_clock::now();
  auto tres = pw::mcts_search(dag, none, [&](int) { return KendallScore{&dag, &bad}; }, timed);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(tres.iterations > 0);
  CHECK(took < std::chrono::seconds(2));

  // An absolute deadline already past: the seeds are scored, no round runs.
  pw::MctsOptions past;
  past.max_iterations = 0;
  past.deadline = std::chrono::steady_clock::now() - std::chrono::milliseconds(1);
  std::vector<std::vector<std::int32_t>> one_seed{{0, 1, 2, 3, 4, 5, 6, 7}};
  auto pres = pw::mcts_search(dag, one_seed, [&](int) { return KendallScore{&dag, &bad}; }, past);
  CHECK(pres.iterations == 0);
  CHECK(pres.rollouts == 1);
  CHECK(pres.best_seed == 0);

  pw::MctsOptions neither;
  neither.max_iterations = 0;
  CHECK_THROWS_AS((void)pw::mcts_search(dag, none, [&](int) { return KendallScore{&dag, &bad}; }, neither), pw::Error);
  pw::MctsOptions zero_threads;
  zero_threads.threads = 0;
  CHECK_THROWS_AS((void)pw::mcts_search(dag, none, [&](int) { return KendallScore{&dag, &bad}; }, zero_threads), pw::Error);
}

TEST_CASE("mcts: a time budget cuts the round it expires in short") {
  // Every evaluation sleeps 4 ms, a round is 4 expansions x 10 rollouts = 40 evaluations
  // (>= 80 ms on 2 threads), the budget 20 ms: the budget expires inside the first round, whose
  // remaining rollouts must be left undone. Sleeping is a lower bound on time, so this holds on
  // any machine, however slow.
  auto dag = dag8();
  std::atomic<int> bad{0}, evaluations{0};
  struct Slow {
    KendallScore score;
    std::atomic<int>* count;
    double operator()(std::span<const std::int32_t> order) const {
      ++*count;
      std::this_thread::sleep_for(std::chrono::milliseconds(4));
      return score(order);
    }
  };
  std::vector<std::vector<std::int32_t>> none;
  pw::MctsOptions opt;
  opt.threads = 2;
  opt.max_iterations = 0;
  opt.time_budget = std::chrono::milliseconds(20);
  const auto res = pw::mcts_search(dag, none, [&](int) { return Slow{KendallScore{&dag, &bad}, &evaluations}; }, opt);
  const int round = opt.round_size * opt.rollouts_per_expansion;
  CHECK(res.rollouts == evaluations.load());  // only rollouts that ran are counted
  CHECK(res.rollouts - 1 < round);            // 1: the starting order, evaluated before any round
  CHECK(res.iterations <= opt.round_size);
  CHECK(bad.load() == 0);
}

TEST_CASE("mcts rethrows an evaluator's exception") {
  auto dag = dag8();
  struct Throwing {
    double operator()(std::span<const std::int32_t>) const { throw pw::execution_error("boom"); }
  };
  pw::MctsOptions opt;
  opt.threads = 2;
  opt.max_iterations = 4;
  std::vector<std::vector<std::int32_t>> none;
  CHECK_THROWS_AS((void)pw::mcts_search(dag, none, [](int) { return Throwing{}; }, opt), pw::Error);
}
