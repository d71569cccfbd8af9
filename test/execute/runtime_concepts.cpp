// Each sub-concept of Runtime (execute/runtime.hpp) and StageCallbacks with a type that
// satisfies it and one that does not.
#include <doctest/doctest.h>

#include <pipeweaver/execute/runtime.hpp>
#include <pipeweaver/execute/stage_io.hpp>

#include <cstddef>
#include <span>
#include <string_view>

namespace pw = pipeweaver;

namespace {

struct Queue {};
struct Event {};

// A complete (do-nothing) runtime: satisfies every part.
struct FullRuntime {
  using queue_type = Queue;
  using event_type = Event;
  using recv_handle = int;
  pw::RankId rank() const { return pw::RankId{0}; }
  int rank_count() const { return 1; }
  Queue compute_queue() { return {}; }
  Queue send_queue(pw::RankId) { return {}; }
  Queue recv_queue(pw::RankId) { return {}; }
  Event record(Queue) { return {}; }
  void wait_event(Queue, const Event&) {}
  void synchronize(Queue) {}
  template <class F>
  void launch(Queue, F&& f) { f(); }
  void* native_handle(Queue) { return nullptr; }
  std::span<std::byte> arena(std::size_t) { return {}; }
  void copy(Queue, std::span<std::byte>, std::span<const std::byte>) {}
  void fill_zero(Queue, std::span<std::byte>) {}
  void accumulate(Queue, std::span<std::byte>, std::span<const std::byte>) {}
  void send(Queue, pw::RankId, pw::TransferId, std::span<const std::byte>) {}
  int recv(Queue, pw::RankId, pw::TransferId, std::span<std::byte>) { return 0; }
  void wait_recv(Queue, const int&) {}
  void abort(std::string_view) noexcept {}
  bool aborted() const { return false; }
};
struct EagerRuntime : FullRuntime {
  static constexpr bool eager_send = true;
};

// One piece missing from each of these.
struct NoRank {  // RankIdentity: no rank_count
  pw::RankId rank() const { return pw::RankId{0}; }
};
struct NoLinkQueues {  // HasQueues: only a compute queue
  using queue_type = Queue;
  Queue compute_queue() { return {}; }
};
struct EventsWithoutSync : NoLinkQueues {  // HasEvents: synchronize missing (and no link queues)
  using event_type = Event;
  Event record(Queue) { return {}; }
  void wait_event(Queue, const Event&) {}
};
struct LaunchWithoutHandle : FullRuntime {  // LaunchesStages: native_handle hidden
  void* native_handle(Queue) = delete;
};
struct NoAccumulate : FullRuntime {  // ProvidesMemory: accumulate hidden
  void accumulate(Queue, std::span<std::byte>, std::span<const std::byte>) = delete;
};
struct BlockingRecv : FullRuntime {  // PeerTransport: recv returns nothing to wait on
  void recv(Queue, pw::RankId, pw::TransferId, std::span<std::byte>) {}
};
struct NoAbort {  // Abortable: only the query
  bool aborted() const { return false; }
};

static_assert(pw::RankIdentity<FullRuntime> && !pw::RankIdentity<NoRank>);
static_assert(pw::HasQueues<FullRuntime> && !pw::HasQueues<NoLinkQueues>);
static_assert(pw::HasEvents<FullRuntime> && !pw::HasEvents<EventsWithoutSync>);
static_assert(pw::LaunchesStages<FullRuntime> && !pw::LaunchesStages<LaunchWithoutHandle>);
static_assert(pw::ProvidesMemory<FullRuntime> && !pw::ProvidesMemory<NoAccumulate>);
static_assert(pw::PeerTransport<FullRuntime> && !pw::PeerTransport<BlockingRecv>);
static_assert(pw::Abortable<FullRuntime> && !pw::Abortable<NoAbort>);
static_assert(pw::Runtime<FullRuntime>);
static_assert(!pw::Runtime<LaunchWithoutHandle> && !pw::Runtime<NoAccumulate> && !pw::Runtime<BlockingRecv>);
static_assert(!pw::Runtime<int>);
static_assert(!pw::EagerSend<FullRuntime> && pw::EagerSend<EagerRuntime>);

// --- StageCallbacks ---
struct Callbacks {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};
struct ForwardOnly {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};
static_assert(pw::StageCallbacks<Callbacks>);
static_assert(!pw::StageCallbacks<ForwardOnly>);

}  // namespace

TEST_CASE("runtime concepts are checked at compile time") {
  // The checks are the static_asserts above; this case makes the file a test.
  CHECK(pw::Runtime<FullRuntime>);
  CHECK_FALSE(pw::Runtime<NoAbort>);
}
