// The rank-program compiler alone (no runtime): on lowered plans of small models and on the
// reference workloads, every operation's ranges lie in the arena; buffers whose lifetimes
// overlap never share a byte (brute force over all pairs); and every access to pool bytes is
// ordered after the earlier accesses it conflicts with, checked by an independent replay that
// runs each queue as its own FIFO and holds back one operation at a time. Every reuse event
// is needed, none connects a queue to itself; a 1F1B plan whose sends complete late keeps
// its pool at the peak of live bytes; broken plans give the executor's errors.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"
#include "support/dip_step.hpp"
#include "support/plan_ir_support.hpp"

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/execute/rank_program.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/lowering.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

constexpr std::size_t npos = static_cast<std::size_t>(-1);

/// One access of an operation to a buffer.
struct Access {
  std::size_t op = 0;
  bool write = false;
};

/// Per buffer, the operations that touch it (in program order) and whether they write it.
std::vector<std::vector<Access>> accesses(const pw::RankProgram& p) {
  std::vector<std::vector<Access>> out(p.buffers.size());
  const auto add = [&](const pw::BufferRange& r, std::size_t op, bool write) {
    if (r.buffer >= 0) out[static_cast<std::size_t>(r.buffer)].push_back(Access{op, write});
  };
  for (std::size_t i = 0; i < p.operations.size(); ++i) {
    const pw::Operation& op = p.operations[i];
    if (op.kind == pw::OpKind::forward || op.kind == pw::OpKind::backward) {
      const pw::StageCall& c = p.calls.at(op.call);
      const bool fwd = op.kind == pw::OpKind::forward;
      add(c.input, i, false);
      add(c.output, i, true);
      add(c.stash, i, fwd);
      add(c.output_grad, i, false);
      add(c.input_grad, i, true);
      continue;
    }
    const bool writes_dst = op.kind != pw::OpKind::wait;  // a wait only makes the data visible
    add(op.dst, i, writes_dst);
    add(op.src, i, false);
  }
  return out;
}

/// Replays a program with every queue as its own FIFO: an operation runs once the operations
/// before it on its queue have run and, for a wait_event, the record_event of its slot, for a
/// wait, the recv of its transfer. One operation may be held back (it never runs, nor does
/// anything ordered after it); one wait_event may be ignored (it waits for nothing).
class QueueReplay {
 public:
  explicit QueueReplay(const pw::RankProgram& p) : queue_of_(p.operations.size()), depends_on_(p.operations.size(), npos), dependents_(p.operations.size()) {
    std::map<pw::QueueRef, std::size_t> index;
    std::map<std::size_t, std::size_t> record_of;    // slot -> position
    std::map<std::int32_t, std::size_t> recv_of;     // transfer -> position
    for (std::size_t i = 0; i < p.operations.size(); ++i) {
      const pw::Operation& op = p.operations[i];
      const std::size_t q = index.emplace(op.queue, index.size()).first->second;
      if (q == queues_.size()) queues_.emplace_back();
      queues_[q].push_back(i);
      queue_of_[i] = q;
      if (op.kind == pw::OpKind::record_event) {
        CHECK_MESSAGE(record_of.emplace(op.event, i).second, "event slot " << op.event << " recorded twice");
      } else if (op.kind == pw::OpKind::recv) {
        recv_of.emplace(op.transfer.value(), i);
      } else if (op.kind == pw::OpKind::wait_event || op.kind == pw::OpKind::wait) {
        const bool event = op.kind == pw::OpKind::wait_event;
        std::size_t d = npos;
        if (event) {
          auto it = record_of.find(op.event);
          if (it != record_of.end()) d = it->second;
          else FAIL_CHECK("wait_event at " << i << " for slot " << op.event << ", which no earlier record_event recorded");
        } else {
          auto it = recv_of.find(op.transfer.value());
          if (it != recv_of.end()) d = it->second;
          else FAIL_CHECK("wait at " << i << " for transfer " << op.transfer.value() << ", which no earlier recv posted");
        }
        if (d != npos) {
          depends_on_[i] = d;
          dependents_[d].push_back(i);
          if (event) CHECK_MESSAGE(p.operations[d].queue != op.queue, "an event from a queue to itself at " << i);
        }
      }
    }
  }

