#pragma once
// Communicators of the fake device (fake_device_api.hpp), with NCCL's point-to-point rules:
//  * a send and its receive meet: the send waits until the receive is posted (no buffering),
//    then the bytes are copied and both complete; sizes must be equal (a mismatch, which NCCL
//    cannot detect, fails both communicators here);
//  * the operations of one communicator on one rank run in issue order, whatever their
//    streams: each launch (one operation, or a group) takes a ticket and starts only when the
//    launch before it has finished;
//  * a group is one launch that first joins every stream it uses (it starts when all of them
//    reach it, and they all go on when it ends); inside it the operations progress
//    independently (all are posted, then all are awaited);
//  * revoke and abort are local: they end this rank's pending operations at once (its streams
//    drain) and leave the peers' operations pending, as NCCL does; a failed communicator
//    (an injected asynchronous error) keeps its operations pending until it is revoked or
//    aborted;
//  * with a RaceChecker (fake/happens_before.hpp): a launch runs with the join of its streams'
//    clocks, a send's read and a receive's write are checked when they meet (a race fails the
//    racing side's device and moves no data), the receive joins the send's clock, and every
//    stream of the launch goes on with the launch's final clock.
// std-only.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/fake/happens_before.hpp"
#include "pipeweaver/cuda/fake/streams.hpp"

namespace pipeweaver::cuda::fake {

/// One send or receive of a launch.
struct P2pOp {
  bool is_send = false;
  const std::byte* src = nullptr;
  std::byte* dst = nullptr;
  std::size_t bytes = 0;
  int peer = 0;
  bool done = false;
  // With a checker (set by the launch before posting):
  const Accessor* who = nullptr;  ///< the launch's epoch and clock
  DeviceState* device = nullptr;  ///< where a race of this operation is a fault
  Clock received{};               ///< a receive: the clock of the send it met
};

class CommGroup;

/// One rank's endpoint of a communicator (what ncclComm_t is). Its fields are guarded by the
/// group's mutex.
class Comm {
 public:
  enum class State { joining, ready, revoked, aborted, failed };
  Comm(CommGroup& group, int rank, int device) : group_(&group), rank_(rank), device_(device) {}

  [[nodiscard]] CommGroup& group() const noexcept { return *group_; }
  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int device() const noexcept { return device_; }

  State state = State::joining;
  std::string error{};
  std::uint64_t issued = 0, finished = 0;  ///< launch tickets (per-communicator issue order)
  std::vector<std::string> log{};          ///< "init", "revoke", "abort", in call order

  [[nodiscard]] bool gone() const noexcept { return state == State::revoked || state == State::aborted; }

 private:
  CommGroup* group_;
  int rank_;
  int device_;
};

/// A communicator: every rank's endpoint and the per-link queues of posted operations.
class CommGroup {
 public:
  CommGroup(int size, const std::atomic<bool>& shutdown, RaceChecker* checker = nullptr)
      : size_(size), members_(static_cast<std::size_t>(size), nullptr), shutdown_(&shutdown), checker_(checker) {}
  [[nodiscard]] RaceChecker* checker() const noexcept { return checker_; }

  [[nodiscard]] int size() const noexcept { return size_; }
  std::mutex mu;
  std::condition_variable cv;

  /// Adds rank `rank`'s endpoint (caller holds mu); every endpoint turns ready with the last.
  void join(Comm& c) {
    members_[static_cast<std::size_t>(c.rank())] = &c;
    c.log.push_back("init");
    if (++joined_ == size_)
      for (Comm* m : members_)
        if (m->state == Comm::State::joining) m->state = Comm::State::ready;
  }
  [[nodiscard]] bool taken(int rank) const { return members_.at(static_cast<std::size_t>(rank)) != nullptr; }
  [[nodiscard]] bool shutdown() const noexcept { return shutdown_->load(std::memory_order_acquire); }

  /// Posts `op` of endpoint `me` (caller holds mu): it meets the oldest opposite operation
  /// on its link, or waits in the link's queue.
  void post(Comm& me, P2pOp& op) {
    if (op.is_send) {
      Link& l = links_[{me.rank(), op.peer}];
      if (l.recvs.empty()) {
        l.sends.push_back(&op);
      } else {
        P2pOp* r = l.recvs.front();
        l.recvs.pop_front();
        meet(me.rank(), op, op.peer, *r);
      }
    } else {
      Link& l = links_[{op.peer, me.rank()}];
      if (l.sends.empty()) {
        l.recvs.push_back(&op);
      } else {
        P2pOp* s = l.sends.front();
        l.sends.pop_front();
        meet(op.peer, *s, me.rank(), op);
      }
    }
  }
  /// Withdraws `op` of endpoint `me` if it is still waiting (caller holds mu).
  void withdraw(Comm& me, P2pOp& op) {
    auto it = links_.find(op.is_send ? std::pair{me.rank(), op.peer} : std::pair{op.peer, me.rank()});
    if (it == links_.end()) return;
    auto& q = op.is_send ? it->second.sends : it->second.recvs;
    q.erase(std::remove(q.begin(), q.end(), &op), q.end());
  }

