#pragma once
// SEMU: event-driven emulation of a Plan over any CostModel.
//
// Execution model (the action semantics of ir/plan.hpp):
//  * Each rank has one compute stream. Forward/Backward run on it one after another in list
//    order: start = the stream's current time, end = start + latency(stage, smb, strategy).
//  * Wait(t) moves the stream's current time to max(current, arrival(t)); compute after it
//    therefore overlaps with nothing it depends on, and with every transfer it does not.
//  * Send(t) is issued at the stream's current time at its position (after the action before it,
//    so its data exists). Its transfer occupies the directed link (from, to):
//      start(t) = max(issue(t), end of the previous transfer sent on that link),
//      end(t) = arrival(t) = start(t) + cost.transfer_time(bytes(t)).
//    Transfers on a link therefore run in the sender's list order, one at a time; links of
//    different rank pairs and the two directions of a pair are independent.
//  * Recv(t) is posted eagerly (an asynchronous executor enqueues it without blocking), so it
//    never delays a transfer; it must precede the Wait on t in the receiver's list.
//  Because each link has a single sender and each stream a single issuer, these timestamps are
//  fixed by the lists alone; the emulator advances every rank as far as its Waits allow and
//  resumes a rank when the transfer it waits for is sent. A state where no rank can advance and
//  some still have actions left is a deadlock: Error{invalid_plan} naming each stuck rank and
//  its next action.
//
// Memory per rank (the rule of schedule/activation_memory.hpp): static = sum of
// chunk_state_bytes over the chunks the partition puts on the rank. A Forward's
// activation_bytes(stage, smb, strategy) is allocated at its start and freed at the end of the
// last backward part of its stage (the Backward; the backward_weight part when split; the
// backward_input part of a frozen module, which has no weight part); a Forward without a backward
// holds it only while it runs. Events on a rank are ordered by its list, so peak = static + the
// highest running sum (rank_peak_memory). fits = peak <= memory_capacity(setup).
//
// Results: step time = latest end of any compute or transfer; busy = sum of latencies; idle =
// step time - busy. Stage costs go through StageCostCache (pass one to reuse costs across steps).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/activation_memory.hpp"

namespace pipeweaver {

namespace detail {

[[nodiscard]] inline std::string at_action(int rank, std::size_t pos) {
  return "rank " + std::to_string(rank) + ", action " + std::to_string(pos);
}

[[nodiscard]] inline int pass_slot(Pass p) noexcept { return static_cast<int>(p); }

/// Dense index of every (sub-microbatch, chunk, pass) of a plan: no hashing on the hot path.
class StageSlots {
 public:
  StageSlots(const Plan& plan, const ModelSpec& model) {
    offset_.resize(plan.sub_microbatches.size() + 1, 0);
    for (std::size_t s = 0; s < plan.sub_microbatches.size(); ++s) {
      const ModuleId m = plan.sub_microbatches[s].module();
      if (!m.valid() || m.index() >= model.modules.size() || m.index() >= plan.partition.modules.size())
        throw invalid_plan_error("sub-microbatch " + std::to_string(s) + " names module " + std::to_string(m.value()) +
                        " which the model or the partition lacks", {.path = "sub_microbatches/" + std::to_string(s), .expected = "a module index below " + std::to_string(std::min(model.modules.size(), plan.partition.modules.size()))});
      offset_[s + 1] = offset_[s] + static_cast<std::int64_t>(plan.partition.modules[m.index()].chunks.size()) * 4;
    }
  }
  /// -1 when the reference is out of range.
  [[nodiscard]] std::int64_t slot(const Plan& plan, ModuleId m, int chunk, SubMicrobatchId s, Pass p) const noexcept {
    if (!s.valid() || s.index() >= plan.sub_microbatches.size()) return -1;
    if (plan.sub_microbatches[s.index()].module() != m) return -1;
    const std::int64_t chunks = (offset_[s.index() + 1] - offset_[s.index()]) / 4;
    if (chunk < 0 || chunk >= chunks) return -1;
    return offset_[s.index()] + chunk * 4 + pass_slot(p);
  }
  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(offset_.back()); }