  /// Which operations run when `held` never runs (npos: none held) and `ignored` waits for nothing.
  [[nodiscard]] std::vector<char> run(std::size_t held = npos, std::size_t ignored = npos) const {
    std::vector<char> ran(queue_of_.size(), 0);
    std::vector<std::size_t> head(queues_.size(), 0), work(queues_.size());
    for (std::size_t q = 0; q < queues_.size(); ++q) work[q] = q;
    while (!work.empty()) {
      const std::size_t q = work.back();
      work.pop_back();
      while (head[q] < queues_[q].size()) {
        const std::size_t x = queues_[q][head[q]];
        const std::size_t d = x == ignored ? npos : depends_on_[x];
        if (x == held || (d != npos && !ran[d])) break;
        ran[x] = 1;
        ++head[q];
        for (std::size_t y : dependents_[x]) work.push_back(queue_of_[y]);
      }
    }
    return ran;
  }

 private:
  std::vector<std::vector<std::size_t>> queues_;  // positions per queue, in order
  std::vector<std::size_t> queue_of_, depends_on_;
  std::vector<std::vector<std::size_t>> dependents_;
};

/// The bytes of buffer b in the arena.
std::pair<std::size_t, std::size_t> bytes_of(const pw::RankProgram& p, std::size_t b) {
  return {p.pool.offsets[b], p.pool.offsets[b] + p.buffers[b].bytes};
}
bool share_bytes(const pw::RankProgram& p, std::size_t a, std::size_t b) {
  const auto [a0, a1] = bytes_of(p, a);
  const auto [b0, b1] = bytes_of(p, b);
  return p.buffers[a].bytes > 0 && p.buffers[b].bytes > 0 && a0 < b1 && b0 < a1;
}
bool lifetimes_overlap(const pw::ProgramBuffer& a, const pw::ProgramBuffer& b) { return a.first <= b.last && b.first <= a.last; }

/// Every access to pool bytes must happen after the earlier accesses it conflicts with (same
/// buffer, one of the two writes; or an earlier occupant of shared bytes). Holds back each
/// accessing operation in turn (every stride-th one in a long program: a missing event is a
/// pattern that repeats) and counts the later conflicting accesses that still ran. An eager
/// send has read its data when it returns: nothing waits for it.
struct OrderCheck {
  long violations = 0;
  std::string first;
};
OrderCheck check_order(const pw::RankProgram& p, const QueueReplay& replay, const std::vector<std::vector<Access>>& acc, std::size_t ignored = npos,
                       std::size_t stride = 1) {
  const std::size_t B = p.buffers.size();
  std::vector<std::optional<std::vector<std::size_t>>> later_cache(B);
  const auto later = [&](std::size_t a) -> const std::vector<std::size_t>& {  // buffers that take over a's bytes after it
    if (!later_cache[a]) {
      later_cache[a].emplace();
      for (std::size_t b = 0; b < B; ++b)
        if (b != a && p.buffers[b].used && share_bytes(p, a, b) && p.buffers[b].first > p.buffers[a].last) later_cache[a]->push_back(b);
    }
    return *later_cache[a];
  };
  std::vector<std::vector<std::pair<std::size_t, bool>>> by_op(p.operations.size());  // op -> (buffer, write)
  for (std::size_t b = 0; b < B; ++b)
    for (const Access& x : acc[b]) by_op[x.op].push_back({b, x.write});
  OrderCheck out;
  const auto report = [&](std::size_t x, std::size_t y, std::size_t a, std::size_t b) {
    if (out.violations++ == 0)
      out.first = "operation " + std::to_string(y) + " (buffer " + std::to_string(b) + ") may run before operation " + std::to_string(x) +
                  " (buffer " + std::to_string(a) + ") completes";
  };
  std::size_t accessing = 0;
  for (std::size_t x = 0; x < p.operations.size(); ++x) {
    if (by_op[x].empty() || accessing++ % stride != 0) continue;
    if (p.operations[x].kind == pw::OpKind::send && p.send_reuse == pw::SendReuse::after_send) continue;
    const std::vector<char> ran = replay.run(x, ignored);
    for (const auto& [a, write] : by_op[x]) {
      for (const Access& y : acc[a])
        if (y.op > x && (write || y.write) && ran[y.op]) report(x, y.op, a, a);
      for (std::size_t b : later(a))
        for (const Access& y : acc[b])
          if (ran[y.op]) report(x, y.op, a, b);
    }
  }
  return out;
}

