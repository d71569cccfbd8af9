#pragma once
// The library's own Stage and SubMicrobatch types (they satisfy the concepts of
// core/concepts.hpp). std-only: they travel inside a Plan to the CUDA backend.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/ir/partition.hpp"

namespace pipeweaver {

/// One chunk's forward or backward work (satisfies `Stage`).
class StageSpec {
 public:
  constexpr StageSpec() = default;
  constexpr StageSpec(ModuleId module, int chunk, RankId rank, Pass pass, int first_layer, int layer_count) noexcept
      : module_(module), chunk_(chunk), rank_(rank), pass_(pass), first_layer_(first_layer), layer_count_(layer_count) {}
  /// The stage of chunk `c` of module `m` in `partition`.
  static StageSpec of(const Partition& partition, ModuleId m, int c, Pass pass) {
    const Chunk& ch = partition.chunk(m, c);
    return StageSpec{m, c, ch.rank, pass, ch.first_layer, ch.layer_count};
  }

  [[nodiscard]] constexpr ModuleId module() const noexcept { return module_; }
  [[nodiscard]] constexpr int chunk() const noexcept { return chunk_; }
  [[nodiscard]] constexpr RankId rank() const noexcept { return rank_; }
  [[nodiscard]] constexpr Pass pass() const noexcept { return pass_; }
  [[nodiscard]] constexpr int first_layer() const noexcept { return first_layer_; }
  [[nodiscard]] constexpr int layer_count() const noexcept { return layer_count_; }
  friend constexpr bool operator==(const StageSpec&, const StageSpec&) noexcept = default;

 private:
  ModuleId module_{0};
  int chunk_ = 0;
  RankId rank_{0};
  Pass pass_ = Pass::forward;
  int first_layer_ = 0;
  int layer_count_ = 0;
};

/// Where an item of a sub-microbatch comes from in its microbatch: the sample, and the item's
/// index within that sample's list for the module's modality (-1 for a backbone sequence,
/// which is the whole sample).
struct ItemRef {
  std::int32_t sample = 0;
  std::int32_t item = -1;
  friend constexpr bool operator==(const ItemRef&, const ItemRef&) noexcept = default;
};

/// A modality-specific piece of a microbatch with its shape (satisfies `SubMicrobatch`).
/// Shapes travel in the plan so that no rank ever exchanges shapes at run time.
class SubMicrobatchSpec {
 public:
  SubMicrobatchSpec() = default;
  SubMicrobatchSpec(ModuleId module, MicrobatchId microbatch, std::vector<std::int64_t> item_tokens,
                    std::vector<std::int64_t> context_tokens = {}, std::vector<ItemRef> items = {})
      : module_(module),
        microbatch_(microbatch),
        item_tokens_(std::move(item_tokens)),
        context_tokens_(std::move(context_tokens)),
        items_(std::move(items)) {}

  [[nodiscard]] ModuleId module() const noexcept { return module_; }
  [[nodiscard]] MicrobatchId microbatch() const noexcept { return microbatch_; }
  /// Token count of each item (attention never crosses items).
  [[nodiscard]] std::span<const std::int64_t> item_tokens() const noexcept { return item_tokens_; }
  /// Per item, tokens of the conditioning sequence (cross-attention modules only; else empty).
  [[nodiscard]] std::span<const std::int64_t> context_tokens() const noexcept { return context_tokens_; }
  /// Origin of each item in the microbatch (same length as item_tokens, or empty if unknown).
  [[nodiscard]] std::span<const ItemRef> items() const noexcept { return items_; }
  [[nodiscard]] std::int64_t total_tokens() const noexcept {
    std::int64_t s = 0;
    for (auto t : item_tokens_) s += t;
    return s;
  }
  friend bool operator==(const SubMicrobatchSpec&, const SubMicrobatchSpec&) = default;

 private:
  ModuleId module_{0};
  MicrobatchId microbatch_{0};
  std::vector<std::int64_t> item_tokens_;
  std::vector<std::int64_t> context_tokens_;
  std::vector<ItemRef> items_;
};

static_assert(Stage<StageSpec>);
static_assert(SubMicrobatch<SubMicrobatchSpec>);

}  // namespace pipeweaver
