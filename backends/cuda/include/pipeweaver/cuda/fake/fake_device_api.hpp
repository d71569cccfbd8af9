#pragma once
// FakeDeviceApi: a DeviceApi (device_api.hpp) on host threads, for tests and benchmarks of the
// CUDA backend on machines without a GPU. Device memory is host memory, so stage callbacks can
// check the data they get; streams, events and communicators keep CUDA's and NCCL's rules
// (fake/streams.hpp, fake/comms.hpp): FIFO streams with bounded launch queues, events that
// capture a stream's state when recorded, rendezvous sends, per-communicator issue order,
// groups that join their streams, local revoke and abort. Seeded random delays per stream
// ("chaos") shake the interleavings so that a missing event shows up as wrong data. The
// happens-before checker (fake/happens_before.hpp, FakeOptions::check_races, on by default)
// finds a missing event exactly, without delays: every access of device memory by a copy,
// memset, accumulate, send, receive or declared host function (stage_func: a stage's StageIO
// buffers) must be ordered, by CUDA's and NCCL's rules only, after the conflicting accesses
// before it; a race is a device fault naming both accesses (FakeSystem::races lists them).
//
// A FakeSystem is the machine: its devices, every stream, event and communicator, and the
// fault injections. Each rank uses its own FakeDeviceApi (system, device); like an NCCL group,
// a FakeDeviceApi's group_start/group_end belong to the one thread using it. Destroying the
// system ends every pending wait and joins every stream.
// std-only.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/fake/comms.hpp"
#include "pipeweaver/cuda/fake/happens_before.hpp"
#include "pipeweaver/cuda/fake/streams.hpp"
#include "pipeweaver/execute/stage_io.hpp"

namespace pipeweaver::cuda {

struct FakeOptions {
  int devices = 64;                   ///< devices 0 .. devices-1 exist; activate() on another is infeasible
  std::size_t queue_capacity = 1024;  ///< launch-queue entries per stream (CUDA's is about 1024)
  fake::Chaos chaos{};                ///< random delays before stream tasks
  bool check_races = true;            ///< the happens-before checker (off: no clocks, no shadow)
};

class FakeSystem {
 public:
  explicit FakeSystem(FakeOptions options = {}) : options_(options) {
    for (int d = 0; d < std::max(options_.devices, 0); ++d) devices_.push_back(std::make_unique<fake::DeviceState>(d));
  }
  FakeSystem(const FakeSystem&) = delete;
  FakeSystem& operator=(const FakeSystem&) = delete;
  /// Ends every wait, joins every stream, then frees the device memory still allocated (as a
  /// context's memory goes with the process: a runtime that could not drain its streams after
  /// a fault leaves its arena allocated rather than free memory the device may still write).
  ~FakeSystem() {
    shutdown();
    for (std::byte* p : blocks_) ::operator delete(p, std::align_val_t{block_alignment});
  }

  [[nodiscard]] const FakeOptions& options() const noexcept { return options_; }

  /// Counters, for tests of what the runtime creates and when.
  [[nodiscard]] std::size_t streams_created() const {
    std::lock_guard lk(mu_);
    return streams_.size();
  }
  [[nodiscard]] std::size_t events_created() const {
    std::lock_guard lk(mu_);
    return events_.size();
  }
  [[nodiscard]] std::size_t allocations() const { return allocations_.load(); }
  [[nodiscard]] std::size_t live_allocations() const { return live_.load(); }

