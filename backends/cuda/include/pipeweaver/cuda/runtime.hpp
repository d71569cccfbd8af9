#pragma once
// CudaRuntimeT<Api>: one pipeline rank on a CUDA device, satisfying pipeweaver::Runtime
// (execute/runtime.hpp; not EagerSend: a send reads its source on the device, later). Api is a
// DeviceApi: CudaApi (cuda_api.hpp) on a GPU, FakeDeviceApi (fake/) on host threads.
//
// Streams: a compute stream, and per peer a send stream and a receive stream (high priority).
// Calls (q = compute stream unless named):
//  * launch(q, f): waits for the run-ahead window (stage k - window finished), calls f on the
//    host (f enqueues its kernels on native_handle(q)), records a progress event;
//  * copy / fill_zero / accumulate: async memcpy / memset / accumulate kernel on the stream;
//  * send(send stream, ...), recv(recv stream, ...): through the Transport. NCCL: consecutive
//    operations of one link (any link with CommTopology::single) with only event records and
//    waits between them form one group, launched at the next other call; a receive's
//    completion event is recorded right after its launch, by this thread, so wait_recv never
//    meets an unrecorded event. Local: the sender copies device to device on its send stream
//    once the receiver has posted (a host wait), after the receiver's "ready" event;
//  * wait_recv(q, h): the compute stream waits for the receive's completion event (local:
//    after a host wait for the sender's "issued" flag, since an unrecorded event is an empty
//    wait). Receives are never reordered or deferred beyond the group they belong to.
//  * synchronize(q): records an event and polls it, with the deadline, the abort flag and the
//    communicators' asynchronous errors (never an uninterruptible stream synchronize).
// The host thread blocks only in the run-ahead window, the end-of-step wait and (local
// transport) the rendezvous with the peer thread; every such wait is interruptible.
//
// Memory: one arena per rank, grown only between steps (geometrically; reserve() grows ahead),
// never while device work of the step may run. Events come from a pool that grows on the
// first step and is reused after (begin_step resets it).
//
// Steps: begin_step(transfers) before a step (on the thread that drives it), end_step() after.
// After a failed step, drain() waits for the streams; the communicators were aborted and must
// be re-created (bootstrap.hpp) before the next step.
// std-only (the CUDA calls are behind Api).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/cuda/comm_links.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/world.hpp"
#include "pipeweaver/execute/runtime.hpp"

namespace pipeweaver::cuda {

template <DeviceApi Api>
class CudaRuntimeT final : private detail::RankControl {
 public:
  struct queue_type {
    int id = 0;  ///< 0: compute; 1 + p: send to p; 1 + P + p: receive from p
  };
  struct event_type {
    typename Api::event handle{};
  };
  using recv_handle = TransferId;
  using api_type = Api;

  /// Makes the device current, creates the streams, joins the world. Throws Error(infeasible)
  /// when there is no usable device.
  CudaRuntimeT(World<Api>& world, RankId rank, Api api)
      : world_(&world), options_(&world.options()), rank_(rank), api_(std::move(api)), monitor_(&world.monitor(rank)) {
    api_.activate();
    create_streams();
    window_.assign(options_->window, typename Api::event{});
    world_->attach(rank_, *this);
  }
  CudaRuntimeT(const CudaRuntimeT&) = delete;
  CudaRuntimeT& operator=(const CudaRuntimeT&) = delete;
  ~CudaRuntimeT() { teardown(); }

  // ---- identity and queues -------------------------------------------------------------------
  [[nodiscard]] RankId rank() const noexcept { return rank_; }
  [[nodiscard]] int rank_count() const noexcept { return world_->rank_count(); }
  queue_type compute_queue() noexcept { return {0}; }
  queue_type send_queue(RankId peer) noexcept { return {1 + peer.value()}; }
  queue_type recv_queue(RankId peer) noexcept { return {1 + rank_count() + peer.value()}; }

