#pragma once
// The Planner: turns each training step's batch metadata into a validated Plan, generic over
// any CostModel<C, StageSpec, SubMicrobatchSpec> (the analytic model, the table model or a
// user's own type). docs/architecture.md ("The Planner") describes it in full.
//
// Construction, once before training: the baselines' static choices are made on profile steps,
// the placement is chosen (planner/placement.hpp) and static memory is checked.
// plan(batch, control), per step: split -> stage graph -> schedule search -> lower -> emulate,
// and every baseline's plan for the batch; the best candidate that fits memory (ties to the
// searched plan) is validated and returned, so the planner is never slower than the best
// baseline that fits. fallback(batch): the best baseline alone, for a late search.
// Two options add searched candidates, each kept only when it is faster (ties to the plain one):
//  * repack: the batch's samples regrouped into as many microbatches (planner/repacking.hpp) and
//    searched; the result says which sample went where (PlanResult::sample_origin);
//  * split_backward: zero-bubble's B/W split. Each searched batch (the given one, and the
//    regrouped one with repack) is searched again over the stage graph with split backwards,
//    seeded with its best order; the interleaver defers each weight part into a bubble of its
//    rank, as far as memory allows. With both options, the result is never slower than with
//    either alone (same seed and iteration budget: the same searches are among its candidates).
//    So the split is decided per stage by the interleaver (when its rank has nothing else ready,
//    or when memory needs its activations back) and per step by the planner (split or not).
//    A per-stage choice in the MCTS itself would double its branching at every unit, which the
//    search cannot afford at hundreds of units per step.
// With a time budget or deadline, the searches of a call share it equally (each gets its share
// of what is left when it starts); with an iteration budget each gets the full budget.
// Budgets: the search ends at the first of the iteration budget, the wall-clock budget (from the
// start of the call), the control's deadline and its cancellation; only an iteration budget with
// no clock involved is reproducible. The work after the search (lowering, emulation,
// validation) is reserved out of a deadline, as long as it took in the previous call.
// Thread safety: plan() and fallback() may run concurrently; each borrows a stage-cost cache
// from a pool kept across steps (temporal reuse), emptied when it passes its caps
// (StageCostCacheOptions). Copies share everything (cheap to copy).
// Updating the cost model (online calibration): update_cost(model, change) makes `model` the one
// later calls use and records `change` (cost/cost_change.hpp) under a new cost version. Each
// call takes the current model and version when it borrows its cache and keeps them to its end,
// so a search in flight (an AsyncPlanner's, in the background) finishes with the model it started
// with; PlanResult::cost_version says which one planned. A cache brought to the new version
// drops exactly the entries of the (module, pass) pairs the changes since its own version name,
// and keeps every other entry. The placement and the baselines' static choices are not redone.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/analytic.hpp"  // the compiled mode's instances (end of file)
#include "pipeweaver/cost/cost_change.hpp"
#include "pipeweaver/cost/table.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/planner/placement.hpp"
#include "pipeweaver/planner/plan_result.hpp"
#include "pipeweaver/planner/repacking.hpp"
#include "pipeweaver/planner/search_control.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/schedule/validator.hpp"
#include "pipeweaver/search/schedule_search.hpp"

namespace pipeweaver {

struct PlannerOptions {
  /// Wall-clock budget of one plan() call (0: none). Not reproducible: set iterations and
  /// budget = 0 for identical plans across runs. A call's SearchControl may override it.
  std::chrono::nanoseconds budget = std::chrono::seconds(1);
  std::int64_t iterations = 0;  ///< MCTS iteration budget per plan() (0: none)
  int threads = 1;              ///< MCTS worker threads per plan() call
  std::uint64_t seed = 0;       ///< MCTS seed
  /// Placement choice: profile steps each candidate partition is scored on (0: DIP's own
  /// partition, unscored) and the MCTS iterations of each scoring search (iteration-bounded, so
  /// the choice is reproducible).
  int partition_steps = 2;
  std::int64_t partition_iterations = 2;
  /// Also score the baselines' static placements as placement candidates.
  bool baseline_placements = true;
  bool consider_baselines = true;  ///< take a baseline's plan when it beats the search
  /// Also search the step with split backwards (weight parts deferred into bubbles) and keep
  /// that plan when it is faster (see the header comment).
  bool split_backward = false;
  /// Also search the step with its samples regrouped into microbatches that even out every
  /// module's cost (planner/repacking.hpp) and keep that plan when it is faster.
  bool repack = false;
  RepackOptions repacking{};
  DipOptions dip{};
  CompareOptions compare{};        ///< baseline static choices and profile steps
  ScheduleSearchOptions search{};  ///< its mcts seed/threads/budgets are replaced by the fields above
  StageCostCacheOptions cache{};   ///< the stage-cost caches kept across steps, and their caps
};

/// C: the cost model, any type satisfying CostModel<C, StageSpec, SubMicrobatchSpec> (checked
/// when the class is instantiated, so that a type that does not fit gets a message naming the
/// member at fault rather than a failed deduction).
template <class C>
class Planner {
  static_assert(diagnose_cost_model<C, StageSpec, SubMicrobatchSpec>());