 private:
  std::vector<std::int64_t> offset_;
};

enum class EmuOpKind : std::uint8_t { compute, send, recv, wait };

struct EmuOp {
  EmuOpKind kind = EmuOpKind::compute;
  std::int32_t transfer = -1;  ///< send/recv/wait
  std::int64_t slot = -1;      ///< compute
  Nanoseconds latency{0};
  Bytes allocate{0};  ///< forward: activation bytes allocated at its start
};

/// A plan resolved once for the event loop: every action's cost, slot and pairing.
struct EmuProgram {
  EmuProgram(const Plan& plan, const ModelSpec& model) : slots(plan, model) {
    slot_rank.assign(slots.size(), -1);
    slot_pos.assign(slots.size(), -1);
    ops.resize(plan.ranks.size());
  }
  StageSlots slots;
  std::vector<std::int32_t> slot_rank;  ///< per stage slot: the rank that runs it (-1: none)
  std::vector<std::int32_t> slot_pos;   ///< per stage slot: its position in that rank's list
  std::vector<std::vector<EmuOp>> ops;  ///< per rank, parallel to its action list
  std::int64_t action_count = 0;
  std::vector<Nanoseconds> duration;        ///< per transfer
  std::vector<std::int64_t> producer_slot;  ///< per transfer
};

/// Throws Error{input} unless the plan, its partition and the setup agree on the rank count.
inline void check_emulated_ranks(const Plan& plan, const Setup& setup) {
  const int P = plan.rank_count();
  if (P < 1 || P != setup.pipeline_stages || P != plan.partition.ranks)
    throw input_error("plan '" + plan.name + "' has " + std::to_string(P) + " rank lists and a partition over " +
                    std::to_string(plan.partition.ranks) + " ranks, setup '" + setup.name + "' has " +
                    std::to_string(setup.pipeline_stages) + " pipeline stages", {.path = "ranks", .expected = "all three equal and at least 1"});
}

/// Static memory of every rank from the partition, into result.ranks.
inline void add_static_memory(const Plan& plan, const ModelSpec& model, const Setup& setup, EmulationResult& result) {
  const int P = plan.rank_count();
  if (plan.partition.modules.size() > model.modules.size())
    throw invalid_plan_error("the partition places more modules than the model has", {.path = "partition/modules", .expected = "at most " + std::to_string(model.modules.size()) + " modules"});
  for (std::size_t m = 0; m < plan.partition.modules.size(); ++m) {
    const auto& chunks = plan.partition.modules[m].chunks;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const Chunk& ch = chunks[c];
      if (!ch.rank.valid() || ch.rank.value() >= P)
        throw invalid_plan_error("chunk placed on rank " + std::to_string(ch.rank.value()), {.path = "partition/modules/" + std::to_string(m) + "/chunks/" + std::to_string(c), .expected = "a rank below " + std::to_string(P)});
      result.ranks[ch.rank.index()].static_memory +=
          chunk_state_bytes(model, ModuleId{static_cast<ModuleId::rep>(m)}, setup, ch.first_layer, ch.layer_count);
    }
  }
}

