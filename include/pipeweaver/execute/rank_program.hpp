#pragma once
// The rank-program compiler: ONE rank's action list of a Plan, compiled into a flat program of
// runtime operations with every buffer placed in one pooled arena. It is runtime-independent
// (no template, no device): the generic executor (execute/executor.hpp) binds the arena and
// walks the operations, whatever the runtime; its tests need the compiler alone.
//
// How actions become operations (each runs on one queue: compute, send-to-peer, recv-from-peer):
//  * Forward  -> a copy per gathered segment (first chunk of a fed module), the forward call
//  * Backward -> copy + accumulate of the gradient contributions (last chunk of a feeding
//                module), the backward call, then zero + accumulate of the gradient of a
//                gathered input into one contribution buffer per feeder sub-microbatch (the
//                scatter); all on the compute queue
//  * Send     -> record_event on compute, wait_event on the send queue (the data exists),
//                send on the send queue
//  * Recv     -> recv on the recv queue (posted at its position)
//  * Wait     -> wait on compute: later compute work sees the received data
// A transfer whose two ends are on the same rank compiles to nothing: the data stays in place.
//
// Data flow is the stage graph's (schedule/stage_graph.hpp): chunk c of a sub-microbatch feeds
// chunk c+1; every last-chunk forward of a feeding module's sub-microbatch in a microbatch may
// feed the first chunk of every sub-microbatch of the fed module in that microbatch; items are
// matched by sample (ItemRef::sample). Gradients flow back the same edges. What a callback may
// rely on is documented in execute/stage_io.hpp.
//
// Buffers and queues. A buffer lives from its first to its last use (program positions);
// plan_buffer_pool (execute/buffer_pool.hpp) lets buffers with disjoint lifetimes share bytes.
// Each queue runs its work in order (FIFO) but queues run concurrently, so program order
// orders two uses only when they are on one queue. Where a buffer takes over bytes whose previous occupant was last used on another
// queue, the program records an event on that queue right after that last use and makes the
// new occupant's queue wait for it right before its first use; an event the order already
// implies (an earlier event, a Wait, a Send's own dependency) is left out. So a sent buffer is
// free once its send has completed, and a Recv never overwrites bytes the compute queue still
// reads. Every wait so added is one the strictest executor (one action at a time, rendezvous
// sends) obeys anyway, so it adds no deadlock. With SendReuse::after_send (the runtime has read
// a send's data when send() returns) a send needs no event for the buffer's next occupant.
//
// Errors: a plan this rank cannot run (an action on the wrong rank, data used before it is
// produced or received, a missing transfer) throws Error(invalid_plan) whose path names the
// rank and the action ("rank 2, action 17 (Forward vit chunk 0 sub-microbatch 3)").
// std-only: compiled by nvcc.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/execute/buffer_pool.hpp"
#include "pipeweaver/execute/stage_io.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver {

/// When the bytes a send reads may be given to another buffer.
enum class SendReuse : std::uint8_t {
  after_send,        ///< right after the Send: send() has read them when it returns (EagerSend)
  after_completion,  ///< once the send has completed on its queue (a stream-based runtime)
};

enum class QueueKind : std::uint8_t { compute, send, recv };

/// A queue of the rank: its compute queue, or the queue of the link to (send) or from (recv) a peer.
struct QueueRef {
  QueueKind kind = QueueKind::compute;
  RankId peer{0};  ///< the link's other rank (send, recv); 0 for compute
  friend auto operator<=>(const QueueRef&, const QueueRef&) = default;
};

enum class OpKind : std::uint8_t {
  forward,       ///< call `call`'s forward callback
  backward,      ///< call `call`'s backward callback
  copy,          ///< dst = src
  zero,          ///< dst = 0
  accumulate,    ///< dst += src (gradient element type)
  send,          ///< send src to `peer` as `transfer`
  recv,          ///< post the receive of `transfer` from `peer` into dst
  wait,          ///< later work on the queue sees `transfer`'s data in dst
  record_event,  ///< event slot `event` := everything enqueued on the queue so far
  wait_event,    ///< later work on the queue starts after event slot `event`
};

/// Bytes [offset, offset + bytes) of one buffer.
struct BufferRange {
  int buffer = -1;  ///< index into RankProgram::buffers; -1: none
  std::size_t offset = 0;
  std::size_t bytes = 0;
  [[nodiscard]] bool empty() const noexcept { return buffer < 0 || bytes == 0; }
};

struct Operation {
  OpKind kind = OpKind::copy;
  std::size_t action = 0;  ///< position of the action it belongs to in the rank's list
  QueueRef queue{};
  BufferRange dst{};        ///< copy, zero, accumulate, recv; wait: the received buffer
  BufferRange src{};        ///< copy, accumulate, send
  RankId peer{0};           ///< send, recv, wait
  TransferId transfer{0};   ///< send, recv, wait
  std::size_t call = 0;     ///< forward, backward: index into RankProgram::calls
  std::size_t event = 0;    ///< record_event, wait_event: the slot (recorded once, before its waits)
};

/// One forward or backward callback and the buffers it gets (execute/stage_io.hpp).
struct StageCall {
  StageSpec stage{};
  SubMicrobatchId sub_microbatch{0};
  BufferRange input{}, output{}, stash{}, output_grad{}, input_grad{};
  std::size_t segment_begin = 0;  ///< the gathered input's segments: RankProgram::segments[begin, begin + count)
  std::size_t segment_count = 0;
};

enum class BufferKind : std::uint8_t {
  output,          ///< a forward's output
  gathered_input,  ///< the input of a fed module's first chunk, gathered from its feeders
  stash,           ///< kept from a forward to its backward
  input_grad,      ///< the gradient of a stage's input
  grad_sum,        ///< the sum of a feeding stage's gradient contributions
  contribution,    ///< the gradient one consumer sub-microbatch scatters to one feeder sub-microbatch
  received,        ///< the data of a transfer from another rank
};

