#pragma once
// Per-layer memory optimization.
//
// (a) Candidates per forward/backward stage pair. A chunk's layers are identical, so a strategy is
//     a triple of counts (full recompute f, selective recompute s, offload o) with f+s+o <= L.
//     Every triple is evaluated by a caller-supplied function (time, activation bytes); the
//     Pareto frontier (no other triple is both faster and smaller) is kept, and of it at most S:
//     the fastest, the most frugal, and the fastest in each of S-2 equal-width memory buckets
//     between them. This is the multiple-choice knapsack view: each pair is a class, its
//     candidates the items, time the value and bytes the weight.
//
// (b) Per rank: one candidate per pair minimizing  sum_i time_i(c_i)  subject to, at every
//     forward start p (a "point"),  static + sum_{i alive at p} bytes_i(c_i) <= capacity.
//     Branch-and-bound over pairs in order, fastest candidate first:
//       * warm start: all fastest, then repeatedly, at the worst violated point, step the alive
//         pair with the smallest  delta time / delta bytes  to its next more frugal candidate;
//         this always reaches a feasible solution when one exists (it only stops at a violated
//         point when every pair there is already at its most frugal, i.e. the point is
//         infeasible for every assignment);
//       * bound: time so far + sum of each remaining pair's fastest time + a lower bound on the
//         extra time the memory limit forces on them (fractional knapsack at disjoint points,
//         computed only when the warm start is not already within the gap of the plain bound);
//       * feasibility prune: at each point, assigned bytes + the most frugal bytes of the
//         unassigned alive pairs must fit;
//       * gap: a node is pruned when (1 + gap) * bound >= incumbent, so a completed search
//         guarantees incumbent <= (1 + gap) * optimum; a node limit stops runaway searches
//         (then `proven` is false, the incumbent is still feasible).
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"

namespace pipeweaver {

/// What a strategy costs a stage pair: its time (extra or total; only differences matter) and
/// the activation bytes it holds from the forward's start until the backward's end.
struct StrategyCost {
  Nanoseconds time{0};
  Bytes bytes{0};
};

struct StrategyCandidate {
  MemoryStrategy strategy{};
  Nanoseconds time{0};
  Bytes bytes{0};
  friend bool operator==(const StrategyCandidate&, const StrategyCandidate&) = default;
};

struct CandidateOptions {
  int max_candidates = 10;   ///< S (>= 2)
  bool selective = true;     ///< consider selective recompute
  bool offload = true;       ///< consider offload
  int max_evaluations = 2048;  ///< above this many triples the counts are taken on a coarser grid
};

namespace detail {
/// Count values 0, step, 2·step, ..., and `layers` itself.
inline std::vector<int> strategy_grid(int layers, int step) {
  std::vector<int> v;
  for (int x = 0; x < layers; x += step) v.push_back(x);
  v.push_back(layers);
  return v;
}
inline std::int64_t grid_triples(const std::vector<int>& a, const std::vector<int>& b, const std::vector<int>& c,
                                 int layers) {
  std::int64_t n = 0;
  for (int x : a)
    for (int y : b)
      for (int z : c)
        if (x + y + z <= layers) ++n;
  return n;
}
/// Pareto frontier of `all`: sorted by time ascending, bytes strictly decreasing. Ties are
/// broken by the strategy's order so the result never depends on evaluation order.
inline std::vector<StrategyCandidate> pareto_frontier(std::vector<StrategyCandidate> all) {
  std::sort(all.begin(), all.end(), [](const StrategyCandidate& a, const StrategyCandidate& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.bytes != b.bytes) return a.bytes < b.bytes;
    return a.strategy < b.strategy;
  });
  std::vector<StrategyCandidate> out;
  for (const auto& c : all)
    if (out.empty() || c.bytes < out.back().bytes) out.push_back(c);
  return out;
}
}  // namespace detail

/// Candidate strategies of one stage pair whose chunk has `layers` layers; `eval(strategy)`
/// returns its StrategyCost. Result: at most options.max_candidates, non-dominated, sorted
/// fastest first (so bytes decrease along it); the first is the fastest, the last the most frugal.
template <class Eval>
  requires std::invocable<Eval&, const MemoryStrategy&> &&
           std::convertible_to<std::invoke_result_t<Eval&, const MemoryStrategy&>, StrategyCost>