  /// An asynchronous error on every live communicator of `device` (what a failed peer or
  /// network makes NCCL report): comm_status says failed; pending operations stay pending.
  void fail_comms(int device, const std::string& why) {
    for (fake::Comm* c : comms_of(device)) {
      std::lock_guard lk(c->group().mu);
      if (c->gone()) continue;
      c->state = fake::Comm::State::failed;
      c->error = why;
      c->group().cv.notify_all();
    }
  }
  /// Per communicator endpoint of `device`, in creation order: its "init", "revoke", "abort".
  [[nodiscard]] std::vector<std::vector<std::string>> comm_logs(int device) const {
    std::vector<std::vector<std::string>> out;
    for (fake::Comm* c : comms_of(device)) {
      std::lock_guard lk(c->group().mu);
      out.push_back(c->log);
    }
    return out;
  }
  /// The races the happens-before checker found, in the order found.
  [[nodiscard]] std::vector<std::string> races() const { return checker_.races(); }
  /// The sticky fault of `device` (a stream task that threw), or empty.
  [[nodiscard]] std::string device_error(int device) const { return devices_.at(static_cast<std::size_t>(device))->error(); }

  /// Ends every pending wait (stream, event, communicator) and joins every stream's worker.
  void shutdown() {
    shutdown_.store(true, std::memory_order_release);
    std::vector<fake::Stream*> streams;
    std::vector<fake::CommGroup*> groups;
    {
      std::lock_guard lk(mu_);
      for (auto& s : streams_) streams.push_back(s.get());
      for (auto& [id, g] : groups_) groups.push_back(g.get());
    }
    for (fake::CommGroup* g : groups) {
      std::lock_guard lk(g->mu);
      g->cv.notify_all();
    }
    for (fake::Stream* s : streams) s->wake();
    for (fake::Stream* s : streams) s->join();
  }

 private:
  friend class FakeDeviceApi;
  [[nodiscard]] std::vector<fake::Comm*> comms_of(int device) const {
    std::lock_guard lk(mu_);
    std::vector<fake::Comm*> out;
    for (const auto& c : comms_)
      if (c->device() == device) out.push_back(c.get());
    return out;
  }

  [[nodiscard]] fake::RaceChecker* checker() noexcept { return options_.check_races ? &checker_ : nullptr; }

  FakeOptions options_;
  fake::RaceChecker checker_;  // declared before the streams: they use it until joined
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<fake::DeviceState>> devices_;
  std::vector<std::unique_ptr<fake::Stream>> streams_;
  std::vector<std::unique_ptr<fake::Event>> events_;
  std::set<UniqueId> ids_;  // issued by unique_id()
  std::map<UniqueId, std::unique_ptr<fake::CommGroup>> groups_;
  std::vector<std::unique_ptr<fake::Comm>> comms_;  // never freed before the system: use after abort is caught
  std::uint64_t next_id_ = 0;
  static constexpr std::size_t block_alignment = 256;
  std::set<std::byte*> blocks_;  // live device allocations (guarded by mu_)
  std::atomic<std::size_t> allocations_{0}, live_{0};
  std::atomic<bool> shutdown_{false};
};

class FakeDeviceApi {
 public:
  using stream = fake::Stream*;
  using event = fake::Event*;
  using comm = fake::Comm*;

  FakeDeviceApi(FakeSystem& system, int device) : sys_(&system), device_(device) {}

  [[nodiscard]] int device() const noexcept { return device_; }
  [[nodiscard]] FakeSystem& system() const noexcept { return *sys_; }

  void activate() const {
    if (device_ < 0 || device_ >= sys_->options_.devices)
      throw infeasible_error("no usable CUDA device: the fake system has " + std::to_string(sys_->options_.devices) +
                                 " devices and device " + std::to_string(device_) + " was asked for",
                             {.expected = "a device index below the device count"});
  }

  // ---- streams and events -----------------------------------------------------------------
  stream stream_create(bool high_priority) {
    std::lock_guard lk(sys_->mu_);
    const std::uint64_t index = sys_->streams_.size();
    const auto& chaos = sys_->options_.chaos;
    const bool slow = chaos.slow_device == device_ && chaos.slow_high_priority == high_priority && chaos.slow_delay.count() > 0;
    sys_->streams_.push_back(std::make_unique<fake::Stream>(device_state(), sys_->options_.queue_capacity, chaos, index, sys_->shutdown_, slow,
                                                            sys_->checker(), high_priority));
    return sys_->streams_.back().get();
  }
  /// The worker ends once its queue drains; the system joins it.
  void stream_destroy(stream) noexcept {}
  void* native(stream s) const noexcept { return s; }