 private:
  struct Link {
    std::deque<P2pOp*> sends, recvs;
  };
  void meet(int from, P2pOp& s, int to, P2pOp& r) {
    if (s.bytes == r.bytes) {
      if (!race_free(from, s, to, r)) {
        s.done = r.done = true;
        return;
      }
      if (s.bytes > 0) std::memcpy(r.dst, s.src, s.bytes);
    } else {
      const std::string why = "a send of " + std::to_string(s.bytes) + " bytes from rank " + std::to_string(from) +
                              " met a receive of " + std::to_string(r.bytes) + " bytes on rank " + std::to_string(to);
      for (Comm* m : {members_[static_cast<std::size_t>(from)], members_[static_cast<std::size_t>(to)]})
        if (m != nullptr && !m->gone()) {
          m->state = Comm::State::failed;
          m->error = why;
        }
    }
    s.done = r.done = true;
  }

  // The send's read with its own clock, the receive's write with its clock joined with the
  // send's; a race faults both sides' devices (no data moves, so the receiver must not go on).
  bool race_free(int from, P2pOp& s, int to, P2pOp& r) {
    if (checker_ == nullptr || s.who == nullptr || r.who == nullptr) return true;
    auto fails = [&](DeviceState* d, const std::optional<std::string>& race) {
      if (!race) return false;
      for (DeviceState* x : {s.device, r.device})
        if (x != nullptr) x->fault(x == d ? *race : "a message was not delivered: " + *race);
      return true;
    };
    const std::string link = " of rank " + std::to_string(from) + " to rank " + std::to_string(to) + " (communicator ranks)";
    if (fails(s.device, checker_->access(*s.who, {Access{s.src, s.bytes, false, "the send" + link}}))) return false;
    Clock joined = *r.who->clock;
    joined.join(*s.who->clock);
    Accessor receiver = *r.who;
    receiver.clock = &joined;
    if (fails(r.device, checker_->access(receiver, {Access{r.dst, r.bytes, true, "the receive" + link}}))) return false;
    r.received = *s.who->clock;
    return true;
  }

  int size_;
  std::vector<Comm*> members_;
  int joined_ = 0;
  std::map<std::pair<int, int>, Link> links_;  // (from, to)
  const std::atomic<bool>* shutdown_;
  RaceChecker* checker_;
};

/// One launch: a single operation or a group, on one communicator, over one or more streams.
class Launch {
 public:
  Launch(Comm& comm, std::uint64_t ticket, std::vector<P2pOp> ops, int streams)
      : comm_(&comm), ticket_(ticket), ops_(std::move(ops)), streams_(streams) {}

  /// The task each of the launch's streams runs: the last stream to arrive executes the
  /// launch, the others wait for it (a group joins its streams).
  void arrive() {
    Stream* me = Stream::current();
    const bool checking = me != nullptr && me->checking() && comm_->group().checker() != nullptr;
    std::unique_lock lk(mu_);
    if (checking) clock_.join(me->clock());
    if (++arrived_ == streams_) {
      if (checking) prepare_check(*me);
      lk.unlock();
      execute();
      lk.lock();
      if (checking)
        for (const P2pOp& op : ops_) clock_.join(op.received);
      finished_ = true;
      cv_.notify_all();
      if (checking) me->join_clock(clock_);
      return;
    }
    CommGroup& g = comm_->group();
    while (!finished_ && !g.shutdown()) cv_.wait_for(lk, std::chrono::milliseconds(10));  // shutdown notifies no launch
    if (checking && finished_) me->join_clock(clock_);
  }

 private:
  void execute() {
    CommGroup& g = comm_->group();
    std::unique_lock lk(g.mu);
    auto stop = [&] { return comm_->gone() || g.shutdown(); };
    g.cv.wait(lk, [&] { return comm_->finished >= ticket_ || stop(); });  // issue order
    if (!stop()) {
      for (P2pOp& op : ops_) g.post(*comm_, op);
      g.cv.notify_all();
      g.cv.wait(lk, [&] { return all_done() || stop(); });
    }
    for (P2pOp& op : ops_)
      if (!op.done) g.withdraw(*comm_, op);
    comm_->finished = std::max(comm_->finished, ticket_ + 1);
    g.cv.notify_all();
  }
  // The launch's accesses run as the last arriving stream's task, with the joined clock.
  void prepare_check(const Stream& me) {
    who_ = me.accessor();
    who_.clock = &clock_;
    for (P2pOp& op : ops_) {
      op.who = &who_;
      op.device = &me.device_state();
    }
  }
  [[nodiscard]] bool all_done() const {
    return std::all_of(ops_.begin(), ops_.end(), [](const P2pOp& o) { return o.done; });
  }

  Comm* comm_;
  std::uint64_t ticket_;
  std::vector<P2pOp> ops_;
  int streams_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool finished_ = false;
  Clock clock_{};   // the join of the arrived streams' clocks (guarded by mu_ until execution)
  Accessor who_{};  // the executing stream's epoch with clock_
};

}  // namespace pipeweaver::cuda::fake