/// Resolves the compute action at (r, i): its slot (on its chunk's rank, seen once), latency and
/// activation bytes.
template <class C>
void resolve_compute(const Plan& plan, const ModelSpec& model, StageCostCache<C>& cache, int r, std::size_t i,
                     const StageRef& st, const MemoryStrategy& strategy, std::vector<ShapeId>& shape, EmuProgram& prog) {
  const Action& a = plan.ranks[static_cast<std::size_t>(r)][i];
  auto bad = [&](const std::string& what, const std::string& expected) {
    return invalid_plan_error(action_label(plan, model, a) + ": " + what, {.path = at_action(r, i), .expected = expected});
  };
  const std::int64_t slot = prog.slots.slot(plan, st.module, st.chunk, st.sub_microbatch, st.pass);
  if (slot < 0) throw bad("refers to a sub-microbatch, module or chunk the plan lacks",
                          "a sub-microbatch of this module and a chunk index of its placement");
  const Chunk& ch = plan.partition.chunk(st.module, st.chunk);
  if (ch.rank.value() != r)
    throw bad("runs on rank " + std::to_string(r) + " but the partition places the chunk on rank " + std::to_string(ch.rank.value()),
              "every stage on its chunk's rank");
  const auto su = static_cast<std::size_t>(slot);
  if (prog.slot_rank[su] >= 0)
    throw bad("appears twice (first at " + at_action(prog.slot_rank[su], static_cast<std::size_t>(prog.slot_pos[su])) + ")",
              "every stage exactly once");
  prog.slot_rank[su] = r;
  prog.slot_pos[su] = static_cast<std::int32_t>(i);
  const auto s = st.sub_microbatch.index();
  const SubMicrobatchSpec& smb = plan.sub_microbatches[s];
  if (cache.enabled() && shape[s] < 0) shape[s] = cache.intern(smb);
  const StageCost sc = cache.stage_cost(StageSpec::of(plan.partition, st.module, st.chunk, st.pass), smb,
                                        std::max(shape[s], ShapeId{0}), strategy);
  if (sc.latency < Nanoseconds{0} || sc.activation < Bytes{0})
    throw input_error(action_label(plan, model, a) + ": the cost model returned a negative latency or size", {.path = at_action(r, i), .expected = "non-negative costs"});
  EmuOp& op = prog.ops[static_cast<std::size_t>(r)][i];
  op.kind = EmuOpKind::compute;
  op.slot = slot;
  op.latency = sc.latency;
  op.allocate = sc.activation;
}

/// Resolves the Send, Recv or Wait at (r, i): its transfer exists and has this rank at the right end.
inline void resolve_transfer_action(const Plan& plan, const ModelSpec& model, int r, std::size_t i, EmuOpKind kind,
                                    TransferId t, EmuProgram& prog) {
  const std::size_t T = plan.transfers.size();
  auto bad = [&](const std::string& what, const std::string& expected) {
    return invalid_plan_error(action_label(plan, model, plan.ranks[static_cast<std::size_t>(r)][i]) + ": " + what,
                              {.path = at_action(r, i), .expected = expected});
  };
  if (!t.valid() || t.index() >= T)
    throw bad("names transfer " + std::to_string(t.value()), "a transfer id below " + std::to_string(T));
  const Transfer& tr = plan.transfers[t.index()];
  const int expected_rank = kind == EmuOpKind::send ? tr.from.value() : tr.to.value();
  if (expected_rank != r)
    throw bad("is on rank " + std::to_string(r),
              std::string(kind == EmuOpKind::send ? "the Send on the sender" : "the Recv and Wait on the receiver") +
                  ", rank " + std::to_string(expected_rank));
  EmuOp& op = prog.ops[static_cast<std::size_t>(r)][i];
  op.kind = kind;
  op.transfer = t.value();
}

/// Resolves every action of every rank, in rank and list order.
template <class C>
void resolve_actions(const Plan& plan, const ModelSpec& model, StageCostCache<C>& cache, EmuProgram& prog) {
  std::vector<ShapeId> shape(plan.sub_microbatches.size(), ShapeId{-1});
  for (int r = 0; r < plan.rank_count(); ++r) {
    const auto& list = plan.ranks[static_cast<std::size_t>(r)];
    prog.ops[static_cast<std::size_t>(r)].resize(list.size());
    prog.action_count += static_cast<std::int64_t>(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::visit(
          [&](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, Forward>) {
              resolve_compute(plan, model, cache, r, i, stage_of(x), x.strategy, shape, prog);
            } else if constexpr (std::is_same_v<X, Backward>) {
              if (x.pass == Pass::forward)
                throw invalid_plan_error(action_label(plan, model, list[i]) + ": is a Backward with pass forward",
                                         {.path = at_action(r, i), .expected = "backward, backward_input or backward_weight"});
              resolve_compute(plan, model, cache, r, i, stage_of(x), x.strategy, shape, prog);
            } else if constexpr (std::is_same_v<X, Send>) {
              resolve_transfer_action(plan, model, r, i, EmuOpKind::send, x.transfer, prog);
            } else if constexpr (std::is_same_v<X, Recv>) {
              resolve_transfer_action(plan, model, r, i, EmuOpKind::recv, x.transfer, prog);
            } else {
              resolve_transfer_action(plan, model, r, i, EmuOpKind::wait, x.transfer, prog);
            }
          },
          list[i]);
    }
  }
}

