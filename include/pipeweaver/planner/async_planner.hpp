#pragma once
// Asynchronous planning: while step k executes, background
// threads search the plans of the next steps from their batch metadata; next() hands out the
// plans in submission order, and when a search is not done in time it uses the planner's
// fallback (the best baseline for that batch) instead, reports it and cancels the search.
//
// Usage (a trainer, one thread), submitting ahead by the lookahead L:
//   AsyncPlanner async{my_planner, {.lookahead = 2}};
//   for (int k = 0; k < 2 && k < steps; ++k) async.submit(batch[k]);  // searches start now
//   for (int k = 0; k < steps; ++k) {
//     PlanResult r = k == 0 ? async.next_when_ready()   // step 0: nothing runs before its plan
//                           : async.next();            // later: searched while step k-1 ran
//     if (k + 2 < steps) async.submit(batch[k + 2]);
//     execute(r.plan);                                // r.fallback: the search was late
//   }
// At most L batches may be outstanding (submitted and not yet returned by next()); overlapping
// step k with the search of step k+1 needs L >= 2. With steps longer than the planner's budget,
// every plan after step 0 is ready when it is due.
//
// Choices:
//  * submit() beyond the lookahead THROWS Error(input) rather than blocking: the only thing
//    that frees a slot is next(), normally called by the same thread, so blocking would
//    deadlock a single-threaded trainer.
//  * next() on an unfinished search waits up to `grace`, then uses the fallback (grace 0: at
//    once; wait_forever: never falls back). The search is then cancelled through its
//    SearchControl and its result, if any, discarded. next_when_ready() always waits (the plan
//    of a step that nothing can run before, such as the first).
//  * A planner exception reaches the caller of next() for that batch, as pipeweaver::Error
//    naming the step (an Error keeps its kind, anything else becomes ErrorKind::execution);
//    later batches are unaffected. A fallback that throws is reported the same way. With a
//    broadcast hook, every next() that throws (misuse and cancellation included) first sends
//    the other ranks a failure notice, so they never wait for a plan that will not come.
//  * A cost-model update (Planner::update_cost, e.g. online calibration between steps) does not
//    restart anything: a search in flight finishes with the model it started with, and every
//    search that starts later uses the new one (PlanResult::cost_version says which).
//  * cancel() (and the destructor) requests stop on every search, discards all outstanding
//    work and joins the threads; afterwards submit()/next() throw Error(cancelled). It returns
//    as soon as every running plan() call returns, so planners must poll SearchControl.
//
// Requirements on the planner P: plan() and fallback() are called on a `const P&` from several
// threads at once (plan() from every background thread, fallback() from the caller of next()),
// so they must be safe to run concurrently (a shared cache needs its own lock). plan() must
// return soon after control.stop_requested() becomes true. Do not call cancel() from plan().
//
// Thread safety of AsyncPlanner: submit() and next() from one thread at a time; cancel(),
// stats(), ready() and outstanding() from any thread.
// std-only.
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"
#include "pipeweaver/planner/plan_result.hpp"
#include "pipeweaver/planner/search_control.hpp"

namespace pipeweaver {

/// P searches a batch's plan under a SearchControl.
template <class P>
concept SearchingPlanner = requires(const P& p, const Batch& b, const SearchControl& c) {
  { p.plan(b, c) } -> std::convertible_to<PlanResult>;
};

/// P has a fast fallback for a batch (the best baseline), used when the search is late.
template <class P>
concept FallbackPlanner = requires(const P& p, const Batch& b) {
  { p.fallback(b) } -> std::convertible_to<PlanResult>;
};

/// What AsyncPlanner drives.
template <class P>
concept BatchPlanner = SearchingPlanner<P> && FallbackPlanner<P>;

/// P can check a batch before it is planned (the Planner can); submit() then refuses a batch
/// the planner could not honor at once, in the caller's thread.
template <class P>
concept CheckingPlanner = requires(const P& p, const Batch& b) { p.check(b); };

struct AsyncPlannerOptions {
  /// A `grace` that never gives up on a search (next() always waits; no fallback).
  static constexpr std::chrono::nanoseconds wait_forever = std::chrono::nanoseconds::max();