  // ---- events ----------------------------------------------------------------------------------
  event_type record(queue_type q) {
    touch();
    if (group_uses(q)) flush();
    const auto s = stream_of(q);
    const auto e = take_event();
    const auto& drop = options_->drop_event;
    if (!drop || drop->rank != rank_ || drop->index != records_) api_.event_record(e, s);
    ++records_;
    return {e};
  }
  /// record() calls in the current step (the index RuntimeOptions::drop_event counts).
  [[nodiscard]] std::size_t records() const noexcept { return records_; }
  void wait_event(queue_type q, const event_type& e) {
    touch();
    issued_any_ = true;
    api_.stream_wait(stream_of(q), e.handle);
  }
  void synchronize(queue_type q) {
    touch();
    flush();
    const auto e = take_event();
    api_.event_record(e, stream_of(q));
    await(e, "the work on " + queue_name(q));
  }

  // ---- stages and data movement ---------------------------------------------------------------
  template <class F>
  void launch(queue_type q, F&& f) {
    touch();
    flush();
    const auto s = stream_of(q);
    window_wait();
    issued_any_ = true;
    std::forward<F>(f)();
    touch();
    if (world_->aborted()) throw world_->stop_error(rank_);  // the watchdog stopped the step meanwhile
    const auto e = take_event();
    api_.event_record(e, s);
    if (!window_.empty()) window_[launches_ % window_.size()] = e;
    ++launches_;
  }
  void* native_handle(queue_type q) { return api_.native(stream_of(q)); }

  void copy(queue_type q, std::span<std::byte> dst, std::span<const std::byte> src) {
    enqueue_data();
    api_.copy_async(dst.data(), src.data(), std::min(dst.size(), src.size()), stream_of(q));
  }
  void fill_zero(queue_type q, std::span<std::byte> dst) {
    enqueue_data();
    api_.zero_async(dst.data(), dst.size(), stream_of(q));
  }
  /// dst += src as float32 (the gradient element type of this runtime).
  void accumulate(queue_type q, std::span<std::byte> dst, std::span<const std::byte> src) {
    enqueue_data();
    api_.accumulate_f32_async(dst.data(), src.data(), std::min(dst.size(), src.size()), stream_of(q));
  }

  // ---- memory ----------------------------------------------------------------------------------
  /// At least n bytes of device memory, valid until the next arena() call. Grows only when no
  /// device work of the current step has been issued (Error(execution) otherwise).
  std::span<std::byte> arena(std::size_t n) {
    reserve(n);
    return {arena_, n};
  }
  /// Grows the arena to at least n bytes now (between steps), so that a later step's arena()
  /// allocates nothing.
  void reserve(std::size_t n) {
    if (n <= capacity_) return;
    if (issued_any_)
      throw execution_error("rank " + std::to_string(rank_.value()) + ": the arena must grow to " + std::to_string(n) + " bytes inside a step",
                            {.expected = "reserve() or prepare() before the step's first device work"});
    if (poisoned_)
      throw execution_error("rank " + std::to_string(rank_.value()) + ": device work of a failed step never finished, so its memory cannot be reused",
                            {.expected = "a new process"});
    const std::size_t grown = std::max(n, capacity_ + capacity_ / 2);
    std::byte* fresh = api_.alloc(grown);
    if (arena_ != nullptr) api_.release(arena_);
    arena_ = fresh;
    capacity_ = grown;
  }
  [[nodiscard]] std::size_t arena_capacity() const noexcept { return capacity_; }

  // ---- point-to-point messages -----------------------------------------------------------------
  void send(queue_type q, RankId peer, TransferId t, std::span<const std::byte> src) {
    touch();
    issued_any_ = true;
    if (options_->drop_transfer && *options_->drop_transfer == t) return;  // fault injection
    if (options_->transport == Transport::local) return local_send(q, peer, t, src);
    add_comm_op(q, Op{true, const_cast<std::byte*>(src.data()), src.size(), peer, t, q.id});
  }
  recv_handle recv(queue_type q, RankId peer, TransferId t, std::span<std::byte> dst) {
    touch();
    issued_any_ = true;
    slot(t);
    recv_order_.push_back({t, peer});
    if (options_->transport == Transport::local) {
      local_recv(q, peer, t, dst);
    } else {
      recv_done_[t.index()].reset();
      add_comm_op(q, Op{false, dst.data(), dst.size(), peer, t, q.id});
    }
    return t;
  }
  void wait_recv(queue_type q, const recv_handle& t) {
    touch();
    flush();
    if (options_->transport == Transport::local) return local_wait(q, t);
    const auto& done = recv_done_.at(t.index());
    if (!done) throw execution_error("wait for transfer " + std::to_string(t.value()) + ", which was never received", {.expected = "recv before wait_recv"});
    api_.stream_wait(stream_of(q), *done);
  }

