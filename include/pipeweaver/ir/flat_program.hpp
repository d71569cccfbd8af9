#pragma once
// The flat rank program: a Plan with everything resolved, for a consumer that reads nothing else
// (a trainer in another language, a debugger, a test interpreter). Per rank, the ordered actions,
// each naming its op, the module by name, the chunk with its layer range, the microbatch, the
// sub-microbatch, every item's origin (sample, item) and token counts, and for a transfer its id,
// peer rank, bytes and the stages at both ends. docs/flat_program.md documents every field and
// its JSON form (io/flat_program_json.hpp); the ops mean what docs/architecture.md ("The plan
// IR") says of Forward, Backward, Send, Recv and Wait.
//
// The stage of an action: a compute action's own stage; for a Send the producing stage (on this
// rank) and, as peer_stage, the consuming one (on the peer); for a Recv or a Wait the consuming
// stage (on this rank) and, as peer_stage, the producing one. A forward transfer carries the
// producer's output (the consumer's input); a backward one the gradient the producer computed for
// its input (the consumer's output gradient).
//
// flatten() checks every id it resolves and throws Error(invalid_plan) naming the rank and the
// action (or the sub-microbatch, transfer) that names something the plan or the model lacks.
// std-only.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver {

enum class FlatOp : std::uint8_t { forward, backward, backward_input, backward_weight, send, recv, wait };

[[nodiscard]] constexpr std::string_view to_string(FlatOp op) noexcept {
  switch (op) {
    case FlatOp::forward: return "forward";
    case FlatOp::backward: return "backward";
    case FlatOp::backward_input: return "backward_input";
    case FlatOp::backward_weight: return "backward_weight";
    case FlatOp::send: return "send";
    case FlatOp::recv: return "recv";
    case FlatOp::wait: return "wait";
  }
  return "?";
}
[[nodiscard]] constexpr bool is_compute(FlatOp op) noexcept { return op <= FlatOp::backward_weight; }
/// The compute op of a pass.
[[nodiscard]] constexpr FlatOp flat_op(Pass p) noexcept {
  switch (p) {
    case Pass::forward: return FlatOp::forward;
    case Pass::backward: return FlatOp::backward;
    case Pass::backward_input: return FlatOp::backward_input;
    case Pass::backward_weight: return FlatOp::backward_weight;
  }
  return FlatOp::forward;
}

/// One item of a sub-microbatch: where it comes from in the microbatch and its shape.
struct FlatItem {
  std::int32_t sample = -1;  ///< sample within the microbatch; -1 when the plan does not say
  std::int32_t item = -1;    ///< item of that sample for the module's modality; -1: the whole sample
  std::int64_t tokens = 0;
  std::int64_t context_tokens = 0;  ///< conditioning tokens (cross-attention modules), else 0
  friend bool operator==(const FlatItem&, const FlatItem&) = default;
};

/// A stage with its chunk and sub-microbatch resolved.
struct FlatStage {
  std::string module{};  ///< the module's name
  ModuleId module_id{0};  ///< its index in the model (and in FlatProgram::modules)
  int chunk = 0;
  int first_layer = 0;
  int layer_count = 0;
  RankId rank{0};  ///< where the chunk runs
  Pass pass = Pass::forward;
  MicrobatchId microbatch{0};
  SubMicrobatchId sub_microbatch{0};
  std::vector<FlatItem> items{};
  std::int64_t tokens = 0;  ///< sum of the items' tokens
  friend bool operator==(const FlatStage&, const FlatStage&) = default;
};

struct FlatAction {
  FlatOp op = FlatOp::forward;
  FlatStage stage{};           ///< see the header comment
  MemoryStrategy strategy{};   ///< compute ops: the stage's memory strategy; none for transfers
  TransferId transfer{};       ///< send, recv, wait; invalid (-1) for compute ops
  RankId peer{};               ///< send: the receiver; recv, wait: the sender; invalid for compute ops
  Bytes bytes{0};              ///< the transfer's size (0 for compute ops)
  FlatStage peer_stage{};      ///< send, recv, wait: the stage at the other end; empty for compute ops
  friend bool operator==(const FlatAction&, const FlatAction&) = default;
};