[[nodiscard]] std::vector<StrategyCandidate> candidate_strategies(int layers, Eval&& eval,
                                                                  const CandidateOptions& options = {}) {
  if (layers < 0)
    throw input_error("negative layer count " + std::to_string(layers), {.expected = "layers >= 0"});
  if (options.max_candidates < 2)
    throw input_error("max_candidates = " + std::to_string(options.max_candidates), {.path = "CandidateOptions::max_candidates", .expected = "at least 2"});
  // Coarsen the grid until the enumeration is affordable (the extremes 0 and L always stay).
  int step = 1;
  std::vector<int> full, sel, off;
  for (;; ++step) {
    full = detail::strategy_grid(layers, step);
    sel = options.selective ? full : std::vector<int>{0};
    off = options.offload ? full : std::vector<int>{0};
    if (step >= layers || detail::grid_triples(full, sel, off, layers) <= options.max_evaluations) break;
  }
  std::vector<StrategyCandidate> all;
  for (int f : full)
    for (int s : sel)
      for (int o : off) {
        if (f + s + o > layers) continue;
        MemoryStrategy st{static_cast<std::int16_t>(f), static_cast<std::int16_t>(s), static_cast<std::int16_t>(o)};
        StrategyCost c = eval(st);
        all.push_back({st, c.time, c.bytes});
      }
  std::vector<StrategyCandidate> frontier = detail::pareto_frontier(std::move(all));
  const auto S = static_cast<std::size_t>(options.max_candidates);
  if (frontier.size() <= S) return frontier;

  // Fastest, most frugal, and the fastest (= first along the frontier) in each of S-2 buckets.
  const std::int64_t lo = frontier.back().bytes.count();
  const std::int64_t hi = frontier.front().bytes.count();
  const std::int64_t buckets = options.max_candidates - 2;
  std::vector<StrategyCandidate> out{frontier.front()};
  std::int64_t last_bucket = -1;
  for (std::size_t i = 1; i + 1 < frontier.size(); ++i) {
    // Bucket 0 holds the largest footprints (nearest the fastest), so walking the frontier
    // visits buckets in order. IEEE double arithmetic: identical on every platform.
    const double from_top = static_cast<double>(hi - frontier[i].bytes.count());
    auto b = static_cast<std::int64_t>(from_top * static_cast<double>(buckets) / static_cast<double>(hi - lo));
    b = std::min(b, buckets - 1);
    if (b != last_bucket) {
      out.push_back(frontier[i]);
      last_bucket = b;
    }
  }
  out.push_back(frontier.back());
  return out;
}

// ------------------------------------------------------------------------------------------
// (b) per-rank choice

/// One rank's problem. `candidates[i]`: the candidates of pair i (any order; dominated ones are
/// ignored; the storage is the caller's). `points[p]`: the pairs alive at the p-th forward start
/// of the rank (including the pair whose forward starts there).
struct RankMemoryProblem {
  std::vector<std::span<const StrategyCandidate>> candidates{};
  std::vector<std::vector<std::int32_t>> points{};
  Bytes static_bytes{0};
  Bytes capacity{0};
};

struct MemoryOptimizerOptions {
  double gap = 0.05;                 ///< accepted relative optimality gap
  std::int64_t node_limit = 200000;  ///< safety net on branch-and-bound nodes
};

struct MemoryAssignment {
  bool feasible = false;
  std::vector<std::int32_t> choice{};  ///< per pair: index into its `candidates` (empty when infeasible)
  Nanoseconds total_time{0};         ///< sum of the chosen candidates' times
  Nanoseconds lower_bound{0};        ///< sum of each pair's fastest time
  bool proven = false;               ///< total_time <= (1 + gap) * optimum is guaranteed
  std::int32_t violating_point = -1; ///< infeasible: the first point that overflows even at its most frugal
  Bytes violating_bytes{0};          ///< static + most frugal bytes at that point
  Bytes peak{0};                     ///< static + the largest alive bytes over the points (feasible only)
  std::int64_t nodes = 0;            ///< branch-and-bound nodes visited
};

/// The range a rank's activation demand can span: the largest alive bytes over the points
/// (static bytes excluded) when every pair takes its most frugal candidate, and when every pair
/// takes its fastest one (ties: fewer bytes). A capacity below static + frugal cannot be met by
/// any choice; one at or above static + fastest needs no trade of time for memory.
struct DemandRange {
  Bytes frugal{0};
  Bytes fastest{0};
};