 public:
  /// Placement chosen lazily, on the first batch planned (its baselines' profile is that batch;
  /// with several threads planning at once, "first" is whichever gets there first).
  Planner(ModelSpec model, Setup setup, C cost, PlannerOptions options = {});
  /// Placement and baselines chosen now, on `compare.profile_steps` steps of `dataset` sampled
  /// with `compare.profile_seed`.
  Planner(ModelSpec model, Setup setup, C cost, const DatasetSpec& dataset, PlannerOptions options = {});
  /// Placement and baselines chosen now, on these sample batches (at least one).
  Planner(ModelSpec model, Setup setup, C cost, std::vector<Batch> samples, PlannerOptions options = {});

  /// The step's plan (see the header comment). Thread-safe.
  [[nodiscard]] PlanResult plan(const Batch& batch, const SearchControl& control = {}) const;
  /// The best baseline that fits memory for `batch` (no search). Thread-safe.
  [[nodiscard]] PlanResult fallback(const Batch& batch) const;
  /// Throws Error(input) naming the microbatch, sample and field when the planner cannot honor
  /// `batch` (data/batch_check.hpp); plan(), fallback() and AsyncPlanner::submit() call it.
  void check(const Batch& batch) const { check_batch(s_->model, s_->setup, batch); }

  [[nodiscard]] const ModelSpec& model() const noexcept { return s_->model; }
  [[nodiscard]] const Setup& setup() const noexcept { return s_->setup; }
  /// The cost model later calls use (a snapshot: update_cost may replace it at any time).
  [[nodiscard]] std::shared_ptr<const C> cost() const;
  /// The version of cost(): 0 for the model given at construction, +1 for each update_cost.
  [[nodiscard]] std::uint64_t cost_version() const;
  /// Makes `cost` the model of the calls that start from now on, `change` naming what differs
  /// from the current model (what is not named must not differ: its cached costs are reused).
  /// Calls already running keep their model. Returns the new version. Thread-safe, also while
  /// plan() and fallback() run on other threads (an AsyncPlanner's searches); copies of the
  /// planner, the AsyncPlanner's included, see the update.
  std::uint64_t update_cost(C cost, CostChange change = CostChange::everything());
  [[nodiscard]] const PlannerOptions& options() const noexcept { return s_->options; }
  /// Whether the placement has been chosen (always, unless constructed without samples and
  /// nothing was planned yet).
  [[nodiscard]] bool placement_ready() const noexcept { return s_->ready(); }
  /// The chosen placement. Throws Error{input} before it is chosen.
  [[nodiscard]] const Partition& partition() const { return s_->get().placement.partition; }
  /// How each candidate placement scored (DIP's own first; empty when it was not scored).
  [[nodiscard]] const std::vector<PlacementScore>& placement_scores() const { return s_->get().placement.scores; }
  /// The baselines' static choices.
  [[nodiscard]] const std::vector<PreparedBaseline>& baselines() const { return s_->get().baselines; }
  /// The baselines that could not be prepared for this model and setup, with the reason (they
  /// take no part in planning; the others and the search still do).
  [[nodiscard]] const std::vector<UnavailableBaseline>& unavailable_baselines() const { return s_->get().unavailable; }
  /// Stage-cost cache counters summed over the pool's workspaces (temporal reuse). Call it
  /// while no plan() or fallback() runs (it reads the caches' counters unsynchronized).
  [[nodiscard]] StageCostCacheStats cache_stats() const;

