#pragma once
// The generic executor: walks ONE rank's action list of a Plan over a
// Runtime. prepare(plan, model) compiles the list into a flat program of runtime operations
// with every buffer placed in one pooled arena (execute/buffer_pool.hpp); run(callbacks)
// executes it and allocates nothing.
//
// How actions map to the runtime (q = compute queue):
//  * Forward   -> gather copies on q (first chunk of a fed module), launch(q, forward callback)
//  * Backward  -> sum of gradient contributions on q (last chunk of a feeding module),
//                 launch(q, backward callback), then zero + accumulate of the gradient of a
//                 gathered input into one buffer per feeder sub-microbatch (the scatter)
//  * Send      -> record(q), wait_event(send_queue(peer)), send(send_queue(peer), ...)
//  * Recv      -> recv(recv_queue(peer), ...) (posted at its position)
//  * Wait      -> wait_recv(q, ...)
// A transfer whose two ends are on the same rank is a no-op: the data stays in place.
//
// Data flow is the stage graph's (schedule/stage_graph.hpp): chunk c of a sub-microbatch
// feeds chunk c+1; every last-chunk forward of a feeding module's sub-microbatch in a
// microbatch may feed the first chunk of every sub-microbatch of the fed module in that
// microbatch; items are matched by sample (ItemRef::sample). Gradients flow back the same
// edges. What a callback may rely on is documented in execute/stage_io.hpp.
//
// Errors: a plan the executor cannot run (an action on the wrong rank, data used before it is
// produced or received, a missing transfer) throws Error(invalid_plan) from prepare. At run
// time any failure (a callback that throws, a transfer that fails or never arrives) calls
// runtime.abort() so that every other rank stops, and throws Error(execution) whose path names
// the rank, the action index and the action, and whose message gives the cause; a rank
// stopped by another rank's abort throws Error(cancelled).
// std-only: compiled by nvcc.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/execute/buffer_pool.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

template <Runtime R>
class Executor {
 public:
  explicit Executor(R& runtime, ExecutorOptions options = {}) : rt_(&runtime), options_(std::move(options)) {}

  /// Compiles this runtime's rank's action list of `plan` and places its buffers. `plan` and
  /// `model` must outlive the following run() calls. Throws Error(invalid_plan).
  void prepare(const Plan& plan, const ModelSpec& model) {
    plan_ = &plan;
    model_ = &model;
    rank_ = static_cast<RankId>(rt_->rank());
    try {
      Builder b{*this};
      b.build();
    } catch (...) {
      plan_ = nullptr;  // never run a half-compiled program
      ops_.clear();
      throw;
    }
  }