  // ---- abort -------------------------------------------------------------------------------------
  void abort(std::string_view why) noexcept { world_->abort(rank_, why); }
  [[nodiscard]] bool aborted() const noexcept { return world_->aborted(); }

  // ---- steps, communicators, recovery ------------------------------------------------------------
  /// Before a step, on the thread that drives it: makes the device current and resets the
  /// per-step state (event pool, receive tables).
  void begin_step(std::size_t transfers) {
    api_.activate();
    if (poisoned_)
      throw execution_error("rank " + std::to_string(rank_.value()) + ": device work of a failed step never finished",
                            {.expected = "a new process (the device may still write this rank's memory)"});
    pool_used_ = 0;
    launches_ = 0;
    records_ = 0;
    issued_any_ = false;
    group_.clear();
    recv_done_.assign(transfers, std::nullopt);
    posts_.clear();
    posts_.resize(transfers);
    recv_order_.clear();
    recv_order_.reserve(transfers);
    monitor_->last_host_ns.store(detail::now_ns());
    monitor_->in_step.store(true);
  }
  void end_step() noexcept {
    group_.clear();
    monitor_->in_step.store(false);
  }
  /// begin_step now, end_step when the guard goes out of scope.
  class [[nodiscard]] StepGuard {
   public:
    explicit StepGuard(CudaRuntimeT& rt) : rt_(&rt) {}
    StepGuard(const StepGuard&) = delete;
    StepGuard& operator=(const StepGuard&) = delete;
    ~StepGuard() { rt_->end_step(); }

