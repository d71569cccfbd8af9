#pragma once
// The plan IR: the partition, the sub-microbatches with their shapes, the
// transfers, and per rank an ordered list of actions that a worker executes in order.
// std-only: the CUDA backend compiles this under nvcc.
//
// Semantics (shared by the validator, the emulator and the executors):
//  * Forward / Backward run on the rank's compute stream, one after another, in list order.
//  * Send is issued after the action before it on the same rank (it waits for the data it
//    sends to exist) and runs on the directed (from, to) link; Recv is posted at its position
//    and completes when the matching Send's data arrives. Transfers on one directed link
//    complete in the order they are listed (one global order per rank pair).
//  * Wait blocks the compute stream until the named transfer's Recv has completed.
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

/// Forward pass of one chunk on one sub-microbatch. The strategy decides what it keeps.
struct Forward {
  ModuleId module{0};
  int chunk = 0;
  SubMicrobatchId sub_microbatch{0};
  MemoryStrategy strategy{};
  friend bool operator==(const Forward&, const Forward&) = default;
};
/// Backward pass (whole, or its input- or weight-gradient part) of one chunk.
struct Backward {
  ModuleId module{0};
  int chunk = 0;
  SubMicrobatchId sub_microbatch{0};
  MemoryStrategy strategy{};  ///< must equal the matching Forward's strategy
  Pass pass = Pass::backward;  ///< backward, backward_input or backward_weight
  friend bool operator==(const Backward&, const Backward&) = default;
};
struct Send {
  TransferId transfer{0};
  friend bool operator==(const Send&, const Send&) = default;
};
struct Recv {
  TransferId transfer{0};
  friend bool operator==(const Recv&, const Recv&) = default;
};
struct Wait {
  TransferId transfer{0};
  friend bool operator==(const Wait&, const Wait&) = default;
};

using Action = std::variant<Forward, Backward, Send, Recv, Wait>;

/// The compute stage an endpoint of a transfer belongs to.
struct StageRef {
  ModuleId module{0};
  int chunk = 0;
  SubMicrobatchId sub_microbatch{0};
  Pass pass = Pass::forward;
  friend bool operator==(const StageRef&, const StageRef&) = default;
};

/// One point-to-point message: activations of a forward, or gradients of a backward, going
/// from the producing stage's rank to the consuming stage's rank.
struct Transfer {
  RankId from{0};
  RankId to{0};
  StageRef producer{};
  StageRef consumer{};
  Bytes bytes{0};
  friend bool operator==(const Transfer&, const Transfer&) = default;
};

struct Plan {
  static constexpr std::uint32_t format_version = 1;
  std::string name{};   ///< builder that made it: "dip", "1f1b", ...
  std::string model{};  ///< ModelSpec::name it was built for
  std::string setup{};  ///< Setup::name it was built for
  int microbatches = 0;
  Partition partition{};
  std::vector<SubMicrobatchSpec> sub_microbatches{};  ///< indexed by SubMicrobatchId
  std::vector<Transfer> transfers{};                  ///< indexed by TransferId
  std::vector<std::vector<Action>> ranks{};           ///< ranks[r] = actions of rank r, in order

  [[nodiscard]] int rank_count() const noexcept { return static_cast<int>(ranks.size()); }
  [[nodiscard]] const SubMicrobatchSpec& sub_microbatch(SubMicrobatchId id) const { return sub_microbatches.at(id.index()); }
  [[nodiscard]] const Transfer& transfer(TransferId id) const { return transfers.at(id.index()); }
  friend bool operator==(const Plan&, const Plan&) = default;
};

}  // namespace pipeweaver
