#pragma once
// The trainer loop on the host backend: P rank threads that live across steps, rank 0 the
// planning rank, plans searched ahead by an AsyncPlanner and broadcast to the other ranks in
// their binary form, barriers that start and end every step on all ranks together.
//
//   * Planning. Before step 0 the first `lookahead` batches are submitted; step 0 waits for its
//     search (nothing can run before it); every later step takes its plan with next(), which
//     waits up to `grace` for a late search and then uses the planner's fallback (the best
//     baseline), reported per step. Each next() is followed by the next submission, so while
//     step k runs the plans of steps k+1 .. k+lookahead are being searched.
//   * Distribution. Rank 0 broadcasts each plan (planner/broadcast_hook.hpp) through an
//     in-process broadcast; a planning failure is broadcast as an empty message, so every rank
//     stops with the error instead of waiting for a plan that never comes.
//   * A step. Every rank receives the plan's bytes; the first to get them decodes them, and the
//     other ranks of this process share that one decoded plan (P copies at P = 128 would be most
//     of the memory of a run). Each lets its rank object prepare for it (the runtime, the
//     callbacks), compiles its actions (execute/executor.hpp), then all meet at a barrier, run
//     their actions and meet at a second barrier. The measured step time is the wall-clock
//     between the two barriers; what happens between steps is reported apart (the wait for the
//     plan, and the gap from the end of one step to the start of the next).
//   * Measured stage times. With on_step_measured or calibrate set, every rank's executor times
//     its stage calls (ExecutorOptions::time_stages); after each step rank 0 hands all of them,
//     with the plan, to on_step_measured and then to calibrate (e.g. calibrate_planner of
//     host/calibration.hpp, which refits the planner's cost model). This happens between the
//     end barrier and the next plan, so it is counted in the gap between steps, never in a
//     step's measured time; with lookahead L, a model updated after step k plans step k + L on.
//   * Failure. The first rank that fails (planning, preparing or running) makes every rank stop
//     at the next barrier; run_training rethrows the root cause: the lowest rank's error that is
//     not a cancellation caused by another rank's failure.
//
// What a rank is, is the caller's: `make_rank(world, rank)` runs on the rank's own thread and
// returns an object with
//     runtime()                 the rank's Runtime (HostRuntime, TimedRuntime, ...), kept across steps
//     prepare(plan, step)       before each step, on the rank's thread
//     callbacks()               the StageCallbacks for the step
// so that the same loop drives a real trainer's callbacks and the emulated-time runs of
// `pipeweaver run`.
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/host/timed.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"
#include "pipeweaver/ir/stage_timing.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"

namespace pipeweaver::host {

/// One executed step's measured stage calls (TrainingOptions::on_step_measured, calibrate).
struct MeasuredStep {
  int step = 0;
  const Plan* plan = nullptr;           ///< the plan the step ran (valid during the call)
  std::span<const StageTiming> stages;  ///< every rank's Forward / Backward calls: rank 0's in list order, then rank 1's, ...
  Nanoseconds measured{0};              ///< the step's wall clock (start to end barrier)
  Nanoseconds planned{0};               ///< the plan's emulated step time (the planner's model when it planned)
};

struct TrainingOptions {
  int lookahead = 2;  ///< steps planned ahead (>= 1; overlapping a step with the next search needs >= 2)
  /// How long a due step waits for a late search before it takes the fallback plan.
  std::chrono::nanoseconds grace = std::chrono::milliseconds(100);
  /// The host backend's options (transfer timeouts, channel capacity, the executor's options).
  Options host{};
  /// How long a rank waits for the plan's broadcast.
  std::chrono::milliseconds broadcast_timeout = std::chrono::minutes(10);
  /// Run the rank threads under SCHED_FIFO once they have their first plan (Linux,
  /// CAP_SYS_NICE): they stand in for devices, which other work must not delay.
  bool realtime = false;
  /// Called on rank 0's thread after each step with its measured stage times (see the header
  /// comment). An exception it throws stops the training like a failed step.
  std::function<void(const MeasuredStep&)> on_step_measured{};
  /// Called right after on_step_measured, to calibrate the planner with the step's stage times
  /// (host/calibration.hpp: calibrate_planner).
  std::function<void(const MeasuredStep&)> calibrate{};
};

/// One executed step.
struct TrainingStep {
  int step = 0;
  Nanoseconds measured{0};   ///< wall-clock from the step's start barrier to its end barrier
  Nanoseconds planned{0};    ///< the plan's emulated step time
  bool fallback = false;     ///< the planner's fallback was used (the search was late)
  Nanoseconds plan_wait{0};  ///< how long rank 0 waited for the plan when the step was due
  Nanoseconds gap{0};        ///< end of the previous step to the start of this one (0 for step 0)
  Nanoseconds search{0};     ///< the planner's wall-clock for this plan (search or fallback)
  std::string source{};      ///< "dip" or the baseline that won (or the fallback baseline)
  std::uint64_t cost_version = 0;  ///< the planner's cost-model version the plan was made with
};

struct TrainingReport {
  std::vector<TrainingStep> steps{};
  AsyncPlannerStats planning{};  ///< the AsyncPlanner's counters (every step but 0 went through next())
};

namespace detail {

[[nodiscard]] inline Nanoseconds to_ns(std::chrono::nanoseconds d) noexcept { return Nanoseconds{d.count()}; }

inline void check_training_options(const TrainingOptions& o, std::size_t batches) {
  if (batches == 0) throw input_error("no batches to train on", {.path = "batches", .expected = "at least one batch"});
  if (o.lookahead < 1)
    throw input_error("lookahead = " + std::to_string(o.lookahead), {.path = "TrainingOptions::lookahead", .expected = ">= 1"});
  if (o.grace.count() < 0) throw input_error("negative grace", {.path = "TrainingOptions::grace", .expected = ">= 0"});
}

/// The step's plan, decoded once from the broadcast bytes and shared by the ranks of this process
/// (every rank receives the same bytes; the first to ask decodes them).
class SharedDecodedPlan {
 public:
  std::shared_ptr<const Plan> get(int step, const std::vector<std::byte>& bytes) {
    std::lock_guard lk(mu_);
    if (step_ != step) {
      plan_.reset();  // the previous step's plan goes before the next one is decoded
      plan_ = std::make_shared<const Plan>(plan_from_binary(bytes));
      step_ = step;
    }
    return plan_;
  }

