#pragma once
// Executing a plan in emulated time on the host backend: stage
// callbacks that sleep for the cost model's latency of each stage, and a runtime whose messages
// arrive after the cost model's transfer time, both scaled by the same factor X. A step run this
// way lasts X × its emulated step time plus whatever the executor, the rank threads and the OS
// add, which is what `pipeweaver run` measures.
//
// Time model: the emulator's (emulate/emulator.hpp), event by event, in wall-clock time:
//  * a Forward / Backward lasts X·latency(stage, smb, strategy) from the moment the executor
//    calls it, with the latency looked up through a StageCostCache as the emulator does;
//  * a Send issued at wall time s on the directed link (from, to) starts at max(s, arrival of
//    the link's previous transfer) and arrives X·transfer_time(bytes) after its start; a Wait
//    returns no earlier than that arrival. The message itself goes through the host channel at
//    once: its bytes are what the executor's buffers hold, which the caller sizes (the plan's
//    byte counts are modeled as link time, not copied; give the executor a few bytes per item).
// Every event therefore happens no earlier than X times its emulated time (measured >= X ·
// emulated, up to the clock's resolution), and the excess is real overhead along the critical
// path: thread wake-ups, sleep overshoot, the executor's bookkeeping.
//
// Thread safety: one TimedRuntime and one SleepingCallbacks per rank thread. LinkClocks is
// shared: each rank writes only its own entry (its sends), and a receiver reads the sender's
// arrival time of a transfer only after the host channel delivered it (the channel's mutex
// orders the two). prepare() calls must not overlap a running step (call them between steps).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#endif

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver::host {

using TimedClock = std::chrono::steady_clock;

/// Lowers the calling thread's timer slack to 1 ns (Linux; elsewhere a no-op): a sleeping
/// thread then wakes within microseconds of its deadline instead of the default 50 µs slack.
inline void reduce_timer_slack() noexcept {
#if defined(__linux__)
  (void)::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
}

/// Runs the calling thread under SCHED_FIFO at `priority` (Linux, needs CAP_SYS_NICE; elsewhere
/// it returns false). The rank threads of a timed run stand in for devices: this keeps other
/// work on the machine (the planner's search, other processes) from delaying their wake-ups.
/// They sleep nearly all the time, so they take almost no CPU from that work. Returns false
/// when the system refuses.
[[nodiscard]] inline bool set_realtime_priority(int priority) noexcept {
#if defined(__linux__)
  sched_param p{};
  p.sched_priority = priority;
  return ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &p) == 0;
#else
  (void)priority;
  return false;
#endif
}

/// `d` scaled by `scale`, rounded to the nearest nanosecond.
[[nodiscard]] inline std::chrono::nanoseconds scaled(Nanoseconds d, double scale) noexcept {
  return std::chrono::nanoseconds{static_cast<std::int64_t>(std::llround(static_cast<double>(d.count()) * scale))};
}

/// Modeled link times of one step, shared by the ranks (see the header comment).
class LinkClocks {
 public:
  explicit LinkClocks(int ranks) : ranks_(static_cast<std::size_t>(std::max(ranks, 0))) {
    for (auto& r : ranks_) r.link_free.assign(ranks_.size(), TimedClock::time_point::min());
  }

  /// Rank `rank`'s part of the step: the scaled transfer time of each transfer it sends. Call
  /// on that rank's thread before the step starts. Each rank keeps its own transfers only, so the
  /// clocks hold O(transfers) in all, not O(ranks x transfers).
  template <class C>
    requires CostModel<C, StageSpec, SubMicrobatchSpec>
  void prepare(const Plan& plan, RankId rank, const C& cost, double scale) {
    Rank& me = ranks_.at(rank.index());
    me.sent.clear();
    me.duration.clear();
    for (std::size_t t = 0; t < plan.transfers.size(); ++t)
      if (plan.transfers[t].from == rank) {
        me.sent.push_back(TransferId{static_cast<TransferId::rep>(t)});
        me.duration.push_back(scaled(cost.transfer_time(plan.transfers[t].bytes), scale));
      }
    if (me.arrival.size() != me.sent.size()) std::vector<std::atomic<std::int64_t>>(me.sent.size()).swap(me.arrival);
    std::fill(me.link_free.begin(), me.link_free.end(), TimedClock::time_point::min());
  }

  /// Sender side: the transfer leaves now (or when its link is free) and arrives after its
  /// modeled duration.
  void sent(RankId from, RankId to, TransferId t) {
    Rank& me = ranks_[from.index()];
    const std::size_t i = me.slot(t);
    auto& free = me.link_free[to.index()];
    const auto start = std::max(TimedClock::now(), free);
    const auto arrival = start + me.duration[i];
    free = arrival;
    me.arrival[i].store(arrival.time_since_epoch().count(), std::memory_order_release);
  }