  event event_create() {
    std::lock_guard lk(sys_->mu_);
    sys_->events_.push_back(std::make_unique<fake::Event>());
    return sys_->events_.back().get();
  }
  void event_destroy(event) noexcept {}
  void event_record(event e, stream s) { e->record(*s); }
  /// cudaEventQuery: throws the device's sticky fault, like CUDA.
  /// A done event orders the host's later enqueues on this device after its work.
  bool event_done(event e) {
    if (const std::string err = device_state().error(); !err.empty())
      throw execution_error("device fault on fake device " + std::to_string(device_) + ": " + err,
                            {.expected = "stream work that does not fail"});
    const fake::Event::State st = e->snapshot();
    if (st.stream != nullptr && !st.stream->reached(st.seq)) return false;
    if (st.clock) device_state().host_join(st.stream->slot_clock(*st.clock));
    return true;
  }
  void stream_wait(stream s, event e) {
    fake::Event::State st = e->snapshot();
    if (st.stream == nullptr || st.stream == s) return;  // never recorded: an empty wait; same stream: FIFO order
    s->enqueue([src = st.stream, seq = st.seq, slot = std::move(st.clock)] {
      src->wait_reached(seq);
      if (slot) fake::Stream::current()->join_clock(src->slot_clock(*slot));
    });
  }

  // ---- memory -----------------------------------------------------------------------------
  std::byte* alloc(std::size_t n) {
    auto* p = static_cast<std::byte*>(::operator new(std::max<std::size_t>(n, 1), std::align_val_t{FakeSystem::block_alignment}));
    // cudaMalloc does not clear memory: fresh blocks hold garbage, never what an earlier block
    // at the same address held (so that a read before the first write shows).
    std::memset(p, 0xa5, n);
    if (auto* c = sys_->checker()) c->allocated(p, n);
    std::lock_guard lk(sys_->mu_);
    sys_->blocks_.insert(p);
    ++sys_->allocations_;
    ++sys_->live_;
    return p;
  }
  void release(std::byte* p) noexcept {
    if (p == nullptr) return;
    {
      std::lock_guard lk(sys_->mu_);
      if (sys_->blocks_.erase(p) == 0) return;  // not ours: like cudaFree of a foreign pointer, an error we ignore
      --sys_->live_;
    }
    if (auto* c = sys_->checker()) c->released(p);
    ::operator delete(p, std::align_val_t{FakeSystem::block_alignment});
  }
  void copy_async(std::byte* dst, const std::byte* src, std::size_t n, stream s) {
    if (n > 0)
      s->enqueue([=] {
        fake::Stream::current()->access({{src, n, false, "a copy (source)"}, {dst, n, true, "a copy (destination)"}});
        std::memmove(dst, src, n);
      });
  }
  void zero_async(std::byte* dst, std::size_t n, stream s) {
    if (n > 0)
      s->enqueue([=] {
        fake::Stream::current()->access({{dst, n, true, "a memset"}});
        std::memset(dst, 0, n);
      });
  }
  void accumulate_f32_async(std::byte* dst, const std::byte* src, std::size_t n, stream s) {
    if (n == 0) return;
    s->enqueue([=] {
      fake::Stream::current()->access({{src, n, false, "an accumulate (source)"}, {dst, n, true, "an accumulate (destination)"}});
      for (std::size_t i = 0; i + sizeof(float) <= n; i += sizeof(float)) {
        float a, b;
        std::memcpy(&a, dst + i, sizeof a);
        std::memcpy(&b, src + i, sizeof b);
        a += b;
        std::memcpy(dst + i, &a, sizeof a);
      }
    });
  }
  /// A host function on the stream (cudaLaunchHostFunc): stage callbacks of tests enqueue
  /// their work with it so that it runs in stream order on "device" memory.
  void host_func(stream s, std::function<void()> f) { s->enqueue(std::move(f)); }
  /// The same through a native handle (StageIO::queue).
  static void host_func(void* native_stream, std::function<void()> f) { static_cast<stream>(native_stream)->enqueue(std::move(f)); }
  /// A host function that reads and writes device memory as `accesses` declare: the checker
  /// sees them when the function runs, before it touches memory (a race: the function does
  /// not run, the device faults).
  static void host_func(void* native_stream, std::function<void()> f, std::vector<fake::Access> accesses) {
    static_cast<stream>(native_stream)->enqueue([f = std::move(f), a = std::move(accesses)] {
      fake::Stream::current()->access(a);
      f();
    });
  }
  /// A stage callback's work on StageIO::queue, with its buffers' accesses as the executor's
  /// promises define them: a forward reads `input` and writes `output` and `stash`; a
  /// backward reads `input` and `output_grad` and writes `stash` and `input_grad`.
  static void stage_func(const StageIO& io, bool forward, const std::string& what, std::function<void()> f) {
    auto span_of = [](auto sp, bool write, const char* name, const std::string& w) {
      return fake::Access{reinterpret_cast<const std::byte*>(sp.data()), sp.size(), write, w + " " + name};
    };
    std::vector<fake::Access> a{span_of(io.input, false, "input", what), span_of(io.stash, true, "stash", what)};
    if (forward) {
      a.push_back(span_of(io.output, true, "output", what));
    } else {
      a.push_back(span_of(io.output_grad, false, "output_grad", what));
      a.push_back(span_of(io.input_grad, true, "input_grad", what));
    }
    host_func(io.queue, std::move(f), std::move(a));
  }
  /// A kernel that keeps the stream busy for `d`.
  void spin(std::chrono::nanoseconds d, stream s) {
    s->enqueue([d] { std::this_thread::sleep_for(d); });
  }