struct ProgramBuffer {
  BufferKind kind = BufferKind::output;
  std::size_t bytes = 0;
  bool used = false;                ///< some operation touches it (else it takes no pool bytes)
  std::size_t first = 0, last = 0;  ///< lifetime: positions of its first and last use, inclusive
};

struct RankProgram {
  RankId rank{0};
  SendReuse send_reuse = SendReuse::after_send;
  std::vector<Operation> operations;
  std::vector<StageCall> calls;
  std::vector<InputSegment> segments;
  std::vector<ProgramBuffer> buffers;
  PoolLayout pool;                  ///< offset of every buffer in the arena, and the arena's bytes
  std::size_t unpooled_bytes = 0;   ///< what the used buffers would take without sharing
  std::size_t event_count = 0;      ///< event slots (one record_event each)
  std::vector<RankId> peers_sent;   ///< ranks this rank sends to, ascending

  [[nodiscard]] std::size_t pool_bytes() const noexcept { return pool.total; }
  [[nodiscard]] std::span<const InputSegment> segments_of(const StageCall& c) const {
    return std::span<const InputSegment>(segments).subspan(c.segment_begin, c.segment_count);
  }
};

namespace detail {

/// "rank R, action N (label)": where an executor error happened.
[[nodiscard]] inline std::string action_path(const Plan& plan, const ModelSpec& model, RankId rank, std::size_t action) {
  std::string s = "rank " + std::to_string(rank.value()) + ", action " + std::to_string(action);
  if (rank.valid() && rank.index() < plan.ranks.size()) {
    const auto& list = plan.ranks[rank.index()];
    if (action < list.size()) s += " (" + action_label(plan, model, list[action]) + ")";
  }
  return s;
}

/// For each buffer, the buffers that held any of its bytes last before it, in the order of
/// first use (zero-byte and unused buffers hold none).
[[nodiscard]] inline std::vector<std::vector<int>> previous_occupants(std::span<const ProgramBuffer> buffers, const PoolLayout& pool) {
  std::vector<int> order;
  for (std::size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].used && buffers[i].bytes > 0) order.push_back(static_cast<int>(i));
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return buffers[static_cast<std::size_t>(a)].first < buffers[static_cast<std::size_t>(b)].first;
  });
  std::map<std::size_t, int> occupant{{0, -1}};  // segment start -> holder (-1: never held); covers [0, inf)
  const auto split = [&](std::size_t at) {
    auto it = std::prev(occupant.upper_bound(at));
    if (it->first != at) occupant.emplace_hint(std::next(it), at, it->second);
  };
  std::vector<std::vector<int>> previous(buffers.size());
  for (int b : order) {
    const std::size_t lo = pool.offsets[static_cast<std::size_t>(b)], hi = lo + buffers[static_cast<std::size_t>(b)].bytes;
    split(lo);
    split(hi);
    auto& prev = previous[static_cast<std::size_t>(b)];
    for (auto it = occupant.find(lo); it->first != hi;) {
      if (it->second >= 0) prev.push_back(it->second);
      it = occupant.erase(it);
    }
    occupant.emplace(lo, b);
    std::sort(prev.begin(), prev.end());
    prev.erase(std::unique(prev.begin(), prev.end()), prev.end());
  }
  return previous;
}

/// Compiles one rank's list; see the header comment. One instance per compilation.
class RankCompiler {
 public:
  RankCompiler(const Plan& plan, const ModelSpec& model, RankId rank, const ExecutorOptions& options, SendReuse reuse)
      : plan_(plan), model_(model), me_(rank), options_(options) {
    prog_.rank = rank;
    prog_.send_reuse = reuse;
  }

  [[nodiscard]] RankProgram compile() {
    index_plan();
    compile_actions();
    place_buffers();
    order_queues();
    return std::move(prog_);
  }

 private:
  // The stage (module, chunk, sub-microbatch) of outputs, gathered inputs, stashes, input
  // gradients and gradient sums.
  struct StageKey {
    ModuleId module{0};
    int chunk = 0;
    SubMicrobatchId sub_microbatch{0};
    friend auto operator<=>(const StageKey&, const StageKey&) = default;
  };

  // A scatter contribution: from the backward of `consumer` (first chunk of a fed module) to
  // the last chunk of `feeder` (a feeding module's sub-microbatch).
  struct ContributionKey {
    SubMicrobatchId consumer{0};
    SubMicrobatchId feeder{0};
    friend auto operator<=>(const ContributionKey&, const ContributionKey&) = default;
  };

  // A data edge between two stages, each a forward or a backward pass.
  struct EdgeKey {
    StageKey producer{};
    bool producer_backward = false;
    StageKey consumer{};
    bool consumer_backward = false;
    friend auto operator<=>(const EdgeKey&, const EdgeKey&) = default;
  };

  struct StageRecord {
    BufferRange input, output, stash, output_grad;
    std::size_t segment_begin = 0, segment_count = 0;
    bool gathered = false, grad_ready = false, backward_done = false;
  };
  struct LastUse {  // of one buffer on one queue
    std::size_t queue = 0, position = 0;
  };
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  // ---- helpers --------------------------------------------------------------------------
  [[noreturn]] void bad(const std::string& msg, const std::string& expected = {}) const {
    throw invalid_plan_error(msg, {.path = action_path(plan_, model_, me_, action_), .expected = expected});
  }
  std::string stage_name(const StageKey& k, bool backward = false) const {
    return describe_stage(model_, StageRef{k.module, k.chunk, k.sub_microbatch, backward ? Pass::backward : Pass::forward});
  }
  RankId rank_of(ModuleId m, int c) const { return plan_.partition.chunk(m, c).rank; }
  RankId rank_of(const StageKey& k) const { return rank_of(k.module, k.chunk); }
  int last_chunk(ModuleId m) const { return plan_.partition.chunk_count(m) - 1; }
  const SubMicrobatchSpec& smb(SubMicrobatchId s) const { return plan_.sub_microbatches.at(s.index()); }
  static StageKey key_of(const StageRef& s) { return StageKey{s.module, s.chunk, s.sub_microbatch}; }
  BufferRange whole(int id) const { return BufferRange{id, 0, prog_.buffers[static_cast<std::size_t>(id)].bytes}; }