 private:
  struct Prepared {
    PlacementChoice placement;
    std::vector<PreparedBaseline> baselines;
    std::vector<UnavailableBaseline> unavailable;
  };
  struct Workspace {
    Workspace(const ModelSpec& m, const Setup& s, std::shared_ptr<const C> c, std::uint64_t v, const StageCostCacheOptions& o)
        : cost(std::move(c)), version(v), ctx(m, s, *cost, o) {}
    std::shared_ptr<const C> cost;  // the model its cache points at; written under pool_mu only
    std::uint64_t version;          // cost's version; written under pool_mu only
    BaselineContext<C> ctx;  // its StageCostCache serves the search and every emulation too
  };
  struct State;
  class Lease;
  /// One plan competing for the step: the searched one or a baseline's.
  struct Candidate {
    Plan plan;
    Nanoseconds step_time{0};
    Bytes peak{0};
    bool fits = false;
    std::string source;
    std::vector<std::vector<SampleOrigin>> origin{};  ///< PlanResult::sample_origin
    bool repacked = false;
    std::vector<Bytes> peaks{};  // per rank
  };
  /// The bounds reported with a plan: the smallest tight and classic bounds over the graphs of
  /// the candidates compared (the classic one also over the step's candidate-independent bound).
  struct Bounds {
    Nanoseconds tight = Nanoseconds::max();
    Nanoseconds classic = Nanoseconds::max();
    void add(const LowerBound& b) {
      tight = std::min(tight, b.tight);
      classic = std::min(classic, b.value);
    }
  };
  /// One search's candidate, its best unit order and what the search reports.
  struct Searched {
    Candidate candidate;
    std::vector<std::int32_t> sequence{};
    LowerBound bound{};  ///< of the searched graph (classic and tight)
    std::int64_t iterations = 0;
    std::vector<SearchTracePoint> trace{};
  };
  /// The searched candidates of a call (the plain search first), in tie-breaking order.
  struct SearchedAll {
    std::vector<Candidate> candidates{};
    Bounds bounds{};
    std::int64_t iterations = 0;
    std::vector<SearchTracePoint> trace{};  ///< the plain search's (PlanResult::search_trace)
    std::chrono::steady_clock::time_point search_end{};
  };
  /// What one search of a call runs on.
  struct SearchInput {
    const Batch* batch = nullptr;
    std::vector<std::vector<SampleOrigin>> origin{};
    bool repacked = false;
    bool split_backward = false;
    std::vector<std::int32_t> seed{};  ///< an extra seed order (empty: none)
  };

  [[nodiscard]] ScheduleSearchOptions search_options(const SearchControl& control, std::chrono::steady_clock::time_point t0,
                                                     int searches_left = 1) const;
  [[nodiscard]] Nanoseconds step_bound(const Batch& batch, const C& cost) const;
  [[nodiscard]] SearchedAll search_all(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, const SearchControl& control,
                                       std::chrono::steady_clock::time_point t0) const;
  [[nodiscard]] Searched search(const Prepared& p, BaselineContext<C>& ctx, SearchInput in, const SearchControl& control,
                                std::chrono::steady_clock::time_point t0, int searches_left) const;
  void add_baselines(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, std::vector<Candidate>& out,
                     Bounds& bounds) const;
  /// The candidates and bounds both plan() and fallback() start from.
  struct Start {
    std::vector<Candidate> candidates{};
    Bounds bounds{};
  };
  [[nodiscard]] Start start(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, bool with_baselines) const;
  [[nodiscard]] PlanResult choose(std::vector<Candidate> candidates, const Bounds& bounds, const C& cost, const char* what) const;