 private:
  std::mutex mu_;
  int step_ = -1;
  std::shared_ptr<const Plan> plan_;
};

/// The root cause among the ranks' errors: the lowest rank's error that is not a cancellation
/// (a consequence of another rank's failure), else the lowest rank's.
inline void rethrow_root_cause(const std::vector<std::exception_ptr>& errors) {
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      if (x.kind() != ErrorKind::cancelled) throw;
    } catch (...) {
      throw;
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace detail

/// Runs one step per batch (see the header comment). Throws the root cause of a failed step.
template <BatchPlanner P, class MakeRank>
TrainingReport run_training(const P& planner, std::span<const Batch> batches, const ModelSpec& model, int ranks,
                            MakeRank&& make_rank, const TrainingOptions& options = {}) {
  detail::check_training_options(options, batches.size());
  if (ranks < 1) throw input_error("ranks = " + std::to_string(ranks), {.path = "ranks", .expected = ">= 1"});
  using Clock = std::chrono::steady_clock;
  const int K = static_cast<int>(batches.size());
  World world(ranks, options.host);
  InProcessBroadcast broadcast(ranks, options.broadcast_timeout);
  detail::SharedDecodedPlan decoded;
  AsyncPlanner<P> async(planner, {.threads = 1, .lookahead = options.lookahead, .grace = options.grace});
  int submitted = 0;
  auto top_up = [&] {
    while (submitted < K && async.outstanding() < options.lookahead) async.submit(batches[static_cast<std::size_t>(submitted++)]);
  };
  top_up();  // step 0's search and those of the next steps start now

  TrainingReport report;
  report.steps.resize(static_cast<std::size_t>(K));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  std::atomic<bool> failed{false};
  bool stop_at_start = false, stop_at_end = false;
  Clock::time_point step_start{}, step_end{};
  int step_index = 0;
  std::barrier start_barrier(ranks, [&]() noexcept {
    stop_at_start = failed.load();
    step_start = Clock::now();
    if (step_index > 0) report.steps[static_cast<std::size_t>(step_index)].gap = detail::to_ns(step_start - step_end);
  });
  std::barrier end_barrier(ranks, [&]() noexcept {
    step_end = Clock::now();
    report.steps[static_cast<std::size_t>(step_index)].measured = detail::to_ns(step_end - step_start);
    ++step_index;
    stop_at_end = failed.load();
  });

  // Rank 0: the step's plan (searched, or the fallback) and its broadcast to the other ranks.
  auto plan_on_root = [&](int k, const BroadcastHook& hook) -> Plan {
    PlanResult r;
    std::vector<std::byte> bytes;
    std::exception_ptr error;
    try {
      r = k == 0 ? async.next_when_ready() : async.next();
      TrainingStep& s = report.steps[static_cast<std::size_t>(k)];
      s.step = k;
      s.plan_wait = async.stats().last_wait;
      s.fallback = r.fallback;
      s.source = r.source;
      s.search = r.search_time;
      s.planned = r.step_time;
      s.cost_version = r.cost_version;
      top_up();
      bytes = to_binary(r.plan);
    } catch (...) {
      error = std::current_exception();
      bytes.clear();  // an empty message: no plan this step
    }
    hook(bytes);
    if (error) std::rethrow_exception(error);
    return std::move(r.plan);
  };

  // Measured stage times: each rank copies its own before the end barrier; rank 0 reads them all
  // after it (the barrier orders the two).
  const bool measure = static_cast<bool>(options.on_step_measured) || static_cast<bool>(options.calibrate);
  std::vector<std::vector<StageTiming>> stage_times(static_cast<std::size_t>(ranks));
  std::vector<StageTiming> all_times;
  auto hand_over_times = [&](int k, const Plan& plan) {
    all_times.clear();
    for (const auto& t : stage_times) all_times.insert(all_times.end(), t.begin(), t.end());
    const TrainingStep& s = report.steps[static_cast<std::size_t>(k)];
    const MeasuredStep m{k, &plan, all_times, s.measured, s.planned};
    if (options.on_step_measured) options.on_step_measured(m);
    if (options.calibrate) options.calibrate(m);
  };
  ExecutorOptions executor_options = options.host.executor;
  executor_options.time_stages = executor_options.time_stages || measure;

  auto rank_main = [&](int r) {
    const RankId me{r};
    auto rank = make_rank(world, me);
    using Runtime = std::remove_reference_t<decltype(rank.runtime())>;
    Executor<Runtime> executor(rank.runtime(), executor_options);
    const BroadcastHook hook = bind_broadcast(broadcast, me, RankId{0});
    auto fail = [&] {
      errors[static_cast<std::size_t>(r)] = std::current_exception();
      failed.store(true);
    };
    for (int k = 0; k < K; ++k) {
      std::shared_ptr<const Plan> shared;
      try {
        if (r == 0) {
          shared = std::make_shared<const Plan>(plan_on_root(k, hook));
        } else {  // receive_plan's protocol, decoding once per step for all ranks
          std::vector<std::byte> bytes;
          hook(bytes);
          if (bytes.empty())
            throw execution_error("the root rank failed to plan this step (it broadcast no plan)",
                                  {.expected = "a plan from the root; see the error raised on the root"});
          shared = decoded.get(k, bytes);
        }
        const Plan& plan = *shared;
        if (k == 0 && options.realtime && !set_realtime_priority(1))
          throw input_error("the system refused SCHED_FIFO for rank " + std::to_string(r),
                            {.path = "TrainingOptions::realtime", .expected = "CAP_SYS_NICE (e.g. root), or realtime = false"});
        rank.prepare(plan, k);
        executor.prepare(plan, model);
      } catch (...) {
        fail();
      }
      start_barrier.arrive_and_wait();
      if (stop_at_start) return;
      try {
        executor.run(rank.callbacks(), k);
        if (measure) stage_times[static_cast<std::size_t>(r)].assign(executor.stage_times().begin(), executor.stage_times().end());
      } catch (...) {
        fail();
      }
      end_barrier.arrive_and_wait();
      if (stop_at_end) return;
      if (measure && r == 0) {
        try {
          hand_over_times(k, *shared);  // rank 0 planned this step: its plan exists
        } catch (...) {  // the others find out at the next start barrier
          fail();
        }
      }
    }
  };

  // The ranks start together once all exist: a rank thread that cannot be created must not
  // leave the others waiting at a barrier for it.
  std::promise<bool> go;
  std::shared_future<bool> started = go.get_future().share();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(ranks));
  try {
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        if (!started.get()) return;
        try {
          rank_main(r);
        } catch (...) {  // make_rank threw: this rank never reaches a barrier; stop everyone
          errors[static_cast<std::size_t>(r)] = std::current_exception();
          failed.store(true);
          world.abort(RankId{r}, "rank set-up failed");
          start_barrier.arrive_and_drop();
          end_barrier.arrive_and_drop();
        }
      });
  } catch (...) {
    go.set_value(false);
    for (auto& t : threads) t.join();
    throw;
  }
  go.set_value(true);
  for (auto& t : threads) t.join();
  report.planning = async.stats();
  detail::rethrow_root_cause(errors);
  return report;
}

}  // namespace pipeweaver::host