  /// Receiver side, after the channel delivered the transfer: its modeled arrival time.
  [[nodiscard]] TimedClock::time_point arrival(RankId from, TransferId t) const {
    const Rank& sender = ranks_.at(from.index());
    const auto ns = sender.arrival[sender.slot(t)].load(std::memory_order_acquire);
    return TimedClock::time_point{TimedClock::duration{ns}};
  }

  [[nodiscard]] int rank_count() const noexcept { return static_cast<int>(ranks_.size()); }

 private:
  struct Rank {
    std::vector<TransferId> sent;                            // the transfers this rank sends, ascending
    std::vector<std::chrono::nanoseconds> duration;          // per sent transfer
    std::vector<std::atomic<std::int64_t>> arrival;          // per sent transfer: modeled arrival (ns since epoch)
    std::vector<TimedClock::time_point> link_free;           // per peer: arrival of the last transfer sent
    /// Index of transfer t among this rank's; Error(execution) for one it does not send.
    [[nodiscard]] std::size_t slot(TransferId t) const {
      const auto it = std::lower_bound(sent.begin(), sent.end(), t);
      if (it == sent.end() || *it != t)
        throw execution_error("transfer " + std::to_string(t.value()) + " is not sent by this rank", {.expected = "a transfer of the plan sent by its 'from' rank"});
      return static_cast<std::size_t>(it - sent.begin());
    }
  };
  std::vector<Rank> ranks_;
};

/// HostRuntime whose messages arrive at their modeled time (see the header comment).
class TimedRuntime {
 public:
  using queue_type = HostRuntime::queue_type;
  using event_type = HostRuntime::event_type;
  struct recv_handle {
    HostRuntime::recv_handle inner;
    RankId peer{0};
    TransferId transfer{0};
  };
  static constexpr bool eager_send = HostRuntime::eager_send;

  TimedRuntime(World& world, RankId rank, LinkClocks& clocks) : inner_(world, rank), clocks_(&clocks) {}

  [[nodiscard]] RankId rank() const noexcept { return inner_.rank(); }
  [[nodiscard]] int rank_count() const noexcept { return inner_.rank_count(); }
  queue_type compute_queue() noexcept { return inner_.compute_queue(); }
  queue_type send_queue(RankId peer) noexcept { return inner_.send_queue(peer); }
  queue_type recv_queue(RankId peer) noexcept { return inner_.recv_queue(peer); }
  event_type record(queue_type q) noexcept { return inner_.record(q); }
  void wait_event(queue_type q, const event_type& e) noexcept { inner_.wait_event(q, e); }
  void synchronize(queue_type q) noexcept { inner_.synchronize(q); }
  template <class F>
  void launch(queue_type q, F&& f) {
    inner_.launch(q, std::forward<F>(f));
  }
  void* native_handle(queue_type q) noexcept { return inner_.native_handle(q); }
  std::span<std::byte> arena(std::size_t n) { return inner_.arena(n); }
  void copy(queue_type q, std::span<std::byte> dst, std::span<const std::byte> src) { inner_.copy(q, dst, src); }
  void fill_zero(queue_type q, std::span<std::byte> dst) { inner_.fill_zero(q, dst); }
  void accumulate(queue_type q, std::span<std::byte> dst, std::span<const std::byte> src) { inner_.accumulate(q, dst, src); }

  /// Clears the receive records for a step with `transfers` transfers (before the step).
  void begin_step(std::size_t transfers) { inner_.begin_step(transfers); }

  void send(queue_type q, RankId peer, TransferId t, std::span<const std::byte> src) {
    clocks_->sent(rank(), peer, t);  // before the message can be seen by the receiver
    inner_.send(q, peer, t, src);
  }
  recv_handle recv(queue_type q, RankId peer, TransferId t, std::span<std::byte> dst) {
    return recv_handle{inner_.recv(q, peer, t, dst), peer, t};
  }
  void wait_recv(queue_type q, const recv_handle& h) {
    inner_.wait_recv(q, h.inner);
    std::this_thread::sleep_until(clocks_->arrival(h.peer, h.transfer));
  }

  void abort(std::string_view why) noexcept { inner_.abort(why); }
  [[nodiscard]] bool aborted() const noexcept { return inner_.aborted(); }

 private:
  HostRuntime inner_;
  LinkClocks* clocks_;
};

static_assert(Runtime<TimedRuntime>);
static_assert(EagerSend<TimedRuntime>);