  std::shared_ptr<State> s_;
};

// ---------------------------------------------------------------------------------------------
// Implementation. Members are defined out of the class (not inline), so that a translation unit
// that sees `extern template class Planner<X>` (planner/instances.hpp, the compiled mode) does not
// instantiate them.

namespace detail {
[[nodiscard]] inline Nanoseconds elapsed_since(std::chrono::steady_clock::time_point t0) {
  return Nanoseconds{std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()};
}

/// The MCTS trace with its scores turned back into step times (score = bound / step time, see
/// above); points before any usable schedule (score 0) are left out.
[[nodiscard]] inline std::vector<SearchTracePoint> search_trace(const MctsResult& r, Nanoseconds bound) {
  std::vector<SearchTracePoint> out;
  out.reserve(r.trace.size());
  for (const MctsTracePoint& p : r.trace) {
    if (!(p.best_score > 0)) continue;
    const bool fits = p.best_score > infeasible_score_factor;
    const double ratio = fits ? p.best_score : p.best_score / infeasible_score_factor;
    out.push_back(SearchTracePoint{Nanoseconds{p.elapsed.count()}, p.rollouts,
                                   round_ns(static_cast<double>(bound.count()) / ratio), fits});
  }
  return out;
}
}  // namespace detail

/// The state every copy of a Planner shares: inputs, the one-off preparation, the cache pool.
template <class C>
struct Planner<C>::State {
  State(ModelSpec m, Setup s, C c, PlannerOptions o)
      : model(std::move(m)), setup(std::move(s)), options(std::move(o)), cost(std::make_shared<const C>(std::move(c))) {}

  const ModelSpec model;
  const Setup setup;
  const PlannerOptions options;

  std::once_flag once{};
  std::optional<Prepared> prep{};  // written once (under `once`), then read-only
  std::atomic<bool> done{false};

  // Wall time of the work after the search (lowering, emulation, choice, validation) in the
  // last plan() call, reserved out of the next call's deadline.
  std::atomic<std::int64_t> finish_ns{0};

  std::mutex pool_mu{};
  std::vector<std::unique_ptr<Workspace>> all{};  // every workspace ever made
  std::vector<Workspace*> idle{};
  // The cost model (guarded by pool_mu): the current one, its version, and the change that made
  // each version newer than the oldest workspace's (what a workspace brought up to date drops).
  std::shared_ptr<const C> cost;
  std::uint64_t cost_version = 0;
  std::vector<std::pair<std::uint64_t, CostChange>> changes{};

  [[nodiscard]] std::shared_ptr<const C> current_cost() {
    std::lock_guard lk(pool_mu);
    return cost;
  }

