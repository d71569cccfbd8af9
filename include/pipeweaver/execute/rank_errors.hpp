#pragma once
// One step's rank threads and their errors, shared by the backends that run every rank of a
// plan in one process (host::HostExecutor, cuda::CudaExecutor): each rank's body runs on its
// own thread; a rank that fails keeps its exception and outcome and, unless it was cancelled,
// aborts the others (through the backend's abort); after every thread is joined the root
// cause is rethrown: the error of the rank that aborted first, else any non-cancelled one,
// else any. And FirstAbort: the first abort of a step (its rank and reason), kept once.
// Invariant: slot r is written only by rank r's thread, and read only after the join.
// std-only.
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"

namespace pipeweaver {

/// How one rank ended the last step.
struct RankOutcome {
  bool ok = true;
  ErrorKind kind = ErrorKind::execution;  ///< when !ok
  std::string message{};                  ///< Error::what() when !ok
};

/// The first abort of a step: the first caller's rank and reason, until reset().
class FirstAbort {
 public:
  /// Keeps `rank` and `why` when no abort came before; `on_first` runs then, under the lock,
  /// before the flag is set. Whether this call was the first.
  template <class F = void (*)()>
  bool mark(RankId rank, std::string_view why, F&& on_first = [] {}) noexcept {
    std::lock_guard lk(mu_);
    if (aborted_.load(std::memory_order_relaxed)) return false;
    rank_ = rank;
    try {
      reason_ = std::string(why);
    } catch (...) {  // keep abort noexcept; the flag is what matters
    }
    on_first();
    aborted_.store(true, std::memory_order_release);
    return true;
  }
  [[nodiscard]] bool aborted() const noexcept { return aborted_.load(std::memory_order_acquire); }
  /// The rank that aborted first (invalid when none did).
  [[nodiscard]] RankId rank() const {
    std::lock_guard lk(mu_);
    return rank_;
  }
  [[nodiscard]] std::string reason() const {
    std::lock_guard lk(mu_);
    return reason_;
  }
  /// Before a step (no rank thread running).
  void reset() {
    std::lock_guard lk(mu_);
    aborted_.store(false, std::memory_order_release);
    rank_ = RankId{};
    reason_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::atomic<bool> aborted_{false};
  RankId rank_{};
  std::string reason_{};
};

using RankAbort = std::function<void(RankId, std::string_view)>;

/// Runs body(r) for r in [0, ranks) on one thread each and joins them all (body must not
/// throw). A thread that cannot start aborts the step (rank 0) and is rethrown after the
/// started ones are joined.
template <class Body>
void on_rank_threads(int ranks, Body&& body, const RankAbort& abort) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(ranks));
  try {
    for (int r = 0; r < ranks; ++r) threads.emplace_back(std::ref(body), r);
  } catch (...) {  // could not start a thread: stop and join those that run
    abort(RankId{0}, "could not start the rank threads");
    for (auto& t : threads) t.join();
    throw;
  }
  for (auto& t : threads) t.join();
}

/// Per-rank errors of one step.
class RankErrors {
 public:

  /// on_rank_threads(ranks, body, abort), where a rank whose body throws keeps its error and,
  /// unless cancelled, calls abort(r, message).
  template <class Body>
  void run(int ranks, Body&& body, const RankAbort& abort) {
    errors_.assign(static_cast<std::size_t>(ranks), nullptr);
    outcomes_.assign(static_cast<std::size_t>(ranks), RankOutcome{});
    auto guarded = [&](int r) {
      const auto i = static_cast<std::size_t>(r);
      try {
        body(r);
      } catch (...) {
        errors_[i] = std::current_exception();
        outcomes_[i] = outcome_of(errors_[i]);
        if (outcomes_[i].kind != ErrorKind::cancelled) abort(RankId{r}, outcomes_[i].message);
      }
    };
    on_rank_threads(ranks, guarded, abort);
  }

  /// Rethrows the root cause, if any rank failed: the error of `first_aborting` (when valid
  /// and failed), else the first non-cancelled one in rank order, else the first.
  void rethrow_root_cause(RankId first_aborting) const {
    if (first_aborting.valid() && first_aborting.index() < errors_.size() && errors_[first_aborting.index()])
      std::rethrow_exception(errors_[first_aborting.index()]);
    for (std::size_t r = 0; r < errors_.size(); ++r)
      if (errors_[r] && outcomes_[r].kind != ErrorKind::cancelled) std::rethrow_exception(errors_[r]);
    for (const auto& e : errors_)
      if (e) std::rethrow_exception(e);
  }

  /// How each rank ended the last run (all ok after a successful one).
  [[nodiscard]] const std::vector<RankOutcome>& outcomes() const noexcept { return outcomes_; }
  [[nodiscard]] bool any() const noexcept {
    for (const auto& e : errors_)
      if (e) return true;
    return false;
  }

  /// The outcome an exception stands for: an Error's kind and message, else execution.
  static RankOutcome outcome_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Error& x) {
      return {false, x.kind(), x.what()};
    } catch (const std::exception& x) {
      return {false, ErrorKind::execution, x.what()};
    } catch (...) {
      return {false, ErrorKind::execution, "unknown exception"};
    }
  }

 private:
  std::vector<std::exception_ptr> errors_;
  std::vector<RankOutcome> outcomes_;
};

}  // namespace pipeweaver
