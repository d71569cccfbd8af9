#pragma once
// The planner facade: one object that turns each training step's
// batch metadata into a validated Plan, generic over any CostModel<C, StageSpec,
// SubMicrobatchSpec> (the analytic model, the table model, or a user's own type).
//
// Construction (once, before training):
//  * the baselines' static choices (plan/compare.hpp) are made on profile steps;
//  * the placement is chosen: DIP's partition (partition/dip_partitioner.hpp), its
//    neighbors (other K_i, other B_i) and, with `baseline_placements`, the baselines' own
//    static placements (each distinct baseline layout's partition in baseline_names order,
//    e.g. interleaved-1f1b's chain split with its v, optimus' layout; then the same layout
//    with DIP's sub-microbatch sizes B_i, so its encoder items are split too) are each scored
//    by a short, iteration-bounded schedule search on up to `partition_steps` profile steps;
//    the best (fits memory on every step, then least total step time; ties go to the earlier
//    candidate, DIP's first) is kept. Scoring the baselines' placements lets the dual-queue
//    interleaver, MCTS and memory optimizer improve on the best static placement by
//    reordering alone where DIP's own placement is not better. The candidate list and every
//    score are deterministic, so the choice is too. The profile steps are the given sample batches, or
//    `compare.profile_steps` steps of the given dataset under the fixed `compare.profile_seed`.
//    Without samples or dataset, the placement is DIP's formula on the first batch planned
//    (and that batch is the baselines' profile): with several threads calling plan() at once,
//    "first" is whichever gets there first, so give samples when determinism across runs of an
//    AsyncPlanner matters;
//  * the static memory (weights, gradients, optimizer state) is checked: Error{infeasible}
//    naming the rank, its bytes and the capacity when it cannot fit.
//
// plan(batch, control), per step:
//    split -> stage graph -> search_schedule (MCTS over segment orders, seeded with 1F1B-like,
//    interleaved-like and encoder-in-bubbles orders) -> lower -> emulate,
//    and every baseline's plan for the same batch (built, lowered, emulated). The result is the
//    best of all these candidates (fits memory first, then least emulated step time; a tie goes
//    to the searched plan), so the planner is never slower than the best baseline that fits;
//    PlanResult::source names the winner ("dip" or the baseline's name). The chosen plan is
//    validated (structure and memory) before it is returned; if no candidate fits memory the
//    call throws Error{infeasible}.
//  * Budgets: the search stops at the first of: `iterations` MCTS iterations (0: no limit),
//    `budget` of wall-clock from the start of plan() (0: no limit; at least one of the two must
//    be set), the control's deadline, or the control's cancellation. Only the iteration budget
//    is reproducible: with budget = 0, the same inputs, seed, iterations and threads give the
//    same Plan (MCTS runs its rollouts in fixed rounds; see search/mcts.hpp).
//  * search_time = wall-clock of the whole plan() call (baselines, search, lowering,
//    validation), so it is what a trainer waits for; iterations = MCTS iterations (expansions,
//    each with several rollouts).
//  * With a deadline (budget or the control's), the search stops early enough for the work
//    after it (lowering, emulation, validation) to fit: the time that work took in the previous
//    plan() call is reserved out of the deadline (none on the first call), and the MCTS leaves
//    the rest of its round undone once its time is up. plan() can still overrun by the work
//    that is not interruptible (the baselines, the seed orders' evaluation) or by a step whose
//    finishing work takes longer than the last one's.
//  * lower_bound = min(partition-independent bound of the batch, every candidate graph's own
//    bound), as plan/compare.hpp reports it, so it never exceeds any candidate's step time.
// fallback(batch) = the best baseline that fits memory for the batch (no search): what the
// AsyncPlanner uses when a search is late.
//
// Temporal reuse and thread safety: stage costs are memoised in StageCostCache workspaces kept
// across steps in a pool; each plan()/fallback() call borrows one (a mutex guards the pool only),
// so concurrent calls never share a cache and later steps reuse what earlier steps computed.
// The cost model's const member functions must be safe to call concurrently. A Planner is
// cheap to copy: copies share the placement, the baselines and the cache pool (AsyncPlanner
// takes its planner by value).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/planner/plan_result.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/schedule/validator.hpp"
#include "pipeweaver/search/schedule_search.hpp"