  void check_options() const;
  void check_static_memory_possible() const;
  [[nodiscard]] bool ready() const noexcept { return done.load(std::memory_order_acquire); }
  [[nodiscard]] const Prepared& get() const;
  const Prepared& prepared(const Batch& first);
  void prepare(std::vector<Batch> profile, bool score_placements = true);
};

/// A workspace borrowed from the pool for one call, brought to the current cost model: the
/// call keeps that model to its end, whatever update_cost does meanwhile.
template <class C>
class Planner<C>::Lease {
 public:
  explicit Lease(State& s) : s_(&s) {
    CostChange stale;  // what changed since the workspace's version
    bool stale_cost = false;
    {
      std::lock_guard lk(s.pool_mu);
      if (s.idle.empty()) {
        s.all.push_back(std::make_unique<Workspace>(s.model, s.setup, s.cost, s.cost_version, s.options.cache));
        w_ = s.all.back().get();
      } else {
        w_ = s.idle.back();
        s.idle.pop_back();
      }
      if (w_->version != s.cost_version) {
        for (const auto& [version, change] : s.changes)
          if (version > w_->version) stale.merge(change);
        w_->cost = s.cost;
        w_->version = s.cost_version;
        stale_cost = true;
      }
    }
    // The workspace is this call's alone now.
    if (stale_cost) w_->ctx.cache().update_cost(*w_->cost, stale);
    w_->ctx.cache().trim();  // a cache kept across steps stays within its caps
  }
  ~Lease() {
    std::lock_guard lk(s_->pool_mu);
    s_->idle.push_back(w_);
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Workspace* operator->() const noexcept { return w_; }

 private:
  State* s_;
  Workspace* w_ = nullptr;
};

template <class C>
void Planner<C>::State::check_options() const {
  auto bad = [](const std::string& what, const std::string& path, const std::string& expected) {
    throw input_error(what, {.path = "PlannerOptions::" + path, .expected = expected});
  };
  if (options.budget.count() < 0) bad("negative search budget", "budget", ">= 0");
  if (options.iterations < 0) bad("negative iteration budget", "iterations", ">= 0");
  if (options.budget.count() == 0 && options.iterations == 0)
    bad("neither a time budget nor an iteration budget", "budget / iterations", "budget > 0 or iterations > 0");
  if (options.threads < 1) bad("threads = " + std::to_string(options.threads), "threads", ">= 1");
  if (options.partition_steps < 0) bad("negative partition_steps", "partition_steps", ">= 0");
  if (options.partition_iterations < 1) bad("partition_iterations < 1", "partition_iterations", ">= 1");
  if (setup.pipeline_stages < 1)
    throw input_error("pipeline_stages = " + std::to_string(setup.pipeline_stages), {.path = "setup '" + setup.name + "'", .expected = ">= 1"});
}

/// Before any batch is seen: the busiest rank holds at least the average static memory of any
/// placement, so when the average does not fit nothing does; the even one-segment partition
/// then names a rank over the capacity.
template <class C>
void Planner<C>::State::check_static_memory_possible() const {
  const int P = setup.pipeline_stages;
  std::vector<int> K(model.size(), 1);
  std::vector<std::int64_t> B(model.size(), 0);
  for (std::size_t i = 0; i < model.size(); ++i)
    if (model.modules[i].layers < P) return;  // no one-segment partition; the real check comes later
  const Partition even = make_dip_partition(model, P, K, B, "dip");
  Bytes total{0};
  for (Bytes b : static_memory_per_rank(model, setup, even)) total += b;
  if (total / P > memory_capacity(setup)) check_static_memory(model, setup, even);
}

template <class C>
auto Planner<C>::State::get() const -> const Prepared& {
  if (!ready())
    throw input_error("the planner has not chosen its placement yet",
                      {.expected = "a planner built with samples or a dataset, or a plan() call first"});
  return *prep;
}

template <class C>
auto Planner<C>::State::prepared(const Batch& first) -> const Prepared& {
  if (!ready()) prepare(std::vector<Batch>{first}, false);
  return *prep;
}

template <class C>
void Planner<C>::State::prepare(std::vector<Batch> profile, bool score_placements) {
  std::call_once(once, [&] {
    Prepared p;
    Lease ws(*this);
    const C& cost_model = ws->ctx.cost();
    {
      BaselineComparison<C> cmp(model, setup, cost_model, profile, options.compare);
      p.baselines = cmp.baselines();
      p.unavailable = cmp.unavailable();
    }
    PlacementScoring scoring;
    scoring.search = options.search;
    scoring.seed = options.seed;
    scoring.threads = options.threads;
    scoring.iterations = options.partition_iterations;
    scoring.steps = score_placements ? static_cast<std::size_t>(options.partition_steps) : 0;
    const std::span<const PreparedBaseline> placements =
        options.baseline_placements ? std::span<const PreparedBaseline>(p.baselines) : std::span<const PreparedBaseline>{};
    p.placement = choose_placement(model, setup, cost_model, profile, placements, options.dip, ws->ctx.cache(), scoring);
    prep = std::move(p);
    done.store(true, std::memory_order_release);
  });
}

template <class C>
Planner<C>::Planner(ModelSpec model, Setup setup, C cost, PlannerOptions options)
    : s_(std::make_shared<State>(std::move(model), std::move(setup), std::move(cost), std::move(options))) {
  s_->check_options();
  s_->check_static_memory_possible();
}

template <class C>
Planner<C>::Planner(ModelSpec model, Setup setup, C cost, const DatasetSpec& dataset, PlannerOptions options)
    : Planner(std::move(model), std::move(setup), std::move(cost), std::move(options)) {
  s_->prepare(profile_batches(s_->model, dataset, s_->setup, s_->options.compare));
}

template <class C>
Planner<C>::Planner(ModelSpec model, Setup setup, C cost, std::vector<Batch> samples, PlannerOptions options)
    : Planner(std::move(model), std::move(setup), std::move(cost), std::move(options)) {
  if (samples.empty())
    throw input_error("the planner was given no sample batches", {.path = "samples", .expected = "at least one batch to choose the placement on"});
  s_->prepare(std::move(samples));
}

template <class C>
PlanResult Planner<C>::plan(const Batch& batch, const SearchControl& control) const {
  const auto t0 = std::chrono::steady_clock::now();
  check(batch);
  if (control.cancelled())
    throw cancelled_error("planning cancelled before it started", {.path = control.step >= 0 ? "step " + std::to_string(control.step) : std::string{}});
  const Prepared& p = s_->prepared(batch);
  Lease ws(*s_);
  const C& cost = ws->ctx.cost();
  auto [candidates, bounds] = start(p, ws->ctx, batch, s_->options.consider_baselines);
  SearchedAll searched = search_all(p, ws->ctx, batch, control, t0);
  bounds.tight = std::min(bounds.tight, searched.bounds.tight);
  bounds.classic = std::min(bounds.classic, searched.bounds.classic);
  const Nanoseconds searched_time = searched.candidates.front().step_time;  // the plain search's
  // The searched candidates first (they win ties), the plain search's first of all.
  candidates.insert(candidates.begin(), std::make_move_iterator(searched.candidates.begin()),
                    std::make_move_iterator(searched.candidates.end()));
  PlanResult out = choose(std::move(candidates), bounds, cost, "plan");
  out.searched_step_time = searched_time;
  out.search_trace = std::move(searched.trace);
  out.cost_version = ws->version;
  out.iterations = searched.iterations;
  out.search_time = detail::elapsed_since(t0);
  s_->finish_ns.store(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - searched.search_end).count(),
      std::memory_order_relaxed);
  return out;
}

template <class C>
PlanResult Planner<C>::fallback(const Batch& batch) const {
  const auto t0 = std::chrono::steady_clock::now();
  check(batch);
  const Prepared& p = s_->prepared(batch);
  Lease ws(*s_);
  const C& cost = ws->ctx.cost();
  auto [candidates, bounds] = start(p, ws->ctx, batch, true);
  PlanResult out = choose(std::move(candidates), bounds, cost, "fallback");
  out.cost_version = ws->version;
  out.search_time = detail::elapsed_since(t0);
  return out;
}

template <class C>
StageCostCacheStats Planner<C>::cache_stats() const {
  std::lock_guard lk(s_->pool_mu);
  StageCostCacheStats t;
  for (const auto& w : s_->all) {
    const auto st = w->ctx.cache().stats();
    t.hits += st.hits;
    t.misses += st.misses;
    t.entries += st.entries;
    t.shapes += st.shapes;
    t.trims += st.trims;
    t.invalidated += st.invalidated;
  }
  return t;
}

/// The bound every candidate of `batch` is judged against before their own graphs' bounds join
/// it: the partition-independent bound (over graphs with split backwards when the planner may
/// split them: their chains are shorter, their work the same), and with re-packing the bound
/// that holds for every packing of the samples (planner/repacking.hpp).
template <class C>
Nanoseconds Planner<C>::step_bound(const Batch& batch, const C& cost) const {
  const ModelSpec& model = s_->model;
  const bool split_bw = s_->options.split_backward;
  const Partition whole = whole_module_partition(model, s_->setup.pipeline_stages);
  Nanoseconds bound = lower_bound(model, whole, split(model, whole, batch), cost,
                                  LowerBoundOptions{.count_transfers = false, .split_backward = split_bw}).value;
  if (s_->options.repack) bound = std::min(bound, packing_independent_lower_bound(model, s_->setup, cost, batch, split_bw));
  return bound;
}

template <class C>
std::shared_ptr<const C> Planner<C>::cost() const {
  return s_->current_cost();
}

template <class C>
std::uint64_t Planner<C>::cost_version() const {
  std::lock_guard lk(s_->pool_mu);
  return s_->cost_version;
}

template <class C>
std::uint64_t Planner<C>::update_cost(C cost, CostChange change) {
  auto next = std::make_shared<const C>(std::move(cost));  // built outside the lock
  std::lock_guard lk(s_->pool_mu);
  s_->cost = std::move(next);
  const std::uint64_t version = ++s_->cost_version;
  s_->changes.emplace_back(version, std::move(change));
  // Changes every workspace has seen are no longer needed.
  std::uint64_t oldest = version;
  for (const auto& w : s_->all) oldest = std::min(oldest, w->version);
  std::erase_if(s_->changes, [&](const auto& c) { return c.first <= oldest; });
  return version;
}

/// The search's options for this call: the planner's seed and threads, the call's budgets
/// (SearchControl first, then PlannerOptions) and an absolute deadline that leaves room for the
/// work after the search; with `searches_left` searches still to run in this call, this one
/// ends at its equal share of the time left.
template <class C>
ScheduleSearchOptions Planner<C>::search_options(const SearchControl& control, std::chrono::steady_clock::time_point t0,
                                                 int searches_left) const {
  const PlannerOptions& o = s_->options;
  ScheduleSearchOptions so = o.search;
  so.mcts.seed = o.seed;
  so.mcts.threads = o.threads;
  so.mcts.max_iterations = control.iterations.value_or(o.iterations);
  so.mcts.time_budget = std::chrono::nanoseconds{0};
  const std::chrono::nanoseconds budget = control.budget.value_or(o.budget);
  if (so.mcts.max_iterations < 0 || budget.count() < 0)
    throw input_error("negative search budget", {.path = "SearchControl", .expected = "iterations >= 0 and budget >= 0"});
  auto deadline = control.deadline;
  if (budget.count() > 0) deadline = std::min(deadline, t0 + budget);
  if (so.mcts.max_iterations == 0 && deadline == SearchControl::clock::time_point::max())
    throw input_error("this plan() call has neither an iteration budget nor a time budget nor a deadline",
                      {.path = "SearchControl", .expected = "iterations > 0, budget > 0 or a deadline"});
  // An absolute deadline: the search's own set-up (tables, seed orders) counts against it.
  if (deadline != SearchControl::clock::time_point::max()) {
    const auto end = deadline - std::chrono::nanoseconds{s_->finish_ns.load(std::memory_order_relaxed)};
    const auto now = SearchControl::clock::now();
    so.mcts.deadline = searches_left <= 1 || end <= now ? end : now + (end - now) / searches_left;
  }
  so.mcts.stop = [&control] { return control.stop_requested(); };
  return so;
}

/// Every search of the call (see the header comment): the batch as given; with re-packing, the
/// regrouped batch when it differs; with split backwards, each of those again over the split
/// graph, seeded with its best order.
template <class C>
auto Planner<C>::search_all(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, const SearchControl& control,
                            std::chrono::steady_clock::time_point t0) const -> SearchedAll {
  const PlannerOptions& o = s_->options;
  int left = (1 + (o.repack ? 1 : 0)) * (o.split_backward ? 2 : 1);
  std::vector<Searched> runs;
  runs.push_back(search(p, ctx, SearchInput{&batch, identity_sample_origin(batch), false, false, {}}, control, t0, left--));
  Repacking repacked;
  if (o.repack) {
    repacked = repack(s_->model, s_->setup, ctx.cost(), batch, o.repacking);
    if (repacked.changed) {
      check_batch(s_->model, s_->setup, repacked.batch);  // within budget by construction
      runs.push_back(search(p, ctx, SearchInput{&repacked.batch, repacked.origin, true, false, {}}, control, t0, left));
    }
    --left;
  }
  if (o.split_backward) {
    left -= o.repack && !repacked.changed ? 1 : 0;  // no regrouped batch to split
    const std::size_t unsplit = runs.size();
    for (std::size_t i = 0; i < unsplit; ++i) {
      const bool regrouped = i > 0;
      SearchInput in{regrouped ? &repacked.batch : &batch, runs[i].candidate.origin, regrouped, true, runs[i].sequence};
      runs.push_back(search(p, ctx, std::move(in), control, t0, left--));
    }
  }
  SearchedAll out;
  out.search_end = std::chrono::steady_clock::now();
  out.trace = std::move(runs.front().trace);
  for (Searched& r : runs) {
    out.bounds.add(r.bound);
    out.iterations += r.iterations;
    out.candidates.push_back(std::move(r.candidate));
  }
  return out;
}

/// One searched plan: split, stage graph, schedule search, lowering and its emulation.
template <class C>
auto Planner<C>::search(const Prepared& p, BaselineContext<C>& ctx, SearchInput in, const SearchControl& control,
                        std::chrono::steady_clock::time_point t0, int searches_left) const -> Searched {
  const ModelSpec& model = s_->model;
  const Partition& partition = p.placement.partition;
  std::vector<SubMicrobatchSpec> smbs = split(model, partition, *in.batch);
  const StageGraph graph = build_stage_graph(model, partition, smbs, {.split_backward = in.split_backward});
  ScheduleSearchOptions so = search_options(control, t0, searches_left);
  if (!in.seed.empty()) so.seeds.push_back(std::move(in.seed));
  const ScheduleSearchResult res = search_schedule(model, s_->setup, partition, smbs, graph, ctx.cache(), so);
  Searched out;
  out.sequence = res.search.best_sequence;
  out.bound = res.bound;
  out.iterations = res.search.iterations;
  out.trace = detail::search_trace(res.search, res.bound.value);
  Candidate& c = out.candidate;
  c.plan = lower(model, partition, std::move(smbs), graph, res.schedule, ctx.cost(), "dip", s_->setup.name);
  const EmulationResult e = emulate(c.plan, model, s_->setup, ctx.cache());
  c.step_time = e.step_time;
  c.fits = e.fits_memory();
  c.peak = e.peak_memory();
  for (const RankStats& r : e.ranks) c.peaks.push_back(r.peak_memory);
  c.source = "dip";
  c.origin = std::move(in.origin);
  c.repacked = in.repacked;
  return out;
}

template <class C>
void Planner<C>::add_baselines(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, std::vector<Candidate>& out,
                               Bounds& bounds) const {
  for (const PreparedBaseline& pb : p.baselines) {
    BaselinePlan b = build_baseline_plan(ctx, pb.baseline, batch);
    bounds.add(lower_bound(b.graph, pb.baseline.layout.partition, b.plan.sub_microbatches, ctx.cache()));
    Candidate c;
    c.step_time = b.emulation.step_time;
    c.fits = b.fits_memory;
    c.peak = b.emulation.peak_memory();
    for (const RankStats& r : b.emulation.ranks) c.peaks.push_back(r.peak_memory);
    c.source = pb.baseline.name;
    c.plan = std::move(b.plan);
    c.origin = identity_sample_origin(batch);
    out.push_back(std::move(c));
  }
}

/// The step's candidate-independent bound, and the baselines' plans for `batch` with their
/// graphs' bounds when `with_baselines`.
template <class C>
auto Planner<C>::start(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, bool with_baselines) const -> Start {
  Start s;
  s.bounds.classic = step_bound(batch, ctx.cost());
  if (with_baselines) add_baselines(p, ctx, batch, s.candidates, s.bounds);
  return s;
}

/// The best candidate (fits first, then time; earlier wins ties), validated.
template <class C>
PlanResult Planner<C>::choose(std::vector<Candidate> candidates, const Bounds& bounds, const C& cost, const char* what) const {
  if (candidates.empty())
    throw input_error(std::string(what) + ": no candidate plans", {.path = "PlannerOptions::consider_baselines", .expected = "baselines to fall back on"});
  std::size_t best = 0;
  for (std::size_t i = 1; i < candidates.size(); ++i) {
    const Candidate& a = candidates[i];
    const Candidate& b = candidates[best];
    if ((a.fits && !b.fits) || (a.fits == b.fits && a.step_time < b.step_time)) best = i;
  }
  Candidate& c = candidates[best];
  if (!c.fits)
    throw infeasible_error(std::string(what) + ": no plan fits memory for this batch; the best, '" + c.source + "', peaks at " +
                               std::to_string(to_gib(c.peak)) + " GiB",
                           {.path = "setup '" + s_->setup.name + "'",
                            .expected = "at most " + std::to_string(to_gib(memory_capacity(s_->setup))) +
                                        " GiB per device: smaller microbatches, more ranks or more memory"});
  validate(c.plan, s_->model, s_->setup, cost);
  PlanResult r;
  r.plan = std::move(c.plan);
  r.step_time = c.step_time;
  r.peak_memory = std::move(c.peaks);
  r.lower_bound = bounds.tight;
  r.classic_lower_bound = bounds.classic;
  r.source = std::move(c.source);
  r.sample_origin = std::move(c.origin);
  r.repacked = c.repacked;
  return r;
}

// The compiled mode (target pipeweaver::compiled, which defines PIPEWEAVER_COMPILED for the
// code that links it): the Planner of the library's own cost models is instantiated once, in
// that library, instead of in every translation unit that plans (seconds of compile time each).
#if defined(PIPEWEAVER_COMPILED)
extern template class Planner<AnalyticCostModel>;
extern template class Planner<TableCostModel>;
#endif

}  // namespace pipeweaver