/// Stage callbacks of one rank that sleep for each stage's scaled cost-model latency. The
/// executor calls them in the rank's list order (execute/stage_io.hpp), so prepare() lists the
/// latencies of the rank's Forward / Backward actions in that order (each with its memory
/// strategy, which the callback itself is not told); a call that does not match the next
/// listed stage throws.
class SleepingCallbacks {
 public:
  template <class C>
    requires CostModel<C, StageSpec, SubMicrobatchSpec>
  void prepare(const Plan& plan, RankId rank, StageCostCache<C>& cache, double scale) {
    expected_.clear();
    next_ = 0;
    busy_ = std::chrono::nanoseconds{0};
    for (const Action& a : plan.ranks.at(rank.index())) {
      std::visit(
          [&](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, Forward> || std::is_same_v<X, Backward>) {
              Pass pass = Pass::forward;
              if constexpr (std::is_same_v<X, Backward>) pass = x.pass;
              const StageSpec st = StageSpec::of(plan.partition, x.module, x.chunk, pass);
              const Nanoseconds lat = cache.stage_cost(st, plan.sub_microbatch(x.sub_microbatch), x.strategy).latency;
              expected_.push_back(Expected{x.module, x.chunk, pass, scaled(lat, scale)});
              busy_ += expected_.back().duration;
            }
          },
          a);
    }
  }

  void forward(const StageSpec& stage, const SubMicrobatchSpec&, StageIO&) { sleep(stage); }
  void backward(const StageSpec& stage, const SubMicrobatchSpec&, StageIO&) { sleep(stage); }

  /// Stage calls made since prepare(), and the rank's scaled busy time.
  [[nodiscard]] std::size_t calls() const noexcept { return next_; }
  [[nodiscard]] std::size_t stages() const noexcept { return expected_.size(); }
  [[nodiscard]] std::chrono::nanoseconds busy() const noexcept { return busy_; }

 private:
  struct Expected {
    ModuleId module{0};
    int chunk = 0;
    Pass pass = Pass::forward;
    std::chrono::nanoseconds duration{0};
  };

  void sleep(const StageSpec& stage) {
    const auto start = TimedClock::now();
    if (next_ >= expected_.size())
      throw execution_error("more stage calls than the rank's plan lists (" + std::to_string(expected_.size()) + ")", {.path = "rank " + std::to_string(stage.rank().value()), .expected = "prepare() with the plan being run"});
    const Expected& e = expected_[next_++];
    if (e.module != stage.module() || e.chunk != stage.chunk() || e.pass != stage.pass())
      throw execution_error("stage call " + std::to_string(next_ - 1) + " is module " + std::to_string(stage.module().value()) + " chunk " +
                      std::to_string(stage.chunk()) + " pass " + std::string(to_string(stage.pass())), {.path = "rank " + std::to_string(stage.rank().value()), .expected = "module " + std::to_string(e.module.value()) + " chunk " + std::to_string(e.chunk) + " pass " +
                               std::string(to_string(e.pass)) + " (the plan's order)"});
    std::this_thread::sleep_until(start + e.duration);
  }

  std::vector<Expected> expected_;
  std::size_t next_ = 0;
  std::chrono::nanoseconds busy_{0};
};

static_assert(StageCallbacks<SleepingCallbacks>);

/// A rank of the host trainer loop (host/training.hpp) whose stages and transfers take their
/// cost-model time × `scale`: a TimedRuntime and SleepingCallbacks, prepared for each plan.
/// Made on the rank's own thread (its timer slack is lowered there).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
class EmulatedTimeRank {
 public:
  EmulatedTimeRank(World& world, RankId rank, LinkClocks& clocks, const C& cost, const ModelSpec& model, double scale)
      : rank_(rank), runtime_(world, rank, clocks), clocks_(&clocks), cost_(&cost), cache_(cost, model), scale_(scale) {
    reduce_timer_slack();
  }
  TimedRuntime& runtime() noexcept { return runtime_; }
  void prepare(const Plan& plan, std::int64_t /*step*/) {
    clocks_->prepare(plan, rank_, *cost_, scale_);
    callbacks_.prepare(plan, rank_, cache_, scale_);
    runtime_.begin_step(plan.transfers.size());
  }
  SleepingCallbacks& callbacks() noexcept { return callbacks_; }

 private:
  RankId rank_;
  TimedRuntime runtime_;
  LinkClocks* clocks_;
  const C* cost_;
  StageCostCache<C> cache_;  // the emulator's lookup, kept across steps
  double scale_;
  SleepingCallbacks callbacks_;
};

}  // namespace pipeweaver::host