/// Every check of the header comment on one program; the order check holds back at most about
/// `max_held` operations.
void check_program(const pw::RankProgram& p, std::size_t max_held = npos) {
  const auto acc = accesses(p);
  // Lifetimes are the first and last accesses; unused buffers are never touched.
  for (std::size_t b = 0; b < p.buffers.size(); ++b) {
    CAPTURE(b);
    const auto& buf = p.buffers[b];
    REQUIRE(buf.used == !acc[b].empty());
    if (!buf.used) continue;
    CHECK(buf.first == acc[b].front().op);
    CHECK(buf.last == acc[b].back().op);
  }
  // Ranges inside their buffers and the arena.
  const auto inside = [&](const pw::BufferRange& r) {
    if (r.empty()) return true;
    const std::size_t b = static_cast<std::size_t>(r.buffer);
    return b < p.buffers.size() && r.offset + r.bytes <= p.buffers[b].bytes && p.pool.offsets[b] + r.offset + r.bytes <= p.pool.total;
  };
  for (const auto& op : p.operations) CHECK((inside(op.dst) && inside(op.src)));
  for (const auto& c : p.calls) CHECK((inside(c.input) && inside(c.output) && inside(c.stash) && inside(c.output_grad) && inside(c.input_grad)));
  for (std::size_t b = 0; b < p.buffers.size(); ++b)
    if (p.buffers[b].used) CHECK(bytes_of(p, b).second <= p.pool.total);
  // Brute force: buffers alive together never share a byte.
  long clashes = 0;
  for (std::size_t a = 0; a < p.buffers.size(); ++a)
    for (std::size_t b = a + 1; b < p.buffers.size(); ++b)
      if (p.buffers[a].used && p.buffers[b].used && lifetimes_overlap(p.buffers[a], p.buffers[b]) && share_bytes(p, a, b)) ++clashes;
  CHECK(clashes == 0);
  // The replay runs everything when nothing is held back, and the accesses are ordered.
  const QueueReplay replay(p);
  const auto all = replay.run();
  CHECK(std::count(all.begin(), all.end(), 1) == static_cast<long>(p.operations.size()));
  const std::size_t stride = max_held == npos ? 1 : std::max<std::size_t>(1, p.operations.size() / max_held);
  const OrderCheck order = check_order(p, replay, acc, npos, stride);
  CHECK_MESSAGE(order.violations == 0, order.first);
}

/// Options that give every output item its own size and most stages a stash.
pw::ExecutorOptions uneven_sizes() {
  pw::ExecutorOptions o;
  o.sizes.item_output_bytes = [](const pw::StageSpec& s, const pw::SubMicrobatchSpec& m, std::size_t i) {
    return static_cast<std::size_t>(8 + 4 * (i % 3) + 20 * s.chunk() + m.item_tokens()[i] % 200);
  };
  o.sizes.stash_bytes = [](const pw::StageSpec& s, const pw::SubMicrobatchSpec& m) {
    return static_cast<std::size_t>(s.chunk() % 2 == 0 ? 16 * m.item_tokens().size() : 0);
  };
  o.alignment = 64;
  return o;
}

