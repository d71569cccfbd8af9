#pragma once
// The generic executor: runs ONE rank's part of a Plan over a Runtime. prepare(plan, model)
// compiles the rank's action list into a RankProgram (execute/rank_program.hpp, which says
// how actions become operations and how buffers share the pooled arena), binds the arena
// (runtime.arena(n)) and fills every stage call's StageIO; run(callbacks, step) walks the
// operations and allocates nothing. The only runtime-specific choice is SendReuse: a runtime
// that declares `eager_send` (EagerSend) lets a sent buffer's bytes be reused right after the
// Send; any other has them reused once the send completed, ordered by the program's events.
//
// Each operation goes to the runtime on its queue (q = compute_queue(), send_queue(peer),
// recv_queue(peer)): forward/backward -> launch(q, callback); copy, zero, accumulate ->
// copy / fill_zero / accumulate; send -> send; recv -> recv (the handle is kept per
// transfer); wait -> wait_recv; record_event -> record (the event is kept per slot);
// wait_event -> wait_event. At the end of a step the executor synchronizes the send queues of
// every peer it sent to and the compute queue.
//
// Stage timing (ExecutorOptions::time_stages): every Forward / Backward call gets a StageTiming
// (ir/stage_timing.hpp), in the rank's list order: with a runtime that times its own launches
// (TimesStages) its launch_timed / elapsed, read after the end-of-step synchronization; else the
// steady clock around launch(). The records are made in prepare(), so run() still allocates
// nothing; with the option off, no clock is read.
//
// Errors: a plan the executor cannot run (an action on the wrong rank, data used before it is
// produced or received, a missing transfer) throws Error(invalid_plan) from prepare. At run
// time any failure (a callback that throws, a transfer that fails or never arrives) calls
// runtime.abort() so that every other rank stops, and throws Error(execution) whose path names
// the rank, the action index and the action, and whose message gives the cause; a rank
// stopped by another rank's abort throws Error(cancelled).
// std-only: compiled by nvcc.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/rank_program.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/stage_timing.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver {

namespace detail {
/// The runtime's stage timer token, or an empty stand-in for a runtime without one.
template <class R>
struct StageTimerOf {
  struct none {};
  using type = none;
};
template <TimesStages R>
struct StageTimerOf<R> {
  using type = typename R::stage_timer;
};
}  // namespace detail

template <Runtime R>
class Executor {
 public:
  /// How this runtime's sends let their buffers be reused.
  static constexpr SendReuse send_reuse = EagerSend<R> ? SendReuse::after_send : SendReuse::after_completion;

  explicit Executor(R& runtime, ExecutorOptions options = {}) : rt_(&runtime), options_(std::move(options)) {}

  /// Compiles this runtime's rank's action list of `plan` and binds its buffers. `plan` and
  /// `model` must outlive the following run() calls. Throws Error(invalid_plan).
  void prepare(const Plan& plan, const ModelSpec& model) {
    plan_ = nullptr;  // never run a half-prepared program
    rank_ = static_cast<RankId>(rt_->rank());
    try {
      program_ = compile_rank_program(plan, model, rank_, options_, send_reuse);
      bind(plan);
    } catch (...) {
      program_ = RankProgram{};
      throw;
    }
    plan_ = &plan;
    model_ = &model;
  }

