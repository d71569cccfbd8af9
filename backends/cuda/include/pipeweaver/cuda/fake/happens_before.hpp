#pragma once
// The fake device's happens-before checker: vector clocks over streams and a shadow of every
// device allocation, so that an access to device memory not ordered after a conflicting
// earlier one is reported exactly, whatever the timing.
//  * Clock: one component per stream (the system's stream index); component s of a task's
//    clock is how many tasks of stream s are ordered before it or are it. A task of stream s
//    with number n (1-based) is the epoch (s, n); it happens before a task with clock C iff
//    C[s] >= n.
//  * Order comes only from what CUDA and NCCL guarantee: stream FIFO order (a worker's clock
//    carries over from task to task), an event (it captures, when recorded, the clock its
//    stream will have after the tasks issued so far: a ClockSlot filled when they finish), a
//    stream wait (joins that slot), host synchronisation (a host that saw an event done joins
//    its slot into the device's host clock, which every later enqueue on the device carries),
//    a group (joins the clocks of its streams) and a send meeting its receive (the receive
//    joins the send's clock).
//  * Shadow: per allocation, the accesses not yet superseded, as byte ranges with their epoch.
//    A write must be ordered after every overlapping access, a read after every overlapping
//    write; otherwise the access is a race, reported (naming both accesses) before it touches
//    memory, so that of two racing accesses at most one ever runs. A write removes the
//    overlapping records (what is ordered after it is ordered after them); a read removes
//    overlapping reads of its own stream.
// std-only.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pipeweaver::cuda::fake {

/// A vector clock over streams (missing components are 0).
struct Clock {
  std::vector<std::uint64_t> c{};

  [[nodiscard]] std::uint64_t at(std::size_t s) const noexcept { return s < c.size() ? c[s] : 0; }
  void set(std::size_t s, std::uint64_t v) {
    if (s >= c.size()) c.resize(s + 1, 0);
    c[s] = v;
  }
  void join(const Clock& o) {
    if (o.c.size() > c.size()) c.resize(o.c.size(), 0);
    for (std::size_t i = 0; i < o.c.size(); ++i) c[i] = std::max(c[i], o.c[i]);
  }
};

/// The clock an event captured: filled when its stream finishes the tasks issued before the
/// record (the stream fills it under its own lock, before it reports them finished).
struct ClockSlot {
  Clock clock{};
  bool filled = false;
};

/// Who performs an access: a task of a stream (its epoch) and the clock it runs with.
struct Accessor {
  std::size_t stream = 0;
  std::uint64_t task = 0;
  const Clock* clock = nullptr;
  std::string stream_name{};
};

/// One access to device memory, as the work item declares it.
struct Access {
  const std::byte* data = nullptr;
  std::size_t bytes = 0;
  bool write = false;
  std::string what{};  ///< the action and buffer, e.g. "copy (destination)"
};

/// The shadow of every live allocation of a fake system, and the races found.
class RaceChecker {
 public:
  void allocated(const std::byte* p, std::size_t n) {
    std::lock_guard lk(mu_);
    blocks_[p] = Block{n, ++next_block_, {}};
  }
  void released(const std::byte* p) {
    std::lock_guard lk(mu_);
    blocks_.erase(p);
  }
  /// Checks `accesses` by `who` and records them; the first race as a message, or nothing.
  /// Memory outside every allocation (host buffers of tests) is not tracked.
  [[nodiscard]] std::optional<std::string> access(const Accessor& who, const std::vector<Access>& accesses) {
    std::lock_guard lk(mu_);
    for (const Access& a : accesses)
      if (auto race = check(who, a)) {
        races_.push_back(*race);
        return race;
      }
    for (const Access& a : accesses) note(who, a);
    return std::nullopt;
  }
  [[nodiscard]] std::vector<std::string> races() const {
    std::lock_guard lk(mu_);
    return races_;
  }

 private:
  struct Record {
    std::size_t lo = 0, hi = 0;  // byte range in the block
    bool write = false;
    std::size_t stream = 0;
    std::uint64_t task = 0;
    std::shared_ptr<const std::string> what{};
  };
  struct Block {
    std::size_t bytes = 0;
    std::uint64_t id = 0;
    std::vector<Record> records{};
  };
  struct Where {
    Block* block = nullptr;
    std::size_t lo = 0, hi = 0;
  };

  std::optional<Where> locate(const Access& a) {
    if (a.bytes == 0 || blocks_.empty()) return std::nullopt;
    auto it = blocks_.upper_bound(a.data);
    if (it == blocks_.begin()) return std::nullopt;
    --it;
    const auto lo = static_cast<std::size_t>(a.data - it->first);
    if (lo >= it->second.bytes) return std::nullopt;
    return Where{&it->second, lo, std::min(lo + a.bytes, it->second.bytes)};
  }
  std::optional<std::string> check(const Accessor& who, const Access& a) {
    const auto w = locate(a);
    if (!w) return std::nullopt;
    for (const Record& r : w->block->records) {
      if (r.hi <= w->lo || w->hi <= r.lo || !(r.write || a.write)) continue;
      if (who.clock->at(r.stream) >= r.task) continue;  // ordered before
      return "data race on fake device memory (allocation " + std::to_string(w->block->id) + ", bytes [" +
             std::to_string(std::max(r.lo, w->lo)) + ", " + std::to_string(std::min(r.hi, w->hi)) + ")): " + (a.write ? "write" : "read") +
             " by " + a.what + " on " + who.stream_name + " (task " + std::to_string(who.task) + ") is not ordered after the " +
             (r.write ? "write" : "read") + " by " + *r.what + " (task " + std::to_string(r.task) + ")";
    }
    return std::nullopt;
  }
  void note(const Accessor& who, const Access& a) {
    const auto w = locate(a);
    if (!w) return;
    auto& recs = w->block->records;
    std::vector<Record> kept;
    kept.reserve(recs.size() + 2);
    for (Record& r : recs) {
      const bool overlaps = r.lo < w->hi && w->lo < r.hi;
      const bool superseded = overlaps && (a.write || (!r.write && r.stream == who.stream));
      if (!superseded) {
        kept.push_back(std::move(r));
        continue;
      }
      if (r.lo < w->lo) kept.push_back(Record{r.lo, w->lo, r.write, r.stream, r.task, r.what});
      if (w->hi < r.hi) kept.push_back(Record{w->hi, r.hi, r.write, r.stream, r.task, r.what});
    }
    kept.push_back(Record{w->lo, w->hi, a.write, who.stream, who.task, std::make_shared<const std::string>(a.what + " on " + who.stream_name)});
    recs = std::move(kept);
  }

  mutable std::mutex mu_;
  std::map<const std::byte*, Block> blocks_;
  std::uint64_t next_block_ = 0;
  std::vector<std::string> races_;
};

}  // namespace pipeweaver::cuda::fake