namespace pipeweaver {

struct PlannerOptions {
  /// Wall-clock budget of one plan() call (0: none). Not reproducible: set iterations and
  /// budget = 0 for identical plans across runs.
  std::chrono::nanoseconds budget = std::chrono::seconds(1);
  std::int64_t iterations = 0;  ///< MCTS iteration budget per plan() (0: none)
  int threads = 1;              ///< MCTS worker threads per plan() call
  std::uint64_t seed = 0;       ///< MCTS seed
  /// Placement choice: profile steps each candidate partition is scored on (0: DIP's own
  /// partition, unscored) and the MCTS iterations of each scoring search (iteration-bounded, so
  /// the choice is reproducible).
  int partition_steps = 2;
  std::int64_t partition_iterations = 2;
  /// Also score the baselines' static placements as placement candidates (header comment).
  bool baseline_placements = true;
  bool consider_baselines = true;  ///< take a baseline's plan when it beats the search
  DipOptions dip{};
  CompareOptions compare{};        ///< baseline static choices and profile steps
  ScheduleSearchOptions search{};  ///< its mcts seed/threads/budgets are replaced by the fields above
};

/// How one candidate placement scored on the profile steps.
struct PlacementScore {
  std::string name;              ///< the partition's name: "dip", "dip K(vit)=2", ...
  bool fits = false;             ///< static memory fits and every profile step's schedule fits
  Nanoseconds total_step_time{0};  ///< summed over the profile steps (searched schedules)
  std::string reason;            ///< why it does not fit, when it does not
};

template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
class Planner {
 public:
  /// Placement chosen lazily, on the first batch planned (see the header comment).
  Planner(ModelSpec model, Setup setup, C cost, PlannerOptions options = {})
      : s_(std::make_shared<State>(std::move(model), std::move(setup), std::move(cost), std::move(options))) {
    s_->check_options();
    s_->check_static_memory_possible();
  }
  /// Placement and baselines chosen now, on profile steps of `dataset`.
  Planner(ModelSpec model, Setup setup, C cost, const DatasetSpec& dataset, PlannerOptions options = {})
      : s_(std::make_shared<State>(std::move(model), std::move(setup), std::move(cost), std::move(options))) {
    s_->check_options();
    s_->check_static_memory_possible();
    s_->prepare(profile_batches(s_->model, dataset, s_->setup, s_->options.compare));
  }
  /// Placement and baselines chosen now, on these sample batches (at least one).
  Planner(ModelSpec model, Setup setup, C cost, std::vector<Batch> samples, PlannerOptions options = {})
      : s_(std::make_shared<State>(std::move(model), std::move(setup), std::move(cost), std::move(options))) {
    s_->check_options();
    s_->check_static_memory_possible();
    if (samples.empty())
      throw input_error("the planner was given no sample batches", {.path = "samples", .expected = "at least one batch to choose the placement on"});
    s_->prepare(std::move(samples));
  }