  /// Executes the prepared program once: one training step of this rank. `step` reaches the
  /// callbacks as StageIO::step (run(callbacks) runs step 0).
  template <StageCallbacks C>
  void run(C& callbacks, std::int64_t step = 0) {
    if (plan_ == nullptr) throw input_error("Executor::run called before prepare", {.expected = "prepare(plan, model) first"});
    for (auto& h : handles_) h.reset();
    for (std::size_t i = 0; i < program_.operations.size(); ++i) {
      const Operation& op = program_.operations[i];
      if (rt_->aborted()) throw cancelled_error("stopped because another rank failed", {.path = where(op.action)});
      try {
        execute(i, callbacks, step);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::cancelled) throw cancelled_error(e.message(), {.path = where(op.action)});
        fail(op, e.message());
      } catch (const std::exception& e) {
        fail(op, e.what());
      } catch (...) {
        fail(op, "unknown exception");
      }
    }
    try {
      for (RankId p : program_.peers_sent) rt_->synchronize(rt_->send_queue(p));
      rt_->synchronize(rt_->compute_queue());
      if constexpr (TimesStages<R>)
        if (options_.time_stages)
          for (std::size_t c = 0; c < timings_.size(); ++c) timings_[c].duration = rt_->elapsed(*timers_[c]);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::cancelled) throw;
      rt_->abort(e.message());
      throw execution_error(e.message(), {.path = "rank " + std::to_string(rank_.value()) + ", end of step"});
    }
  }

  /// prepare(plan, model) then run(callbacks, step).
  template <StageCallbacks C>
  void run(const Plan& plan, const ModelSpec& model, C& callbacks, std::int64_t step = 0) {
    prepare(plan, model);
    run(callbacks, step);
  }

  /// Arena bytes of the prepared plan, and what the buffers would take without reuse.
  [[nodiscard]] std::size_t pool_bytes() const noexcept { return program_.pool_bytes(); }
  [[nodiscard]] std::size_t unpooled_bytes() const noexcept { return program_.unpooled_bytes; }
  /// Runtime operations in the prepared program (for benchmarks and tests).
  [[nodiscard]] std::size_t operation_count() const noexcept { return program_.operations.size(); }
  [[nodiscard]] RankId rank() const noexcept { return rank_; }
  /// The prepared program.
  [[nodiscard]] const RankProgram& program() const noexcept { return program_; }
  /// With ExecutorOptions::time_stages: every Forward / Backward of the last run(), in the rank's
  /// list order (after a failed run, the calls that did not run keep a zero or stale duration).
  /// Empty when the option is off.
  [[nodiscard]] std::span<const StageTiming> stage_times() const noexcept { return timings_; }

 private:
  struct BoundOp {  // an operation's ranges in the arena
    std::span<std::byte> dst;
    std::span<const std::byte> src;
  };

  std::string where(std::size_t action) const { return detail::action_path(*plan_, *model_, rank_, action); }

  [[noreturn]] void fail(const Operation& op, const std::string& cause) {
    std::string msg = cause;
    if (op.kind == OpKind::forward) msg = "forward callback threw: " + cause;
    if (op.kind == OpKind::backward) msg = "backward callback threw: " + cause;
    std::string path = where(op.action);
    rt_->abort(path + ": " + msg);
    throw execution_error(msg, {.path = path});
  }

  typename R::queue_type queue(const QueueRef& q) {
    switch (q.kind) {
      case QueueKind::send: return rt_->send_queue(q.peer);
      case QueueKind::recv: return rt_->recv_queue(q.peer);
      case QueueKind::compute: break;
    }
    return rt_->compute_queue();
  }

  // Arena spans of every operation and stage call; the per-transfer and per-slot state.
  void bind(const Plan& plan) {
    const std::span<std::byte> arena = rt_->arena(program_.pool_bytes());
    const auto span_of = [&](const BufferRange& r) -> std::span<std::byte> {
      if (r.empty()) return {};
      return arena.subspan(program_.pool.offsets[static_cast<std::size_t>(r.buffer)] + r.offset, r.bytes);
    };
    bound_.resize(program_.operations.size());
    for (std::size_t i = 0; i < program_.operations.size(); ++i)
      bound_[i] = BoundOp{span_of(program_.operations[i].dst), span_of(program_.operations[i].src)};
    void* native = rt_->native_handle(rt_->compute_queue());
    io_.assign(program_.calls.size(), StageIO{});
    smbs_.assign(program_.calls.size(), nullptr);
    for (std::size_t i = 0; i < program_.calls.size(); ++i) {
      const StageCall& c = program_.calls[i];
      StageIO& io = io_[i];
      io.rank = rank_;
      io.sub_microbatch = c.sub_microbatch;
      io.input = span_of(c.input);
      io.segments = program_.segments_of(c);
      io.output = span_of(c.output);
      io.stash = span_of(c.stash);
      io.output_grad = span_of(c.output_grad);
      io.input_grad = span_of(c.input_grad);
      io.queue = native;
      smbs_[i] = &plan.sub_microbatch(c.sub_microbatch);
    }
    handles_.clear();
    handles_.resize(plan.transfers.size());
    events_.clear();
    events_.resize(program_.event_count);
    bind_timings(plan);
  }

  // One StageTiming per stage call, its identity filled now (durations come at run time).
  void bind_timings(const Plan& plan) {
    timings_.clear();
    timers_.clear();
    if (!options_.time_stages) return;
    timings_.resize(program_.calls.size());
    if constexpr (TimesStages<R>) timers_.resize(program_.calls.size());
    const auto& actions = plan.ranks.at(rank_.index());
    for (const Operation& op : program_.operations) {
      if (op.kind != OpKind::forward && op.kind != OpKind::backward) continue;
      const StageCall& c = program_.calls[op.call];
      StageTiming& t = timings_[op.call];
      t.rank = rank_;
      t.action = op.action;
      t.module = c.stage.module();
      t.chunk = c.stage.chunk();
      t.sub_microbatch = c.sub_microbatch;
      t.pass = c.stage.pass();
      const Action& a = actions.at(op.action);
      if (const auto* f = std::get_if<Forward>(&a)) t.strategy = f->strategy;
      else if (const auto* b = std::get_if<Backward>(&a)) t.strategy = b->strategy;
    }
  }

  // Launches a stage call on its queue, timed when the option is on.
  template <class F>
  void launch_stage(const Operation& op, F&& f) {
    if (!options_.time_stages) {
      rt_->launch(queue(op.queue), std::forward<F>(f));
    } else if constexpr (TimesStages<R>) {
      timers_[op.call].emplace(rt_->launch_timed(queue(op.queue), std::forward<F>(f)));
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      rt_->launch(queue(op.queue), std::forward<F>(f));
      timings_[op.call].duration =
          Nanoseconds{std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()};
    }
  }

  template <class C>
  void execute(std::size_t i, C& callbacks, std::int64_t step) {
    const Operation& op = program_.operations[i];
    const BoundOp& b = bound_[i];
    switch (op.kind) {
      case OpKind::forward:
      case OpKind::backward: {
        StageIO& io = io_[op.call];
        io.step = step;
        const StageSpec& stage = program_.calls[op.call].stage;
        const SubMicrobatchSpec& smb = *smbs_[op.call];
        if (op.kind == OpKind::forward) launch_stage(op, [&] { callbacks.forward(stage, smb, io); });
        else launch_stage(op, [&] { callbacks.backward(stage, smb, io); });
        break;
      }
      case OpKind::copy: rt_->copy(queue(op.queue), b.dst, b.src); break;
      case OpKind::zero: rt_->fill_zero(queue(op.queue), b.dst); break;
      case OpKind::accumulate: rt_->accumulate(queue(op.queue), b.dst, b.src); break;
      case OpKind::send: rt_->send(queue(op.queue), op.peer, op.transfer, b.src); break;
      case OpKind::recv: handles_[op.transfer.index()].emplace(rt_->recv(queue(op.queue), op.peer, op.transfer, b.dst)); break;
      case OpKind::wait: rt_->wait_recv(queue(op.queue), *handles_[op.transfer.index()]); break;
      case OpKind::record_event: events_[op.event].emplace(rt_->record(queue(op.queue))); break;
      case OpKind::wait_event: rt_->wait_event(queue(op.queue), *events_[op.event]); break;
    }
  }

  R* rt_;
  ExecutorOptions options_;
  const Plan* plan_ = nullptr;
  const ModelSpec* model_ = nullptr;
  RankId rank_{0};
  RankProgram program_;
  std::vector<BoundOp> bound_;                 // per operation
  std::vector<StageIO> io_;                    // per stage call
  std::vector<const SubMicrobatchSpec*> smbs_;  // per stage call
  std::vector<std::optional<typename R::recv_handle>> handles_;  // per transfer
  std::vector<std::optional<typename R::event_type>> events_;   // per event slot
  std::vector<StageTiming> timings_;                            // per stage call (time_stages)
  using Timer = typename detail::StageTimerOf<R>::type;
  std::vector<std::optional<Timer>> timers_;                    // per stage call (TimesStages)
};

}  // namespace pipeweaver
