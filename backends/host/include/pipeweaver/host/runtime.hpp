#pragma once
// The host runtime: each pipeline rank is a thread; its compute queue is the thread itself
// (work runs as it is enqueued), and a transfer is a copy through an in-process channel, one
// per directed rank pair, bounded and condition-variable based, keeping the order of sends.
//
// A channel delivers straight into the receiver's buffer when its Recv is already posted;
// otherwise it keeps a copy (at most Options::channel_capacity messages; a sender that finds
// the channel full blocks). Message storage is recycled, so a warmed-up channel allocates
// nothing. Every blocking wait ends after Options::timeout with Error(execution), or at once
// with Error(cancelled) when any rank aborts (World::abort wakes every channel).
// Fault injection for tests (Options::fault): a transfer's Send, Recv or Wait fails, stalls,
// loses its message or changes its size; the fault matrix test drives every kind on every rank.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/rank_errors.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"

namespace pipeweaver::host {

/// dst += src, element-wise, in the gradient element type.
using Accumulate = void (*)(std::span<std::byte> dst, std::span<const std::byte> src);

/// float32 accumulation (the default gradient type). Sizes must be equal multiples of 4.
inline void accumulate_f32(std::span<std::byte> dst, std::span<const std::byte> src) {
  const std::size_t n = std::min(dst.size(), src.size()) / sizeof(float);
  for (std::size_t i = 0; i < n; ++i) {
    float a, b;  // memcpy: the arena is raw bytes
    std::memcpy(&a, dst.data() + i * sizeof(float), sizeof(float));
    std::memcpy(&b, src.data() + i * sizeof(float), sizeof(float));
    a += b;
    std::memcpy(dst.data() + i * sizeof(float), &a, sizeof(float));
  }
}

/// Fault injection (tests): what goes wrong with one transfer, at its Send, its Recv or its Wait.
struct TransferFault {
  enum class At : std::uint8_t { send, recv, wait };
  enum class Kind : std::uint8_t {
    fail,          ///< the runtime call throws (a broken link, a failed copy)
    delay,         ///< the call first stalls for `delay` (a hung peer), waking at once when a rank aborts
    drop,          ///< the message is lost (at send) or the receive is never posted (at recv)
    corrupt_size,  ///< the message carries one byte more than was sent (at send), or the receiver
                   ///< expects one byte more than its buffer (at recv)
  };
  TransferId transfer{0};
  At at = At::send;
  Kind kind = Kind::fail;
  std::chrono::milliseconds delay{0};
};

struct Options {
  /// Longest any rank waits for a message (or for room in a full channel) before the step
  /// fails with Error(execution). Must exceed the longest legitimate wait of the plan.
  std::chrono::milliseconds timeout{60'000};
  std::size_t channel_capacity = 64;  ///< buffered messages per directed rank pair
  Accumulate accumulate = accumulate_f32;
  ExecutorOptions executor{};
  /// Fault injection (tests): the message of this transfer is dropped by its channel.
  std::optional<TransferId> drop_transfer{};
  /// Fault injection (tests): one fault of any kind at one transfer action (see TransferFault).
  std::optional<TransferFault> fault{};
};

namespace detail {

struct PostedRecv {
  std::span<std::byte> dst{};
  std::size_t expected_bytes = 0;  ///< the size the receiver expects (dst's, unless a fault says otherwise)
  TransferId expected{0};
  bool done = false;
  std::optional<TransferId> arrived{};  ///< set when another transfer arrived instead
  std::size_t arrived_bytes = 0;
};

struct Message {
  TransferId id{0};
  std::vector<std::byte> data{};
};

struct Channel {
  std::mutex mu{};
  std::condition_variable cv{};
  std::deque<Message> buffered{};              // sent, receive not yet posted (in order)
  std::deque<PostedRecv*> posted{};            // posted, not yet delivered (in order)
  std::vector<std::vector<std::byte>> spare{}; // recycled message storage

  static void deliver(PostedRecv& r, TransferId id, std::span<const std::byte> data) {
    r.arrived_bytes = data.size();
    if (id != r.expected) r.arrived = id;
    else if (data.size() == r.dst.size() && !data.empty()) std::memcpy(r.dst.data(), data.data(), data.size());
    r.done = true;
  }
};

}  // namespace detail

/// What the rank threads of one host pipeline share: the channels and the abort flag.
class World {
 public:
  World(int ranks, Options options) : ranks_(ranks), options_(std::move(options)) {
    channels_.reserve(static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks));
    for (int i = 0; i < ranks * ranks; ++i) channels_.push_back(std::make_unique<detail::Channel>());
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  [[nodiscard]] int rank_count() const noexcept { return ranks_; }
  [[nodiscard]] const Options& options() const noexcept { return options_; }
  [[nodiscard]] detail::Channel& channel(RankId from, RankId to) {
    return *channels_[from.index() * static_cast<std::size_t>(ranks_) + to.index()];
  }