  /// The step's plan (see the header comment). Thread-safe.
  [[nodiscard]] PlanResult plan(const Batch& batch, const SearchControl& control = {}) const {
    const auto t0 = std::chrono::steady_clock::now();
    check_batch(batch);
    if (control.cancelled())
      throw cancelled_error("planning cancelled before it started", {.path = control.step() >= 0 ? "step " + std::to_string(control.step()) : std::string{}});
    const Prepared& p = s_->prepared(batch);
    Lease ws(*s_);
    BaselineContext<C>& ctx = ws->ctx;
    const ModelSpec& model = s_->model;
    const Setup& setup = s_->setup;
    const C& cost = s_->cost;

    std::vector<Candidate> candidates;
    Nanoseconds bound = partition_independent_lower_bound(model, setup, cost, batch);
    if (s_->options.consider_baselines) add_baselines(p, ctx, batch, candidates, bound);

    // The search, with what is left of the budget.
    std::vector<SubMicrobatchSpec> smbs = split(model, p.partition, batch);
    StageGraph graph = build_stage_graph(model, p.partition, smbs);
    ScheduleSearchOptions so = s_->options.search;
    so.mcts.seed = s_->options.seed;
    so.mcts.threads = s_->options.threads;
    so.mcts.max_iterations = s_->options.iterations;
    so.mcts.time_budget = std::chrono::nanoseconds{0};
    auto deadline = control.deadline();
    if (s_->options.budget.count() > 0) {
      const auto own = t0 + s_->options.budget;
      if (own < deadline) deadline = own;
    }
    // An absolute deadline: the search's own set-up (tables, seed orders) counts against it.
    if (deadline != SearchControl::clock::time_point::max())
      so.mcts.deadline = deadline - std::chrono::nanoseconds{s_->finish_ns.load(std::memory_order_relaxed)};
    so.mcts.stop = [&control] { return control.stop_requested(); };
    ScheduleSearchResult res = search_schedule(model, setup, p.partition, smbs, graph, ctx.cache(), so);
    const auto search_end = std::chrono::steady_clock::now();
    bound = std::min(bound, res.bound.value);
    {
      Candidate c;
      c.plan = lower(model, p.partition, std::move(smbs), graph, res.schedule, cost, "dip", setup.name);
      const EmulationResult e = emulate(c.plan, model, setup, ctx.cache());
      c.step_time = e.step_time;
      c.fits = e.fits_memory();
      c.peak = e.peak_memory();
      c.source = "dip";
      candidates.insert(candidates.begin(), std::move(c));  // first: wins ties
    }
    PlanResult out = choose(std::move(candidates), bound, "plan");
    out.iterations = res.search.iterations;
    out.search_time = since(t0);
    s_->finish_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - search_end).count(),
                        std::memory_order_relaxed);
    return out;
  }

  /// The best baseline that fits memory for `batch` (no search). Thread-safe.
  [[nodiscard]] PlanResult fallback(const Batch& batch) const {
    const auto t0 = std::chrono::steady_clock::now();
    check_batch(batch);
    const Prepared& p = s_->prepared(batch);
    Lease ws(*s_);
    std::vector<Candidate> candidates;
    Nanoseconds bound = partition_independent_lower_bound(s_->model, s_->setup, s_->cost, batch);
    add_baselines(p, ws->ctx, batch, candidates, bound);
    PlanResult out = choose(std::move(candidates), bound, "fallback");
    out.search_time = since(t0);
    return out;
  }

  [[nodiscard]] const ModelSpec& model() const noexcept { return s_->model; }
  [[nodiscard]] const Setup& setup() const noexcept { return s_->setup; }
  [[nodiscard]] const C& cost() const noexcept { return s_->cost; }
  [[nodiscard]] const PlannerOptions& options() const noexcept { return s_->options; }
  /// Whether the placement has been chosen (always, unless constructed without samples and
  /// nothing was planned yet).
  [[nodiscard]] bool placement_ready() const noexcept { return s_->ready(); }
  /// The chosen placement. Throws Error{input} before it is chosen.
  [[nodiscard]] const Partition& partition() const { return s_->get().partition; }
  /// How each candidate placement scored (DIP's own first; empty when it was not scored).
  [[nodiscard]] const std::vector<PlacementScore>& placement_scores() const { return s_->get().scores; }
  /// The baselines' static choices.
  [[nodiscard]] const std::vector<PreparedBaseline>& baselines() const { return s_->get().baselines; }
  /// Stage-cost cache counters summed over the pool's workspaces (temporal reuse). Call it
  /// while no plan() or fallback() runs (it reads the caches' counters unsynchronised).
  [[nodiscard]] StageCostCacheStats cache_stats() const {
    std::lock_guard lk(s_->pool_mu);
    StageCostCacheStats t;
    for (const auto& w : s_->all) {
      const auto st = w->ctx.cache().stats();
      t.hits += st.hits;
      t.misses += st.misses;
      t.entries += st.entries;
      t.shapes += st.shapes;
    }
    return t;
  }

 private:
  struct Prepared {
    Partition partition;
    std::vector<PlacementScore> scores;
    std::vector<PreparedBaseline> baselines;
  };

  struct Workspace {
    Workspace(const ModelSpec& m, const Setup& s, const C& c) : ctx(m, s, c) {}
    BaselineContext<C> ctx;  // its StageCostCache serves the search and every emulation too
  };

  struct State {
    State(ModelSpec m, Setup s, C c, PlannerOptions o)
        : model(std::move(m)), setup(std::move(s)), cost(std::move(c)), options(std::move(o)) {}

    const ModelSpec model;
    const Setup setup;
    const C cost;
    const PlannerOptions options;

    std::once_flag once;
    std::optional<Prepared> prep;  // written once (under `once`), then read-only

    // Wall time of the work after the search (lowering, emulation, choice, validation) in the
    // last plan() call, reserved out of the next call's deadline (see the header comment).
    std::atomic<std::int64_t> finish_ns{0};

    std::mutex pool_mu;
    std::vector<std::unique_ptr<Workspace>> all;  // every workspace ever made
    std::vector<Workspace*> idle;

    void check_options() const {
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

    /// Before any batch is seen: the busiest rank holds at least the average static memory of
    /// any placement, so when the average does not fit nothing does; the even one-segment
    /// partition then names a rank over the capacity.
    void check_static_memory_possible() const {
      const int P = setup.pipeline_stages;
      std::vector<int> K(model.size(), 1);
      std::vector<std::int64_t> B(model.size(), 0);
      for (std::size_t i = 0; i < model.size(); ++i)
        if (model.modules[i].layers < P) return;  // no one-segment partition; the real check comes later
      const Partition even = make_dip_partition(model, P, K, B, "dip");
      const auto per_rank = static_memory_per_rank(model, setup, even);
      Bytes total{0};
      for (Bytes b : per_rank) total += b;
      if (total / P > memory_capacity(setup)) pipeweaver::check_static_memory(model, setup, even);
    }

    [[nodiscard]] bool ready() const noexcept { return done.load(std::memory_order_acquire); }
    [[nodiscard]] const Prepared& get() const {
      if (!ready())
        throw input_error("the planner has not chosen its placement yet", {.expected = "a planner built with samples or a dataset, or a plan() call first"});
      return *prep;
    }
    const Prepared& prepared(const Batch& first) {
      if (!ready()) prepare(std::vector<Batch>{first}, false);
      return *prep;
    }

    void prepare(std::vector<Batch> profile, bool score_neighbors = true) {
      std::call_once(once, [&] {
        Prepared p;
        {
          BaselineComparison<C> cmp(model, setup, cost, profile, options.compare);
          p.baselines = cmp.baselines();
        }
        choose_partition(profile, score_neighbors, p);
        prep = std::move(p);
        done.store(true, std::memory_order_release);
      });
    }

    void choose_partition(std::span<const Batch> profile, bool score_neighbors, Prepared& p) {
      std::vector<Partition> cands = candidate_partitions(model, setup, cost, profile.front(), options.dip);
      const std::size_t steps =
          score_neighbors ? std::min<std::size_t>(profile.size(), static_cast<std::size_t>(options.partition_steps)) : 0;
      if (steps > 0 && options.baseline_placements) add_baseline_placements(p.baselines, cands);
      if (steps == 0 || cands.size() == 1) {
        pipeweaver::check_static_memory(model, setup, cands.front());
        p.partition = std::move(cands.front());
        return;
      }
      Lease ws(*this);
      StageCostCache<C>& cache = ws->ctx.cache();
      std::optional<std::size_t> best;
      for (std::size_t i = 0; i < cands.size(); ++i) {
        PlacementScore sc;
        sc.name = cands[i].name;
        sc.fits = true;
        try {
          pipeweaver::check_static_memory(model, setup, cands[i]);
          for (std::size_t k = 0; k < steps; ++k) {
            const auto smbs = split(model, cands[i], profile[k]);
            const StageGraph graph = build_stage_graph(model, cands[i], smbs);
            ScheduleSearchOptions so = options.search;
            so.mcts.seed = options.seed;
            so.mcts.threads = options.threads;
            so.mcts.max_iterations = options.partition_iterations;
            so.mcts.time_budget = std::chrono::nanoseconds{0};
            so.mcts.record_trace = false;
            const ScheduleSearchResult r = search_schedule(model, setup, cands[i], smbs, graph, cache, so);
            sc.total_step_time += r.step_time;
            if (!r.feasible) {
              sc.fits = false;
              sc.reason = "profile step " + std::to_string(k) + " does not fit memory";
            }
          }
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::infeasible) throw;
          sc.fits = false;
          sc.reason = e.what();
        }
        const bool better = !best || (sc.fits && !p.scores[*best].fits) ||
                            (sc.fits == p.scores[*best].fits && sc.total_step_time < p.scores[*best].total_step_time);
        p.scores.push_back(std::move(sc));
        if (better) best = i;
      }
      // Nothing fits: DIP's own partition's static memory error, if that is the reason.
      if (!p.scores[*best].fits) pipeweaver::check_static_memory(model, setup, cands.front());
      p.partition = std::move(cands[*best]);
    }

    /// Appends each distinct baseline placement (same chunks and B_i as an earlier candidate:
    /// skipped), as-is and with DIP's B_i (cands.front() is DIP's own partition).
    void add_baseline_placements(const std::vector<PreparedBaseline>& baselines, std::vector<Partition>& cands) const {
      const auto known = [&](const Partition& x) {
        return std::any_of(cands.begin(), cands.end(),
                           [&](const Partition& c) { return c.ranks == x.ranks && c.modules == x.modules; });
      };
      std::vector<std::int64_t> dip_b;  // a copy: pushing to cands may reallocate it
      for (const auto& m : cands.front().modules) dip_b.push_back(m.sub_microbatch_items);
      for (const PreparedBaseline& pb : baselines) {
        Partition own = pb.baseline.layout.partition;
        if (own.ranks != setup.pipeline_stages || own.modules.size() != model.size()) continue;
        bool complete = true;  // every module placed (a partial layout is not a placement)
        for (const auto& m : own.modules) complete = complete && !m.chunks.empty();
        if (!complete) continue;
        own.name = "baseline " + pb.baseline.name;
        Partition sub = own;
        sub.name += " with DIP's B";
        for (std::size_t i = 0; i < sub.modules.size(); ++i)
          sub.modules[i].sub_microbatch_items = dip_b[i];
        for (Partition* x : {&own, &sub})
          if (!known(*x)) cands.push_back(std::move(*x));
      }
    }

    std::atomic<bool> done{false};
  };

  /// A workspace borrowed from the pool for one call.
  class Lease {
   public:
    explicit Lease(State& s) : s_(&s) {
      std::lock_guard lk(s.pool_mu);
      if (s.idle.empty()) {
        s.all.push_back(std::make_unique<Workspace>(s.model, s.setup, s.cost));
        w_ = s.all.back().get();
      } else {
        w_ = s.idle.back();
        s.idle.pop_back();
      }
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

  struct Candidate {
    Plan plan;
    Nanoseconds step_time{0};
    Bytes peak{0};
    bool fits = false;
    std::string source;
  };

  static Nanoseconds since(std::chrono::steady_clock::time_point t0) {
    return Nanoseconds{std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()};
  }

  void check_batch(const Batch& batch) const {
    if (batch.microbatches.empty())
      throw input_error("the batch has no microbatches", {.path = "batch", .expected = "at least one microbatch"});
    for (std::size_t i = 0; i < batch.microbatches.size(); ++i)
      if (batch.microbatches[i].samples.empty())
        throw input_error("microbatch " + std::to_string(i) + " has no samples", {.path = "batch/microbatches/" + std::to_string(i), .expected = "at least one sample"});
  }

  void add_baselines(const Prepared& p, BaselineContext<C>& ctx, const Batch& batch, std::vector<Candidate>& out,
                     Nanoseconds& bound) const {
    for (const PreparedBaseline& pb : p.baselines) {
      BaselinePlan b = build_baseline_plan(ctx, pb.baseline, batch);
      bound = std::min(bound, lower_bound(b.graph, pb.baseline.layout.partition, b.plan.sub_microbatches, ctx.cache()).value);
      Candidate c;
      c.step_time = b.emulation.step_time;
      c.fits = b.fits_memory;
      c.peak = b.emulation.peak_memory();
      c.source = pb.baseline.name;
      c.plan = std::move(b.plan);
      out.push_back(std::move(c));
    }
  }

  /// The best candidate (fits first, then time; earlier wins ties), validated.
  PlanResult choose(std::vector<Candidate> candidates, Nanoseconds bound, const char* what) const {
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
                      std::to_string(to_gib(c.peak)) + " GiB", {.path = "setup '" + s_->setup.name + "'", .expected = "at most " + std::to_string(to_gib(memory_capacity(s_->setup))) +
                               " GiB per device: smaller microbatches, more ranks or more memory"});
    validate(c.plan, s_->model, s_->setup, s_->cost);
    PlanResult r;
    r.plan = std::move(c.plan);
    r.step_time = c.step_time;
    r.lower_bound = bound;
    r.source = std::move(c.source);
    return r;
  }

  std::shared_ptr<State> s_;
};

}  // namespace pipeweaver
