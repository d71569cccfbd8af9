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
//     forward start p (a "point"),  static + sum_{i alive at p} bytes_i(c_i) <= capacity, a pair
//     being alive from its forward's start to the end of the node that frees its activations
//     (schedule/activation_memory.hpp). The search's evaluator builds the points from its
//     per-rank events (PairEvent) and solves them with detail::MemoryBranchAndBound.
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
#include "pipeweaver/core/units.hpp"

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

struct MemoryOptimizerOptions {
  double gap = 0.05;                 ///< accepted relative optimality gap
  std::int64_t node_limit = 200000;  ///< safety net on branch-and-bound nodes
};

struct MemoryAssignment {
  bool feasible = false;
  std::vector<std::int32_t> choice;  ///< per pair: index into its `candidates` (empty when infeasible)
  Nanoseconds total_time{0};         ///< sum of the chosen candidates' times
  Nanoseconds lower_bound{0};        ///< sum of each pair's fastest time
  bool proven = false;               ///< total_time <= (1 + gap) * optimum is guaranteed
  std::int32_t violating_point = -1; ///< infeasible: the first point that overflows even at its most frugal
  Bytes violating_bytes{0};          ///< static + most frugal bytes at that point
  Bytes peak{0};                     ///< static + the largest alive bytes over the points (feasible only)
  std::int64_t nodes = 0;            ///< branch-and-bound nodes visited
};

/// One event of a rank's order of stage pairs: the forward of pair `pair`, or the node that frees
/// its activations (schedule/activation_memory.hpp; right after the forward when none does).
struct PairEvent {
  std::int32_t pair = 0;
  bool forward = true;
};

namespace detail {
/// A rank's problem in compressed form: the pairs alive at point p are
/// point_pairs[point_begin[p] .. point_begin[p + 1]). The search's evaluator builds it from its
/// per-rank events (PairEvent) without a vector per point.
struct RankMemoryView {
  std::span<const std::span<const StrategyCandidate>> candidates;
  std::span<const std::int32_t> point_begin;  ///< points + 1 entries (empty: no points)
  std::span<const std::int32_t> point_pairs;
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
    reset(res);
    budget_ = (pb.capacity - pb.static_bytes).count();
    nodes_ = 0;
    load_candidates();
    index_points();
    if (!frugal_fits(res)) return;
    res.feasible = true;
    warm_start();
    search(res);
    write_result(res);
  }

 private:
  static void reset(MemoryAssignment& res) {
    res.feasible = false;
    res.choice.clear();  // keeps its capacity for the next solve
    res.total_time = Nanoseconds{0};
    res.proven = false;
    res.violating_point = -1;
    res.violating_bytes = Bytes{0};
    res.peak = Bytes{0};
    res.nodes = 0;
  }

  // Per pair: its non-dominated candidates, fastest first (ties: fewer bytes, lower index),
  // stored flat in idx_/t_/b_ from off_[i].
  void load_candidates() {
    const RankMemoryView& pb = *pb_;
    off_.assign(1, 0);
    idx_.clear();
    t_.clear();
    b_.clear();
    for (std::size_t i = 0; i < pb.candidates.size(); ++i) {
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
  }

  // points_of: CSR of the points each pair is alive at, ascending.
  void index_points() {
    const RankMemoryView& pb = *pb_;
    const std::size_t n = pb.candidates.size();
    const std::size_t np = pb.points();
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
  }

  // The load at each point with every pair at its most frugal (load_), and the plain lower bound
  // (every pair at its fastest). False, with the first violated point in `res`, when some point
  // overflows even so.
  bool frugal_fits(MemoryAssignment& res) {
    const RankMemoryView& pb = *pb_;
    const std::size_t n = pb.candidates.size();
    const std::size_t np = pb.points();
    load_.assign(np, 0);
    for (std::size_t p = 0; p < np; ++p)
      for (std::int32_t i : pb.point(p)) load_[p] += min_bytes(static_cast<std::size_t>(i));
    fastest_sum_ = 0;
    for (std::size_t i = 0; i < n; ++i) fastest_sum_ += time(i, 0);
    res.lower_bound = Nanoseconds{fastest_sum_};
    for (std::size_t p = 0; p < np; ++p)
      if (load_[p] > budget_) {
        res.violating_point = static_cast<std::int32_t>(p);
        res.violating_bytes = pb.static_bytes + Bytes{load_[p]};
        return false;
      }
    return true;
  }

  // The greedy warm start, then upgrades, as the incumbent (best_pos_, best_).
  void warm_start() {
    const std::size_t n = pb_->candidates.size();
    pos_.assign(n, 0);
    greedy(pos_);
    upgrade(pos_);
    best_pos_ = pos_;
    best_ = 0;
    for (std::size_t i = 0; i < n; ++i) best_ += time(i, pos_[i]);
  }

  // Cheap exits first (the common cases in the search): everything at its fastest fits, or the
  // warm start is already within the gap of the plain bound. Otherwise the knapsack bounds and
  // the branch-and-bound.
  void search(MemoryAssignment& res) {
    const std::size_t n = pb_->candidates.size();
    double root_bound = static_cast<double>(fastest_sum_);
    const bool cheap = within_gap(static_cast<double>(best_), root_bound);
    if (!cheap) {
      build_hulls();
      extra_.assign(n + 1, 0.0);
      extra_[0] = extra_bound(0);
      root_bound = static_cast<double>(fastest_sum_) + extra_[0];
      res.lower_bound = Nanoseconds{std::max<std::int64_t>(fastest_sum_, static_cast<std::int64_t>(root_bound))};
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
  }

  // The incumbent as the answer: choices, total time, nodes visited and the peak it reaches.
  void write_result(MemoryAssignment& res) const {
    const RankMemoryView& pb = *pb_;
    const std::size_t n = pb.candidates.size();
    res.nodes = nodes_;
    res.choice.resize(n);
    for (std::size_t i = 0; i < n; ++i) res.choice[i] = idx_[at(i, best_pos_[i])];
    res.total_time = Nanoseconds{best_};
    std::int64_t peak = 0;
    for (std::size_t p = 0; p < pb.points(); ++p) {
      std::int64_t l = 0;
      for (std::int32_t i : pb.point(p)) l += bytes(static_cast<std::size_t>(i), best_pos_[static_cast<std::size_t>(i)]);
      peak = std::max(peak, l);
    }
    res.peak = pb.static_bytes + Bytes{peak};
  }

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

  /// work_load_[p]: the bytes live at point p under the candidates `pos`.
  std::vector<std::int64_t>& point_loads(const std::vector<std::int32_t>& pos) {
    const RankMemoryView& pb = *pb_;
    work_load_.assign(pb.points(), 0);
    for (std::size_t p = 0; p < pb.points(); ++p)
      for (std::int32_t i : pb.point(p)) work_load_[p] += bytes(static_cast<std::size_t>(i), pos[static_cast<std::size_t>(i)]);
    return work_load_;
  }

  void greedy(std::vector<std::int32_t>& pos) {
    const RankMemoryView& pb = *pb_;
    const std::size_t np = pb.points();
    std::vector<std::int64_t>& load = point_loads(pos);
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
    std::vector<std::int64_t>& load = point_loads(pos);
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
  std::int64_t fastest_sum_ = 0;  ///< sum of each pair's fastest time
  std::int64_t nodes_ = 0;
  bool aborted_ = false;
};
}  // namespace detail

}  // namespace pipeweaver