  int threads = 1;    ///< background planning threads, >= 1
  int lookahead = 2;  ///< max batches outstanding (submitted, not yet returned by next()), >= 1
  /// How long next() waits for an unfinished search before using the fallback.
  std::chrono::nanoseconds grace{0};
  /// Deadline of each search, from the moment it starts, seen through SearchControl
  /// (max(): none; the planner's own budget still applies).
  std::chrono::nanoseconds search_budget = std::chrono::nanoseconds::max();
  /// When set, next() broadcasts each plan it returns (or, on error, a failure notice) through
  /// this hook, bound to the root rank; the other ranks call receive_plan().
  BroadcastHook broadcast{};
};

struct AsyncPlannerStats {
  std::int64_t submitted = 0;
  std::int64_t plans_ready_in_time = 0;  ///< search done when next() was called
  std::int64_t plans_after_wait = 0;     ///< search finished while next() waited (within grace)
  std::int64_t fallbacks = 0;            ///< search not done within grace: fallback used
  std::int64_t failures = 0;             ///< next() threw (planner or fallback error)
  Nanoseconds waited{0};                 ///< total time next() spent waiting for searches
  Nanoseconds last_wait{0};              ///< time the last next() spent waiting
};

template <BatchPlanner P>
class AsyncPlanner {
 public:
  explicit AsyncPlanner(P planner, AsyncPlannerOptions options = {})
      : planner_(std::move(planner)), options_(std::move(options)) {
    if (options_.threads < 1)
      throw input_error("AsyncPlanner threads = " + std::to_string(options_.threads), {.path = "AsyncPlannerOptions::threads", .expected = "at least 1"});
    if (options_.lookahead < 1)
      throw input_error("AsyncPlanner lookahead = " + std::to_string(options_.lookahead), {.path = "AsyncPlannerOptions::lookahead", .expected = "at least 1"});
    if (options_.grace.count() < 0 || options_.search_budget.count() < 0)
      throw input_error("AsyncPlanner grace or search_budget is negative", {.path = "AsyncPlannerOptions", .expected = "durations >= 0"});
    try {
      workers_.reserve(static_cast<std::size_t>(options_.threads));
      for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      cancel();
      throw;
    }
  }

  AsyncPlanner(const AsyncPlanner&) = delete;
  AsyncPlanner& operator=(const AsyncPlanner&) = delete;
  ~AsyncPlanner() { cancel(); }

  /// Enqueues the search of the next step's plan; returns its step number (0, 1, ... in
  /// submission order). Throws Error(input) when the planner refuses the batch (a CheckingPlanner
  /// checks it first) or when `lookahead` batches are already outstanding,
  /// Error(cancelled) after cancel().
  std::int64_t submit(Batch batch) {
    if constexpr (CheckingPlanner<P>) planner_.check(batch);
    std::shared_ptr<Job> job;
    {
      std::lock_guard lk(mu_);
      if (shutdown_) throw use_after_cancel("submit");
      if (outstanding_.size() >= static_cast<std::size_t>(options_.lookahead))
        throw input_error("submit: " + std::to_string(outstanding_.size()) + " batches are already outstanding", {.path = "step " + std::to_string(next_step_), .expected = "at most lookahead = " + std::to_string(options_.lookahead) +
                                 " batches submitted and not yet taken by next(); call next() first"});
      job = std::make_shared<Job>(next_step_++, std::move(batch));
      outstanding_.push_back(job);
      pending_.push_back(job);
      ++stats_.submitted;
    }
    work_cv_.notify_one();
    return job->step;
  }

