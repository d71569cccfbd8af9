#pragma once
// SEMU: event-driven emulation of a Plan over any CostModel.
//
// Execution model (the action semantics of schedule/plan.hpp):
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
// Memory per rank: static = sum of chunk_state_bytes over the chunks the partition puts on the
// rank. A Forward's activation_bytes(stage, smb, strategy) is allocated at its start and freed at
// the end of its Backward (of its backward_weight part when the backward is split); a Forward
// without a backward (frozen module) holds it only while it runs. Events on a rank are ordered
// by its list, so peak = static + the highest running sum. fits = peak <= memory_capacity(setup).
//
// Results: step time = latest end of any compute or transfer; busy = sum of latencies; idle =
// step time - busy. Stage costs go through StageCostCache (pass one to reuse costs across steps).
#include <algorithm>
#include <cstddef>
#include <cstdint>
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
  bool transient = false;      ///< forward whose activations die with it (no backward)
  std::int32_t transfer = -1;  ///< send/recv/wait
  std::int64_t slot = -1;      ///< compute
  Nanoseconds latency{0};
  Bytes allocate{0};  ///< forward: activation bytes allocated at its start
  Bytes release{0};   ///< backward (or backward_weight): its forward's bytes freed at its end
};

}  // namespace detail

/// Emulates `plan` with stage costs from `cache` (which holds the cost model). Throws
/// Error{invalid_plan} on a plan that cannot run (out-of-range references, a stage on a rank the
/// partition does not give it, a duplicate stage, a Send before its producer, a Wait before its
/// Recv, a deadlock) and Error{input} when the plan's rank count differs from the setup's.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] EmulationResult emulate(const Plan& plan, const ModelSpec& model, const Setup& setup,
                                      StageCostCache<C>& cache, const EmulateOptions& options = {}) {
  using detail::at_action;
  using detail::EmuOp;
  using detail::EmuOpKind;
  const C& cost = cache.cost();
  const int P = plan.rank_count();
  if (P < 1 || P != setup.pipeline_stages || P != plan.partition.ranks)
    throw input_error("plan '" + plan.name + "' has " + std::to_string(P) + " rank lists and a partition over " +
                    std::to_string(plan.partition.ranks) + " ranks, setup '" + setup.name + "' has " +
                    std::to_string(setup.pipeline_stages) + " pipeline stages", {.path = "ranks", .expected = "all three equal and at least 1"});
  const auto cache_before = cache.stats();

  EmulationResult result;
  result.ranks.resize(static_cast<std::size_t>(P));
  result.memory_capacity = memory_capacity(setup);

  // --- static memory from the partition ---
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

  // --- resolve every action once: costs, slots, pairing ---
  const detail::StageSlots slots(plan, model);
  std::vector<std::int32_t> slot_rank(slots.size(), -1);
  std::vector<std::int32_t> slot_pos(slots.size(), -1);
  std::vector<ShapeId> shape(plan.sub_microbatches.size(), ShapeId{-1});
  const std::size_t T = plan.transfers.size();
  std::vector<std::vector<EmuOp>> ops(static_cast<std::size_t>(P));
  std::int64_t action_count = 0;

  for (int r = 0; r < P; ++r) {
    const auto& list = plan.ranks[static_cast<std::size_t>(r)];
    auto& rops = ops[static_cast<std::size_t>(r)];
    rops.resize(list.size());
    action_count += static_cast<std::int64_t>(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
      EmuOp& op = rops[i];
      const Action& a = list[i];
      auto bad = [&](const std::string& what, const std::string& expected) {
        return invalid_plan_error(action_label(plan, model, a) + ": " + what, {.path = at_action(r, i), .expected = expected});
      };
      auto compute = [&](ModuleId m, int chunk, SubMicrobatchId s, Pass pass, const MemoryStrategy& strategy) {
        const std::int64_t slot = slots.slot(plan, m, chunk, s, pass);
        if (slot < 0) throw bad("refers to a sub-microbatch, module or chunk the plan lacks",
                                "a sub-microbatch of this module and a chunk index of its placement");
        const Chunk& ch = plan.partition.chunk(m, chunk);
        if (ch.rank.value() != r)
          throw bad("runs on rank " + std::to_string(r) + " but the partition places the chunk on rank " +
                        std::to_string(ch.rank.value()),
                    "every stage on its chunk's rank");
        auto& sr = slot_rank[static_cast<std::size_t>(slot)];
        if (sr >= 0) throw bad("appears twice (first at " + at_action(sr, static_cast<std::size_t>(slot_pos[static_cast<std::size_t>(slot)])) + ")",
                               "every stage exactly once");
        sr = r;
        slot_pos[static_cast<std::size_t>(slot)] = static_cast<std::int32_t>(i);
        const SubMicrobatchSpec& smb = plan.sub_microbatches[s.index()];
        if (cache.enabled() && shape[s.index()] < 0) shape[s.index()] = cache.intern(smb);
        const StageCost sc = cache.stage_cost(StageSpec::of(plan.partition, m, chunk, pass), smb,
                                              std::max(shape[s.index()], ShapeId{0}), strategy);
        if (sc.latency < Nanoseconds{0} || sc.activation < Bytes{0})
          throw input_error(action_label(plan, model, a) + ": the cost model returned a negative latency or size", {.path = at_action(r, i), .expected = "non-negative costs"});
        op.kind = EmuOpKind::compute;
        op.slot = slot;
        op.latency = sc.latency;
        op.allocate = sc.activation;
      };
      auto transfer = [&](EmuOpKind kind, TransferId t) {
        if (!t.valid() || t.index() >= T)
          throw bad("names transfer " + std::to_string(t.value()), "a transfer id below " + std::to_string(T));
        const Transfer& tr = plan.transfers[t.index()];
        const int expected_rank = kind == EmuOpKind::send ? tr.from.value() : tr.to.value();
        if (expected_rank != r)
          throw bad("is on rank " + std::to_string(r),
                    std::string(kind == EmuOpKind::send ? "the Send on the sender" : "the Recv and Wait on the receiver") +
                        ", rank " + std::to_string(expected_rank));
        op.kind = kind;
        op.transfer = t.value();
      };
      std::visit(
          [&](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, Forward>) compute(x.module, x.chunk, x.sub_microbatch, Pass::forward, x.strategy);
            else if constexpr (std::is_same_v<X, Backward>) {
              if (x.pass == Pass::forward) throw bad("is a Backward with pass forward", "backward, backward_input or backward_weight");
              compute(x.module, x.chunk, x.sub_microbatch, x.pass, x.strategy);
            } else if constexpr (std::is_same_v<X, Send>) transfer(EmuOpKind::send, x.transfer);
            else if constexpr (std::is_same_v<X, Recv>) transfer(EmuOpKind::recv, x.transfer);
            else transfer(EmuOpKind::wait, x.transfer);
          },
          a);
    }
  }

  // Pair each forward with the action that frees its activations.
  for (std::size_t s = 0; s < plan.sub_microbatches.size(); ++s) {
    const ModuleId m = plan.sub_microbatches[s].module();
    const int chunks = plan.partition.chunk_count(m);
    for (int c = 0; c < chunks; ++c) {
      const SubMicrobatchId sid{static_cast<SubMicrobatchId::rep>(s)};
      const auto f = static_cast<std::size_t>(slots.slot(plan, m, c, sid, Pass::forward));
      if (slot_rank[f] < 0) continue;
      EmuOp& fwd = ops[static_cast<std::size_t>(slot_rank[f])][static_cast<std::size_t>(slot_pos[f])];
      auto release = static_cast<std::size_t>(slots.slot(plan, m, c, sid, Pass::backward));
      if (slot_rank[release] < 0) release = static_cast<std::size_t>(slots.slot(plan, m, c, sid, Pass::backward_weight));
      if (slot_rank[release] < 0) {
        fwd.transient = true;
        continue;
      }
      if (slot_pos[release] < slot_pos[f])
        throw invalid_plan_error(describe_stage(model, StageRef{m, c, sid, Pass::backward}) + " runs before its forward (" +
                        at_action(slot_rank[f], static_cast<std::size_t>(slot_pos[f])) + ")", {.path = at_action(slot_rank[release], static_cast<std::size_t>(slot_pos[release])), .expected = "every backward after its forward"});
      ops[static_cast<std::size_t>(slot_rank[release])][static_cast<std::size_t>(slot_pos[release])].release = fwd.allocate;
    }
  }

  // Transfers: their producer must be a stage of the plan on the sender.
  std::vector<Nanoseconds> duration(T);
  std::vector<std::int64_t> producer_slot(T, -1);
  for (std::size_t t = 0; t < T; ++t) {
    const Transfer& tr = plan.transfers[t];
    auto where = [t] { return "transfers/" + std::to_string(t); };
    if (!tr.from.valid() || !tr.to.valid() || tr.from.value() >= P || tr.to.value() >= P || tr.from == tr.to)
      throw invalid_plan_error("transfer from rank " + std::to_string(tr.from.value()) + " to rank " + std::to_string(tr.to.value()), {.path = where(), .expected = "two different ranks below " + std::to_string(P)});
    if (tr.bytes < Bytes{0})
      throw invalid_plan_error("negative message size", {.path = where(), .expected = "bytes >= 0"});
    const auto ps = slots.slot(plan, tr.producer.module, tr.producer.chunk, tr.producer.sub_microbatch, tr.producer.pass);
    if (ps < 0 || slot_rank[static_cast<std::size_t>(ps)] != tr.from.value())
      throw invalid_plan_error("producer " + describe_stage(model, tr.producer) + " is not a stage of rank " + std::to_string(tr.from.value()), {.path = where(), .expected = "a producing stage listed on the sending rank"});
    producer_slot[t] = ps;
    duration[t] = cost.transfer_time(tr.bytes);
    if (duration[t] < Nanoseconds{0})
      throw input_error("the cost model returned a negative transfer time", {.path = where(), .expected = "non-negative costs"});
  }

  // --- the event loop ---
  constexpr Nanoseconds unknown{-1};
  std::vector<Nanoseconds> arrival(T, unknown);
  std::vector<std::uint8_t> posted(T, 0);
  std::vector<std::uint8_t> slot_done(slots.size(), 0);
  std::vector<Nanoseconds> link_free(static_cast<std::size_t>(P) * static_cast<std::size_t>(P), Nanoseconds{0});
  std::vector<Nanoseconds> now(static_cast<std::size_t>(P), Nanoseconds{0});  // compute stream time
  std::vector<std::size_t> pos(static_cast<std::size_t>(P), 0);
  std::vector<std::int32_t> blocked_on(static_cast<std::size_t>(P), -1);
  std::vector<Bytes> live(static_cast<std::size_t>(P), Bytes{0});
  std::vector<Bytes> peak(static_cast<std::size_t>(P), Bytes{0});
  std::vector<Nanoseconds> event_start, event_end;
  std::vector<std::int32_t> send_pos;
  if (options.record_timeline) {
    event_start.resize(static_cast<std::size_t>(action_count));
    event_end.resize(static_cast<std::size_t>(action_count));
    send_pos.assign(T, -1);
  }
  std::vector<std::size_t> rank_base(static_cast<std::size_t>(P) + 1, 0);
  for (int r = 0; r < P; ++r) rank_base[static_cast<std::size_t>(r) + 1] = rank_base[static_cast<std::size_t>(r)] + ops[static_cast<std::size_t>(r)].size();
  Nanoseconds step{0};

  std::vector<int> ready;
  ready.reserve(static_cast<std::size_t>(P));
  for (int r = P - 1; r >= 0; --r) ready.push_back(r);
  while (!ready.empty()) {
    const int r = ready.back();
    ready.pop_back();
    const auto ru = static_cast<std::size_t>(r);
    auto& rops = ops[ru];
    Nanoseconds t = now[ru];
    std::size_t i = pos[ru];
    for (; i < rops.size(); ++i) {
      const EmuOp& op = rops[i];
      if (op.kind == EmuOpKind::compute) {
        const Nanoseconds end = t + op.latency;
        if (op.allocate > Bytes{0}) {
          live[ru] += op.allocate;
          peak[ru] = std::max(peak[ru], live[ru]);
          if (op.transient) live[ru] -= op.allocate;
        }
        live[ru] -= op.release;
        if (options.record_timeline) {
          event_start[rank_base[ru] + i] = t;
          event_end[rank_base[ru] + i] = end;
        }
        result.ranks[ru].busy += op.latency;
        ++result.ranks[ru].compute_actions;
        slot_done[static_cast<std::size_t>(op.slot)] = 1;
        t = end;
      } else if (op.kind == EmuOpKind::send) {
        const auto tu = static_cast<std::size_t>(op.transfer);
        if (arrival[tu] != unknown)
          throw invalid_plan_error(action_label(plan, model, plan.ranks[ru][i]) + ": sent twice", {.path = at_action(r, i), .expected = "one Send per transfer"});
        if (!slot_done[static_cast<std::size_t>(producer_slot[tu])])
          throw invalid_plan_error(action_label(plan, model, plan.ranks[ru][i]) + ": sent before its producer ran", {.path = at_action(r, i), .expected = "the Send after its producing stage"});
        const Transfer& tr = plan.transfers[tu];
        auto& link = link_free[ru * static_cast<std::size_t>(P) + tr.to.index()];
        const Nanoseconds start = std::max(t, link);
        link = start + duration[tu];
        arrival[tu] = link;
        step = std::max(step, link);
        if (options.record_timeline) {
          event_start[rank_base[ru] + i] = start;
          event_end[rank_base[ru] + i] = link;
          send_pos[tu] = static_cast<std::int32_t>(i);
        }
        if (blocked_on[tr.to.index()] == op.transfer) {
          blocked_on[tr.to.index()] = -1;
          ready.push_back(tr.to.value());
        }
      } else if (op.kind == EmuOpKind::recv) {
        auto& p = posted[static_cast<std::size_t>(op.transfer)];
        if (p)
          throw invalid_plan_error(action_label(plan, model, plan.ranks[ru][i]) + ": received twice", {.path = at_action(r, i), .expected = "one Recv per transfer"});
        p = 1;
      } else {  // wait
        const auto tu = static_cast<std::size_t>(op.transfer);
        if (!posted[tu])
          throw invalid_plan_error(action_label(plan, model, plan.ranks[ru][i]) + ": waits before its Recv is posted", {.path = at_action(r, i), .expected = "the Recv earlier in the rank's list"});
        if (arrival[tu] == unknown) {
          blocked_on[ru] = op.transfer;
          break;
        }
        t = std::max(t, arrival[tu]);
      }
    }
    now[ru] = t;
    pos[ru] = i;
    step = std::max(step, t);
  }

  // --- deadlock and unmatched transfers ---
  std::string stuck;
  int first_stuck = -1;
  for (int r = 0; r < P; ++r) {
    const auto ru = static_cast<std::size_t>(r);
    if (pos[ru] == ops[ru].size()) continue;
    if (first_stuck < 0) first_stuck = r;
    if (!stuck.empty()) stuck += "; ";
    stuck += at_action(r, pos[ru]) + " waits in " + action_label(plan, model, plan.ranks[ru][pos[ru]]);
  }
  if (first_stuck >= 0)
    throw invalid_plan_error("deadlock: no rank can make progress: " + stuck, {.path = at_action(first_stuck, pos[static_cast<std::size_t>(first_stuck)]), .expected = "every Wait's transfer sent by a rank that is not itself waiting on this one"});
  for (std::size_t t = 0; t < T; ++t) {
    if (arrival[t] == unknown || !posted[t])
      throw invalid_plan_error("transfer " + std::to_string(t) + " (" + describe_stage(model, plan.transfers[t].producer) + ") is " +
                      (arrival[t] == unknown ? "never sent" : "never received"), {.path = "transfers/" + std::to_string(t), .expected = "one Send and one Recv per transfer"});
  }

  // --- results ---
  result.step_time = step;
  result.actions = action_count;
  for (int r = 0; r < P; ++r) {
    auto& rs = result.ranks[static_cast<std::size_t>(r)];
    rs.idle = step - rs.busy;
    rs.peak_memory = rs.static_memory + peak[static_cast<std::size_t>(r)];
    rs.fits_memory = rs.peak_memory <= result.memory_capacity;
  }
  if (options.record_timeline) {
    for (int r = 0; r < P; ++r) {
      const auto ru = static_cast<std::size_t>(r);
      for (std::size_t i = 0; i < ops[ru].size(); ++i) {
        const EmuOp& op = ops[ru][i];
        if (op.kind != EmuOpKind::compute) continue;
        TimelineEvent e;
        e.kind = TimelineEvent::Kind::compute;
        e.rank = e.peer = RankId{r};
        std::visit(
            [&](const auto& x) {
              using X = std::decay_t<decltype(x)>;
              if constexpr (std::is_same_v<X, Forward> || std::is_same_v<X, Backward>) e.stage = stage_of(x);
            },
            plan.ranks[ru][i]);
        e.action = static_cast<std::int32_t>(i);
        e.start = event_start[rank_base[ru] + i];
        e.end = event_end[rank_base[ru] + i];
        e.bytes = op.allocate;
        result.timeline.push_back(e);
      }
    }
    for (std::size_t t = 0; t < T; ++t) {
      const Transfer& tr = plan.transfers[t];
      TimelineEvent e;
      e.kind = TimelineEvent::Kind::transfer;
      e.rank = tr.from;
      e.peer = tr.to;
      e.stage = tr.producer;
      e.transfer = TransferId{static_cast<TransferId::rep>(t)};
      e.action = send_pos[t];
      e.start = event_start[rank_base[tr.from.index()] + static_cast<std::size_t>(send_pos[t])];
      e.end = event_end[rank_base[tr.from.index()] + static_cast<std::size_t>(send_pos[t])];
      e.bytes = tr.bytes;
      result.timeline.push_back(e);
    }
  }
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
