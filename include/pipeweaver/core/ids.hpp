#pragma once
// Strongly typed indices. Each id is a dense index into a vector owned by the
// object that defines it (a module into ModelSpec::modules, a rank into a plan's
// per-rank lists, ...); mixing kinds is a compile error.
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace pipeweaver {

template <class Tag>
class Id {
 public:
  using rep = std::int32_t;
  constexpr Id() = default;
  constexpr explicit Id(rep v) noexcept : v_(v) {}
  [[nodiscard]] constexpr rep value() const noexcept { return v_; }
  /// The id as an index into a container.
  [[nodiscard]] constexpr std::size_t index() const noexcept { return static_cast<std::size_t>(v_); }
  [[nodiscard]] constexpr bool valid() const noexcept { return v_ >= 0; }
  friend constexpr auto operator<=>(Id, Id) noexcept = default;

 private:
  rep v_ = -1;
};

struct ModuleTag;
struct RankTag;
struct MicrobatchTag;
struct SubMicrobatchTag;
struct TransferTag;

using ModuleId = Id<ModuleTag>;                ///< index into ModelSpec::modules
using RankId = Id<RankTag>;                    ///< pipeline rank, 0 .. P-1
using MicrobatchId = Id<MicrobatchTag>;        ///< index of a microbatch within a step
using SubMicrobatchId = Id<SubMicrobatchTag>;  ///< index into Plan::sub_microbatches
using TransferId = Id<TransferTag>;            ///< index into Plan::transfers

}  // namespace pipeweaver

template <class Tag>
struct std::hash<pipeweaver::Id<Tag>> {
  std::size_t operator()(pipeweaver::Id<Tag> id) const noexcept { return std::hash<std::int32_t>{}(id.value()); }
};
