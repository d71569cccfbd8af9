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
//    aborted.
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
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/cuda/device_api.hpp"

namespace pipeweaver::cuda::fake {

/// One send or receive of a launch.
struct P2pOp {
  bool is_send = false;
  const std::byte* src = nullptr;
  std::byte* dst = nullptr;
  std::size_t bytes = 0;
  int peer = 0;
  bool done = false;
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
  CommGroup(int size, const std::atomic<bool>& shutdown) : size_(size), members_(static_cast<std::size_t>(size), nullptr), shutdown_(&shutdown) {}

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

  int size_;
  std::vector<Comm*> members_;
  int joined_ = 0;
  std::map<std::pair<int, int>, Link> links_;  // (from, to)
  const std::atomic<bool>* shutdown_;
};

/// One launch: a single operation or a group, on one communicator, over one or more streams.
class Launch {
 public:
  Launch(Comm& comm, std::uint64_t ticket, std::vector<P2pOp> ops, int streams)
      : comm_(&comm), ticket_(ticket), ops_(std::move(ops)), streams_(streams) {}

  /// The task each of the launch's streams runs: the last stream to arrive executes the
  /// launch, the others wait for it (a group joins its streams).
  void arrive() {
    std::unique_lock lk(mu_);
    if (++arrived_ == streams_) {
      lk.unlock();
      execute();
      lk.lock();
      finished_ = true;
      cv_.notify_all();
      return;
    }
    CommGroup& g = comm_->group();
    while (!finished_ && !g.shutdown()) cv_.wait_for(lk, std::chrono::milliseconds(10));  // shutdown notifies no launch
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
};

}  // namespace pipeweaver::cuda::fake