  template <class Key>
  int new_buffer(std::map<Key, int>& names, const Key& key, BufferKind kind, std::size_t bytes) {
    prog_.buffers.push_back(ProgramBuffer{.kind = kind, .bytes = bytes, .used = false, .first = 0, .last = 0});
    last_uses_.emplace_back();
    const int id = static_cast<int>(prog_.buffers.size()) - 1;
    names[key] = id;
    return id;
  }
  template <class Key>
  static std::optional<int> find(const std::map<Key, int>& names, const Key& key) {
    auto it = names.find(key);
    if (it == names.end()) return std::nullopt;
    return it->second;
  }
  std::optional<TransferId> find_transfer(const StageKey& p, bool p_bwd, const StageKey& c, bool c_bwd) const {
    auto it = transfer_by_edge_.find(EdgeKey{p, p_bwd, c, c_bwd});
    if (it == transfer_by_edge_.end()) return std::nullopt;
    return it->second;
  }
  std::size_t queue_index(const QueueRef& q) { return queues_.emplace(q, queues_.size()).first->second; }

  void touch(const BufferRange& r, std::size_t pos, std::optional<std::size_t> queue) {
    if (r.buffer < 0) return;
    ProgramBuffer& b = prog_.buffers[static_cast<std::size_t>(r.buffer)];
    if (!b.used) b.first = pos;
    b.used = true;
    b.last = pos;
    if (!queue) return;
    auto& uses = last_uses_[static_cast<std::size_t>(r.buffer)];
    auto it = std::find_if(uses.begin(), uses.end(), [&](const LastUse& u) { return u.queue == *queue; });
    if (it == uses.end()) uses.push_back(LastUse{*queue, pos});
    else it->position = pos;
  }
  std::size_t push(Operation op) {
    op.action = action_;
    const std::size_t pos = prog_.operations.size();
    const std::size_t q = queue_index(op.queue);
    op_queue_.push_back(q);
    // An eager send has read its data when it returns: no later occupant waits for it.
    const bool eager_send = op.kind == OpKind::send && prog_.send_reuse == SendReuse::after_send;
    touch(op.dst, pos, q);
    touch(op.src, pos, eager_send ? std::nullopt : std::optional<std::size_t>(q));
    if (op.kind == OpKind::forward || op.kind == OpKind::backward) {
      const StageCall& c = prog_.calls[op.call];
      for (const BufferRange* r : {&c.input, &c.output, &c.stash, &c.output_grad, &c.input_grad}) touch(*r, pos, q);
    }
    if (op.queue.kind == QueueKind::compute && op.kind != OpKind::record_event) compute_since_record_ = true;
    prog_.operations.push_back(op);
    return pos;
  }
  Operation data_op(OpKind kind, BufferRange dst, BufferRange src = {}) const {
    Operation op;
    op.kind = kind;
    op.dst = dst;
    op.src = src;
    return op;
  }
  void push_call(OpKind kind, StageCall call) {
    prog_.calls.push_back(std::move(call));
    Operation op;
    op.kind = kind;
    op.call = prog_.calls.size() - 1;
    push(op);
  }

  // ---- phase 1: index the plan ---------------------------------------------------------
  void index_plan() {
    if (plan_.partition.modules.size() != model_.modules.size())
      throw invalid_plan_error("plan '" + plan_.name + "' places " + std::to_string(plan_.partition.modules.size()) + " modules but model '" +
                                   model_.name + "' has " + std::to_string(model_.modules.size()),
                               {.path = "partition", .expected = "one placement per module"});
    if (me_.index() >= plan_.ranks.size())
      throw invalid_plan_error("runtime rank " + std::to_string(me_.value()) + " but the plan has " + std::to_string(plan_.ranks.size()) + " ranks",
                               {.path = "ranks", .expected = "a rank of the plan"});
    for (std::size_t t = 0; t < plan_.transfers.size(); ++t) {
      const Transfer& tr = plan_.transfers[t];
      const EdgeKey edge{key_of(tr.producer), is_backward(tr.producer.pass), key_of(tr.consumer), is_backward(tr.consumer.pass)};
      transfer_by_edge_[edge] = TransferId{static_cast<TransferId::rep>(t)};
      if (tr.producer.pass == Pass::forward) {
        auto& b = forward_transfer_bytes_[edge.producer];
        b = std::max(b, tr.bytes.count());
      }
    }
    for (const auto& list : plan_.ranks)
      for (const Action& a : list)
        if (const auto* b = std::get_if<Backward>(&a); b && b->pass != Pass::backward_weight)
          grad_stages_.insert(StageKey{b->module, b->chunk, b->sub_microbatch});
    for (std::size_t s = 0; s < plan_.sub_microbatches.size(); ++s) {
      const auto& sm = plan_.sub_microbatches[s];
      smbs_by_module_mb_[{sm.module(), sm.microbatch()}].push_back(SubMicrobatchId{static_cast<SubMicrobatchId::rep>(s)});
    }
    recv_posted_.assign(plan_.transfers.size(), 0);
    waited_.assign(plan_.transfers.size(), 0);
    received_.assign(plan_.transfers.size(), -1);
    recv_position_.assign(plan_.transfers.size(), none);
  }