/// The program of every rank of `plan`, or nothing when the plan lacks item origins (which the
/// compiler needs to gather; any other refusal fails the test).
std::optional<std::vector<pw::RankProgram>> programs(const pw::Plan& plan, const pw::ModelSpec& model, const pw::ExecutorOptions& o, pw::SendReuse reuse) {
  std::vector<pw::RankProgram> out;
  for (int r = 0; r < plan.rank_count(); ++r) {
    try {
      out.push_back(pw::compile_rank_program(plan, model, pw::RankId{r}, o, reuse));
    } catch (const pw::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.message()).find("has no item origins") != std::string::npos);
      return std::nullopt;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("rank program: ranges in the arena, disjoint live buffers, cross-queue reuse ordered (random small plans)") {
  int compiled = 0;
  long events = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    pw::ModelSpec model;
    const pw::Plan plan = planir_test::random_plan(seed, &model);
    for (const pw::SendReuse reuse : {pw::SendReuse::after_send, pw::SendReuse::after_completion}) {
      for (const bool uneven : {false, true}) {
        CAPTURE(seed);
        CAPTURE(uneven);
        CAPTURE(reuse == pw::SendReuse::after_send);
        const auto ps = programs(plan, model, uneven ? uneven_sizes() : pw::ExecutorOptions{}, reuse);
        if (!ps) continue;
        for (const auto& p : *ps) {
          CAPTURE(p.rank.value());
          check_program(p);
          events += static_cast<long>(p.event_count);
        }
        ++compiled;
      }
    }
  }
  MESSAGE(compiled << " plan compilations, " << events << " event slots");
  CHECK(compiled >= 60);  // about half the random plans carry item origins
  CHECK(events > 0);
}

TEST_CASE("rank program: tiny-vlm on four ranks, whole and split backwards") {
  const auto model = test_plans::tiny_vlm();
  const auto batch = test_plans::routing_batch(4);
  for (const bool split : {false, true})
    for (const pw::Partition& part : {test_plans::dip_partition(2, 1), test_plans::dip_partition(1, 2), test_plans::chain_partition()}) {
      CAPTURE(part.name);
      CAPTURE(split);
      const auto plan = test_plans::make_plan(model, part, batch, {.split_backward = split});
      for (const pw::SendReuse reuse : {pw::SendReuse::after_send, pw::SendReuse::after_completion}) {
        const auto ps = programs(plan, model, uneven_sizes(), reuse);
        REQUIRE(ps);
        for (const auto& p : *ps) {
          CAPTURE(p.rank.value());
          check_program(p);
          CHECK(p.pool_bytes() < p.unpooled_bytes);
        }
      }
    }
}