/// The compute actions of one rank's list in order, and the list position of each.
struct ComputeList {
  std::vector<StageRef> stages;
  std::vector<std::size_t> action;
};

[[nodiscard]] inline ComputeList compute_list(const std::vector<Action>& list) {
  ComputeList out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (const auto* f = std::get_if<Forward>(&list[i])) out.stages.push_back(stage_of(*f));
    else if (const auto* b = std::get_if<Backward>(&list[i])) out.stages.push_back(stage_of(*b));
    else continue;
    out.action.push_back(i);
  }
  return out;
}

/// Per rank, its peak memory (static + activations, schedule/activation_memory.hpp). Throws
/// Error{invalid_plan} for a stage whose releasing backward part runs before its forward (the
/// first such stage in sub-microbatch, then chunk order).
inline std::vector<Bytes> emulated_peak_memory(const Plan& plan, const ModelSpec& model, const EmuProgram& prog,
                                               const EmulationResult& result) {
  const std::size_t P = plan.ranks.size();
  std::vector<ComputeList> lists(P);
  std::vector<std::vector<std::size_t>> release(P);
  std::vector<std::int64_t> release_pos(prog.slots.size(), -1);  // per forward slot: its releasing action's position
  for (std::size_t r = 0; r < P; ++r) {
    lists[r] = compute_list(plan.ranks[r]);
    release[r] = activation_release_positions(lists[r].stages);
    for (std::size_t k = 0; k < release[r].size(); ++k)
      if (release[r][k] != no_release)
        release_pos[static_cast<std::size_t>(prog.ops[r][lists[r].action[k]].slot)] = static_cast<std::int64_t>(lists[r].action[release[r][k]]);
  }
  for (std::size_t s = 0; s < plan.sub_microbatches.size(); ++s) {
    const ModuleId m = plan.sub_microbatches[s].module();
    const SubMicrobatchId sid{static_cast<SubMicrobatchId::rep>(s)};
    for (int c = 0; c < plan.partition.chunk_count(m); ++c) {
      const auto f = static_cast<std::size_t>(prog.slots.slot(plan, m, c, sid, Pass::forward));
      if (prog.slot_rank[f] < 0 || release_pos[f] < 0 || release_pos[f] >= prog.slot_pos[f]) continue;
      throw invalid_plan_error(describe_stage(model, StageRef{m, c, sid, Pass::backward}) + " runs before its forward (" +
                                   at_action(prog.slot_rank[f], static_cast<std::size_t>(prog.slot_pos[f])) + ")",
                               {.path = at_action(prog.slot_rank[f], static_cast<std::size_t>(release_pos[f])), .expected = "every backward after its forward"});
    }
  }
  std::vector<Bytes> peak(P);
  for (std::size_t r = 0; r < P; ++r)
    peak[r] = rank_peak_memory(lists[r].stages, release[r], result.ranks[r].static_memory,
                               [&](std::size_t k) { return prog.ops[r][lists[r].action[k]].allocate; });
  return peak;
}

