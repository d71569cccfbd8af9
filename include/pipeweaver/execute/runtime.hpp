#pragma once
// The Runtime concept: what the generic executor needs from a device.
// It is built from small named requirements so that a failed check names the missing piece;
// test/execute/runtime_concepts.cpp shows, for each, a type that satisfies it and one that
// does not. The host runtime (backends/host) satisfies it; a CUDA runtime satisfies it in
// backends/cuda.
//
// Model of execution. A runtime serves ONE pipeline rank. Work is enqueued on queues (a CUDA
// stream; on the host, the rank's own thread, which runs work as it is enqueued):
//  * compute_queue(): stage callbacks and the executor's copies, zero-fills and accumulations;
//  * send_queue(peer) / recv_queue(peer): one queue per directed link, so that messages on one
//    link keep their order and never wait behind compute.
// Events order work across queues: record(q) marks "everything enqueued on q so far";
// wait_event(q2, e) makes work enqueued later on q2 start after that point. The executor's
// program (execute/rank_program.hpp) uses them for a Send's data and wherever pool memory
// passes from one queue to another; a runtime whose queues never overlap (the host's) may
// make them no-ops.
// std-only: compiled by nvcc.
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"

namespace pipeweaver {

namespace detail {
/// Stand-in for the callables the executor hands to launch(): a runtime must accept any
/// `void()` callable; the concept checks it with this one.
struct LaunchArchetype {
  void operator()() const {}
};
}  // namespace detail

/// Which rank this runtime serves and how many ranks the pipeline has.
template <class R>
concept RankIdentity = requires(const R& r) {
  { r.rank() } -> std::convertible_to<RankId>;
  { r.rank_count() } -> std::convertible_to<int>;
};

/// Queues (streams): a compute queue and one queue per directed link to or from a peer.
template <class R>
concept HasQueues = requires(R& r, RankId peer) {
  typename R::queue_type;
  { r.compute_queue() } -> std::same_as<typename R::queue_type>;
  { r.send_queue(peer) } -> std::same_as<typename R::queue_type>;  // link this rank -> peer
  { r.recv_queue(peer) } -> std::same_as<typename R::queue_type>;  // link peer -> this rank
};

/// Events carry dependencies between queues; synchronize(q) blocks the calling thread until
/// everything enqueued on q has finished (it may throw Error on a device failure).
template <class R>
concept HasEvents = HasQueues<R> && requires(R& r, typename R::queue_type q, const typename R::event_type& e) {
  typename R::event_type;
  { r.record(q) } -> std::same_as<typename R::event_type>;
  { r.wait_event(q, e) } -> std::same_as<void>;
  { r.synchronize(q) } -> std::same_as<void>;
};

/// Launching a stage callback: launch(q, f) runs the host callable f in q's order (the host
/// runtime calls it at once; the CUDA runtime calls it on the host, and f enqueues its kernels
/// on native_handle(q), a cudaStream_t). An exception thrown by f propagates out of launch.
template <class R>
concept LaunchesStages = HasQueues<R> && requires(R& r, typename R::queue_type q, detail::LaunchArchetype f) {
  { r.launch(q, f) } -> std::same_as<void>;
  { r.native_handle(q) } -> std::same_as<void*>;
};

/// Device memory for the activation pool and the executor's data movement on a queue.
/// arena(n) returns at least n bytes of device memory owned by the runtime, valid until the
/// next arena() call (which may reuse it); accumulate(dst, src) adds src into dst element-wise
/// in the runtime's gradient element type (float32 unless configured otherwise).
template <class R>
concept ProvidesMemory = HasQueues<R> && requires(R& r, typename R::queue_type q, std::size_t n,
                                                  std::span<std::byte> dst, std::span<const std::byte> src) {
  { r.arena(n) } -> std::same_as<std::span<std::byte>>;
  { r.copy(q, dst, src) } -> std::same_as<void>;
  { r.fill_zero(q, dst) } -> std::same_as<void>;
  { r.accumulate(q, dst, src) } -> std::same_as<void>;
};

/// Asynchronous point-to-point messages. send(q, peer, t, src) enqueues the send of transfer t
/// on q (src must stay unchanged until the send completes: until record(q) after it has
/// completed, or at once when the runtime declares `eager_send`); recv(q, peer, t, dst) posts
/// the receive of t into dst and returns a handle; wait_recv(q, h) makes work enqueued later
/// on q start after dst holds the data. Transfers on one directed link complete in the order
/// they were issued. A message that does not arrive in the runtime's timeout, or a message
/// other than the one expected, makes wait_recv throw Error(ErrorKind::execution).
template <class R>
concept PeerTransport = HasQueues<R> && requires(R& r, typename R::queue_type q, RankId peer, TransferId t,
                                                 std::span<const std::byte> src, std::span<std::byte> dst,
                                                 const typename R::recv_handle& h) {
  typename R::recv_handle;
  { r.send(q, peer, t, src) } -> std::same_as<void>;
  { r.recv(q, peer, t, dst) } -> std::same_as<typename R::recv_handle>;
  { r.wait_recv(q, h) } -> std::same_as<void>;
};

/// Cancellation: abort(why) stops every rank of the step (wakes every blocked wait, which then
/// throws Error(ErrorKind::cancelled)); it must not throw. aborted() tells whether any rank
/// has aborted; the executor checks it before each action.
template <class R>
concept Abortable = requires(R& r, const R& cr, std::string_view why) {
  { r.abort(why) } -> std::same_as<void>;
  { cr.aborted() } -> std::convertible_to<bool>;
};

/// Everything the generic executor (execute/executor.hpp) needs from a device.
template <class R>
concept Runtime = RankIdentity<R> && HasQueues<R> && HasEvents<R> && LaunchesStages<R> && ProvidesMemory<R> &&
                  PeerTransport<R> && Abortable<R>;

/// Optional: a runtime that times its own stage launches. launch_timed(q, f) does what
/// launch(q, f) does and returns a token; elapsed(token) is the duration of the work f put on q
/// (a stream runtime: between events recorded before and after it). The executor asks for the
/// elapsed times only after synchronizing the compute queue at the end of the step. A runtime
/// without it is timed by the wall clock around launch(), which is the stage's duration only
/// when launch runs the work before returning (the host runtime); see ExecutorOptions::time_stages.
template <class R>
concept TimesStages = LaunchesStages<R> && requires(R& r, typename R::queue_type q, detail::LaunchArchetype f,
                                                    const typename R::stage_timer& t) {
  typename R::stage_timer;
  { r.launch_timed(q, f) } -> std::same_as<typename R::stage_timer>;
  { r.elapsed(t) } -> std::same_as<Nanoseconds>;
};

/// A runtime whose send() has finished reading its source when it returns (the host runtime
/// copies the message): the executor may then reuse the source buffer right after the Send
/// (SendReuse::after_send); for any other runtime, only once the send has completed
/// (SendReuse::after_completion: the next occupant waits for an event recorded after it).
template <class R>
concept EagerSend = Runtime<R> && requires { requires R::eager_send; };

}  // namespace pipeweaver