[[nodiscard]] inline DemandRange demand_range(const RankMemoryProblem& problem) {
  const std::size_t n = problem.candidates.size();
  std::vector<std::int64_t> frugal(n, 0), fastest(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& cs = problem.candidates[i];
    if (cs.empty())
      throw input_error("pair " + std::to_string(i) + " has no candidate strategy", {.path = "RankMemoryProblem.candidates", .expected = "at least one candidate per pair"});
    const StrategyCandidate* f = &cs.front();
    const StrategyCandidate* q = &cs.front();
    for (const StrategyCandidate& c : cs) {
      if (c.bytes < f->bytes) f = &c;
      if (c.time < q->time || (c.time == q->time && c.bytes < q->bytes)) q = &c;
    }
    frugal[i] = f->bytes.count();
    fastest[i] = q->bytes.count();
  }
  DemandRange out;
  for (const auto& point : problem.points) {
    std::int64_t a = 0, b = 0;
    for (std::int32_t i : point) {
      if (i < 0 || static_cast<std::size_t>(i) >= n)
        throw input_error("a point names pair " + std::to_string(i), {.path = "RankMemoryProblem.points", .expected = "pairs in 0.." + std::to_string(n) + " (exclusive)"});
      a += frugal[static_cast<std::size_t>(i)];
      b += fastest[static_cast<std::size_t>(i)];
    }
    out.frugal = std::max(out.frugal, Bytes{a});
    out.fastest = std::max(out.fastest, Bytes{b});
  }
  return out;
}

/// One event of a rank's order of stage pairs: the forward or the (memory-releasing) backward
/// of pair `pair`.
struct PairEvent {
  std::int32_t pair = 0;
  bool forward = true;
};

/// The alive sets at each forward start of `order` (a pair is alive from its forward until its
/// backward event; a pair without a backward stays alive to the end).
[[nodiscard]] inline std::vector<std::vector<std::int32_t>> alive_points(std::span<const PairEvent> order,
                                                                        std::int32_t pairs) {
  std::vector<char> alive(static_cast<std::size_t>(std::max<std::int32_t>(pairs, 0)), 0);
  std::vector<std::int32_t> live;  // alive pairs in forward order
  std::vector<std::vector<std::int32_t>> points;
  for (const PairEvent& e : order) {
    if (e.pair < 0 || e.pair >= pairs)
      throw input_error("pair " + std::to_string(e.pair) + " out of range", {.expected = "0 <= pair < " + std::to_string(pairs)});
    auto& a = alive[static_cast<std::size_t>(e.pair)];
    if (e.forward) {
      if (!a) {
        a = 1;
        live.push_back(e.pair);
      }
      points.push_back(live);
    } else if (a) {
      a = 0;
      live.erase(std::find(live.begin(), live.end(), e.pair));
    }
  }
  return points;
}

/// A rank's stage pairs in a schedule: pair i is the forward node `forward[i]` with its
/// memory-releasing backward node `release[i]` (the whole backward, or the weight part of a
/// split backward; -1 when the stage has no backward on the rank: then the forward holds its
/// activations only while it runs, and `order` releases it right after its forward), numbered
/// in forward order.
struct RankPairs {
  std::vector<NodeIndex> forward{};
  std::vector<NodeIndex> release{};
  std::vector<PairEvent> order{};  ///< the rank's forwards and releasing backwards in schedule order
};

/// Extracts a rank's pairs from its scheduled order. Stages are matched on (module, chunk,
/// sub-microbatch).
[[nodiscard]] inline RankPairs rank_pairs(const StageGraph& graph, std::span<const ScheduledStage> order) {
  RankPairs out;
  struct Key {
    std::int32_t module, chunk, smb, pair;
  };
  std::vector<Key> keys;
  auto node_at = [&](NodeIndex v) -> const StageNode& {
    if (v < 0 || static_cast<std::size_t>(v) >= graph.nodes.size())
      throw input_error("node " + std::to_string(v) + " out of range", {.expected = "0 <= node < " + std::to_string(graph.nodes.size())});
    return graph.nodes[static_cast<std::size_t>(v)];
  };
  for (const ScheduledStage& s : order) {
    const StageRef& st = node_at(s.node).stage;
    if (st.pass != Pass::forward) continue;
    auto p = static_cast<std::int32_t>(out.forward.size());
    out.forward.push_back(s.node);
    out.release.push_back(-1);
    keys.push_back({st.module.value(), st.chunk, st.sub_microbatch.value(), p});
  }
  auto less = [](const Key& a, const Key& b) {
    if (a.module != b.module) return a.module < b.module;
    if (a.chunk != b.chunk) return a.chunk < b.chunk;
    return a.smb < b.smb;
  };
  std::sort(keys.begin(), keys.end(), less);
  for (const ScheduledStage& s : order) {
    const StageRef& st = node_at(s.node).stage;
    // A forward is its own pair; the weight part of a split backward releases the memory.
    if (st.pass == Pass::forward || st.pass == Pass::backward_input) continue;
    Key k{st.module.value(), st.chunk, st.sub_microbatch.value(), 0};
    auto it = std::lower_bound(keys.begin(), keys.end(), k, less);
    if (it == keys.end() || less(k, *it)) continue;  // backward of a stage whose forward is elsewhere
    out.release[static_cast<std::size_t>(it->pair)] = s.node;
  }
  // Events in schedule order.
  std::int32_t next_forward = 0;
  for (const ScheduledStage& s : order) {
    const StageRef& st = graph.nodes[static_cast<std::size_t>(s.node)].stage;
    if (st.pass == Pass::forward) {
      const std::int32_t p = next_forward++;
      out.order.push_back({p, true});
      if (out.release[static_cast<std::size_t>(p)] < 0) out.order.push_back({p, false});
    } else if (st.pass != Pass::backward_input) {
      Key k{st.module.value(), st.chunk, st.sub_microbatch.value(), 0};
      auto it = std::lower_bound(keys.begin(), keys.end(), k, less);
      if (it != keys.end() && !less(k, *it)) out.order.push_back({it->pair, false});
    }
  }
  return out;
}