   private:
    CudaRuntimeT* rt_;
  };
  [[nodiscard]] StepGuard step(std::size_t transfers) {
    begin_step(transfers);
    return StepGuard{*this};
  }
  /// After a failed step: waits (up to the abort grace) until every stream has finished its
  /// work. false: the device is stuck, this runtime's memory must not be reused.
  bool drain() noexcept {
    try {
      std::vector<typename Api::event> marks;
      for (auto s : streams_) {
        marks.push_back(take_event());
        api_.event_record(marks.back(), s);
      }
      const auto deadline = std::chrono::steady_clock::now() + options_->abort_grace;
      for (auto e : marks)
        while (!api_.event_done(e)) {
          if (std::chrono::steady_clock::now() > deadline) {
            poisoned_ = true;
            return false;
          }
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      return true;
    } catch (...) {
      poisoned_ = true;
      return false;
    }
  }
  /// Whether device work of a failed step may still run (drain() failed, or the device failed):
  /// this runtime's memory must not be reused.
  [[nodiscard]] bool poisoned() const noexcept { return poisoned_; }
  [[nodiscard]] bool has_comms() const {
    std::lock_guard lk(comm_mu_);
    return !comms_.empty();
  }
  /// Takes the communicators made by init_comm_links (bootstrap.hpp).
  void install_comms(CommLinks<typename Api::comm> links) {
    std::lock_guard lk(comm_mu_);
    for (auto c : comms_.all) api_.comm_abort(c);
    comms_ = std::move(links);
  }
  /// Exercises every link once, in the deterministic rounds of pairing_rounds, so that no
  /// connection is made lazily inside a step. Every rank calls it after install_comms.
  void preconnect();

  [[nodiscard]] Api& api() noexcept { return api_; }
  [[nodiscard]] World<Api>& world() noexcept { return *world_; }

  // ---- RankControl (the abort path and the watchdog) --------------------------------------------
  void stop_comms(std::chrono::steady_clock::time_point deadline) noexcept override;
  std::string comm_error() noexcept override {
    std::unique_lock lk(comm_mu_, std::try_to_lock);
    if (!lk.owns_lock()) return {};
    try {
      return failed_comm_message();
    } catch (...) {
      return {};
    }
  }

 private:
  struct Op {
    bool is_send = false;
    std::byte* data = nullptr;
    std::size_t bytes = 0;
    RankId peer{0};
    TransferId transfer{0};
    int queue = 0;
  };
  using Post = typename World<Api>::Post;

  // -- helpers
  void touch() noexcept { monitor_->last_host_ns.store(detail::now_ns(), std::memory_order_relaxed); }
  void enqueue_data() {
    touch();
    flush();
    issued_any_ = true;
  }
  [[nodiscard]] typename Api::stream stream_of(queue_type q) const {
    const int P = world_->rank_count();
    const int me = rank_.value();
    if (q.id < 0 || q.id > 2 * P || q.id == 1 + me || q.id == 1 + P + me)
      throw input_error("rank " + std::to_string(me) + " has no queue " + std::to_string(q.id),
                        {.expected = "the compute queue or the queue of a link to another rank"});
    return streams_[static_cast<std::size_t>(q.id)];
  }
  [[nodiscard]] std::string queue_name(queue_type q) const {
    const int P = world_->rank_count();
    if (q.id == 0) return "the compute stream";
    if (q.id <= P) return "the send stream to rank " + std::to_string(q.id - 1);
    return "the receive stream from rank " + std::to_string(q.id - 1 - P);
  }
  typename Api::event take_event() {
    if (pool_used_ == pool_.size()) pool_.push_back(api_.event_create());
    return pool_[pool_used_++];
  }
  void slot(TransferId t) {
    if (t.index() >= recv_done_.size()) recv_done_.resize(t.index() + 1);
    if (t.index() >= posts_.size()) posts_.resize(t.index() + 1);  // a deque keeps references
  }
  void create_streams();
  void teardown() noexcept;

  // -- waits
  void window_wait() {
    if (window_.empty() || launches_ < window_.size()) return;
    await(window_[(launches_ - window_.size()) % window_.size()], "stage launch " + std::to_string(launches_ - window_.size()) + " (run-ahead window)");
  }
  void await(typename Api::event e, const std::string& what);
  [[nodiscard]] std::string outstanding();
  [[nodiscard]] std::string failed_comm_message();  // caller holds comm_mu_

  // -- NCCL transport
  [[nodiscard]] bool group_uses(queue_type q) const {
    return std::any_of(group_.begin(), group_.end(), [&](const Op& o) { return o.queue == q.id; });
  }
  [[nodiscard]] int group_key(const Op& op) const { return comms_.topology == CommTopology::single ? 0 : op.queue; }
  void add_comm_op(queue_type q, const Op& op) {
    (void)stream_of(q);
    if (!group_.empty() && (!options_->group_transfers || group_key(group_.front()) != group_key(op))) flush();
    group_.push_back(op);
    if (!options_->group_transfers) flush();
  }
  void flush();
  void issue(const std::vector<Op>& ops);  // caller holds comm_mu_

  // -- local transport
  void local_send(queue_type q, RankId peer, TransferId t, std::span<const std::byte> src);
  void local_recv(queue_type q, RankId peer, TransferId t, std::span<std::byte> dst);
  void local_wait(queue_type q, TransferId t);
  template <class Pred>
  bool host_wait(typename World<Api>::Link& link, std::unique_lock<std::mutex>& lk, Pred ready);

  World<Api>* world_;
  const RuntimeOptions* options_;
  RankId rank_;
  Api api_;
  detail::RankMonitor* monitor_;
  std::vector<typename Api::stream> streams_;  // by queue id; the entries of the rank's own links repeat the compute stream
  std::vector<typename Api::event> pool_;
  std::size_t pool_used_ = 0;
  std::vector<typename Api::event> window_;  // progress events of the last `window` launches
  std::size_t launches_ = 0;
  std::size_t records_ = 0;  // record() calls this step
  bool issued_any_ = false;
  bool poisoned_ = false;
  std::byte* arena_ = nullptr;
  std::size_t capacity_ = 0;
  std::byte* scratch_ = nullptr;  // two bytes for preconnect
  std::vector<std::optional<typename Api::event>> recv_done_;  // NCCL: per transfer
  std::deque<Post> posts_;                                     // local: per transfer
  std::vector<std::pair<TransferId, RankId>> recv_order_;      // receives posted this step
  mutable std::mutex comm_mu_;  // held while calling NCCL, and by stop_comms
  CommLinks<typename Api::comm> comms_;
  std::vector<Op> group_, issuing_;
};

// ---- construction and teardown -------------------------------------------------------------------

template <DeviceApi Api>
void CudaRuntimeT<Api>::create_streams() {
  const int P = world_->rank_count();
  try {
    streams_.push_back(api_.stream_create(false));
    for (int dir = 0; dir < 2; ++dir)
      for (int p = 0; p < P; ++p) streams_.push_back(p == rank_.value() ? streams_[0] : api_.stream_create(true));
  } catch (...) {
    for (std::size_t i = 0; i < streams_.size(); ++i)
      if (i == 0 || streams_[i] != streams_[0]) api_.stream_destroy(streams_[i]);
    throw;
  }
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::teardown() noexcept {
  world_->detach(rank_);
  stop_comms(std::chrono::steady_clock::now() + options_->abort_grace);
  const bool drained = drain();
  if (drained) {
    if (arena_ != nullptr) api_.release(arena_);
    if (scratch_ != nullptr) api_.release(scratch_);
  }  // else the device may still write them: leak rather than hand them back
  for (auto e : pool_) api_.event_destroy(e);
  for (std::size_t i = 0; i < streams_.size(); ++i)
    if (i == 0 || streams_[i] != streams_[0]) api_.stream_destroy(streams_[i]);
}

// ---- interruptible waits ---------------------------------------------------------------------------

template <DeviceApi Api>
void CudaRuntimeT<Api>::await(typename Api::event e, const std::string& what) {
  struct InWait {
    detail::RankMonitor* m;
    explicit InWait(detail::RankMonitor* mon) : m(mon) { m->in_wait.store(true); }
    ~InWait() {
      m->last_host_ns.store(detail::now_ns());
      m->in_wait.store(false);
    }
  } in_wait{monitor_};
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + options_->timeout;
  auto next_comm_check = start;
  auto pause = std::chrono::microseconds(5);
  while (!api_.event_done(e)) {  // a device fault throws here, naming it
    if (world_->aborted()) throw world_->stop_error(rank_);
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_comm_check && options_->transport == Transport::nccl) {
      std::string failed;
      {
        std::lock_guard lk(comm_mu_);
        failed = failed_comm_message();
      }
      if (!failed.empty()) throw execution_error(failed, {.expected = "healthy communicators"});
      next_comm_check = now + std::chrono::milliseconds(1);
    }
    if (now > deadline)
      throw execution_error(what + " did not finish within " + std::to_string(options_->timeout.count()) + " ms" + outstanding(),
                            {.expected = "every peer to send its messages (and the device to make progress)"});
    if (pause.count() < 50) std::this_thread::yield();
    else std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
  // Work that ends after an abort may have been cut short (an aborted communicator ends its
  // kernels without moving the data): never report it as done.
  if (world_->aborted()) throw world_->stop_error(rank_);
}

template <DeviceApi Api>
std::string CudaRuntimeT<Api>::outstanding() {
  try {
    for (const auto& [t, peer] : recv_order_) {
      bool arrived = false;
      if (options_->transport == Transport::local) {
        Post& p = posts_[t.index()];
        std::lock_guard lk(world_->link(peer, rank_).mu);
        arrived = p.issued && api_.event_done(p.done);
      } else {
        arrived = recv_done_[t.index()] && api_.event_done(*recv_done_[t.index()]);
      }
      if (!arrived) return ": transfer " + std::to_string(t.value()) + " from rank " + std::to_string(peer.value()) + " did not arrive";
    }
  } catch (...) {  // only a hint for the message
  }
  return {};
}

template <DeviceApi Api>
std::string CudaRuntimeT<Api>::failed_comm_message() {
  for (auto c : comms_.all) {
    const CommStatus s = api_.comm_status(c);
    if (s.state == CommState::failed)
      return "an NCCL communicator of rank " + std::to_string(rank_.value()) + " reported an asynchronous error: " + s.message;
  }
  return {};
}

// ---- NCCL transport --------------------------------------------------------------------------------

template <DeviceApi Api>
void CudaRuntimeT<Api>::flush() {
  if (group_.empty()) return;
  issuing_.swap(group_);
  group_.clear();
  {
    std::lock_guard lk(comm_mu_);
    if (world_->aborted()) {
      issuing_.clear();
      throw world_->stop_error(rank_);
    }
    issue(issuing_);
  }
  for (const Op& op : issuing_) {
    if (op.is_send) continue;
    const auto e = take_event();
    api_.event_record(e, streams_[static_cast<std::size_t>(op.queue)]);
    recv_done_[op.transfer.index()] = e;
  }
  issuing_.clear();
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::issue(const std::vector<Op>& ops) {
  if (comms_.empty())
    throw execution_error("rank " + std::to_string(rank_.value()) + " has no NCCL communicators",
                          {.expected = "nccl_bootstrap (or install_comms) before a step with the NCCL transport"});
  const bool grouped = ops.size() > 1;
  if (grouped) api_.group_start();
  try {
    for (const Op& op : ops) {
      const auto& link = op.is_send ? comms_.send.at(op.peer.index()) : comms_.recv.at(op.peer.index());
      if (!link.valid)
        throw execution_error("rank " + std::to_string(rank_.value()) + " has no communicator " + (op.is_send ? "to" : "from") + " rank " +
                                  std::to_string(op.peer.value()),
                              {.expected = "a communicator for every link the plan uses"});
      const auto s = streams_[static_cast<std::size_t>(op.queue)];
      if (op.is_send) api_.send(op.data, op.bytes, link.peer, link.comm, s);
      else api_.recv(op.data, op.bytes, link.peer, link.comm, s);
    }
  } catch (...) {
    if (grouped) {
      try {
        api_.group_end();
      } catch (...) {  // the first error is the one to report
      }
    }
    throw;
  }
  if (grouped) api_.group_end();
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::stop_comms(std::chrono::steady_clock::time_point deadline) noexcept {
  using clock = std::chrono::steady_clock;
  // Polling try_lock rather than a timed mutex: ThreadSanitizer does not see
  // pthread_mutex_clocklock, which std::timed_mutex uses.
  auto lock_until = [this](clock::time_point end) {
    while (!comm_mu_.try_lock()) {
      if (clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
  };
  bool revoked = false;
  if (!lock_until(std::min(deadline, clock::now() + std::chrono::milliseconds(50)))) {
    // The owner thread is inside an NCCL call, blocked (a full launch queue behind a
    // communication kernel): revoke, which stops in-flight work, to let it out.
    for (auto c : comms_.all) api_.comm_revoke(c);
    revoked = true;
    if (!lock_until(deadline)) return;  // stuck: the watchdog's last-resort hook reports it
  }
  std::unique_lock lk(comm_mu_, std::adopt_lock);
  if (comms_.empty()) return;
  if (!revoked)
    for (auto c : comms_.all) api_.comm_revoke(c);
  for (auto c : comms_.all) {
    try {
      while (api_.comm_status(c).state == CommState::in_progress && clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    } catch (...) {  // abort anyway
    }
  }
  for (auto c : comms_.all) api_.comm_abort(c);
  comms_ = CommLinks<typename Api::comm>{};
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::preconnect() {
  const int P = world_->rank_count();
  const int me = rank_.value();
  if (P < 2) return;
  if (scratch_ == nullptr) scratch_ = api_.alloc(2);
  for (const auto& round : pairing_rounds(P)) {
    const int p = round[static_cast<std::size_t>(me)];
    if (p < 0) continue;
    const RankId peer{p};
    group_.push_back(Op{true, scratch_, 1, peer, TransferId{0}, send_queue(peer).id});
    group_.push_back(Op{false, scratch_ + 1, 1, peer, TransferId{0}, recv_queue(peer).id});
    issuing_.swap(group_);
    group_.clear();
    {
      std::lock_guard lk(comm_mu_);
      if (comms_.topology == CommTopology::single) {
        issue(issuing_);  // one group: a lone send would wait for a receive queued behind it
      } else {
        for (const Op& op : issuing_) issue({op});  // two communicators, each its own launch
      }
    }
    issuing_.clear();
    for (const queue_type q : {send_queue(peer), recv_queue(peer)}) {
      const auto e = take_event();
      api_.event_record(e, stream_of(q));
      await(e, "preconnecting " + queue_name(q));
    }
  }
  pool_used_ = 0;
}

// ---- local transport -------------------------------------------------------------------------------

template <DeviceApi Api>
template <class Pred>
bool CudaRuntimeT<Api>::host_wait(typename World<Api>::Link& link, std::unique_lock<std::mutex>& lk, Pred ready) {
  monitor_->in_wait.store(true);
  const bool ok = link.cv.wait_for(lk, options_->timeout, [&] { return ready() || world_->aborted(); });
  monitor_->last_host_ns.store(detail::now_ns());
  monitor_->in_wait.store(false);
  if (world_->aborted() && !ready()) throw world_->stop_error(rank_);
  return ok;
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::local_recv(queue_type q, RankId peer, TransferId t, std::span<std::byte> dst) {
  Post& p = posts_[t.index()];
  p = Post{};
  p.transfer = t;
  p.from = peer;
  p.dst = dst.data();
  p.bytes = dst.size();
  p.ready = take_event();
  api_.event_record(p.ready, stream_of(q));  // after any wait queued on the stream for the memory's reuse
  auto& link = world_->link(peer, rank_);
  std::lock_guard lk(link.mu);
  link.posted.push_back(&p);
  link.cv.notify_all();
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::local_send(queue_type q, RankId peer, TransferId t, std::span<const std::byte> src) {
  auto& link = world_->link(rank_, peer);
  std::unique_lock lk(link.mu);
  if (!host_wait(link, lk, [&] { return !link.posted.empty(); }))
    throw execution_error("send of transfer " + std::to_string(t.value()) + " to rank " + std::to_string(peer.value()) +
                              ": no receive was posted within " + std::to_string(options_->timeout.count()) + " ms",
                          {.expected = "the receiver to post its receives"});
  Post& p = *link.posted.front();
  link.posted.pop_front();
  if (p.transfer != t || p.bytes != src.size()) {  // the receiver learns it in wait_recv
    p.error = p.transfer != t ? "transfer " + std::to_string(t.value()) + " arrived from rank " + std::to_string(rank_.value()) + " where transfer " +
                                    std::to_string(p.transfer.value()) + " was expected (a message was lost or reordered)"
                              : "transfer " + std::to_string(t.value()) + " from rank " + std::to_string(rank_.value()) + " carried " +
                                    std::to_string(src.size()) + " bytes where " + std::to_string(p.bytes) + " were expected";
    p.issued = true;
    link.cv.notify_all();
    return;
  }
  lk.unlock();
  const auto s = stream_of(q);
  api_.stream_wait(s, p.ready);
  api_.copy_async(p.dst, src.data(), src.size(), s);
  const auto done = take_event();
  api_.event_record(done, s);
  lk.lock();
  p.done = done;
  p.issued = true;
  link.cv.notify_all();
}

template <DeviceApi Api>
void CudaRuntimeT<Api>::local_wait(queue_type q, TransferId t) {
  Post& p = posts_.at(t.index());
  const RankId peer = p.from;
  if (!peer.valid()) throw execution_error("wait for transfer " + std::to_string(t.value()) + ", which was never received", {.expected = "recv before wait_recv"});
  auto& link = world_->link(peer, rank_);
  std::unique_lock lk(link.mu);
  if (!host_wait(link, lk, [&] { return p.issued; }))
    throw execution_error("transfer " + std::to_string(t.value()) + " from rank " + std::to_string(peer.value()) + " did not arrive within " +
                              std::to_string(options_->timeout.count()) + " ms",
                          {.expected = "the sender to send it"});
  if (!p.error.empty()) throw execution_error(p.error, {.expected = "transfers on a link in the order of the plan"});
  const auto done = p.done;
  lk.unlock();
  api_.stream_wait(stream_of(q), done);
}

}  // namespace pipeweaver::cuda