  /// Executes the prepared program once (one training step of this rank).
  template <StageCallbacks C>
  void run(C& callbacks) {
    if (plan_ == nullptr) throw input_error("Executor::run called before prepare", {.expected = "prepare(plan, model) first"});
    auto q = rt_->compute_queue();
    for (auto& h : handles_) h.reset();
    for (std::size_t i = 0; i < ops_.size(); ++i) {
      const Op& op = ops_[i];
      if (rt_->aborted())
        throw cancelled_error("stopped because another rank failed", {.path = where(op.action)});
      try {
        execute(op, q, callbacks);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::cancelled)
          throw cancelled_error(e.message(), {.path = where(op.action)});
        fail(op, e.message());
      } catch (const std::exception& e) {
        fail(op, e.what());
      } catch (...) {
        fail(op, "unknown exception");
      }
    }
    try {
      for (RankId p : peers_sent_) rt_->synchronize(rt_->send_queue(p));
      rt_->synchronize(q);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::cancelled) throw;
      rt_->abort(e.message());
      throw execution_error(e.message(), {.path = "rank " + std::to_string(rank_.value()) + ", end of step"});
    }
  }

  /// prepare(plan, model) then run(callbacks).
  template <StageCallbacks C>
  void run(const Plan& plan, const ModelSpec& model, C& callbacks) {
    prepare(plan, model);
    run(callbacks);
  }

  /// Arena bytes of the prepared plan, and what the buffers would take without reuse.
  [[nodiscard]] std::size_t pool_bytes() const noexcept { return pool_bytes_; }
  [[nodiscard]] std::size_t unpooled_bytes() const noexcept { return unpooled_bytes_; }
  /// Runtime operations in the prepared program (for benchmarks and tests).
  [[nodiscard]] std::size_t operation_count() const noexcept { return ops_.size(); }
  [[nodiscard]] RankId rank() const noexcept { return rank_; }

 private:
  enum class OpKind : std::uint8_t { forward, backward, copy, zero, accumulate, send, recv, wait };
  struct BufRange {
    int buffer = -1;  // -1: empty
    std::size_t offset = 0, bytes = 0;
  };
  struct Op {
    OpKind kind = OpKind::copy;
    std::size_t action = 0;  // position in the rank's action list
    BufRange dst, src;
    RankId peer{0};
    TransferId transfer{0};
    std::size_t call = 0;
    std::span<std::byte> dst_span;
    std::span<const std::byte> src_span;
  };
  static Op make_op(OpKind kind, BufRange dst = {}, BufRange src = {}, RankId peer = RankId{0}, TransferId transfer = TransferId{0},
                    std::size_t call = 0) {
    Op o;
    o.kind = kind;
    o.dst = dst;
    o.src = src;
    o.peer = peer;
    o.transfer = transfer;
    o.call = call;
    return o;
  }
  struct Call {
    StageSpec stage;
    const SubMicrobatchSpec* smb = nullptr;
    BufRange input, output, stash, output_grad, input_grad;
    std::size_t seg_begin = 0, seg_count = 0;
    StageIO io;
  };
  struct BufferInfo {
    std::size_t bytes = 0;
    std::size_t first = 0, last = 0;
    bool used = false, sent = false;
    std::size_t offset = 0;
  };
  using Key = std::tuple<int, int, int>;  // module, chunk, sub-microbatch

  std::string where(std::size_t action) const {
    std::string s = "rank " + std::to_string(rank_.value()) + ", action " + std::to_string(action);
    const auto& list = plan_->ranks.at(rank_.index());
    if (action < list.size() && model_ != nullptr) s += " (" + action_label(*plan_, *model_, list[action]) + ")";
    return s;
  }

  [[noreturn]] void fail(const Op& op, const std::string& cause) {
    std::string msg = cause;
    if (op.kind == OpKind::forward) msg = "forward callback threw: " + cause;
    if (op.kind == OpKind::backward) msg = "backward callback threw: " + cause;
    std::string path = where(op.action);
    rt_->abort(path + ": " + msg);
    throw execution_error(msg, {.path = path});
  }

  template <class C>
  void execute(const Op& op, typename R::queue_type q, C& callbacks) {
    switch (op.kind) {
      case OpKind::forward: {
        Call& c = calls_[op.call];
        rt_->launch(q, [&] { callbacks.forward(c.stage, *c.smb, c.io); });
        break;
      }
      case OpKind::backward: {
        Call& c = calls_[op.call];
        rt_->launch(q, [&] { callbacks.backward(c.stage, *c.smb, c.io); });
        break;
      }
      case OpKind::copy: rt_->copy(q, op.dst_span, op.src_span); break;
      case OpKind::zero: rt_->fill_zero(q, op.dst_span); break;
      case OpKind::accumulate: rt_->accumulate(q, op.dst_span, op.src_span); break;
      case OpKind::send: {
        auto ev = rt_->record(q);
        auto sq = rt_->send_queue(op.peer);
        rt_->wait_event(sq, ev);
        rt_->send(sq, op.peer, op.transfer, op.src_span);
        break;
      }
      case OpKind::recv: handles_[op.transfer.index()].emplace(rt_->recv(rt_->recv_queue(op.peer), op.peer, op.transfer, op.dst_span)); break;
      case OpKind::wait: rt_->wait_recv(q, *handles_[op.transfer.index()]); break;
    }
  }

  // ---- compilation of one rank's list --------------------------------------------------
  struct Builder {
    Executor& ex;
    const Plan& plan;
    const ModelSpec& model;
    RankId me;
    std::size_t action = 0;  // position being compiled
    std::vector<BufferInfo> buffers;
    std::map<std::tuple<int, int, int, int>, int> named;  // (kind, a, b, c) -> buffer
    struct Record {
      BufRange input, output, stash, output_grad;
      std::size_t seg_begin = 0, seg_count = 0;
      bool gathered = false, grad_ready = false, backward_done = false;
    };
    std::map<Key, Record> records;
    std::map<Key, std::vector<std::size_t>> item_offsets_cache;  // forward output layout, prefix sums
    std::map<int, std::vector<InputSegment>> segments_cache;      // per consumer sub-microbatch
    std::map<std::tuple<int, int, int, int, int, int, int, int>, TransferId> transfer_index;
    std::map<Key, std::int64_t> forward_transfer_bytes;
    std::set<Key> grad_stages;  // stages with a Backward that computes input gradients
    std::map<std::pair<int, int>, std::vector<int>> smbs_by_module_mb;
    std::vector<char> recv_posted, waited;

    enum Kind : int { k_out, k_gather, k_stash, k_gin, k_gsum, k_contrib, k_recv };

    explicit Builder(Executor& e) : ex(e), plan(*e.plan_), model(*e.model_), me(e.rank_) {}

    [[noreturn]] void bad(const std::string& msg, const std::string& expected = {}) const {
      throw invalid_plan_error(msg, {.path = ex.where(action), .expected = expected});
    }
    std::string stage_name(const Key& k, bool backward = false) const {
      return describe_stage(model, StageRef{ModuleId{std::get<0>(k)}, std::get<1>(k), SubMicrobatchId{std::get<2>(k)},
                                            backward ? Pass::backward : Pass::forward});
    }
    RankId rank_of(int m, int c) const { return plan.partition.chunk(ModuleId{m}, c).rank; }
    int last_chunk(int m) const { return plan.partition.chunk_count(ModuleId{m}) - 1; }
    const SubMicrobatchSpec& smb(int s) const { return plan.sub_microbatches.at(static_cast<std::size_t>(s)); }

    int new_buffer(std::size_t bytes) {
      BufferInfo info;
      info.bytes = bytes;
      buffers.push_back(info);
      return static_cast<int>(buffers.size()) - 1;
    }
    int new_named(int kind, int a, int b, int c, std::size_t bytes) {
      int id = new_buffer(bytes);
      named[{kind, a, b, c}] = id;
      return id;
    }
    std::optional<int> find_named(int kind, int a, int b, int c) const {
      auto it = named.find({kind, a, b, c});
      if (it == named.end()) return std::nullopt;
      return it->second;
    }
    BufRange whole(int id) const { return BufRange{id, 0, buffers[static_cast<std::size_t>(id)].bytes}; }
    void touch(const BufRange& r, std::size_t pos) {
      if (r.buffer < 0) return;
      BufferInfo& b = buffers[static_cast<std::size_t>(r.buffer)];
      if (!b.used) b.first = pos;
      b.used = true;
      b.first = std::min(b.first, pos);
      b.last = std::max(b.last, pos);
    }
    std::size_t push(Op op) {
      op.action = action;
      std::size_t pos = ex.ops_.size();
      touch(op.dst, pos);
      touch(op.src, pos);
      if (op.kind == OpKind::forward || op.kind == OpKind::backward) {
        const Call& c = ex.calls_[op.call];
        for (const BufRange* r : {&c.input, &c.output, &c.stash, &c.output_grad, &c.input_grad}) touch(*r, pos);
      }
      ex.ops_.push_back(op);
      return pos;
    }

    std::optional<TransferId> find_transfer(const Key& p, bool p_bwd, const Key& c, bool c_bwd) const {
      auto it = transfer_index.find({std::get<0>(p), std::get<1>(p), std::get<2>(p), p_bwd ? 1 : 0, std::get<0>(c),
                                     std::get<1>(c), std::get<2>(c), c_bwd ? 1 : 0});
      if (it == transfer_index.end()) return std::nullopt;
      return it->second;
    }

    // Forward output layout of stage k: prefix sums of its items' bytes.
    const std::vector<std::size_t>& item_offsets(const Key& k) {
      auto it = item_offsets_cache.find(k);
      if (it != item_offsets_cache.end()) return it->second;
      const auto [m, c, s] = k;
      const SubMicrobatchSpec& sm = smb(s);
      const auto tokens = sm.item_tokens();
      std::vector<std::size_t> off(tokens.size() + 1, 0);
      if (ex.options_.sizes.item_output_bytes) {
        const StageSpec st = StageSpec::of(plan.partition, ModuleId{m}, c, Pass::forward);
        for (std::size_t i = 0; i < tokens.size(); ++i) off[i + 1] = off[i] + ex.options_.sizes.item_output_bytes(st, sm, i);
      } else {
        // The plan's transfer size split over the items in proportion to their tokens.
        auto tb = forward_transfer_bytes.find(k);
        const auto total = static_cast<std::size_t>(tb == forward_transfer_bytes.end() ? 0 : tb->second);
        const auto all = static_cast<std::size_t>(sm.total_tokens());
        std::size_t cum = 0;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          cum += static_cast<std::size_t>(tokens[i]);
          off[i + 1] = all == 0 ? (i + 1 == tokens.size() ? total : 0) : total * cum / all;
        }
      }
      return item_offsets_cache.emplace(k, std::move(off)).first->second;
    }
    std::size_t out_size(const Key& k) { return item_offsets(k).back(); }

    // Layout of the gathered input of the first chunk of module f for sub-microbatch q.
    const std::vector<InputSegment>& segments_for(int f, int q) {
      auto it = segments_cache.find(q);
      if (it != segments_cache.end()) return it->second;
      std::vector<InputSegment> segs;
      const SubMicrobatchSpec& cq = smb(q);
      const int mb = cq.microbatch().value();
      const auto consumer_items = cq.items();
      if (consumer_items.size() != cq.item_tokens().size())
        bad("sub-microbatch " + std::to_string(q) + " of " + module_label(model, ModuleId{f}) +
                " has no item origins, which the executor needs to gather its feeders' outputs",
            "one ItemRef per item");
      std::size_t offset = 0;
      for (ModuleId fm : model.feeders(ModuleId{f})) {
        struct Src {
          ItemRef origin;
          int smb;
          std::size_t item;
        };
        std::vector<Src> src;
        auto found = smbs_by_module_mb.find({fm.value(), mb});
        if (found != smbs_by_module_mb.end()) {
          for (int e : found->second) {
            const SubMicrobatchSpec& pe = smb(e);
            if (pe.items().size() != pe.item_tokens().size())
              bad("sub-microbatch " + std::to_string(e) + " of " + module_label(model, fm) +
                      " has no item origins, which the executor needs to route its output",
                  "one ItemRef per item");
            for (std::size_t k = 0; k < pe.items().size(); ++k) src.push_back(Src{pe.items()[k], e, k});
          }
        }
        std::stable_sort(src.begin(), src.end(), [](const Src& a, const Src& b) {
          return std::pair(a.origin.sample, a.origin.item) < std::pair(b.origin.sample, b.origin.item);
        });
        const int lc = last_chunk(fm.value());
        for (std::size_t i = 0; i < consumer_items.size(); ++i) {
          for (const Src& s : src) {
            if (s.origin.sample != consumer_items[i].sample) continue;
            const auto& off = item_offsets({fm.value(), lc, s.smb});
            const std::size_t bytes = off[s.item + 1] - off[s.item];
            segs.push_back(InputSegment{fm, SubMicrobatchId{s.smb}, s.item, s.origin, i, offset, bytes});
            offset += bytes;
          }
        }
      }
      return segments_cache.emplace(q, std::move(segs)).first->second;
    }

    void index_plan() {
      if (plan.partition.modules.size() != model.modules.size())
        throw invalid_plan_error("plan '" + plan.name + "' places " + std::to_string(plan.partition.modules.size()) +
                        " modules but model '" + model.name + "' has " + std::to_string(model.modules.size()), {.path = "partition", .expected = "one placement per module"});
      if (me.index() >= plan.ranks.size())
        throw invalid_plan_error("runtime rank " + std::to_string(me.value()) + " but the plan has " + std::to_string(plan.ranks.size()) + " ranks", {.path = "ranks", .expected = "a rank of the plan"});
      for (std::size_t t = 0; t < plan.transfers.size(); ++t) {
        const Transfer& tr = plan.transfers[t];
        const auto& p = tr.producer;
        const auto& c = tr.consumer;
        transfer_index[{p.module.value(), p.chunk, p.sub_microbatch.value(), is_backward(p.pass) ? 1 : 0, c.module.value(),
                        c.chunk, c.sub_microbatch.value(), is_backward(c.pass) ? 1 : 0}] = TransferId{static_cast<TransferId::rep>(t)};
        if (p.pass == Pass::forward) {
          auto& b = forward_transfer_bytes[{p.module.value(), p.chunk, p.sub_microbatch.value()}];
          b = std::max(b, tr.bytes.count());
        }
      }
      for (const auto& list : plan.ranks)
        for (const Action& a : list)
          if (const auto* b = std::get_if<Backward>(&a); b && b->pass != Pass::backward_weight)
            grad_stages.insert({b->module.value(), b->chunk, b->sub_microbatch.value()});
      for (std::size_t s = 0; s < plan.sub_microbatches.size(); ++s) {
        const auto& sm = plan.sub_microbatches[s];
        smbs_by_module_mb[{sm.module().value(), sm.microbatch().value()}].push_back(static_cast<int>(s));
      }
      recv_posted.assign(plan.transfers.size(), 0);
      waited.assign(plan.transfers.size(), 0);
    }

    void check_stage(ModuleId m, int c, SubMicrobatchId s) const {
      if (!m.valid() || m.index() >= model.modules.size()) bad("module " + std::to_string(m.value()) + " does not exist", "a module of the model");
      if (c < 0 || c >= plan.partition.chunk_count(m))
        bad("chunk " + std::to_string(c) + " does not exist", "0 .. " + std::to_string(plan.partition.chunk_count(m) - 1));
      if (!s.valid() || s.index() >= plan.sub_microbatches.size())
        bad("sub-microbatch " + std::to_string(s.value()) + " does not exist", "an index into the plan's sub-microbatches");
      if (plan.sub_microbatches[s.index()].module() != m)
        bad("sub-microbatch " + std::to_string(s.value()) + " belongs to another module", "a sub-microbatch of the stage's module");
      if (rank_of(m.value(), c) != me)
        bad("the chunk is placed on rank " + std::to_string(rank_of(m.value(), c).value()), "an action on the rank its chunk is placed on");
    }
    const Transfer& check_transfer(TransferId t, bool outgoing) const {
      if (!t.valid() || t.index() >= plan.transfers.size()) bad("transfer " + std::to_string(t.value()) + " does not exist", "an index into the plan's transfers");
      const Transfer& tr = plan.transfers[t.index()];
      if ((outgoing ? tr.from : tr.to) != me)
        bad("transfer " + std::to_string(t.value()) + " goes from rank " + std::to_string(tr.from.value()) + " to rank " +
                std::to_string(tr.to.value()),
            outgoing ? "a Send on the transfer's source rank" : "a Recv or Wait on the transfer's destination rank");
      return tr;
    }
    // The buffer holding transfer t's data on this (receiving) rank; it must have been waited.
    BufRange received(TransferId t, const std::string& what) const {
      auto id = find_named(k_recv, t.value(), 0, 0);
      if (!id || !waited[t.index()])
        bad(what + " arrives by transfer " + std::to_string(t.value()) + ", which this rank has not waited for yet",
            "Recv and Wait of the transfer before its use");
      return whole(*id);
    }

    void forward(const Forward& f) {
      check_stage(f.module, f.chunk, f.sub_microbatch);
      const int m = f.module.value(), c = f.chunk, s = f.sub_microbatch.value();
      const Key k{m, c, s};
      if (records.contains(k)) bad("second Forward of the same stage and sub-microbatch", "one Forward per stage");
      Record rec;
      rec.output = whole(new_named(k_out, m, c, s, out_size(k)));
      if (ex.options_.sizes.stash_bytes) {
        const std::size_t n = ex.options_.sizes.stash_bytes(StageSpec::of(plan.partition, f.module, c, Pass::forward), smb(s));
        if (n > 0) rec.stash = whole(new_named(k_stash, m, c, s, n));
      }
      if (c > 0) {
        const Key prev{m, c - 1, s};
        if (rank_of(m, c - 1) == me) {
          auto id = find_named(k_out, m, c - 1, s);
          if (!id) bad("its input, the output of " + stage_name(prev) + " on this rank, is not produced yet", "the producing Forward first");
          rec.input = whole(*id);
        } else {
          auto t = find_transfer(prev, false, k, false);
          if (!t) bad("no transfer brings the output of " + stage_name(prev) + " from rank " + std::to_string(rank_of(m, c - 1).value()),
                      "a Transfer for every cross-rank edge");
          rec.input = received(*t, "its input");
        }
      } else if (!model.feeders(f.module).empty()) {
        const auto& segs = segments_for(m, s);
        std::size_t total = 0;
        for (const auto& sg : segs) total += sg.bytes;
        rec.input = whole(new_named(k_gather, m, 0, s, total));
        rec.gathered = true;
        rec.seg_begin = ex.segments_.size();
        rec.seg_count = segs.size();
        ex.segments_.insert(ex.segments_.end(), segs.begin(), segs.end());
        for (const auto& sg : segs) {
          if (sg.bytes == 0) continue;
          const int fm = sg.module.value(), lc = last_chunk(fm), e = sg.sub_microbatch.value();
          const Key src{fm, lc, e};
          BufRange from;
          if (rank_of(fm, lc) == me) {
            auto id = find_named(k_out, fm, lc, e);
            if (!id) bad("its input from " + stage_name(src) + " on this rank is not produced yet", "the producing Forward first");
            from = whole(*id);
          } else {
            auto t = find_transfer(src, false, k, false);
            if (!t) bad("no transfer brings the output of " + stage_name(src) + " from rank " + std::to_string(rank_of(fm, lc).value()),
                        "a Transfer for every cross-rank edge");
            from = received(*t, "its input from " + stage_name(src));
          }
          const auto& off = item_offsets(src);
          from.offset = off[sg.item];
          from.bytes = sg.bytes;
          push(make_op(OpKind::copy, BufRange{rec.input.buffer, sg.offset, sg.bytes}, from));
        }
      }
      Call call;
      call.stage = StageSpec::of(plan.partition, f.module, c, Pass::forward);
      call.smb = &smb(s);
      call.input = rec.input;
      call.output = rec.output;
      call.stash = rec.stash;
      call.seg_begin = rec.seg_begin;
      call.seg_count = rec.seg_count;
      ex.calls_.push_back(call);
      push(make_op(OpKind::forward, {}, {}, {}, {}, ex.calls_.size() - 1));
      records.emplace(k, rec);
    }

    void backward(const Backward& bw) {
      check_stage(bw.module, bw.chunk, bw.sub_microbatch);
      const int m = bw.module.value(), c = bw.chunk, s = bw.sub_microbatch.value();
      const Key k{m, c, s};
      auto it = records.find(k);
      if (it == records.end()) bad("Backward before the Forward of the same stage on this rank", "the Forward first");
      Record& rec = it->second;
      if (bw.pass == Pass::forward) bad("a Backward action with pass forward", "backward, backward_input or backward_weight");
      if (bw.pass == Pass::backward_weight) {
        if (!rec.grad_ready) bad("backward_weight before the stage's backward_input", "backward_input first");
      } else {
        if (rec.backward_done) bad("second input-gradient Backward of the same stage", "one Backward (or backward_input) per stage");
        rec.backward_done = true;
        rec.output_grad = output_grad(k);
        rec.grad_ready = true;
      }
      BufRange input_grad;
      if (bw.pass != Pass::backward_weight) {
        if (c > 0) {
          if (grad_stages.contains({m, c - 1, s})) input_grad = whole(new_named(k_gin, m, c, s, rec.input.bytes));
        } else if (rec.gathered) {
          bool needed = false;
          for (std::size_t i = 0; i < rec.seg_count; ++i) {
            const auto& sg = ex.segments_[rec.seg_begin + i];
            needed = needed || grad_stages.contains({sg.module.value(), last_chunk(sg.module.value()), sg.sub_microbatch.value()});
          }
          if (needed) input_grad = whole(new_named(k_gin, m, c, s, rec.input.bytes));
        }
      }
      Call call;
      call.stage = StageSpec::of(plan.partition, bw.module, c, bw.pass);
      call.smb = &smb(s);
      call.input = rec.input;
      call.stash = rec.stash;
      call.output_grad = rec.output_grad;
      call.input_grad = input_grad;
      call.seg_begin = rec.seg_begin;
      call.seg_count = rec.seg_count;
      ex.calls_.push_back(call);
      push(make_op(OpKind::backward, {}, {}, {}, {}, ex.calls_.size() - 1));
      if (rec.gathered && input_grad.buffer >= 0) scatter(k, rec, input_grad);
    }

    // Gradient of stage k's forward output, summed over its consumers (see the header).
    BufRange output_grad(const Key& k) {
      const auto [m, c, s] = k;
      if (c < last_chunk(m)) {
        const Key next{m, c + 1, s};
        if (!grad_stages.contains(next)) return {};
        if (rank_of(m, c + 1) == me) {
          auto id = find_named(k_gin, m, c + 1, s);
          if (!id) bad("its output gradient, from " + stage_name(next, true) + " on this rank, is not produced yet", "the consuming Backward first");
          return whole(*id);
        }
        auto t = find_transfer(next, true, k, true);
        if (!t) bad("no transfer brings the gradient from " + stage_name(next, true) + " on rank " + std::to_string(rank_of(m, c + 1).value()),
                    "a Transfer for every cross-rank edge");
        return received(*t, "its output gradient");
      }
      const auto& feeds = model.modules[static_cast<std::size_t>(m)].feeds;
      if (!feeds) return {};
      const int f = feeds->value();
      std::vector<BufRange> parts;
      auto found = smbs_by_module_mb.find({f, smb(s).microbatch().value()});
      if (found != smbs_by_module_mb.end()) {
        for (int q : found->second) {
          const Key consumer{f, 0, q};
          if (!grad_stages.contains(consumer)) continue;
          bool linked = false;
          for (const auto& sg : segments_for(f, q)) linked = linked || sg.sub_microbatch.value() == s;
          if (rank_of(f, 0) == me) {
            if (!linked) continue;
            auto id = find_named(k_contrib, q, s, 0);
            if (!id) bad("its output gradient from " + stage_name(consumer, true) + " on this rank is not produced yet", "the consuming Backward first");
            parts.push_back(whole(*id));
          } else if (auto t = find_transfer(consumer, true, k, true)) {
            parts.push_back(received(*t, "its output gradient from " + stage_name(consumer, true)));
          } else if (linked) {
            bad("no transfer brings the gradient from " + stage_name(consumer, true) + " on rank " + std::to_string(rank_of(f, 0).value()),
                "a Transfer for every cross-rank edge");
          }
        }
      }
      if (parts.empty()) return {};
      if (parts.size() == 1) return parts[0];
      BufRange sum = whole(new_named(k_gsum, m, c, s, out_size(k)));
      push(make_op(OpKind::copy, sum, parts[0]));
      for (std::size_t i = 1; i < parts.size(); ++i) push(make_op(OpKind::accumulate, sum, parts[i]));
      return sum;
    }

    // Adds each segment's gradient into a per-feeder-sub-microbatch contribution buffer.
    void scatter(const Key& k, const Record& rec, const BufRange& gin) {
      const auto [m, c, s] = k;
      std::set<std::pair<int, int>> feeders;  // (module, sub-microbatch), deterministic order
      const int mb = smb(s).microbatch().value();
      for (ModuleId fm : model.feeders(ModuleId{m})) {
        auto found = smbs_by_module_mb.find({fm.value(), mb});
        if (found == smbs_by_module_mb.end()) continue;
        for (int e : found->second) feeders.insert({fm.value(), e});
      }
      for (const auto& [fm, e] : feeders) {
        const int lc = last_chunk(fm);
        const Key target{fm, lc, e};
        if (!grad_stages.contains(target)) continue;
        bool linked = false;
        for (std::size_t i = 0; i < rec.seg_count; ++i) linked = linked || ex.segments_[rec.seg_begin + i].sub_microbatch.value() == e;
        const bool remote = rank_of(fm, lc) != me;
        if (!linked && !(remote && find_transfer(k, true, target, true))) continue;
        BufRange contrib = whole(new_named(k_contrib, s, e, 0, out_size(target)));
        push(make_op(OpKind::zero, contrib));
        const auto& off = item_offsets(target);
        for (std::size_t i = 0; i < rec.seg_count; ++i) {
          const auto& sg = ex.segments_[rec.seg_begin + i];
          if (sg.sub_microbatch.value() != e || sg.bytes == 0) continue;
          push(make_op(OpKind::accumulate, BufRange{contrib.buffer, off[sg.item], sg.bytes}, BufRange{gin.buffer, sg.offset, sg.bytes}));
        }
      }
      (void)c;
    }

    void send(const Send& a) {
      const Transfer& tr = check_transfer(a.transfer, true);
      if (tr.to == me) return;  // same rank: the data stays in place
      const auto& p = tr.producer;
      const Key pk{p.module.value(), p.chunk, p.sub_microbatch.value()};
      std::optional<int> id;
      if (p.pass == Pass::forward) {
        id = find_named(k_out, std::get<0>(pk), std::get<1>(pk), std::get<2>(pk));
      } else if (p.pass == Pass::backward_weight) {
        bad("a transfer produced by a backward_weight pass", "transfers from forward, backward or backward_input");
      } else if (tr.consumer.module == p.module) {
        id = find_named(k_gin, std::get<0>(pk), std::get<1>(pk), std::get<2>(pk));
      } else {
        id = find_named(k_contrib, p.sub_microbatch.value(), tr.consumer.sub_microbatch.value(), 0);
      }
      if (!id) bad("its data, from " + stage_name(pk, is_backward(p.pass)) + ", is not produced on this rank yet", "the producing stage before the Send");
      buffers[static_cast<std::size_t>(*id)].sent = true;
      push(make_op(OpKind::send, {}, whole(*id), tr.to, a.transfer));
      ex.peers_sent_.insert(tr.to);
    }

    void recv(const Recv& a) {
      const Transfer& tr = check_transfer(a.transfer, false);
      if (recv_posted[a.transfer.index()]) bad("second Recv of the transfer", "one Recv per transfer");
      recv_posted[a.transfer.index()] = 1;
      if (tr.from == me) return;
      const auto& p = tr.producer;
      const auto& c = tr.consumer;
      const std::size_t bytes = p.pass == Pass::forward ? out_size({p.module.value(), p.chunk, p.sub_microbatch.value()})
                                                        : out_size({c.module.value(), c.chunk, c.sub_microbatch.value()});
      int id = new_named(k_recv, a.transfer.value(), 0, 0, bytes);
      push(make_op(OpKind::recv, whole(id), {}, tr.from, a.transfer));
    }

    void wait(const Wait& a) {
      const Transfer& tr = check_transfer(a.transfer, false);
      if (!recv_posted[a.transfer.index()]) bad("Wait before the Recv of the transfer", "Recv first");
      waited[a.transfer.index()] = 1;
      if (tr.from == me) return;
      push(make_op(OpKind::wait, whole(*find_named(k_recv, a.transfer.value(), 0, 0)), {}, tr.from, a.transfer));
    }

    void build() {
      ex.ops_.clear();
      ex.calls_.clear();
      ex.segments_.clear();
      ex.peers_sent_.clear();
      index_plan();
      const auto& list = plan.ranks[me.index()];
      for (action = 0; action < list.size(); ++action) {
        std::visit(
            [&](const auto& a) {
              using A = std::decay_t<decltype(a)>;
              if constexpr (std::is_same_v<A, Forward>) forward(a);
              else if constexpr (std::is_same_v<A, Backward>) backward(a);
              else if constexpr (std::is_same_v<A, Send>) send(a);
              else if constexpr (std::is_same_v<A, Recv>) recv(a);
              else wait(a);
            },
            list[action]);
      }
      for (std::size_t t = 0; t < plan.transfers.size(); ++t)
        if (recv_posted[t] && !waited[t] && plan.transfers[t].from != me)
          throw invalid_plan_error("transfer " + std::to_string(t) + " is received but never waited for", {.path = "rank " + std::to_string(me.value()), .expected = "a Wait for every Recv"});
      place();
    }

    void place() {
      const std::size_t end = ex.ops_.size();
      std::vector<PoolRequest> req(buffers.size());
      ex.unpooled_bytes_ = 0;
      for (std::size_t i = 0; i < buffers.size(); ++i) {
        BufferInfo& b = buffers[i];
        // A buffer a non-eager runtime sends stays untouched until the step's end.
        const std::size_t last = b.sent && !EagerSend<R> ? end : b.last;
        req[i].bytes = b.used ? b.bytes : 0;
        req[i].first = b.first;
        req[i].last = last;
        if (b.used) ex.unpooled_bytes_ += align_up(b.bytes, ex.options_.alignment);
      }
      PoolLayout layout = plan_buffer_pool(req, ex.options_.alignment);
      ex.pool_bytes_ = layout.total;
      std::span<std::byte> arena = ex.rt_->arena(layout.total);
      auto span_of = [&](const BufRange& r) -> std::span<std::byte> {
        if (r.buffer < 0 || r.bytes == 0) return {};
        return arena.subspan(layout.offsets[static_cast<std::size_t>(r.buffer)] + r.offset, r.bytes);
      };
      for (Op& op : ex.ops_) {
        op.dst_span = span_of(op.dst);
        op.src_span = span_of(op.src);
      }
      void* native = ex.rt_->native_handle(ex.rt_->compute_queue());
      for (Call& c : ex.calls_) {
        c.io = StageIO{};
        c.io.rank = me;
        c.io.input = span_of(c.input);
        c.io.segments = std::span<const InputSegment>(ex.segments_).subspan(c.seg_begin, c.seg_count);
        c.io.output = span_of(c.output);
        c.io.stash = span_of(c.stash);
        c.io.output_grad = span_of(c.output_grad);
        c.io.input_grad = span_of(c.input_grad);
        c.io.queue = native;
      }
      ex.handles_.assign(plan.transfers.size(), std::nullopt);
    }
  };

  R* rt_;
  ExecutorOptions options_;
  const Plan* plan_ = nullptr;
  const ModelSpec* model_ = nullptr;
  RankId rank_{0};
  std::vector<Op> ops_;
  std::vector<Call> calls_;
  std::vector<InputSegment> segments_;
  std::set<RankId> peers_sent_;
  std::vector<std::optional<typename R::recv_handle>> handles_;
  std::size_t pool_bytes_ = 0, unpooled_bytes_ = 0;
};

}  // namespace pipeweaver
