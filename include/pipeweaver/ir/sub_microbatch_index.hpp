#pragma once
// Per microbatch and module, the ids of that module's sub-microbatches (in id order). The
// splitter emits sub-microbatches grouped this way; builders, the stage graph and the
// emulator look them up here instead of scanning the whole list. std-only (nvcc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

class SubMicrobatchIndex {
 public:
  SubMicrobatchIndex() = default;
  /// `microbatches` < 0: one more than the largest microbatch id present (0 if none).
  /// Throws Error{invalid_plan} when a sub-microbatch names a module >= `modules` or a negative
  /// microbatch / one >= an explicit `microbatches`, or when there would be more than
  /// limits::max_microbatches_per_step microbatches or limits::max_modules modules.
  SubMicrobatchIndex(std::span<const SubMicrobatchSpec> sub_microbatches, int modules, int microbatches = -1)
      : modules_(modules) {
    if (modules < 0) throw invalid_plan_error("negative module count");
    std::int64_t mbs = microbatches;
    if (mbs < 0) {
      mbs = 0;
      for (const auto& s : sub_microbatches) mbs = std::max<std::int64_t>(mbs, std::int64_t{s.microbatch().value()} + 1);
    }
    // Cells are microbatches x modules: bounded before they are allocated.
    if (mbs > limits::max_microbatches_per_step || modules > limits::max_modules)
      throw invalid_plan_error("sub-microbatches of " + std::to_string(mbs) + " microbatches and " + std::to_string(modules) + " modules",
                               {.path = "sub-microbatches", .expected = "at most " + std::to_string(limits::max_microbatches_per_step) +
                                                                        " microbatches and " + std::to_string(limits::max_modules) + " modules"});
    microbatches_ = static_cast<int>(mbs);
    const std::size_t cells = static_cast<std::size_t>(mbs) * static_cast<std::size_t>(modules);
    std::vector<std::int32_t> counts(cells, 0);
    for (std::size_t i = 0; i < sub_microbatches.size(); ++i) {
      const auto& s = sub_microbatches[i];
      const auto where = "sub-microbatch " + std::to_string(i);
      if (s.module().value() < 0 || s.module().value() >= modules)
        throw invalid_plan_error("sub-microbatch names module " + std::to_string(s.module().value()), {.path = where, .expected = "a module id below " + std::to_string(modules)});
      if (s.microbatch().value() < 0 || s.microbatch().value() >= mbs)
        throw invalid_plan_error("sub-microbatch names microbatch " + std::to_string(s.microbatch().value()), {.path = where, .expected = "a microbatch id below " + std::to_string(mbs)});
      ++counts[cell(s.microbatch(), s.module())];
    }
    offsets_.assign(cells + 1, 0);
    for (std::size_t c = 0; c < cells; ++c) offsets_[c + 1] = offsets_[c] + counts[c];
    ids_.resize(sub_microbatches.size());
    std::vector<std::int32_t> fill(offsets_.begin(), offsets_.end() - 1);
    for (std::size_t i = 0; i < sub_microbatches.size(); ++i) {
      const auto c = cell(sub_microbatches[i].microbatch(), sub_microbatches[i].module());
      ids_[static_cast<std::size_t>(fill[c]++)] = SubMicrobatchId{static_cast<SubMicrobatchId::rep>(i)};
    }
  }

  /// Ids of module `m`'s sub-microbatches in microbatch `mb`, ascending (empty if none or out of range).
  [[nodiscard]] std::span<const SubMicrobatchId> of(MicrobatchId mb, ModuleId m) const noexcept {
    if (mb.value() < 0 || mb.value() >= microbatches_ || m.value() < 0 || m.value() >= modules_) return {};
    const auto c = cell(mb, m);
    return std::span<const SubMicrobatchId>(ids_).subspan(static_cast<std::size_t>(offsets_[c]),
                                                          static_cast<std::size_t>(offsets_[c + 1] - offsets_[c]));
  }
  [[nodiscard]] int microbatches() const noexcept { return microbatches_; }
  [[nodiscard]] int modules() const noexcept { return modules_; }

 private:
  [[nodiscard]] std::size_t cell(MicrobatchId mb, ModuleId m) const noexcept {
    return mb.index() * static_cast<std::size_t>(modules_) + m.index();
  }
  int modules_ = 0;
  int microbatches_ = 0;
  std::vector<std::int32_t> offsets_{0};
  std::vector<SubMicrobatchId> ids_;
};

}  // namespace pipeweaver