namespace detail {
/// A rank's problem in compressed form: the pairs alive at point p are
/// point_pairs[point_begin[p] .. point_begin[p + 1]). The search's evaluator builds this
/// directly (no vector per point); optimize_rank_memory converts a RankMemoryProblem to it.
struct RankMemoryView {
  std::span<const std::span<const StrategyCandidate>> candidates{};
  std::span<const std::int32_t> point_begin{};  ///< points + 1 entries (empty: no points)
  std::span<const std::int32_t> point_pairs{};
  Bytes static_bytes{0};
  Bytes capacity{0};
  [[nodiscard]] std::size_t points() const noexcept { return point_begin.empty() ? 0 : point_begin.size() - 1; }
  [[nodiscard]] std::span<const std::int32_t> point(std::size_t p) const {
    return point_pairs.subspan(static_cast<std::size_t>(point_begin[p]),
                               static_cast<std::size_t>(point_begin[p + 1] - point_begin[p]));
  }
};

/// The branch-and-bound of the header comment. Reusable: its buffers are kept across solves,
/// so a caller solving many ranks (the search's evaluator) allocates nothing in steady state.
/// Internally each pair's non-dominated candidates are stored flat, fastest first, as
/// "positions" 0 .. len(i) − 1 (position 0 = fastest, the last = most frugal).
class MemoryBranchAndBound {
 public:
  void solve(const RankMemoryView& pb, const MemoryOptimizerOptions& opt, MemoryAssignment& res) {
    pb_ = &pb;
    opt_ = &opt;
    res.feasible = false;
    res.choice.clear();  // keeps its capacity for the next solve
    res.total_time = Nanoseconds{0};
    res.proven = false;
    res.violating_point = -1;
    res.violating_bytes = Bytes{0};
    res.peak = Bytes{0};
    res.nodes = 0;
    const auto n = pb.candidates.size();
    const std::size_t np = pb.points();
    budget_ = (pb.capacity - pb.static_bytes).count();
    nodes_ = 0;
    // Per pair: non-dominated candidates, fastest first (ties: fewer bytes, lower index).
    off_.assign(1, 0);
    idx_.clear();
    t_.clear();
    b_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& cs = pb.candidates[i];
      if (cs.empty())
        throw input_error("stage pair " + std::to_string(i) + " has no candidate strategy", {.expected = "at least one candidate per pair"});
      auto before = [&](std::size_t a, std::size_t b) {
        const auto &x = cs[a], &y = cs[b];
        if (x.time != y.time) return x.time < y.time;
        if (x.bytes != y.bytes) return x.bytes < y.bytes;
        return a < b;
      };
      sort_.resize(cs.size());
      bool sorted = true;
      for (std::size_t k = 0; k < cs.size(); ++k) {
        sort_[k] = static_cast<std::int32_t>(k);
        if (k > 0 && !before(k - 1, k)) sorted = false;
      }
      if (!sorted)  // the search's lists are already fastest first: no sort there
        std::sort(sort_.begin(), sort_.end(), [&](std::int32_t a, std::int32_t b) {
          return before(static_cast<std::size_t>(a), static_cast<std::size_t>(b));
        });
      const std::size_t first = idx_.size();
      for (std::int32_t k : sort_) {
        const auto& c = cs[static_cast<std::size_t>(k)];
        if (idx_.size() == first || c.bytes.count() < b_.back()) {
          idx_.push_back(k);
          t_.push_back(c.time.count());
          b_.push_back(c.bytes.count());
        }
      }
      off_.push_back(static_cast<std::int32_t>(idx_.size()));
    }
    // points_of_: CSR of the points each pair is alive at, ascending.
    pof_begin_.assign(n + 1, 0);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) {
        if (i < 0 || static_cast<std::size_t>(i) >= n)
          throw input_error("point " + std::to_string(p) + " names pair " + std::to_string(i), {.expected = "0 <= pair < " + std::to_string(n)});
        ++pof_begin_[static_cast<std::size_t>(i) + 1];
      }
    for (std::size_t i = 0; i < n; ++i) pof_begin_[i + 1] += pof_begin_[i];
    pof_.resize(static_cast<std::size_t>(pof_begin_[n]));
    fill_.assign(pof_begin_.begin(), pof_begin_.end() - 1);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) pof_[static_cast<std::size_t>(fill_[static_cast<std::size_t>(i)]++)] = static_cast<std::int32_t>(p);
    // Load at each point with every pair at its most frugal.
    load_.assign(np, 0);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) load_[p] += min_bytes(static_cast<std::size_t>(i));
    std::int64_t fastest_sum = 0;
    for (std::size_t i = 0; i < n; ++i) fastest_sum += time(i, 0);
    res.lower_bound = Nanoseconds{fastest_sum};
    for (std::size_t p = 0; p < np; ++p)
      if (load_[p] > budget_) {
        res.violating_point = static_cast<std::int32_t>(p);
        res.violating_bytes = pb.static_bytes + Bytes{load_[p]};
        return;
      }
    res.feasible = true;

    // Greedy warm start (positions).
    pos_.assign(n, 0);
    greedy(pos_);
    upgrade(pos_);
    best_pos_ = pos_;
    best_ = 0;
    for (std::size_t i = 0; i < n; ++i) best_ += time(i, pos_[i]);

    // Cheap exits first (the common cases in the search): everything at its fastest fits, or
    // the warm start is already within the gap of the plain bound.
    double root_bound = static_cast<double>(fastest_sum);
    const bool cheap = within_gap(static_cast<double>(best_), root_bound);
    if (!cheap) {
      build_hulls();
      extra_.assign(n + 1, 0.0);
      extra_[0] = extra_bound(0);
      root_bound = static_cast<double>(fastest_sum) + extra_[0];
      res.lower_bound = Nanoseconds{std::max<std::int64_t>(fastest_sum, static_cast<std::int64_t>(root_bound))};
    }
    suffix_.assign(n + 1, 0);
    for (std::size_t i = n; i-- > 0;) suffix_[i] = suffix_[i + 1] + time(i, 0);
    if (!cheap && !within_gap(static_cast<double>(best_), root_bound)) {
      // Only when the search runs, and at a stride: the extra time of pairs >= i is at least that
      // of pairs >= j for j > i (extra times are >= 0), so extra_[j] bounds depth i too.
      const std::size_t stride = std::max<std::size_t>(1, n / 16);
      for (std::size_t i = n; i-- > 1;) extra_[i] = i % stride == 0 ? extra_bound(i) : extra_[std::min(n, (i / stride + 1) * stride)];
      cur_.assign(n, 0);
      aborted_ = false;
      dfs(0, 0);
      res.proven = !aborted_;
    } else {
      res.proven = true;
    }
    res.nodes = nodes_;
    res.choice.resize(n);
    for (std::size_t i = 0; i < n; ++i) res.choice[i] = idx_[at(i, best_pos_[i])];
    res.total_time = Nanoseconds{best_};
    std::int64_t peak = 0;
    for (std::size_t p = 0; p < np; ++p) {
      std::int64_t l = 0;
      for (std::int32_t i : pb.point(p)) l += bytes(static_cast<std::size_t>(i), best_pos_[static_cast<std::size_t>(i)]);
      peak = std::max(peak, l);
    }
    res.peak = pb.static_bytes + Bytes{peak};
  }

 private:
  [[nodiscard]] std::size_t at(std::size_t i, std::int32_t k) const {
    return static_cast<std::size_t>(off_[i]) + static_cast<std::size_t>(k);
  }
  [[nodiscard]] std::int32_t len(std::size_t i) const { return off_[i + 1] - off_[i]; }
  [[nodiscard]] std::int64_t time(std::size_t i, std::int32_t k) const { return t_[at(i, k)]; }
  [[nodiscard]] std::int64_t bytes(std::size_t i, std::int32_t k) const { return b_[at(i, k)]; }
  [[nodiscard]] std::int64_t min_bytes(std::size_t i) const { return b_[static_cast<std::size_t>(off_[i + 1] - 1)]; }
  [[nodiscard]] std::span<const std::int32_t> points_of(std::size_t i) const {
    return std::span<const std::int32_t>(pof_).subspan(static_cast<std::size_t>(pof_begin_[i]),
                                                       static_cast<std::size_t>(pof_begin_[i + 1] - pof_begin_[i]));
  }
  [[nodiscard]] bool within_gap(double incumbent, double bound) const { return incumbent <= (1.0 + opt_->gap) * bound; }

  // Lower convex hull of each pair's frontier in (bytes saved, extra time) space from its
  // fastest candidate: the fractional (LP) relaxation of choosing among its candidates.
  void build_hulls() {
    const std::size_t n = off_.size() - 1;
    hull_.assign(n, {});
    std::vector<std::pair<std::int64_t, std::int64_t>> pts;
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t t0 = time(i, 0), b0 = bytes(i, 0);
      pts.assign(1, {0, 0});  // (saved, extra), saved increasing
      for (std::int32_t k = 1; k < len(i); ++k) {
        std::pair<std::int64_t, std::int64_t> q{b0 - bytes(i, k), time(i, k) - t0};
        // Pop while the last point lies on or above the chord from the one before it to q.
        while (pts.size() >= 2) {
          const auto& a = pts[pts.size() - 2];
          const auto& b = pts.back();
          const double cross = static_cast<double>(b.first - a.first) * static_cast<double>(q.second - a.second) -
                               static_cast<double>(b.second - a.second) * static_cast<double>(q.first - a.first);
          if (cross <= 0) pts.pop_back();
          else break;
        }
        pts.push_back(q);
      }
      for (std::size_t k = 1; k < pts.size(); ++k)
        hull_[i].push_back({pts[k].first - pts[k - 1].first, pts[k].second - pts[k - 1].second});
    }
  }

  // extra_[i] bounds the extra time that pairs >= i need whatever pairs < i chose: at a point p,
  // pairs < i hold at least their most frugal bytes, so pairs >= i in p must save at least
  //   need = sum_{j<i} min_bytes + sum_{j>=i} fastest_bytes - budget
  // bytes, which costs at least the fractional knapsack over their hull segments. Points
  // with disjoint sets of pairs >= i add up (chosen greedily, largest first).
  double extra_bound(std::size_t i) {
    const std::size_t n = off_.size() - 1;
    const RankMemoryView& pb = *pb_;
    std::vector<std::pair<double, std::size_t>> by_extra;
    std::vector<std::pair<std::int64_t, std::int64_t>> segs;
    std::vector<char> used(n, 0);
    // The bytes each point must shed; only points whose need is a local maximum along the
    // rank's order are costed (any subset of points gives a valid bound, and neighbors of a
    // peak share most of its pairs), which keeps this O(points) knapsacks -> a handful.
    const std::size_t np = pb.points();
    std::vector<std::int64_t> need_at(np, 0);
    for (std::size_t p = 0; p < np; ++p) {
      std::int64_t need = -budget_;
      for (std::int32_t jj : pb.point(p)) {
        const auto j = static_cast<std::size_t>(jj);
        need += j < i ? min_bytes(j) : bytes(j, 0);
      }
      need_at[p] = need;
    }
    for (std::size_t p = 0; p < np; ++p) {
      const std::int64_t need = need_at[p];
      if (need <= 0) continue;
      if ((p > 0 && need_at[p - 1] >= need) || (p + 1 < np && need_at[p + 1] > need)) continue;
      segs.clear();
      for (std::int32_t jj : pb.point(p)) {
        const auto j = static_cast<std::size_t>(jj);
        if (j >= i) segs.insert(segs.end(), hull_[j].begin(), hull_[j].end());
      }
      if (segs.empty()) continue;
      std::sort(segs.begin(), segs.end(), [](const auto& a, const auto& b) {
        return static_cast<double>(a.second) * static_cast<double>(b.first) <
               static_cast<double>(b.second) * static_cast<double>(a.first);
      });
      double extra = 0;
      auto left = static_cast<double>(need);
      for (const auto& [db, dt] : segs) {
        const auto d = static_cast<double>(db);
        if (d >= left) {
          extra += static_cast<double>(dt) * left / d;
          left = 0;
          break;
        }
        extra += static_cast<double>(dt);
        left -= d;
      }
      by_extra.push_back({extra, p});
    }
    std::sort(by_extra.begin(), by_extra.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    double total = 0;
    for (const auto& [extra, p] : by_extra) {
      bool disjoint = true;
      for (std::int32_t j : pb.point(p))
        if (static_cast<std::size_t>(j) >= i && used[static_cast<std::size_t>(j)]) disjoint = false;
      if (!disjoint) continue;
      for (std::int32_t j : pb.point(p))
        if (static_cast<std::size_t>(j) >= i) used[static_cast<std::size_t>(j)] = 1;
      total += extra;
    }
    // Shave a relative epsilon so rounding never makes the bound exceed the true optimum.
    return total * (1.0 - 1e-12);
  }

  void greedy(std::vector<std::int32_t>& pos) {
    const RankMemoryView& pb = *pb_;
    const std::size_t np = pb.points();
    std::vector<std::int64_t>& load = work_load_;
    load.assign(np, 0);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) load[p] += bytes(static_cast<std::size_t>(i), pos[static_cast<std::size_t>(i)]);
    // Max-heap of (excess, point); loads only fall, so an entry whose excess is stale is
    // re-pushed with the current value (ties: the lower point index first).
    auto& heap = heap_;  // (excess, -point)
    heap.clear();
    for (std::size_t p = 0; p < np; ++p)
      if (load[p] > budget_) heap.push_back({load[p] - budget_, -static_cast<std::int64_t>(p)});
    std::make_heap(heap.begin(), heap.end());
    // Per pair, its next step down the frontier as doubles (db = 0: no step left), so the scan
    // below touches one small array; the values are those the comparison would convert anyway.
    step_dt_.resize(pos.size());
    step_db_.resize(pos.size());
    auto set_step = [&](std::size_t i) {
      const std::int32_t k = pos[i];
      if (k + 1 >= len(i)) {
        step_dt_[i] = 0;
        step_db_[i] = 0;
        return;
      }
      const std::size_t a = at(i, k);
      step_dt_[i] = static_cast<double>(t_[a + 1] - t_[a]);
      step_db_[i] = static_cast<double>(b_[a] - b_[a + 1]);
    };
    if (!heap.empty())
      for (std::size_t i = 0; i < pos.size(); ++i) set_step(i);
    for (;;) {
      if (heap.empty()) return;
      const auto [excess, neg_p] = heap.front();
      const auto wp = static_cast<std::size_t>(-neg_p);
      std::pop_heap(heap.begin(), heap.end());
      heap.pop_back();
      if (load[wp] - budget_ != excess) {
        if (load[wp] > budget_) {
          heap.push_back({load[wp] - budget_, neg_p});
          std::push_heap(heap.begin(), heap.end());
        }
        continue;
      }
      // Alive pair with the cheapest time per byte saved by one step down its frontier.
      std::int32_t best_pair = -1;
      double best_dt = 0, best_db = 1;
      for (std::int32_t i : pb.point(wp)) {
        const auto ii = static_cast<std::size_t>(i);
        const double db = step_db_[ii];
        if (db == 0) continue;
        const double dt = step_dt_[ii];
        // dt/db < best_dt/best_db (cross-multiplied; doubles since the products overflow int64).
        if (best_pair < 0 || dt * best_db < best_dt * db) {
          best_pair = i;
          best_dt = dt;
          best_db = db;
        }
      }
      if (best_pair < 0) return;  // cannot happen when the problem is feasible
      const auto bi = static_cast<std::size_t>(best_pair);
      const std::size_t a = at(bi, pos[bi]);
      const std::int64_t saved = b_[a] - b_[a + 1];
      for (std::int32_t p : points_of(bi)) load[static_cast<std::size_t>(p)] -= saved;
      ++pos[bi];
      set_step(bi);
      if (load[wp] > budget_) {
        heap.push_back({load[wp] - budget_, neg_p});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }

  // Downgrading at the worst point can over-shoot: move each pair back to the fastest
  // candidate that still fits, until nothing changes (each move strictly lowers the time).
  void upgrade(std::vector<std::int32_t>& pos) {
    const RankMemoryView& pb = *pb_;
    const std::size_t np = pb.points();
    std::vector<std::int64_t>& load = work_load_;
    load.assign(np, 0);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) load[p] += bytes(static_cast<std::size_t>(i), pos[static_cast<std::size_t>(i)]);
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t i = 0; i < pos.size(); ++i) {
        if (pos[i] == 0) continue;  // already at its fastest
        const std::int64_t cur = bytes(i, pos[i]);
        std::int64_t slack = budget_ - cur;  // room for pair i at its tightest point, without it
        for (std::int32_t p : points_of(i)) slack = std::min(slack, budget_ - (load[static_cast<std::size_t>(p)] - cur));
        for (std::int32_t k = 0; k < pos[i]; ++k)
          if (bytes(i, k) <= slack) {
            const std::int64_t d = bytes(i, k) - cur;
            for (std::int32_t p : points_of(i)) load[static_cast<std::size_t>(p)] += d;
            pos[i] = k;
            changed = true;
            break;
          }
      }
    }
  }

  void dfs(std::size_t i, std::int64_t cost) {
    if (aborted_) return;
    if (++nodes_ > opt_->node_limit) {
      aborted_ = true;
      return;
    }
    if (i == cur_.size()) {
      if (cost < best_) {
        best_ = cost;
        best_pos_ = cur_;
      }
      return;
    }
    const std::int64_t mb = min_bytes(i);
    for (std::int32_t k = 0; k < len(i); ++k) {
      const std::int64_t c = cost + time(i, k);
      // Candidates are fastest first: once one cannot beat the incumbent by more than the gap,
      // none after it can.
      if (!((1.0 + opt_->gap) * (static_cast<double>(c + suffix_[i + 1]) + extra_[i + 1]) < static_cast<double>(best_)))
        return;
      const std::int64_t delta = bytes(i, k) - mb;
      bool fits = true;
      for (std::int32_t p : points_of(i))
        if (load_[static_cast<std::size_t>(p)] + delta > budget_) {
          fits = false;
          break;
        }
      if (!fits) continue;
      for (std::int32_t p : points_of(i)) load_[static_cast<std::size_t>(p)] += delta;
      cur_[i] = k;
      dfs(i + 1, c);
      for (std::int32_t p : points_of(i)) load_[static_cast<std::size_t>(p)] -= delta;
      if (aborted_) return;
    }
  }

  const RankMemoryView* pb_ = nullptr;
  const MemoryOptimizerOptions* opt_ = nullptr;
  std::int64_t budget_ = 0;
  std::vector<std::int32_t> off_, idx_, sort_;  ///< per pair: [off_[i], off_[i+1]) into idx_/t_/b_
  std::vector<std::int64_t> t_, b_;
  std::vector<std::int32_t> pof_begin_, pof_, fill_;  ///< points_of: CSR
  std::vector<std::int64_t> load_;  ///< assigned bytes + most frugal bytes of unassigned, per point
  std::vector<std::int64_t> work_load_;
  std::vector<std::pair<std::int64_t, std::int64_t>> heap_;
  std::vector<double> step_dt_, step_db_;
  std::vector<std::int64_t> suffix_;
  std::vector<double> extra_;  ///< extra_[i]: lower bound on the extra time of pairs >= i over their fastest
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> hull_;  ///< per pair: (bytes saved, extra time) segments
  std::vector<std::int32_t> pos_, cur_, best_pos_;
  std::int64_t best_ = 0;
  std::int64_t nodes_ = 0;
  bool aborted_ = false;
};
}  // namespace detail