/// Checks every transfer (ranks, size, producer on the sender) and prices it.
template <class C>
void resolve_transfers(const Plan& plan, const ModelSpec& model, const C& cost, EmuProgram& prog) {
  const int P = plan.rank_count();
  const std::size_t T = plan.transfers.size();
  prog.duration.assign(T, Nanoseconds{0});
  prog.producer_slot.assign(T, -1);
  for (std::size_t t = 0; t < T; ++t) {
    const Transfer& tr = plan.transfers[t];
    auto where = [t] { return "transfers/" + std::to_string(t); };
    if (!tr.from.valid() || !tr.to.valid() || tr.from.value() >= P || tr.to.value() >= P || tr.from == tr.to)
      throw invalid_plan_error("transfer from rank " + std::to_string(tr.from.value()) + " to rank " + std::to_string(tr.to.value()), {.path = where(), .expected = "two different ranks below " + std::to_string(P)});
    if (tr.bytes < Bytes{0})
      throw invalid_plan_error("negative message size", {.path = where(), .expected = "bytes >= 0"});
    const auto ps = prog.slots.slot(plan, tr.producer.module, tr.producer.chunk, tr.producer.sub_microbatch, tr.producer.pass);
    if (ps < 0 || prog.slot_rank[static_cast<std::size_t>(ps)] != tr.from.value())
      throw invalid_plan_error("producer " + describe_stage(model, tr.producer) + " is not a stage of rank " + std::to_string(tr.from.value()), {.path = where(), .expected = "a producing stage listed on the sending rank"});
    prog.producer_slot[t] = ps;
    prog.duration[t] = cost.transfer_time(tr.bytes);
    if (prog.duration[t] < Nanoseconds{0})
      throw input_error("the cost model returned a negative transfer time", {.path = where(), .expected = "non-negative costs"});
  }
}

/// Where the event loop left every rank and transfer.
struct EmuRun {
  static constexpr Nanoseconds unknown{-1};
  Nanoseconds step{0};
  std::vector<Nanoseconds> arrival;  ///< per transfer (unknown: never sent)
  std::vector<std::uint8_t> posted;  ///< per transfer: its Recv was posted
  std::vector<std::size_t> pos;      ///< per rank: the next action (the list's size: finished)
  // With EmulateOptions::record_timeline:
  std::vector<std::size_t> rank_base;       ///< per rank: its first action's index in event_start/end
  std::vector<Nanoseconds> event_start, event_end;
  std::vector<std::int32_t> send_pos;       ///< per transfer: its Send's position
};