  void check_stage(ModuleId m, int c, SubMicrobatchId s) const {
    if (!m.valid() || m.index() >= model_.modules.size()) bad("module " + std::to_string(m.value()) + " does not exist", "a module of the model");
    if (c < 0 || c >= plan_.partition.chunk_count(m))
      bad("chunk " + std::to_string(c) + " does not exist", "0 .. " + std::to_string(plan_.partition.chunk_count(m) - 1));
    if (!s.valid() || s.index() >= plan_.sub_microbatches.size())
      bad("sub-microbatch " + std::to_string(s.value()) + " does not exist", "an index into the plan's sub-microbatches");
    if (plan_.sub_microbatches[s.index()].module() != m)
      bad("sub-microbatch " + std::to_string(s.value()) + " belongs to another module", "a sub-microbatch of the stage's module");
    if (rank_of(m, c) != me_)
      bad("the chunk is placed on rank " + std::to_string(rank_of(m, c).value()), "an action on the rank its chunk is placed on");
  }
  const Transfer& check_transfer(TransferId t, bool outgoing) const {
    if (!t.valid() || t.index() >= plan_.transfers.size()) bad("transfer " + std::to_string(t.value()) + " does not exist", "an index into the plan's transfers");
    const Transfer& tr = plan_.transfers[t.index()];
    if ((outgoing ? tr.from : tr.to) != me_)
      bad("transfer " + std::to_string(t.value()) + " goes from rank " + std::to_string(tr.from.value()) + " to rank " + std::to_string(tr.to.value()),
          outgoing ? "a Send on the transfer's source rank" : "a Recv or Wait on the transfer's destination rank");
    return tr;
  }
  // The buffer holding transfer t's data on this (receiving) rank; it must have been waited.
  BufferRange received(TransferId t, const std::string& what) const {
    const int id = received_[t.index()];
    if (id < 0 || !waited_[t.index()])
      bad(what + " arrives by transfer " + std::to_string(t.value()) + ", which this rank has not waited for yet",
          "Recv and Wait of the transfer before its use");
    return whole(id);
  }