  // ---- communicators ------------------------------------------------------------------------
  UniqueId unique_id() {
    std::lock_guard lk(sys_->mu_);
    UniqueId id{};
    const char magic[] = "pipeweaver-fake-id";
    std::memcpy(id.data(), magic, sizeof magic);
    const std::uint64_t n = ++sys_->next_id_;
    std::memcpy(id.data() + sizeof magic, &n, sizeof n);
    sys_->ids_.insert(id);
    return id;
  }
  /// Non-blocking: the endpoint is in_progress until every rank has joined.
  comm comm_init(const UniqueId& id, int ranks, int rank) {
    std::lock_guard lk(sys_->mu_);
    if (!sys_->ids_.contains(id))
      throw input_error("comm_init with an id that unique_id() never made", {.expected = "an id from unique_id()"});
    auto& g = sys_->groups_[id];
    if (!g) g = std::make_unique<fake::CommGroup>(ranks, sys_->shutdown_, sys_->checker());
    std::lock_guard glk(g->mu);
    if (ranks != g->size() || rank < 0 || rank >= ranks || g->taken(rank))
      throw execution_error("comm_init(ranks " + std::to_string(ranks) + ", rank " + std::to_string(rank) + ") does not fit a communicator of " +
                                std::to_string(g->size()) + " ranks" + (rank >= 0 && rank < g->size() && g->taken(rank) ? " (the rank joined already)" : ""),
                            {.expected = "every rank once, with the same rank count"});
    sys_->comms_.push_back(std::make_unique<fake::Comm>(*g, rank, device_));
    g->join(*sys_->comms_.back());
    return sys_->comms_.back().get();
  }
  /// ncclCommGetAsyncError. After a device fault it reports the fault (as NCCL reports an
  /// unhandled CUDA error): nothing of the communicator runs on that device any more.
  CommStatus comm_status(comm c) const {
    const std::string fault = sys_->devices_.at(static_cast<std::size_t>(c->device()))->error();
    std::lock_guard lk(c->group().mu);
    if (!fault.empty() && c->state != fake::Comm::State::aborted) return {CommState::failed, "unhandled device error: " + fault};
    switch (c->state) {
      case fake::Comm::State::joining: return {CommState::in_progress, {}};
      case fake::Comm::State::ready: return {CommState::ready, {}};
      case fake::Comm::State::revoked: return {c->finished >= c->issued ? CommState::ready : CommState::in_progress, {}};
      case fake::Comm::State::failed: return {CommState::failed, c->error};
      case fake::Comm::State::aborted: break;
    }
    throw execution_error("comm_status on a communicator after comm_abort (it is freed)", {.expected = "no use of an aborted communicator"});
  }
  void group_start() { ++group_depth_; }
  void group_end() {
    if (group_depth_ == 0) throw input_error("group_end without group_start", {.expected = "group_start first"});
    if (--group_depth_ > 0 || pending_.empty()) return;
    std::vector<Pending> ops = std::move(pending_);
    pending_.clear();
    launch(std::move(ops));
  }
  void send(const std::byte* src, std::size_t n, int peer, comm c, stream s) { add(c, s, fake::P2pOp{true, src, nullptr, n, peer, false}); }
  void recv(std::byte* dst, std::size_t n, int peer, comm c, stream s) { add(c, s, fake::P2pOp{false, nullptr, dst, n, peer, false}); }
  void comm_revoke(comm c) noexcept {
    std::lock_guard lk(c->group().mu);
    c->log.push_back("revoke");
    if (c->state != fake::Comm::State::aborted) c->state = fake::Comm::State::revoked;
    c->group().cv.notify_all();
  }
  void comm_abort(comm c) noexcept {
    std::lock_guard lk(c->group().mu);
    c->log.push_back("abort");
    c->state = fake::Comm::State::aborted;
    c->group().cv.notify_all();
  }