/// The event loop of the header comment: advances every rank as far as its Waits allow and
/// resumes a rank when the transfer it waits for is sent. Busy time and compute counts go into
/// result.ranks.
inline EmuRun run_events(const Plan& plan, const ModelSpec& model, const EmuProgram& prog, bool record_timeline,
                         EmulationResult& result) {
  const auto P = static_cast<std::size_t>(plan.rank_count());
  const std::size_t T = plan.transfers.size();
  EmuRun run;
  run.arrival.assign(T, EmuRun::unknown);
  run.posted.assign(T, 0);
  run.pos.assign(P, 0);
  run.rank_base.assign(P + 1, 0);
  for (std::size_t r = 0; r < P; ++r) run.rank_base[r + 1] = run.rank_base[r] + prog.ops[r].size();
  if (record_timeline) {
    run.event_start.resize(static_cast<std::size_t>(prog.action_count));
    run.event_end.resize(static_cast<std::size_t>(prog.action_count));
    run.send_pos.assign(T, -1);
  }
  std::vector<std::uint8_t> slot_done(prog.slots.size(), 0);
  std::vector<Nanoseconds> link_free(P * P, Nanoseconds{0});
  std::vector<Nanoseconds> now(P, Nanoseconds{0});  // compute stream time
  std::vector<std::int32_t> blocked_on(P, -1);
  auto fail = [&](std::size_t r, std::size_t i, const std::string& what, const std::string& expected) {
    throw invalid_plan_error(action_label(plan, model, plan.ranks[r][i]) + ": " + what, {.path = at_action(static_cast<int>(r), i), .expected = expected});
  };

  std::vector<std::size_t> ready;
  ready.reserve(P);
  for (std::size_t r = P; r-- > 0;) ready.push_back(r);
  while (!ready.empty()) {
    const std::size_t r = ready.back();
    ready.pop_back();
    const auto& rops = prog.ops[r];
    Nanoseconds t = now[r];
    std::size_t i = run.pos[r];
    for (; i < rops.size(); ++i) {
      const EmuOp& op = rops[i];
      if (op.kind == EmuOpKind::compute) {
        const Nanoseconds end = t + op.latency;
        if (record_timeline) {
          run.event_start[run.rank_base[r] + i] = t;
          run.event_end[run.rank_base[r] + i] = end;
        }
        result.ranks[r].busy += op.latency;
        ++result.ranks[r].compute_actions;
        slot_done[static_cast<std::size_t>(op.slot)] = 1;
        t = end;
      } else if (op.kind == EmuOpKind::send) {
        const auto tu = static_cast<std::size_t>(op.transfer);
        if (run.arrival[tu] != EmuRun::unknown) fail(r, i, "sent twice", "one Send per transfer");
        if (!slot_done[static_cast<std::size_t>(prog.producer_slot[tu])])
          fail(r, i, "sent before its producer ran", "the Send after its producing stage");
        const Transfer& tr = plan.transfers[tu];
        auto& link = link_free[r * P + tr.to.index()];
        const Nanoseconds start = std::max(t, link);
        link = start + prog.duration[tu];
        run.arrival[tu] = link;
        run.step = std::max(run.step, link);
        if (record_timeline) {
          run.event_start[run.rank_base[r] + i] = start;
          run.event_end[run.rank_base[r] + i] = link;
          run.send_pos[tu] = static_cast<std::int32_t>(i);
        }
        if (blocked_on[tr.to.index()] == op.transfer) {
          blocked_on[tr.to.index()] = -1;
          ready.push_back(tr.to.index());
        }
      } else if (op.kind == EmuOpKind::recv) {
        auto& p = run.posted[static_cast<std::size_t>(op.transfer)];
        if (p) fail(r, i, "received twice", "one Recv per transfer");
        p = 1;
      } else {  // wait
        const auto tu = static_cast<std::size_t>(op.transfer);
        if (!run.posted[tu]) fail(r, i, "waits before its Recv is posted", "the Recv earlier in the rank's list");
        if (run.arrival[tu] == EmuRun::unknown) {
          blocked_on[r] = op.transfer;
          break;
        }
        t = std::max(t, run.arrival[tu]);
      }
    }
    now[r] = t;
    run.pos[r] = i;
    run.step = std::max(run.step, t);
  }
  return run;
}

/// Throws Error{invalid_plan} when some rank is stuck (a deadlock, naming each stuck rank and its
/// next action) or some transfer was never sent or never received.
inline void check_run_finished(const Plan& plan, const ModelSpec& model, const EmuProgram& prog, const EmuRun& run) {
  std::string stuck;
  int first_stuck = -1;
  for (int r = 0; r < plan.rank_count(); ++r) {
    const auto ru = static_cast<std::size_t>(r);
    if (run.pos[ru] == prog.ops[ru].size()) continue;
    if (first_stuck < 0) first_stuck = r;
    if (!stuck.empty()) stuck += "; ";
    stuck += at_action(r, run.pos[ru]) + " waits in " + action_label(plan, model, plan.ranks[ru][run.pos[ru]]);
  }
  if (first_stuck >= 0)
    throw invalid_plan_error("deadlock: no rank can make progress: " + stuck, {.path = at_action(first_stuck, run.pos[static_cast<std::size_t>(first_stuck)]), .expected = "every Wait's transfer sent by a rank that is not itself waiting on this one"});
  for (std::size_t t = 0; t < plan.transfers.size(); ++t) {
    if (run.arrival[t] == EmuRun::unknown || !run.posted[t])
      throw invalid_plan_error("transfer " + std::to_string(t) + " (" + describe_stage(model, plan.transfers[t].producer) + ") is " +
                      (run.arrival[t] == EmuRun::unknown ? "never sent" : "never received"), {.path = "transfers/" + std::to_string(t), .expected = "one Send and one Recv per transfer"});
  }
}