  /// Stops the step on every rank: sets the flag and wakes every blocked wait. The first
  /// caller's rank and reason are kept.
  void abort(RankId rank, std::string_view why) noexcept {
    first_.mark(rank, why);
    {
      std::lock_guard lk(mu_);  // a sleeper checks the flag under mu_: no lost wake-up
    }
    abort_cv_.notify_all();
    for (auto& ch : channels_) {
      std::lock_guard lk(ch->mu);
      ch->cv.notify_all();
    }
  }
  [[nodiscard]] bool aborted() const noexcept { return first_.aborted(); }
  /// Rank that aborted first (invalid when none did).
  [[nodiscard]] RankId first_aborting_rank() const { return first_.rank(); }
  [[nodiscard]] std::string abort_reason() const { return first_.reason(); }
  /// Sleeps for `d` or until a rank aborts, whichever comes first (injected delays).
  void sleep_unless_aborted(std::chrono::milliseconds d) {
    std::unique_lock lk(mu_);
    abort_cv_.wait_for(lk, d, [&] { return first_.aborted(); });
  }
  /// Before a step (no rank thread running): clears messages left by a failed step and the flag.
  void reset() {
    for (auto& ch : channels_) {
      std::lock_guard lk(ch->mu);
      for (auto& m : ch->buffered) ch->spare.push_back(std::move(m.data));
      ch->buffered.clear();
      ch->posted.clear();
    }
    first_.reset();
  }

 private:
  int ranks_;
  Options options_;
  std::vector<std::unique_ptr<detail::Channel>> channels_;  // [from * P + to]
  FirstAbort first_;
  std::mutex mu_;  // with abort_cv_: sleeps that an abort cuts short
  std::condition_variable abort_cv_;
};

/// One rank's view of a World; satisfies pipeweaver::Runtime.
class HostRuntime {
 public:
  struct queue_type {
    int id = 0;  // the host runs everything in the rank's thread; ids only tell queues apart
  };
  struct event_type {};
  using recv_handle = TransferId;
  static constexpr bool eager_send = true;  // send() copies (or delivers) before returning

  HostRuntime(World& world, RankId rank) : world_(&world), rank_(rank) {}

  [[nodiscard]] RankId rank() const noexcept { return rank_; }
  [[nodiscard]] int rank_count() const noexcept { return world_->rank_count(); }

  queue_type compute_queue() noexcept { return {0}; }
  queue_type send_queue(RankId peer) noexcept { return {1 + peer.value()}; }
  queue_type recv_queue(RankId peer) noexcept { return {1 + world_->rank_count() + peer.value()}; }

  event_type record(queue_type) noexcept { return {}; }
  void wait_event(queue_type, const event_type&) noexcept {}
  void synchronize(queue_type) noexcept {}

  template <class F>
  void launch(queue_type, F&& f) {
    std::forward<F>(f)();
  }
  void* native_handle(queue_type) noexcept { return nullptr; }

  std::span<std::byte> arena(std::size_t n) {
    if (n > arena_size_) {
      arena_.reset(static_cast<std::byte*>(::operator new(n, std::align_val_t{alignment})));
      arena_size_ = n;
    }
    return {arena_.get(), n};
  }
  void copy(queue_type, std::span<std::byte> dst, std::span<const std::byte> src) {
    if (!src.empty()) std::memmove(dst.data(), src.data(), std::min(dst.size(), src.size()));
  }
  void fill_zero(queue_type, std::span<std::byte> dst) {
    if (!dst.empty()) std::memset(dst.data(), 0, dst.size());
  }
  void accumulate(queue_type, std::span<std::byte> dst, std::span<const std::byte> src) { world_->options().accumulate(dst, src); }

  /// Clears the receive records for a step with `transfers` transfers (run_step calls it).
  void begin_step(std::size_t transfers) {
    posted_.assign(transfers, detail::PostedRecv{});
    posted_peer_.assign(transfers, RankId{});
  }

  void send(queue_type, RankId peer, TransferId t, std::span<const std::byte> src) {
    const Options& o = world_->options();
    if (o.drop_transfer && *o.drop_transfer == t) return;  // fault injection: the message is lost
    std::vector<std::byte> corrupted;
    if (const auto kind = injected(t, TransferFault::At::send)) {
      if (*kind == TransferFault::Kind::drop) return;
      if (*kind == TransferFault::Kind::corrupt_size) {
        corrupted.assign(src.begin(), src.end());
        corrupted.push_back(std::byte{0});
        src = corrupted;
      }
    }
    detail::Channel& ch = world_->channel(rank_, peer);
    const auto deadline = std::chrono::steady_clock::now() + o.timeout;
    std::unique_lock lk(ch.mu);
    for (;;) {
      if (world_->aborted()) throw cancelled();
      if (!ch.posted.empty()) {
        detail::PostedRecv* r = ch.posted.front();
        ch.posted.pop_front();
        detail::Channel::deliver(*r, t, src);
        ch.cv.notify_all();
        return;
      }
      if (ch.buffered.size() < std::max<std::size_t>(o.channel_capacity, 1)) {
        detail::Message m{t, {}};
        if (!ch.spare.empty()) {
          m.data = std::move(ch.spare.back());
          ch.spare.pop_back();
        }
        m.data.assign(src.begin(), src.end());
        ch.buffered.push_back(std::move(m));
        ch.cv.notify_all();
        return;
      }
      const std::size_t capacity = std::max<std::size_t>(o.channel_capacity, 1);
      const bool room = ch.cv.wait_until(lk, deadline, [&] {
        return world_->aborted() || !ch.posted.empty() || ch.buffered.size() < capacity;
      });
      if (!room)
        throw execution_error("send of transfer " + std::to_string(t.value()) + " to rank " + std::to_string(peer.value()) +
                        " found the channel full for " + std::to_string(o.timeout.count()) + " ms", {.expected = "the receiver to post its receives"});
    }
  }