  /// The plan of the oldest outstanding batch (see the header comment for waiting, fallback and
  /// errors). Throws Error(input) when nothing is outstanding, Error(cancelled) after cancel().
  PlanResult next() { return take(false); }

  /// As next(), but waits for the search however long it takes: never the fallback.
  PlanResult next_when_ready() { return take(true); }

  /// Stops every search, discards all outstanding work and joins the background threads.
  /// Idempotent; safe from any thread except a planner's own plan().
  void cancel() noexcept {
    std::lock_guard join_lock(join_mu_);  // a second caller returns only once the threads are joined
    std::vector<std::thread> workers;
    {
      std::lock_guard lk(mu_);
      shutdown_ = true;
      for (auto& job : outstanding_) {
        job->abandoned = true;
        job->stop.request_stop();
      }
      outstanding_.clear();
      pending_.clear();
      workers = std::move(workers_);
      workers_.clear();
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    for (auto& w : workers)
      if (w.joinable()) w.join();
  }

  [[nodiscard]] AsyncPlannerStats stats() const {
    std::lock_guard lk(mu_);
    return stats_;
  }
  /// Whether the oldest outstanding batch's search has finished (next() would not wait, nor
  /// take the fallback). False when nothing is outstanding.
  [[nodiscard]] bool ready() const {
    std::lock_guard lk(mu_);
    return !outstanding_.empty() && outstanding_.front()->finished;
  }
  /// Batches submitted and not yet returned by next().
  [[nodiscard]] int outstanding() const {
    std::lock_guard lk(mu_);
    return static_cast<int>(outstanding_.size());
  }
  [[nodiscard]] const AsyncPlannerOptions& options() const noexcept { return options_; }
  [[nodiscard]] const P& planner() const noexcept { return planner_; }

 private:
  struct Job {
    Job(std::int64_t s, Batch b) : step(s), batch(std::move(b)) {}
    const std::int64_t step;
    const Batch batch;  // read concurrently by the search and by the fallback; never written
    std::stop_source stop;
    // Guarded by mu_:
    bool finished = false;   // plan() returned or threw
    bool abandoned = false;  // next() or cancel() gave up on it
    std::optional<PlanResult> result;
    std::exception_ptr error;
  };

  /// The oldest outstanding job, once it is done or `grace` has passed (then given up on); the
  /// counters are updated. An error found before there is a step to plan is returned instead.
  struct Taken {
    std::shared_ptr<Job> job;
    bool done = false;
    std::optional<Error> early;
  };

  Taken take_job(bool wait_forever) {
    Taken t;
    std::unique_lock lk(mu_);
    if (shutdown_) {
      t.early = use_after_cancel("next");
      return t;
    }
    if (outstanding_.empty()) {
      t.early = input_error("next() called with no batch outstanding",
                            {.path = "step " + std::to_string(next_step_), .expected = "a submit() before each next()"});
      return t;
    }
    t.job = outstanding_.front();
    const bool ready_at_call = t.job->finished;
    const auto t0 = SearchControl::clock::now();
    if (!ready_at_call) {
      const auto ready = [&] { return t.job->finished || shutdown_; };
      if (wait_forever || unbounded(options_.grace)) done_cv_.wait(lk, ready);
      else done_cv_.wait_for(lk, options_.grace, ready);
    }
    if (shutdown_) {
      t.early = use_after_cancel("next");
      return t;
    }
    stats_.last_wait = ready_at_call ? Nanoseconds{0}
                                     : Nanoseconds{std::chrono::duration_cast<std::chrono::nanoseconds>(SearchControl::clock::now() - t0).count()};
    stats_.waited += stats_.last_wait;
    outstanding_.pop_front();
    t.done = t.job->finished;
    if (!t.done) {  // give up on the search: it stops, and whatever it returns is discarded
      t.job->abandoned = true;
      t.job->stop.request_stop();
      std::erase(pending_, t.job);
      ++stats_.fallbacks;
    } else if (!t.job->error) {
      ++(ready_at_call ? stats_.plans_ready_in_time : stats_.plans_after_wait);
    }
    return t;
  }

  /// Tells the other ranks that this step has no plan; if even that fails, the caller's error
  /// is still the one that matters (the others' broadcast times out instead).
  void notify_failure() noexcept {
    if (!options_.broadcast) return;
    try {
      send_planning_failure(options_.broadcast);
    } catch (...) {
    }
  }

  PlanResult take(bool wait_forever) {
    // The notice of an early error goes out after the lock is released (a hook may block on
    // the other ranks).
    Taken t = take_job(wait_forever);
    if (t.early) {
      notify_failure();
      throw *t.early;
    }
    std::optional<PlanResult> result;
    std::exception_ptr error;
    if (t.done) {
      if (t.job->error) error = t.job->error;
      else result = std::move(*t.job->result);
    } else {
      try {
        result.emplace(planner_.fallback(t.job->batch));
        result->fallback = true;
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) {
      {
        std::lock_guard lk(mu_);
        ++stats_.failures;
      }
      notify_failure();
      rethrow_naming_step(error, t.job->step, t.done ? "planner" : "fallback planner");
    }
    if (options_.broadcast) send_plan(options_.broadcast, result->plan);
    return std::move(*result);
  }

  // Durations beyond ~70 years count as unbounded (and would overflow a time_point).
  static bool unbounded(std::chrono::nanoseconds d) noexcept { return d.count() >= (std::int64_t{1} << 61); }

  static Error use_after_cancel(const char* call) {
    return pipeweaver::cancelled_error(std::string(call) + "() called after the AsyncPlanner was cancelled", {.expected = "no use after cancel()"});
  }

  [[noreturn]] static void rethrow_naming_step(std::exception_ptr error, std::int64_t step, const std::string& who) {
    const std::string where = "step " + std::to_string(step);
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      const auto& c = e.context();
      throw Error(e.kind(), who + " failed: " + e.message(),
                  {.file = c.file, .path = c.path.empty() ? where : where + ", " + c.path, .expected = c.expected});
    } catch (const std::exception& e) {
      throw execution_error(who + " failed: " + e.what(), {.path = where});
    } catch (...) {
      throw execution_error(who + " failed with a non-standard exception", {.path = where});
    }
  }

  void work() {
    std::unique_lock lk(mu_);
    for (;;) {
      work_cv_.wait(lk, [&] { return shutdown_ || !pending_.empty(); });
      if (shutdown_) return;
      std::shared_ptr<Job> job = std::move(pending_.front());
      pending_.pop_front();
      if (job->abandoned) continue;
      const auto start = SearchControl::clock::now();
      auto deadline = SearchControl::clock::time_point::max();
      if (!unbounded(options_.search_budget))
        deadline = start + options_.search_budget;
      const SearchControl control{.stop = job->stop.get_token(), .deadline = deadline, .step = job->step};
      lk.unlock();

      std::optional<PlanResult> result;
      std::exception_ptr error;
      try {
        result.emplace(planner_.plan(job->batch, control));
      } catch (...) {
        error = std::current_exception();
      }

      lk.lock();
      if (job->abandoned) continue;  // next() already used the fallback, or cancel() ran
      job->result = std::move(result);
      job->error = error;
      job->finished = true;
      done_cv_.notify_all();
    }
  }

  const P planner_;
  const AsyncPlannerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // pending_ grew, or shutdown
  std::condition_variable done_cv_;  // a job finished, or shutdown
  std::deque<std::shared_ptr<Job>> outstanding_;  // submitted, not yet returned by next(); in order
  std::deque<std::shared_ptr<Job>> pending_;      // submitted, not yet started; in order
  std::int64_t next_step_ = 0;
  bool shutdown_ = false;
  AsyncPlannerStats stats_;

  std::mutex join_mu_;
  std::vector<std::thread> workers_;  // last member: started after everything else exists
};

}  // namespace pipeweaver