TEST_CASE("rank program: the reference workloads") {
  const auto suite = pw::io::read_suite(std::filesystem::path(PIPEWEAVER_WORKLOADS_DIR) / "suite.json");
  REQUIRE(!suite.cases.empty());
  std::uint64_t seed = 3;
  for (const auto& c : suite.cases) {
    CAPTURE(c.name);
    const auto w = pw::io::read_case(c);
    const pw::AnalyticCostModel cost(w.model, w.setup);
    const auto [batch, part, s] = planir_test::dip_step(w, seed);
    const auto g = pw::build_stage_graph(w.model, part, s, {.split_backward = seed % 2 == 0});
    planir_test::Rng rng(seed++);
    const auto plan = pw::lower(w.model, part, s, g, planir_test::random_schedule(g, part, rng, false), cost, "random", w.setup.name);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ps = programs(plan, w.model, {}, pw::SendReuse::after_completion);
    const auto t1 = std::chrono::steady_clock::now();
    REQUIRE(ps);
    std::size_t ops = 0, events = 0;
    for (const auto& p : *ps) {
      CAPTURE(p.rank.value());
      check_program(p, 500);
      ops += p.operations.size();
      events += p.event_count;
    }
    MESSAGE(c.name << ": " << ops << " operations, " << events << " events on " << plan.rank_count() << " ranks, compiled in "
                   << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms");
  }
}

TEST_CASE("rank program: a rank whose work stays on the compute queue gets no event") {
  // One rank: every buffer lives and dies on the compute queue, so reuse needs no event even
  // though the pool shares bytes.
  const auto model = test_plans::tiny_vlm();
  const pw::Partition single{"single", 1, {test_plans::placement({2, 2}, {0, 0}, 1), test_plans::placement({4, 4}, {0, 0}, 1)}};
  const auto plan = test_plans::make_plan(model, single, test_plans::routing_batch(3));
  for (const pw::SendReuse reuse : {pw::SendReuse::after_send, pw::SendReuse::after_completion}) {
    const auto p = pw::compile_rank_program(plan, model, pw::RankId{0}, uneven_sizes(), reuse);
    check_program(p);
    CHECK(p.event_count == 0);
    CHECK(p.pool_bytes() < p.unpooled_bytes);
    for (const auto& op : p.operations) CHECK(op.queue.kind == pw::QueueKind::compute);
  }
}

TEST_CASE("rank program: every reuse event is needed, and eager sends need none after them") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(2, 1), test_plans::routing_batch(2));
  long reuse_waits = 0, send_records_eager = 0, send_records_late = 0;
  for (const pw::SendReuse reuse : {pw::SendReuse::after_send, pw::SendReuse::after_completion}) {
    const auto ps = programs(plan, model, uneven_sizes(), reuse);
    REQUIRE(ps);
    for (const auto& p : *ps) {
      CAPTURE(p.rank.value());
      const auto acc = accesses(p);
      const QueueReplay replay(p);
      REQUIRE(check_order(p, replay, acc).violations == 0);
      for (std::size_t i = 0; i < p.operations.size(); ++i) {
        const auto& op = p.operations[i];
        if (op.kind == pw::OpKind::record_event && op.queue.kind == pw::QueueKind::send)
          ++(reuse == pw::SendReuse::after_send ? send_records_eager : send_records_late);
        // A send's own wait (its data on compute) is not a reuse event; every other wait is.
        if (op.kind != pw::OpKind::wait_event || op.queue.kind == pw::QueueKind::send) continue;
        ++reuse_waits;
        CAPTURE(i);
        CHECK(check_order(p, replay, acc, i).violations > 0);  // without it, some access may run early
      }
    }
  }
  MESSAGE(reuse_waits << " reuse waits checked");
  CHECK(reuse_waits > 0);
  CHECK(send_records_eager == 0);  // an eager send has read its buffer when it returns
  CHECK(send_records_late > 0);    // otherwise the next occupant waits for the send to complete
}

namespace {

using planir_test::one_f_one_b;

/// Most bytes (aligned) of buffers alive at one position.
std::size_t peak_live_bytes(const pw::RankProgram& p, std::size_t alignment) {
  std::size_t peak = 0;
  for (std::size_t pos = 0; pos < p.operations.size(); ++pos) {
    std::size_t live = 0;
    for (const auto& b : p.buffers)
      if (b.used && b.first <= pos && pos <= b.last) live += pw::align_up(b.bytes, alignment);
    peak = std::max(peak, live);
  }
  return peak;
}

}  // namespace