/// A module of the model as the program uses it: its chunks and where they run.
struct FlatModule {
  std::string name{};
  int layers = 0;
  std::string feeds{};  ///< the module consuming this one's output ("" for none)
  bool trainable = true;
  std::int64_t sub_microbatch_items = 0;  ///< B of the partition (0: a whole microbatch's items)
  std::vector<Chunk> chunks{};            ///< in data-flow order
  friend bool operator==(const FlatModule&, const FlatModule&) = default;
};

struct FlatRankProgram {
  RankId rank{0};
  std::vector<FlatAction> actions{};  ///< in the order the rank runs them
  friend bool operator==(const FlatRankProgram&, const FlatRankProgram&) = default;
};

struct FlatProgram {
  static constexpr std::uint32_t format_version = 1;
  std::string plan{};   ///< Plan::name
  std::string model{};  ///< Plan::model
  std::string setup{};  ///< Plan::setup
  int ranks = 0;
  int microbatches = 0;
  std::vector<FlatModule> modules{};        ///< indexed by ModuleId
  std::vector<FlatRankProgram> programs{};  ///< indexed by rank
  friend bool operator==(const FlatProgram&, const FlatProgram&) = default;
};

namespace detail {

/// Resolves the ids of one plan against it and the model (see flatten).
class Flattener {
 public:
  Flattener(const Plan& plan, const ModelSpec& model) : plan_(plan), model_(model) {}

  [[nodiscard]] FlatProgram run() const {
    FlatProgram out;
    out.plan = plan_.name;
    out.model = plan_.model;
    out.setup = plan_.setup;
    out.ranks = plan_.rank_count();
    out.microbatches = plan_.microbatches;
    out.modules = modules();
    out.programs.reserve(plan_.ranks.size());
    for (std::size_t r = 0; r < plan_.ranks.size(); ++r) {
      FlatRankProgram p;
      p.rank = RankId{static_cast<RankId::rep>(r)};
      p.actions.reserve(plan_.ranks[r].size());
      for (std::size_t a = 0; a < plan_.ranks[r].size(); ++a) p.actions.push_back(action(r, a));
      out.programs.push_back(std::move(p));
    }
    return out;
  }

 private:
  [[nodiscard]] std::vector<FlatModule> modules() const {
    if (plan_.partition.modules.size() != model_.modules.size())
      throw invalid_plan_error("the plan places " + std::to_string(plan_.partition.modules.size()) + " modules",
                               {.path = "partition", .expected = "one placement per module of model '" + model_.name + "' (" +
                                                                 std::to_string(model_.modules.size()) + ")"});
    std::vector<FlatModule> out;
    for (std::size_t m = 0; m < model_.modules.size(); ++m) {
      const ModuleSpec& spec = model_.modules[m];
      FlatModule fm;
      fm.name = spec.name;
      fm.layers = spec.layers;
      if (spec.feeds && spec.feeds->valid() && spec.feeds->index() < model_.modules.size())
        fm.feeds = model_.modules[spec.feeds->index()].name;
      fm.trainable = spec.trainable;
      fm.sub_microbatch_items = plan_.partition.modules[m].sub_microbatch_items;
      fm.chunks = plan_.partition.modules[m].chunks;
      out.push_back(std::move(fm));
    }
    return out;
  }