  recv_handle recv(queue_type, RankId peer, TransferId t, std::span<std::byte> dst) {
    bool post = true;
    std::size_t expected_bytes = dst.size();
    if (const auto kind = injected(t, TransferFault::At::recv)) {
      if (*kind == TransferFault::Kind::drop) post = false;
      if (*kind == TransferFault::Kind::corrupt_size) ++expected_bytes;
    }
    detail::PostedRecv& r = posted_.at(t.index());
    r = detail::PostedRecv{.dst = dst, .expected_bytes = expected_bytes, .expected = t, .done = false, .arrived = std::nullopt, .arrived_bytes = 0};
    posted_peer_[t.index()] = peer;
    if (!post) return t;  // fault injection: the receive is never posted
    detail::Channel& ch = world_->channel(peer, rank_);
    std::lock_guard lk(ch.mu);
    if (!ch.buffered.empty()) {
      detail::Message m = std::move(ch.buffered.front());
      ch.buffered.pop_front();
      detail::Channel::deliver(r, m.id, m.data);
      ch.spare.push_back(std::move(m.data));
      ch.cv.notify_all();  // room for a blocked sender
    } else {
      ch.posted.push_back(&r);
    }
    return t;
  }

  void wait_recv(queue_type, const recv_handle& t) {
    (void)injected(t, TransferFault::At::wait);
    detail::PostedRecv& r = posted_.at(t.index());
    const RankId peer = posted_peer_[t.index()];
    detail::Channel& ch = world_->channel(peer, rank_);
    const auto timeout = world_->options().timeout;
    std::unique_lock lk(ch.mu);
    const bool arrived = ch.cv.wait_for(lk, timeout, [&] { return r.done || world_->aborted(); });
    if (!r.done) {
      if (arrived) throw cancelled();
      throw execution_error("transfer " + std::to_string(t.value()) + " from rank " + std::to_string(peer.value()) +
                      " did not arrive within " + std::to_string(timeout.count()) + " ms", {.expected = "the sender to send it"});
    }
    if (r.arrived)
      throw execution_error("transfer " + std::to_string(r.arrived->value()) + " arrived from rank " + std::to_string(peer.value()) +
                      " where transfer " + std::to_string(t.value()) + " was expected (a message was lost or reordered)", {.expected = "transfers on a link in the order of the plan"});
    if (r.arrived_bytes != r.expected_bytes)
      throw execution_error("transfer " + std::to_string(t.value()) + " from rank " + std::to_string(peer.value()) + " carried " +
                      std::to_string(r.arrived_bytes) + " bytes", {.expected = std::to_string(r.expected_bytes) + " bytes (same buffer sizes on both ranks)"});
  }

  void abort(std::string_view why) noexcept { world_->abort(rank_, why); }
  [[nodiscard]] bool aborted() const noexcept { return world_->aborted(); }

 private:
  static constexpr std::size_t alignment = 256;
  struct AlignedDelete {
    void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  };
  [[nodiscard]] Error cancelled() const {
    return cancelled_error("stopped because another rank failed: " + world_->abort_reason());
  }
  /// The injected fault at this transfer action, if any: `fail` throws here, `delay` sleeps
  /// here (waking on an abort); the others are returned for the caller to apply.
  std::optional<TransferFault::Kind> injected(TransferId t, TransferFault::At at) {
    const auto& f = world_->options().fault;
    if (!f || f->transfer != t || f->at != at) return std::nullopt;
    static constexpr const char* names[] = {"send", "recv", "wait"};
    if (f->kind == TransferFault::Kind::fail)
      throw execution_error(std::string("injected fault: the ") + names[static_cast<int>(at)] + " of transfer " + std::to_string(t.value()) + " failed",
                            {.expected = "a working link"});
    if (f->kind == TransferFault::Kind::delay) {
      world_->sleep_unless_aborted(f->delay);
      if (world_->aborted()) throw cancelled();
    }
    return f->kind;
  }

  World* world_;
  RankId rank_;
  std::unique_ptr<std::byte, AlignedDelete> arena_;
  std::size_t arena_size_ = 0;
  std::vector<detail::PostedRecv> posted_;
  std::vector<RankId> posted_peer_;
};

static_assert(Runtime<HostRuntime>);
static_assert(EagerSend<HostRuntime>);

}  // namespace pipeweaver::host