TEST_CASE("rank program: 1F1B with sends that complete later keeps the pool at the peak of live bytes") {
  pw::ModelSpec model;
  model.name = "chain";
  auto bb = planir_test::module("llm", pw::ModuleRole::backbone, "text", 4);
  bb.vocab = 512;
  model.modules = {bb};
  const int P = 4;
  // Every buffer is one 256-byte slot (an output item of 256 bytes, no stash): first-fit over
  // equal slots uses exactly as many slots as buffers are alive at once.
  pw::ExecutorOptions o;
  o.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) { return std::size_t{256}; };
  for (const int M : {8, 16, 32}) {
    CAPTURE(M);
    const pw::Plan plan = one_f_one_b(model, P, M);
    for (int r = 0; r < P; ++r) {
      CAPTURE(r);
      const auto p = pw::compile_rank_program(plan, model, pw::RankId{r}, o, pw::SendReuse::after_completion);
      check_program(p);
      // Truth 1: the peak of live bytes (brute force over positions), reached exactly.
      const std::size_t peak = peak_live_bytes(p, o.alignment);
      CHECK(p.pool_bytes() == peak);
      // Truth 2, 1F1B's bound: rank r holds the inputs of at most min(P - r, M) microbatches in
      // flight, plus what arrives for the next one (its input, posted before its forward, and
      // a gradient from rank r + 1) and the one output or input gradient being sent: at most
      // min(P - r, M) + 3 slots, whatever M.
      CHECK(p.pool_bytes() <= (static_cast<std::size_t>(std::min(P - r, M)) + 3) * 256);
      // The old rule (a sent buffer kept to the end of the step) holds every sent buffer at
      // once at the end: at least their sum, which grows with M.
      std::vector<char> sent(p.buffers.size(), 0);
      std::size_t sent_bytes = 0;
      for (const auto& op : p.operations)
        if (op.kind == pw::OpKind::send && !sent[static_cast<std::size_t>(op.src.buffer)]) {
          sent[static_cast<std::size_t>(op.src.buffer)] = 1;
          sent_bytes += pw::align_up(p.buffers[static_cast<std::size_t>(op.src.buffer)].bytes, o.alignment);
        }
      std::vector<pw::PoolRequest> old(p.buffers.size());
      for (std::size_t b = 0; b < p.buffers.size(); ++b)
        old[b] = {p.buffers[b].used ? p.buffers[b].bytes : 0, p.buffers[b].first, sent[b] ? p.operations.size() : p.buffers[b].last};
      const std::size_t old_total = pw::plan_buffer_pool(old, o.alignment).total;
      CHECK(old_total >= sent_bytes);
      CHECK(sent_bytes == static_cast<std::size_t>((r > 0) + (r < P - 1)) * static_cast<std::size_t>(M) * 256);
      if (r < P - 1 && M >= 16) CHECK(p.pool_bytes() * 2 < old_total);
    }
  }
}