/// The timeline: compute events in (rank, list position) order, then transfers in id order.
inline void fill_timeline(const Plan& plan, const EmuProgram& prog, const EmuRun& run, EmulationResult& result) {
  for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
    for (std::size_t i = 0; i < prog.ops[r].size(); ++i) {
      const EmuOp& op = prog.ops[r][i];
      if (op.kind != EmuOpKind::compute) continue;
      TimelineEvent e;
      e.kind = TimelineEvent::Kind::compute;
      e.rank = e.peer = RankId{static_cast<RankId::rep>(r)};
      std::visit(
          [&](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, Forward> || std::is_same_v<X, Backward>) e.stage = stage_of(x);
          },
          plan.ranks[r][i]);
      e.action = static_cast<std::int32_t>(i);
      e.start = run.event_start[run.rank_base[r] + i];
      e.end = run.event_end[run.rank_base[r] + i];
      e.bytes = op.allocate;
      result.timeline.push_back(e);
    }
  }
  for (std::size_t t = 0; t < plan.transfers.size(); ++t) {
    const Transfer& tr = plan.transfers[t];
    TimelineEvent e;
    e.kind = TimelineEvent::Kind::transfer;
    e.rank = tr.from;
    e.peer = tr.to;
    e.stage = tr.producer;
    e.transfer = TransferId{static_cast<TransferId::rep>(t)};
    e.action = run.send_pos[t];
    e.start = run.event_start[run.rank_base[tr.from.index()] + static_cast<std::size_t>(run.send_pos[t])];
    e.end = run.event_end[run.rank_base[tr.from.index()] + static_cast<std::size_t>(run.send_pos[t])];
    e.bytes = tr.bytes;
    result.timeline.push_back(e);
  }
}

}  // namespace detail

/// Emulates `plan` with stage costs from `cache` (which holds the cost model). Throws
/// Error{invalid_plan} on a plan that cannot run (out-of-range references, a stage on a rank the
/// partition does not give it, a duplicate stage, a Send before its producer, a Wait before its
/// Recv, a deadlock) and Error{input} when the plan's rank count differs from the setup's.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] EmulationResult emulate(const Plan& plan, const ModelSpec& model, const Setup& setup,
                                      StageCostCache<C>& cache, const EmulateOptions& options = {}) {
  detail::check_emulated_ranks(plan, setup);
  const auto cache_before = cache.stats();
  EmulationResult result;
  result.ranks.resize(plan.ranks.size());
  result.memory_capacity = memory_capacity(setup);
  detail::add_static_memory(plan, model, setup, result);

  detail::EmuProgram prog(plan, model);
  detail::resolve_actions(plan, model, cache, prog);
  const std::vector<Bytes> peak = detail::emulated_peak_memory(plan, model, prog, result);
  detail::resolve_transfers(plan, model, cache.cost(), prog);
  const detail::EmuRun run = detail::run_events(plan, model, prog, options.record_timeline, result);
  detail::check_run_finished(plan, model, prog, run);

  result.step_time = run.step;
  result.actions = prog.action_count;
  for (std::size_t r = 0; r < result.ranks.size(); ++r) {
    RankStats& rs = result.ranks[r];
    rs.idle = run.step - rs.busy;
    rs.peak_memory = peak[r];
    rs.fits_memory = rs.peak_memory <= result.memory_capacity;
  }
  if (options.record_timeline) detail::fill_timeline(plan, prog, run, result);
  const auto cache_after = cache.stats();
  result.cache = cache_after;
  result.cache.hits -= cache_before.hits;
  result.cache.misses -= cache_before.misses;
  return result;
}

/// Emulates `plan` with stage costs from `cost` directly; stage costs are reused within this
/// step as options.cache says.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] EmulationResult emulate(const Plan& plan, const ModelSpec& model, const Setup& setup, const C& cost,
                                      const EmulateOptions& options = {}) {
  StageCostCache<C> cache(cost, model, options.cache);
  return emulate(plan, model, setup, cache, options);
}

}  // namespace pipeweaver