/// Chooses one candidate per pair (see the header comment). Never throws on an infeasible
/// problem: it returns feasible = false with the violating point; `require_feasible` turns that
/// into an Error.
[[nodiscard]] inline MemoryAssignment optimize_rank_memory(const RankMemoryProblem& problem,
                                                           const MemoryOptimizerOptions& options = {}) {
  if (!(options.gap >= 0))
    throw input_error("negative optimality gap", {.path = "MemoryOptimizerOptions::gap", .expected = ">= 0"});
  std::vector<std::int32_t> begin{0}, pairs;
  for (const auto& pt : problem.points) {
    pairs.insert(pairs.end(), pt.begin(), pt.end());
    begin.push_back(static_cast<std::int32_t>(pairs.size()));
  }
  const detail::RankMemoryView view{problem.candidates, begin, pairs, problem.static_bytes, problem.capacity};
  MemoryAssignment res;
  detail::MemoryBranchAndBound{}.solve(view, options, res);
  return res;
}

/// Throws Error{infeasible} naming the rank, the point, its bytes and the capacity when `a` is infeasible.
inline void require_feasible(const MemoryAssignment& a, int rank, Bytes capacity) {
  if (a.feasible) return;
  throw infeasible_error("activations do not fit even with every stage at its most frugal memory strategy: " +
                  std::to_string(to_gib(a.violating_bytes)) + " GiB needed at the start of forward " +
                  std::to_string(a.violating_point) + ", capacity " + std::to_string(to_gib(capacity)) + " GiB", {.path = "rank " + std::to_string(rank) + ", forward " + std::to_string(a.violating_point), .expected = "fewer stages in flight, more pipeline ranks or more device memory"});
}

}  // namespace pipeweaver
