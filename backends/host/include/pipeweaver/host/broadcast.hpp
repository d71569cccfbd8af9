#pragma once
// An in-process broadcast for the host backend (ranks are threads of one process): satisfies
// pipeweaver::BroadcastFunction, so execute/plan_broadcast.hpp's broadcast_plan can hand a
// plan's binary form from the root thread to the others, as MPI or NCCL would across hosts.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/plan_broadcast.hpp"

namespace pipeweaver::host {

class InProcessBroadcast {
 public:
  explicit InProcessBroadcast(int ranks, std::chrono::milliseconds timeout = std::chrono::seconds(60))
      : ranks_(ranks), timeout_(timeout) {}

  /// Collective: all `ranks` threads call it, each with its rank and the same root. Returns
  /// when every rank holds the root's bytes. Throws Error(execution) when the others do not
  /// arrive within the timeout (a later call is then undefined: the group is broken).
  void operator()(std::vector<std::byte>& bytes, RankId rank, RankId root) {
    if (!rank.valid() || rank.value() >= ranks_ || !root.valid() || root.value() >= ranks_)
      throw input_error("broadcast between " + std::to_string(ranks_) + " ranks called with rank " +
                                        std::to_string(rank.value()) + " and root " + std::to_string(root.value()), {.expected = "ranks and root in 0 .. " + std::to_string(ranks_ - 1)});
    std::unique_lock lk(mu_);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    const std::uint64_t generation = generation_;
    if (rank == root) {
      payload_ = bytes;
      has_payload_ = true;
      cv_.notify_all();
    } else if (!cv_.wait_until(lk, deadline, [&] { return has_payload_ && generation_ == generation; })) {
      throw timeout("the root never sent");
    } else {
      bytes = payload_;
    }
    if (++done_ == ranks_) {  // the last one out opens the next round
      done_ = 0;
      has_payload_ = false;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_until(lk, deadline, [&] { return generation_ != generation; })) throw timeout("not every rank arrived");
  }

 private:
  [[nodiscard]] Error timeout(const std::string& what) const {
    return execution_error("in-process broadcast timed out: " + what, {.expected = "all " + std::to_string(ranks_) + " ranks to call it within " +
                                                          std::to_string(timeout_.count()) + " ms"});
  }

  int ranks_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::byte> payload_;
  bool has_payload_ = false;
  int done_ = 0;
  std::uint64_t generation_ = 0;
};

static_assert(BroadcastFunction<InProcessBroadcast>);

}  // namespace pipeweaver::host