TEST_CASE("rank program: plans it cannot run give the executor's errors") {
  const auto model = test_plans::tiny_vlm();
  const auto good = test_plans::make_plan(model, test_plans::dip_partition(2, 1), test_plans::routing_batch(2));
  const auto compile = [&](const pw::Plan& plan, int rank, const pw::ExecutorOptions& o = {}) {
    return pw::compile_rank_program(plan, model, pw::RankId{rank}, o, pw::SendReuse::after_completion);
  };
  const auto expect = [&](const pw::Plan& plan, int rank, pw::ErrorKind kind, const std::string& message, const std::string& path,
                          const std::string& expected, const pw::ExecutorOptions& o = {}) {
    try {
      (void)compile(plan, rank, o);
      FAIL_CHECK("accepted: " << message);
    } catch (const pw::Error& e) {
      CHECK(e.kind() == kind);
      CHECK(e.message() == message);
      CHECK(e.context().path.rfind(path, 0) == 0);
      CHECK(e.context().expected == expected);
    }
  };
  const auto first = [&](const pw::Plan& plan, int rank, auto pred) {
    const auto& list = plan.ranks[static_cast<std::size_t>(rank)];
    for (std::size_t i = 0; i < list.size(); ++i)
      if (pred(list[i])) return i;
    FAIL("no such action");
    return list.size();
  };
  SUBCASE("the model has another module count") {
    auto other = model;
    other.modules.pop_back();
    try {
      (void)pw::compile_rank_program(good, other, pw::RankId{0}, {}, pw::SendReuse::after_send);
      FAIL_CHECK("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path == "partition");
    }
  }
  SUBCASE("a rank the plan does not have") {
    expect(good, 4, pw::ErrorKind::invalid_plan, "runtime rank 4 but the plan has 4 ranks", "ranks", "a rank of the plan");
  }
  SUBCASE("an alignment that is not a power of two") {
    pw::ExecutorOptions o;
    o.alignment = 48;
    expect(good, 0, pw::ErrorKind::input, "buffer pool alignment 48 is not a power of two", "ExecutorOptions::alignment", "a power of two", o);
  }
  SUBCASE("actions of another rank") {
    auto plan = good;
    std::swap(plan.ranks[0], plan.ranks[1]);
    try {
      (void)compile(plan, 0);
      FAIL_CHECK("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(e.context().path.rfind("rank 0, action 0 (", 0) == 0);
      const std::string m = e.message();
      CHECK((m.find("placed on rank 1") != std::string::npos || m.find("goes from rank") != std::string::npos));
    }
  }
  SUBCASE("a module the model does not have") {
    auto plan = good;
    plan.ranks[0].insert(plan.ranks[0].begin(), pw::Forward{pw::ModuleId{7}, 0, pw::SubMicrobatchId{0}, {}});
    expect(plan, 0, pw::ErrorKind::invalid_plan, "module 7 does not exist", "rank 0, action 0 (Forward module 7 chunk 0 sub-microbatch 0)",
           "a module of the model");
  }
  SUBCASE("a second forward of a stage") {
    auto plan = good;
    const std::size_t f = first(plan, 0, [](const pw::Action& a) { return std::holds_alternative<pw::Forward>(a); });
    plan.ranks[0].insert(plan.ranks[0].begin() + static_cast<std::ptrdiff_t>(f) + 1, plan.ranks[0][f]);
    expect(plan, 0, pw::ErrorKind::invalid_plan, "second Forward of the same stage and sub-microbatch",
           "rank 0, action " + std::to_string(f + 1) + " (Forward ", "one Forward per stage");
  }
  SUBCASE("a backward before its forward") {
    auto plan = good;
    const std::size_t b = first(plan, 0, [](const pw::Action& a) { return std::holds_alternative<pw::Backward>(a); });
    const pw::Backward bw = std::get<pw::Backward>(plan.ranks[0][b]);
    plan.ranks[0].insert(plan.ranks[0].begin(), bw);
    expect(plan, 0, pw::ErrorKind::invalid_plan, "Backward before the Forward of the same stage on this rank", "rank 0, action 0 (Backward ",
           "the Forward first");
  }
  SUBCASE("a received input used before its Wait") {
    auto plan = good;
    const std::size_t w = first(plan, 1, [](const pw::Action& a) { return std::holds_alternative<pw::Wait>(a); });
    const auto t = std::get<pw::Wait>(plan.ranks[1][w]).transfer;
    plan.ranks[1].erase(plan.ranks[1].begin() + static_cast<std::ptrdiff_t>(w));
    try {
      (void)compile(plan, 1);
      FAIL_CHECK("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      const std::string m = e.message();
      const bool unused = m == "transfer " + std::to_string(t.value()) + " is received but never waited for";
      CHECK((unused || m.find("arrives by transfer " + std::to_string(t.value()) + ", which this rank has not waited for yet") != std::string::npos));
      CHECK(e.context().expected == (unused ? "a Wait for every Recv" : "Recv and Wait of the transfer before its use"));
    }
  }
  SUBCASE("a Wait before its Recv, and a second Recv") {
    auto plan = good;
    const std::size_t r = first(plan, 1, [](const pw::Action& a) { return std::holds_alternative<pw::Recv>(a); });
    const auto recv = plan.ranks[1][r];
    const auto t = std::get<pw::Recv>(recv).transfer;
    auto twice = plan;
    twice.ranks[1].insert(twice.ranks[1].begin() + static_cast<std::ptrdiff_t>(r) + 1, recv);
    expect(twice, 1, pw::ErrorKind::invalid_plan, "second Recv of the transfer", "rank 1, action " + std::to_string(r + 1) + " (Recv transfer ",
           "one Recv per transfer");
    plan.ranks[1].insert(plan.ranks[1].begin(), pw::Wait{t});
    expect(plan, 1, pw::ErrorKind::invalid_plan, "Wait before the Recv of the transfer", "rank 1, action 0 (Wait transfer ", "Recv first");
  }
  SUBCASE("a transfer that does not exist") {
    auto plan = good;
    plan.ranks[2].insert(plan.ranks[2].begin(), pw::Send{pw::TransferId{9999}});
    expect(plan, 2, pw::ErrorKind::invalid_plan, "transfer 9999 does not exist", "rank 2, action 0 (Send transfer 9999 (no such transfer))",
           "an index into the plan's transfers");
  }
}