  /// The stage (module, chunk, sub-microbatch, pass) resolved; `where` names it in errors.
  [[nodiscard]] FlatStage stage(const StageRef& s, const std::string& where) const {
    if (!s.module.valid() || s.module.index() >= model_.modules.size())
      throw invalid_plan_error("names module " + std::to_string(s.module.value()),
                               {.path = where, .expected = "a module of model '" + model_.name + "'"});
    const ModulePlacement& placement = plan_.partition.modules[s.module.index()];
    if (s.chunk < 0 || static_cast<std::size_t>(s.chunk) >= placement.chunks.size())
      throw invalid_plan_error("names chunk " + std::to_string(s.chunk) + " of module '" + model_.modules[s.module.index()].name + "'",
                               {.path = where, .expected = "a chunk below " + std::to_string(placement.chunks.size())});
    if (!s.sub_microbatch.valid() || s.sub_microbatch.index() >= plan_.sub_microbatches.size())
      throw invalid_plan_error("names sub-microbatch " + std::to_string(s.sub_microbatch.value()),
                               {.path = where, .expected = "a sub-microbatch below " + std::to_string(plan_.sub_microbatches.size())});
    const Chunk& ch = placement.chunks[static_cast<std::size_t>(s.chunk)];
    const SubMicrobatchSpec& smb = plan_.sub_microbatches[s.sub_microbatch.index()];
    FlatStage out;
    out.module = model_.modules[s.module.index()].name;
    out.module_id = s.module;
    out.chunk = s.chunk;
    out.first_layer = ch.first_layer;
    out.layer_count = ch.layer_count;
    out.rank = ch.rank;
    out.pass = s.pass;
    out.microbatch = smb.microbatch();
    out.sub_microbatch = s.sub_microbatch;
    const auto tokens = smb.item_tokens();
    const auto context = smb.context_tokens();
    const auto origins = smb.items();
    out.items.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      FlatItem item;
      if (i < origins.size()) item.sample = origins[i].sample, item.item = origins[i].item;
      item.tokens = tokens[i];
      item.context_tokens = i < context.size() ? context[i] : 0;
      out.tokens += tokens[i];
      out.items.push_back(item);
    }
    return out;
  }

  [[nodiscard]] FlatAction action(std::size_t r, std::size_t a) const {
    const std::string where = "rank " + std::to_string(r) + ", action " + std::to_string(a);
    return std::visit(
        [&](const auto& x) -> FlatAction {
          using X = std::decay_t<decltype(x)>;
          FlatAction out;
          if constexpr (std::is_same_v<X, Forward> || std::is_same_v<X, Backward>) {
            const StageRef s{x.module, x.chunk, x.sub_microbatch, pass_of(x)};
            out.op = flat_op(s.pass);
            out.stage = stage(s, where);
            out.strategy = x.strategy;
          } else {
            if (!x.transfer.valid() || x.transfer.index() >= plan_.transfers.size())
              throw invalid_plan_error("names transfer " + std::to_string(x.transfer.value()),
                                       {.path = where, .expected = "a transfer below " + std::to_string(plan_.transfers.size())});
            const Transfer& t = plan_.transfers[x.transfer.index()];
            const bool sending = std::is_same_v<X, Send>;
            out.op = sending ? FlatOp::send : (std::is_same_v<X, Recv> ? FlatOp::recv : FlatOp::wait);
            out.transfer = x.transfer;
            out.peer = sending ? t.to : t.from;
            out.bytes = t.bytes;
            const std::string tw = where + " (transfer " + std::to_string(x.transfer.value()) + ")";
            out.stage = stage(sending ? t.producer : t.consumer, tw);
            out.peer_stage = stage(sending ? t.consumer : t.producer, tw);
          }
          return out;
        },
        plan_.ranks[r][a]);
  }

  template <class X>
  static Pass pass_of(const X& x) noexcept {
    if constexpr (std::is_same_v<X, Backward>) return x.pass;
    else return Pass::forward;
  }

  const Plan& plan_;
  const ModelSpec& model_;
};

}  // namespace detail

/// The flat program of `plan` for `model` (see the header comment). Throws Error(invalid_plan).
[[nodiscard]] inline FlatProgram flatten(const Plan& plan, const ModelSpec& model) {
  return detail::Flattener(plan, model).run();
}

}  // namespace pipeweaver
