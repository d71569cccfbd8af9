// The fault matrix of the host backend: for every action kind (Forward, Backward, Send, Recv,
// Wait) on every rank of a four-rank plan, every fault that kind can suffer (the callback or
// runtime call throws, stalls past the timeout, loses its message, changes its size) stops all
// ranks within the timeout, and the step's error names a rank, an action of that rank and the
// cause. Afterwards no rank thread is left (the process has as many threads as before) and a
// clean step runs. ASan and TSan runs of this file check for leaks and races.
#include <doctest/doctest.h>

#include "backends/fault_fixtures.hpp"
#include "backends/host/plans.hpp"
#include "support/threads.hpp"

#include <pipeweaver/host.hpp>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace pw = pipeweaver;
using namespace std::chrono_literals;
using Fault = pw::host::TransferFault;
using test_faults::contains;
using test_faults::small_batch;

namespace {

constexpr auto timeout = 150ms;

using test_support::thread_count;

enum class Kind { forward, backward, send, recv, wait };
const char* name(Kind k) {
  switch (k) {
    case Kind::forward: return "Forward";
    case Kind::backward: return "Backward";
    case Kind::send: return "Send";
    case Kind::recv: return "Recv";
    case Kind::wait: return "Wait";
  }
  return "?";
}
Kind kind_of(const pw::Action& a) {
  if (std::holds_alternative<pw::Forward>(a)) return Kind::forward;
  if (std::holds_alternative<pw::Backward>(a)) return Kind::backward;
  if (std::holds_alternative<pw::Send>(a)) return Kind::send;
  if (std::holds_alternative<pw::Recv>(a)) return Kind::recv;
  return Kind::wait;
}

/// The first action of `kind` on `rank` with a Send after it on the rank (so that a stall there
/// keeps another rank waiting), or nullopt.
std::optional<std::size_t> pick(const pw::Plan& plan, int rank, Kind kind) {
  const auto& list = plan.ranks[static_cast<std::size_t>(rank)];
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (kind_of(list[i]) != kind) continue;
    for (std::size_t j = i + 1; j < list.size(); ++j)
      if (std::holds_alternative<pw::Send>(list[j])) return i;
  }
  return std::nullopt;
}

/// Callbacks that fail at one stage: throw, or stall for `stall` (a callback cannot be
/// interrupted; the ranks waiting for its rank time out meanwhile).
struct FaultyCallbacks {
  std::optional<pw::StageRef> at{};
  bool stall = false;
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO& io) { hit(s, io); }
  void backward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO& io) { hit(s, io); }
  void hit(const pw::StageSpec& s, const pw::StageIO& io) {
    if (!at || s.module() != at->module || s.chunk() != at->chunk || s.pass() != at->pass || io.sub_microbatch != at->sub_microbatch) return;
    if (stall) {
      std::this_thread::sleep_for(2 * timeout);
      return;
    }
    throw std::runtime_error("injected callback failure");
  }
};

pw::StageRef stage_of(const pw::Action& a) {
  if (const auto* f = std::get_if<pw::Forward>(&a)) return {f->module, f->chunk, f->sub_microbatch, pw::Pass::forward};
  const auto& b = std::get<pw::Backward>(a);
  return {b.module, b.chunk, b.sub_microbatch, b.pass};
}

pw::TransferId transfer_of(const pw::Action& a) {
  if (const auto* s = std::get_if<pw::Send>(&a)) return s->transfer;
  if (const auto* r = std::get_if<pw::Recv>(&a)) return r->transfer;
  return std::get<pw::Wait>(a).transfer;
}

/// The causes a fault of `fault` may be reported with (by the faulty rank or by one waiting for it).
bool expected_cause(const std::string& what, const std::string& fault) {
  if (fault == "throw") return contains(what, "injected");
  if (fault == "drop")
    return contains(what, "did not arrive within") || contains(what, "was expected (a message was lost");
  if (fault == "corrupt size") return contains(what, "bytes (same buffer sizes on both ranks)") || contains(what, "carried");
  return contains(what, "did not arrive within") || contains(what, "found the channel full");  // a stall
}

}  // namespace

TEST_CASE("host fault matrix: every action kind on every rank, every fault it can suffer, stops all ranks within the timeout") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  REQUIRE(plan.rank_count() == 4);
  const std::size_t threads_before = thread_count();
  int cells = 0;
  for (int rank = 0; rank < 4; ++rank) {
    for (Kind kind : {Kind::forward, Kind::backward, Kind::send, Kind::recv, Kind::wait}) {
      const auto at = pick(plan, rank, kind);
      if (!at) continue;  // e.g. no Send on the last rank's list
      const pw::Action& action = plan.ranks[static_cast<std::size_t>(rank)][*at];
      const bool compute = kind == Kind::forward || kind == Kind::backward;
      std::vector<std::string> faults{"throw", "stall"};
      if (kind == Kind::send || kind == Kind::recv) faults.insert(faults.end(), {"drop", "corrupt size"});
      for (const std::string& fault : faults) {
        CAPTURE(rank);
        CAPTURE(name(kind));
        CAPTURE(*at);
        CAPTURE(fault);
        pw::host::Options o;
        o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
        FaultyCallbacks cb;
        if (compute) {
          cb.at = stage_of(action);
          cb.stall = fault == "stall";
        } else {
          Fault f;
          f.transfer = transfer_of(action);
          f.at = kind == Kind::send ? Fault::At::send : kind == Kind::recv ? Fault::At::recv : Fault::At::wait;
          f.kind = fault == "throw" ? Fault::Kind::fail : fault == "stall" ? Fault::Kind::delay : fault == "drop" ? Fault::Kind::drop : Fault::Kind::corrupt_size;
          f.delay = 10 * o.timeout;
          o.fault = f;
        }
        pw::host::HostExecutor ex(o);
        const auto start = std::chrono::steady_clock::now();
        const auto f = test_faults::expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank ");
        INFO(f.what);
        CHECK(contains(f.path, ", action "));
        CHECK(expected_cause(f.what, fault));
        if (fault == "throw") {  // the faulty rank reports it, at the faulty action
          CHECK(f.path.rfind("rank " + std::to_string(rank) + ", action " + std::to_string(*at) + " (" + name(kind), 0) == 0);
        }
        const auto elapsed = std::chrono::steady_clock::now() - start;
        // Within the timeout (plus scheduling slack); a stalled callback cannot be cut short.
        CHECK(elapsed < (compute && fault == "stall" ? 2 * timeout : timeout) + 1500ms);
        for (const auto& out : ex.outcomes()) CHECK((out.ok || out.kind == pw::ErrorKind::cancelled || out.kind == pw::ErrorKind::execution));
        CHECK(thread_count() == threads_before);  // every rank thread joined
        // Nothing the fault left behind disturbs a clean step in the same process.
        pw::host::HostExecutor clean_executor(pw::host::Options{.timeout = std::chrono::milliseconds(2000)});
        FaultyCallbacks clean;
        CHECK_NOTHROW(clean_executor.run(plan, model, clean));
        ++cells;
      }
    }
  }
  CHECK(cells >= 4 * 4);  // at least Forward, Backward, Recv and Wait on every rank
}