 private:
  struct Pending {
    comm c = nullptr;
    stream s = nullptr;
    fake::P2pOp op{};
  };
  fake::DeviceState& device_state() const {
    if (device_ < 0 || static_cast<std::size_t>(device_) >= sys_->devices_.size())
      throw infeasible_error("fake device " + std::to_string(device_) + " does not exist", {.expected = "activate() first"});
    return *sys_->devices_[static_cast<std::size_t>(device_)];
  }
  void add(comm c, stream s, fake::P2pOp op) {
    {
      std::lock_guard lk(c->group().mu);
      if (c->gone())
        throw execution_error(std::string("point-to-point operation on a ") + (c->state == fake::Comm::State::aborted ? "aborted" : "revoked") + " communicator",
                              {.expected = "no use of a revoked or aborted communicator"});
      if (op.peer < 0 || op.peer >= c->group().size())
        throw input_error("peer " + std::to_string(op.peer) + " outside a communicator of " + std::to_string(c->group().size()) + " ranks",
                          {.expected = "a peer rank of the communicator"});
    }
    pending_.push_back(Pending{c, s, op});
    if (group_depth_ == 0) {
      std::vector<Pending> ops = std::move(pending_);
      pending_.clear();
      launch(std::move(ops));
    }
  }
  // One launch over the streams its operations use, after every earlier launch of the
  // communicator (the ticket).
  void launch(std::vector<Pending> ops) {
    comm c = ops.front().c;
    std::vector<stream> streams;
    std::vector<fake::P2pOp> p2p;
    for (const Pending& p : ops) {
      if (p.c != c)
        throw input_error("a group over several communicators (the fake runs groups on one communicator)",
                          {.expected = "one communicator per group"});
      if (std::find(streams.begin(), streams.end(), p.s) == streams.end()) streams.push_back(p.s);
      p2p.push_back(p.op);
    }
    std::uint64_t ticket = 0;
    {
      std::lock_guard lk(c->group().mu);
      ticket = c->issued++;
    }
    auto l = std::make_shared<fake::Launch>(*c, ticket, std::move(p2p), static_cast<int>(streams.size()));
    for (stream s : streams) s->enqueue([l] { l->arrive(); });
  }

  FakeSystem* sys_;
  int device_;
  int group_depth_ = 0;
  std::vector<Pending> pending_;
};

static_assert(DeviceApi<FakeDeviceApi>);

}  // namespace pipeweaver::cuda