  // ---- layouts of outputs and gathered inputs --------------------------------------------
  // Forward output layout of stage k: prefix sums of its items' bytes.
  const std::vector<std::size_t>& item_offsets(const StageKey& k) {
    auto it = item_offsets_.find(k);
    if (it != item_offsets_.end()) return it->second;
    const SubMicrobatchSpec& sm = smb(k.sub_microbatch);
    const auto tokens = sm.item_tokens();
    std::vector<std::size_t> off(tokens.size() + 1, 0);
    if (options_.sizes.item_output_bytes) {
      const StageSpec st = StageSpec::of(plan_.partition, k.module, k.chunk, Pass::forward);
      for (std::size_t i = 0; i < tokens.size(); ++i) off[i + 1] = off[i] + options_.sizes.item_output_bytes(st, sm, i);
    } else {
      // The plan's transfer size split over the items in proportion to their tokens.
      auto tb = forward_transfer_bytes_.find(k);
      const auto total = static_cast<std::size_t>(tb == forward_transfer_bytes_.end() ? 0 : tb->second);
      const auto all = static_cast<std::size_t>(sm.total_tokens());
      std::size_t cum = 0;
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        cum += static_cast<std::size_t>(tokens[i]);
        off[i + 1] = all == 0 ? (i + 1 == tokens.size() ? total : 0) : total * cum / all;
      }
    }
    return item_offsets_.emplace(k, std::move(off)).first->second;
  }
  std::size_t out_size(const StageKey& k) { return item_offsets(k).back(); }

  // The items of feeder module fm's sub-microbatches in microbatch mb, in (sample, item) order.
  struct FeederItem {
    ItemRef origin;
    SubMicrobatchId smb;
    std::size_t item;
  };
  std::vector<FeederItem> feeder_items(ModuleId fm, MicrobatchId mb) const {
    std::vector<FeederItem> src;
    auto found = smbs_by_module_mb_.find({fm, mb});
    if (found != smbs_by_module_mb_.end()) {
      for (SubMicrobatchId e : found->second) {
        const SubMicrobatchSpec& pe = smb(e);
        if (pe.items().size() != pe.item_tokens().size())
          bad("sub-microbatch " + std::to_string(e.value()) + " of " + module_label(model_, fm) +
                  " has no item origins, which the executor needs to route its output",
              "one ItemRef per item");
        for (std::size_t k = 0; k < pe.items().size(); ++k) src.push_back(FeederItem{pe.items()[k], e, k});
      }
    }
    std::stable_sort(src.begin(), src.end(), [](const FeederItem& a, const FeederItem& b) {
      return std::pair(a.origin.sample, a.origin.item) < std::pair(b.origin.sample, b.origin.item);
    });
    return src;
  }

  // Layout of the gathered input of the first chunk of module f for sub-microbatch q.
  const std::vector<InputSegment>& segments_for(ModuleId f, SubMicrobatchId q) {
    auto it = segments_.find(q);
    if (it != segments_.end()) return it->second;
    const SubMicrobatchSpec& cq = smb(q);
    const auto consumer_items = cq.items();
    if (consumer_items.size() != cq.item_tokens().size())
      bad("sub-microbatch " + std::to_string(q.value()) + " of " + module_label(model_, f) +
              " has no item origins, which the executor needs to gather its feeders' outputs",
          "one ItemRef per item");
    std::vector<InputSegment> segs;
    std::size_t offset = 0;
    for (ModuleId fm : model_.feeders(f)) {
      const std::vector<FeederItem> src = feeder_items(fm, cq.microbatch());
      const int lc = last_chunk(fm);
      for (std::size_t i = 0; i < consumer_items.size(); ++i) {
        for (const FeederItem& s : src) {
          if (s.origin.sample != consumer_items[i].sample) continue;
          const auto& off = item_offsets(StageKey{fm, lc, s.smb});
          const std::size_t bytes = off[s.item + 1] - off[s.item];
          segs.push_back(InputSegment{fm, s.smb, s.item, s.origin, i, offset, bytes});
          offset += bytes;
        }
      }
    }
    return segments_.emplace(q, std::move(segs)).first->second;
  }

  // ---- phase 2: one function per action kind ---------------------------------------------
  void compile_actions() {
    const auto& list = plan_.ranks[me_.index()];
    for (action_ = 0; action_ < list.size(); ++action_) {
      std::visit(
          [&](const auto& a) {
            using A = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<A, Forward>) forward(a);
            else if constexpr (std::is_same_v<A, Backward>) backward(a);
            else if constexpr (std::is_same_v<A, Send>) send(a);
            else if constexpr (std::is_same_v<A, Recv>) recv(a);
            else wait(a);
          },
          list[action_]);
    }
    for (std::size_t t = 0; t < plan_.transfers.size(); ++t)
      if (recv_posted_[t] && !waited_[t] && plan_.transfers[t].from != me_)
        throw invalid_plan_error("transfer " + std::to_string(t) + " is received but never waited for",
                                 {.path = "rank " + std::to_string(me_.value()), .expected = "a Wait for every Recv"});
  }

  void forward(const Forward& f) {
    check_stage(f.module, f.chunk, f.sub_microbatch);
    const StageKey k{f.module, f.chunk, f.sub_microbatch};
    if (records_.contains(k)) bad("second Forward of the same stage and sub-microbatch", "one Forward per stage");
    StageRecord rec;
    rec.output = whole(new_buffer(outputs_, k, BufferKind::output, out_size(k)));
    if (options_.sizes.stash_bytes) {
      const std::size_t n = options_.sizes.stash_bytes(StageSpec::of(plan_.partition, f.module, f.chunk, Pass::forward), smb(f.sub_microbatch));
      if (n > 0) rec.stash = whole(new_buffer(stashes_, k, BufferKind::stash, n));
    }
    if (f.chunk > 0) rec.input = chunk_input(k);
    else if (!model_.feeders(f.module).empty()) gather(k, rec);
    StageCall call;
    call.stage = StageSpec::of(plan_.partition, f.module, f.chunk, Pass::forward);
    call.sub_microbatch = f.sub_microbatch;
    call.input = rec.input;
    call.output = rec.output;
    call.stash = rec.stash;
    call.segment_begin = rec.segment_begin;
    call.segment_count = rec.segment_count;
    push_call(OpKind::forward, std::move(call));
    records_.emplace(k, rec);
  }

  // The input of chunk c > 0: chunk c-1's output, on this rank or received.
  BufferRange chunk_input(const StageKey& k) {
    const StageKey prev{k.module, k.chunk - 1, k.sub_microbatch};
    if (rank_of(prev) == me_) {
      auto id = find(outputs_, prev);
      if (!id) bad("its input, the output of " + stage_name(prev) + " on this rank, is not produced yet", "the producing Forward first");
      return whole(*id);
    }
    auto t = find_transfer(prev, false, k, false);
    if (!t) bad("no transfer brings the output of " + stage_name(prev) + " from rank " + std::to_string(rank_of(prev).value()),
                "a Transfer for every cross-rank edge");
    return received(*t, "its input");
  }

  // The input of the first chunk of a fed module: one copy per feeder item (segments_for).
  void gather(const StageKey& k, StageRecord& rec) {
    const auto& segs = segments_for(k.module, k.sub_microbatch);
    std::size_t total = 0;
    for (const auto& sg : segs) total += sg.bytes;
    rec.input = whole(new_buffer(gathered_, k, BufferKind::gathered_input, total));
    rec.gathered = true;
    rec.segment_begin = prog_.segments.size();
    rec.segment_count = segs.size();
    prog_.segments.insert(prog_.segments.end(), segs.begin(), segs.end());
    for (const auto& sg : segs) {
      if (sg.bytes == 0) continue;
      const StageKey src{sg.module, last_chunk(sg.module), sg.sub_microbatch};
      BufferRange from;
      if (rank_of(src) == me_) {
        auto id = find(outputs_, src);
        if (!id) bad("its input from " + stage_name(src) + " on this rank is not produced yet", "the producing Forward first");
        from = whole(*id);
      } else {
        auto t = find_transfer(src, false, k, false);
        if (!t) bad("no transfer brings the output of " + stage_name(src) + " from rank " + std::to_string(rank_of(src).value()),
                    "a Transfer for every cross-rank edge");
        from = received(*t, "its input from " + stage_name(src));
      }
      from.offset = item_offsets(src)[sg.item];
      from.bytes = sg.bytes;
      push(data_op(OpKind::copy, BufferRange{rec.input.buffer, sg.offset, sg.bytes}, from));
    }
  }

  void backward(const Backward& bw) {
    check_stage(bw.module, bw.chunk, bw.sub_microbatch);
    const StageKey k{bw.module, bw.chunk, bw.sub_microbatch};
    auto it = records_.find(k);
    if (it == records_.end()) bad("Backward before the Forward of the same stage on this rank", "the Forward first");
    StageRecord& rec = it->second;
    if (bw.pass == Pass::forward) bad("a Backward action with pass forward", "backward, backward_input or backward_weight");
    if (bw.pass == Pass::backward_weight) {
      if (!rec.grad_ready) bad("backward_weight before the stage's backward_input", "backward_input first");
    } else {
      if (rec.backward_done) bad("second input-gradient Backward of the same stage", "one Backward (or backward_input) per stage");
      rec.backward_done = true;
      rec.output_grad = output_grad(k);
      rec.grad_ready = true;
    }
    const BufferRange input_grad = bw.pass == Pass::backward_weight ? BufferRange{} : input_grad_buffer(k, rec);
    StageCall call;
    call.stage = StageSpec::of(plan_.partition, bw.module, bw.chunk, bw.pass);
    call.sub_microbatch = bw.sub_microbatch;
    call.input = rec.input;
    call.stash = rec.stash;
    call.output_grad = rec.output_grad;
    call.input_grad = input_grad;
    call.segment_begin = rec.segment_begin;
    call.segment_count = rec.segment_count;
    push_call(OpKind::backward, std::move(call));
    if (rec.gathered && input_grad.buffer >= 0) scatter(k, rec, input_grad);
  }

  // The gradient of stage k's input, when some stage needs it (else empty).
  BufferRange input_grad_buffer(const StageKey& k, const StageRecord& rec) {
    bool needed = false;
    if (k.chunk > 0) {
      needed = grad_stages_.contains(StageKey{k.module, k.chunk - 1, k.sub_microbatch});
    } else if (rec.gathered) {
      for (std::size_t i = 0; i < rec.segment_count; ++i) {
        const auto& sg = prog_.segments[rec.segment_begin + i];
        needed = needed || grad_stages_.contains(StageKey{sg.module, last_chunk(sg.module), sg.sub_microbatch});
      }
    }
    if (!needed) return {};
    return whole(new_buffer(input_grads_, k, BufferKind::input_grad, rec.input.bytes));
  }

  // Gradient of stage k's forward output, summed over its consumers (see the header).
  BufferRange output_grad(const StageKey& k) {
    if (k.chunk < last_chunk(k.module)) {
      const StageKey next{k.module, k.chunk + 1, k.sub_microbatch};
      if (!grad_stages_.contains(next)) return {};
      if (rank_of(next) == me_) {
        auto id = find(input_grads_, next);
        if (!id) bad("its output gradient, from " + stage_name(next, true) + " on this rank, is not produced yet", "the consuming Backward first");
        return whole(*id);
      }
      auto t = find_transfer(next, true, k, true);
      if (!t) bad("no transfer brings the gradient from " + stage_name(next, true) + " on rank " + std::to_string(rank_of(next).value()),
                  "a Transfer for every cross-rank edge");
      return received(*t, "its output gradient");
    }
    const std::vector<BufferRange> parts = gradient_parts(k);
    if (parts.empty()) return {};
    if (parts.size() == 1) return parts[0];
    const BufferRange sum = whole(new_buffer(grad_sums_, k, BufferKind::grad_sum, out_size(k)));
    push(data_op(OpKind::copy, sum, parts[0]));
    for (std::size_t i = 1; i < parts.size(); ++i) push(data_op(OpKind::accumulate, sum, parts[i]));
    return sum;
  }

  // The gradient contributions to the last chunk k of a feeding module, one per consumer
  // sub-microbatch of the fed module (local contribution buffers or received ones).
  std::vector<BufferRange> gradient_parts(const StageKey& k) {
    std::vector<BufferRange> parts;
    const auto& feeds = model_.modules[k.module.index()].feeds;
    if (!feeds) return parts;
    const ModuleId f = *feeds;
    auto found = smbs_by_module_mb_.find({f, smb(k.sub_microbatch).microbatch()});
    if (found == smbs_by_module_mb_.end()) return parts;
    for (SubMicrobatchId q : found->second) {
      const StageKey consumer{f, 0, q};
      if (!grad_stages_.contains(consumer)) continue;
      bool linked = false;
      for (const auto& sg : segments_for(f, q)) linked = linked || sg.sub_microbatch == k.sub_microbatch;
      if (rank_of(f, 0) == me_) {
        if (!linked) continue;
        auto id = find(contributions_, ContributionKey{q, k.sub_microbatch});
        if (!id) bad("its output gradient from " + stage_name(consumer, true) + " on this rank is not produced yet", "the consuming Backward first");
        parts.push_back(whole(*id));
      } else if (auto t = find_transfer(consumer, true, k, true)) {
        parts.push_back(received(*t, "its output gradient from " + stage_name(consumer, true)));
      } else if (linked) {
        bad("no transfer brings the gradient from " + stage_name(consumer, true) + " on rank " + std::to_string(rank_of(f, 0).value()),
            "a Transfer for every cross-rank edge");
      }
    }
    return parts;
  }

  // Adds each segment's gradient into a per-feeder-sub-microbatch contribution buffer.
  void scatter(const StageKey& k, const StageRecord& rec, const BufferRange& gin) {
    std::set<std::pair<ModuleId, SubMicrobatchId>> feeders;  // deterministic order
    const MicrobatchId mb = smb(k.sub_microbatch).microbatch();
    for (ModuleId fm : model_.feeders(k.module)) {
      auto found = smbs_by_module_mb_.find({fm, mb});
      if (found == smbs_by_module_mb_.end()) continue;
      for (SubMicrobatchId e : found->second) feeders.insert({fm, e});
    }
    const auto segs = std::span<const InputSegment>(prog_.segments).subspan(rec.segment_begin, rec.segment_count);
    for (const auto& [fm, e] : feeders) {
      const StageKey target{fm, last_chunk(fm), e};
      if (!grad_stages_.contains(target)) continue;
      const bool linked = std::any_of(segs.begin(), segs.end(), [&](const InputSegment& sg) { return sg.sub_microbatch == e; });
      const bool remote = rank_of(target) != me_;
      if (!linked && !(remote && find_transfer(k, true, target, true))) continue;
      const BufferRange contrib = whole(new_buffer(contributions_, ContributionKey{k.sub_microbatch, e}, BufferKind::contribution, out_size(target)));
      push(data_op(OpKind::zero, contrib));
      const auto& off = item_offsets(target);
      for (const auto& sg : segs) {
        if (sg.sub_microbatch != e || sg.bytes == 0) continue;
        push(data_op(OpKind::accumulate, BufferRange{contrib.buffer, off[sg.item], sg.bytes}, BufferRange{gin.buffer, sg.offset, sg.bytes}));
      }
    }
  }

  void send(const Send& a) {
    const Transfer& tr = check_transfer(a.transfer, true);
    if (tr.to == me_) return;  // same rank: the data stays in place
    const StageRef& p = tr.producer;
    const StageKey pk = key_of(p);
    std::optional<int> id;
    if (p.pass == Pass::forward) id = find(outputs_, pk);
    else if (p.pass == Pass::backward_weight) bad("a transfer produced by a backward_weight pass", "transfers from forward, backward or backward_input");
    else if (tr.consumer.module == p.module) id = find(input_grads_, pk);
    else id = find(contributions_, ContributionKey{p.sub_microbatch, tr.consumer.sub_microbatch});
    if (!id) bad("its data, from " + stage_name(pk, is_backward(p.pass)) + ", is not produced on this rank yet", "the producing stage before the Send");
    const QueueRef q{QueueKind::send, tr.to};
    wait_for_compute(q);
    Operation op;
    op.kind = OpKind::send;
    op.queue = q;
    op.src = whole(*id);
    op.peer = tr.to;
    op.transfer = a.transfer;
    push(op);
    peers_.insert(tr.to);
  }

  // Makes queue q wait for everything enqueued on compute so far (one record per stretch of
  // compute work, one wait per queue and record).
  void wait_for_compute(const QueueRef& q) {
    if (compute_since_record_ || compute_slot_ == none) {
      compute_slot_ = prog_.event_count++;
      Operation rec;
      rec.kind = OpKind::record_event;
      rec.event = compute_slot_;
      push(rec);
      compute_since_record_ = false;
    }
    auto [it, fresh] = waited_slot_.emplace(q, compute_slot_);
    if (!fresh && it->second == compute_slot_) return;
    it->second = compute_slot_;
    Operation w;
    w.kind = OpKind::wait_event;
    w.queue = q;
    w.event = compute_slot_;
    push(w);
  }

  void recv(const Recv& a) {
    const Transfer& tr = check_transfer(a.transfer, false);
    if (recv_posted_[a.transfer.index()]) bad("second Recv of the transfer", "one Recv per transfer");
    recv_posted_[a.transfer.index()] = 1;
    if (tr.from == me_) return;
    const std::size_t bytes = tr.producer.pass == Pass::forward ? out_size(key_of(tr.producer)) : out_size(key_of(tr.consumer));
    prog_.buffers.push_back(ProgramBuffer{.kind = BufferKind::received, .bytes = bytes, .used = false, .first = 0, .last = 0});
    last_uses_.emplace_back();
    received_[a.transfer.index()] = static_cast<int>(prog_.buffers.size()) - 1;
    Operation op;
    op.kind = OpKind::recv;
    op.queue = QueueRef{QueueKind::recv, tr.from};
    op.dst = whole(received_[a.transfer.index()]);
    op.peer = tr.from;
    op.transfer = a.transfer;
    recv_position_[a.transfer.index()] = push(op);
  }

  void wait(const Wait& a) {
    const Transfer& tr = check_transfer(a.transfer, false);
    if (!recv_posted_[a.transfer.index()]) bad("Wait before the Recv of the transfer", "Recv first");
    waited_[a.transfer.index()] = 1;
    if (tr.from == me_) return;
    Operation op;
    op.kind = OpKind::wait;
    op.dst = whole(received_[a.transfer.index()]);
    op.peer = tr.from;
    op.transfer = a.transfer;
    push(op);
  }

  // ---- phase 3: buffer placement ---------------------------------------------------------
  // Each buffer lives from its first to its last use; a sent buffer's last use is its Send
  // (order_queues makes the next occupant wait for the send where it must).
  void place_buffers() {
    std::vector<PoolRequest> req(prog_.buffers.size());
    prog_.unpooled_bytes = 0;
    for (std::size_t i = 0; i < prog_.buffers.size(); ++i) {
      const ProgramBuffer& b = prog_.buffers[i];
      req[i] = PoolRequest{.bytes = b.used ? b.bytes : 0, .first = b.first, .last = b.last};
      if (b.used) prog_.unpooled_bytes += align_up(b.bytes, options_.alignment);
    }
    prog_.pool = plan_buffer_pool(req, options_.alignment);
    prog_.peers_sent.assign(peers_.begin(), peers_.end());
  }

  // ---- phase 4: events where pool bytes pass from one queue to another ---------------------
  // Decides which last uses get a record_event after them and which first uses wait for
  // which of those, then rewrites the program with them.
  void order_queues() {
    const std::size_t n = prog_.operations.size();
    std::vector<char> record_after(n, 0);
    std::vector<std::vector<std::size_t>> waits_before(n);
    decide_events(record_after, waits_before);
    insert_events(record_after, waits_before);
  }

  // Walks the program keeping, per queue, how far every queue is known to have completed
  // (a vector clock of positions): queue FIFO order, the events so far, a Wait's Recv. A
  // first use that takes bytes from a last use its queue does not know complete gets an event.
  void decide_events(std::vector<char>& record_after, std::vector<std::vector<std::size_t>>& waits_before) const {
    const std::size_t n = prog_.operations.size(), Q = queues_.size();
    const std::vector<std::vector<int>> previous = previous_occupants(prog_.buffers, prog_.pool);
    std::vector<std::vector<int>> first_uses(n);
    for (std::size_t b = 0; b < prog_.buffers.size(); ++b)
      if (!previous[b].empty()) first_uses[prog_.buffers[b].first].push_back(static_cast<int>(b));
    // Vector clocks, Q entries each: per queue, the last position known complete (-1: none).
    std::vector<std::int64_t> queue_clock(Q * Q, -1), op_clock(n * Q), event_clock(prog_.event_count * Q);
    const auto join = [Q](std::int64_t* into, const std::int64_t* from) {
      for (std::size_t i = 0; i < Q; ++i) into[i] = std::max(into[i], from[i]);
    };
    std::vector<LastUse> pending;
    for (std::size_t p = 0; p < n; ++p) {
      const Operation& op = prog_.operations[p];
      const std::size_t q = op_queue_[p];
      std::int64_t* cur = queue_clock.data() + q * Q;
      if (op.kind == OpKind::wait_event) join(cur, event_clock.data() + op.event * Q);
      if (op.kind == OpKind::wait) join(cur, op_clock.data() + recv_position_[op.transfer.index()] * Q);
      pending.clear();
      for (int b : first_uses[p])
        for (int a : previous[static_cast<std::size_t>(b)])
          for (const LastUse& u : last_uses_[static_cast<std::size_t>(a)])
            if (cur[u.queue] < static_cast<std::int64_t>(u.position)) pending.push_back(u);
      // Latest first: waiting for a later use on a queue covers the earlier ones there.
      std::sort(pending.begin(), pending.end(), [](const LastUse& x, const LastUse& y) { return x.position > y.position; });
      for (const LastUse& u : pending) {
        if (cur[u.queue] >= static_cast<std::int64_t>(u.position)) continue;
        record_after[u.position] = 1;
        waits_before[p].push_back(u.position);
        join(cur, op_clock.data() + u.position * Q);
      }
      cur[q] = static_cast<std::int64_t>(p);
      std::copy(cur, cur + Q, op_clock.data() + p * Q);
      if (op.kind == OpKind::record_event) std::copy(cur, cur + Q, event_clock.data() + op.event * Q);
    }
  }

  // Rewrites the program with the decided events, renumbers the event slots in program order
  // and moves the buffers' lifetimes to the new positions.
  void insert_events(const std::vector<char>& record_after, const std::vector<std::vector<std::size_t>>& waits_before) {
    const std::size_t n = prog_.operations.size();
    std::vector<Operation> out;
    out.reserve(n + 2 * static_cast<std::size_t>(std::count(record_after.begin(), record_after.end(), 1)));
    std::vector<std::size_t> new_pos(n), slot_after(n, none), slot_map(prog_.event_count, none);
    std::size_t slots = 0;
    for (std::size_t p = 0; p < n; ++p) {
      Operation op = prog_.operations[p];
      for (std::size_t r : waits_before[p]) {
        Operation w;
        w.kind = OpKind::wait_event;
        w.action = op.action;
        w.queue = op.queue;
        w.event = slot_after[r];
        out.push_back(w);
      }
      if (op.kind == OpKind::record_event) op.event = slot_map[op.event] = slots++;
      else if (op.kind == OpKind::wait_event) op.event = slot_map[op.event];
      new_pos[p] = out.size();
      out.push_back(op);
      if (record_after[p]) {
        Operation rec;
        rec.kind = OpKind::record_event;
        rec.action = op.action;
        rec.queue = op.queue;
        rec.event = slot_after[p] = slots++;
        out.push_back(rec);
      }
    }
    prog_.operations = std::move(out);
    prog_.event_count = slots;
    for (ProgramBuffer& b : prog_.buffers)
      if (b.used) {
        b.first = new_pos[b.first];
        b.last = new_pos[b.last];
      }
  }

  const Plan& plan_;
  const ModelSpec& model_;
  RankId me_;
  const ExecutorOptions& options_;
  RankProgram prog_;
  std::size_t action_ = 0;  // position being compiled
  // the plan's index
  std::map<EdgeKey, TransferId> transfer_by_edge_;
  std::map<StageKey, std::int64_t> forward_transfer_bytes_;
  std::set<StageKey> grad_stages_;  // stages with a Backward that computes input gradients
  std::map<std::pair<ModuleId, MicrobatchId>, std::vector<SubMicrobatchId>> smbs_by_module_mb_;
  // layouts
  std::map<StageKey, std::vector<std::size_t>> item_offsets_;          // forward outputs, prefix sums
  std::map<SubMicrobatchId, std::vector<InputSegment>> segments_;     // per consumer sub-microbatch
  // buffers by name, one map per kind
  std::map<StageKey, int> outputs_, gathered_, stashes_, input_grads_, grad_sums_;
  std::map<ContributionKey, int> contributions_;
  std::vector<int> received_;  // per transfer (-1: not received on this rank)
  std::map<StageKey, StageRecord> records_;
  std::vector<char> recv_posted_, waited_;
  // queues and events
  std::map<QueueRef, std::size_t> queues_;      // dense index per queue the program uses
  std::vector<std::size_t> op_queue_;            // per operation: its queue's index
  std::vector<std::vector<LastUse>> last_uses_;  // per buffer, its last use on each queue
  std::vector<std::size_t> recv_position_;       // per transfer: position of its recv operation
  std::set<RankId> peers_;
  std::size_t compute_slot_ = none;  // slot of the last record_event on compute
  bool compute_since_record_ = false;
  std::map<QueueRef, std::size_t> waited_slot_;  // per send queue: the compute slot it last waited for
};

}  // namespace detail

/// Compiles `rank`'s action list of `plan` (see the header comment). `reuse`: whether the
/// bytes a Send reads may go to another buffer right after the Send or only once it completed.
/// Throws Error(invalid_plan) for a plan the rank cannot run, Error(input) for a bad alignment.
[[nodiscard]] inline RankProgram compile_rank_program(const Plan& plan, const ModelSpec& model, RankId rank, const ExecutorOptions& options,
                                                      SendReuse reuse) {
  return detail::RankCompiler(plan, model, rank, options, reuse).compile();
}

}  // namespace pipeweaver
