#pragma once
// The device-API policy of the CUDA backend: the few CUDA runtime and NCCL calls the runtime
// makes, as a concept, so that the same runtime runs over the real API (cuda_api.hpp) and over
// a fake on threads (fake/fake_device_api.hpp) that keeps CUDA's and NCCL's rules.
//
// Semantics every implementation keeps (CUDA's and NCCL's own):
//  * A stream runs its work in issue order. Issuing may block the calling host thread when the
//    stream's launch queue is full.
//  * event_record(e, s) captures the work issued on s so far; event_done(e) tells whether that
//    work has completed (an event never recorded is done); stream_wait(s, e) makes work issued
//    later on s start after the work e captured when stream_wait was called (an event never
//    recorded is an empty wait). Re-recording e later changes nothing for earlier waits.
//  * copy_async / zero_async / accumulate_f32_async run on the stream, in its order.
//  * A communicator's send blocks its stream until the peer's matching receive runs (no
//    buffering); sizes must match. All operations of one communicator on one rank execute in
//    issue order, whatever their streams. Between group_start and group_end operations are
//    collected and launched at group_end as one operation that first joins every stream it
//    uses; inside it, sends and receives progress independently.
//  * comm_init is non-blocking: comm_status says in_progress until every rank has joined.
//    comm_revoke stops in-flight work (status in_progress until quiescent); comm_abort frees
//    the communicator (it must not be used again) and ends its pending work. Neither throws.
//  * alloc / release must not be called while a step runs (cudaMalloc and cudaFree may
//    synchronize the device behind a spinning communication kernel).
// Errors: every call that fails throws pipeweaver::Error (execution; infeasible when there is
// no usable device), naming the call and the cause.
// std-only: compiled by g++ everywhere and by nvcc.
#include <array>
#include <concepts>
#include <cstddef>
#include <string>

namespace pipeweaver::cuda {

/// The bytes of an NCCL unique id (ncclUniqueId is 128 bytes).
inline constexpr std::size_t unique_id_bytes = 128;
using UniqueId = std::array<std::byte, unique_id_bytes>;

/// A communicator's asynchronous state (ncclCommGetAsyncError).
enum class CommState {
  ready,        ///< initialized, no error (ncclSuccess)
  in_progress,  ///< initializing, or revoked and not yet quiescent (ncclInProgress)
  failed,       ///< an asynchronous error: only comm_abort is allowed now
};

struct CommStatus {
  CommState state = CommState::ready;
  std::string message{};  ///< the error when failed
};

template <class A>
concept DeviceApi = std::copy_constructible<A> &&
                    requires(A& a, typename A::stream s, typename A::event e, typename A::comm c, std::byte* dst,
                             const std::byte* src, std::size_t n, int peer, bool high_priority, const UniqueId& id) {
                      typename A::stream;
                      typename A::event;
                      typename A::comm;
                      // The device: activate() makes it current for the calling thread (throws
                      // Error(infeasible) when there is no usable device).
                      { a.activate() } -> std::same_as<void>;
                      // Streams and events.
                      { a.stream_create(high_priority) } -> std::same_as<typename A::stream>;
                      { a.stream_destroy(s) } noexcept -> std::same_as<void>;
                      { a.native(s) } -> std::same_as<void*>;
                      { a.event_create() } -> std::same_as<typename A::event>;
                      { a.event_destroy(e) } noexcept -> std::same_as<void>;
                      { a.event_record(e, s) } -> std::same_as<void>;
                      { a.event_done(e) } -> std::same_as<bool>;
                      { a.stream_wait(s, e) } -> std::same_as<void>;
                      // Memory and data movement on a stream.
                      { a.alloc(n) } -> std::same_as<std::byte*>;
                      { a.release(dst) } noexcept -> std::same_as<void>;
                      { a.copy_async(dst, src, n, s) } -> std::same_as<void>;
                      { a.zero_async(dst, n, s) } -> std::same_as<void>;
                      { a.accumulate_f32_async(dst, src, n, s) } -> std::same_as<void>;  // n bytes
                      // Communicators (NCCL point-to-point).
                      { a.unique_id() } -> std::same_as<UniqueId>;
                      { a.comm_init(id, peer, peer) } -> std::same_as<typename A::comm>;  // (id, ranks, rank)
                      { a.comm_status(c) } -> std::same_as<CommStatus>;
                      { a.group_start() } -> std::same_as<void>;
                      { a.group_end() } -> std::same_as<void>;
                      { a.send(src, n, peer, c, s) } -> std::same_as<void>;
                      { a.recv(dst, n, peer, c, s) } -> std::same_as<void>;
                      { a.comm_revoke(c) } noexcept -> std::same_as<void>;
                      { a.comm_abort(c) } noexcept -> std::same_as<void>;
                    };

}  // namespace pipeweaver::cuda
