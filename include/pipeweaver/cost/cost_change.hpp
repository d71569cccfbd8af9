#pragma once
// What an update of a cost model changed, as the stage-cost caches need to know it: the
// (module, pass) pairs whose stage latencies or activation bytes may differ under the new model,
// or everything. A cache (emulate/stage_cost_cache.hpp) drops exactly the entries of those pairs
// and keeps every other one, so the entries whose inputs did not change are reused.
//
// Whoever makes the new model says what changed (the calibrators of cost/online_calibration.hpp
// do): list every pass whose figure moves, including derived ones (a model whose Pass::backward
// is backward_input + backward_weight must list backward when either part changes). Transfer
// times and output bytes are never cached, so they need no entry. std-only.
#include <algorithm>
#include <utility>
#include <vector>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/pass.hpp"

namespace pipeweaver {

class CostChange {
 public:
  /// Nothing changed.
  CostChange() = default;
  /// Every stage cost may have changed (a new model of unknown relation, or a global factor).
  [[nodiscard]] static CostChange everything() {
    CostChange c;
    c.all_ = true;
    return c;
  }

  /// Stages of module `m` in pass `p` may have changed.
  void add(ModuleId m, Pass p) {
    if (all_ || affects(m, p)) return;
    stages_.emplace_back(m, p);
    std::sort(stages_.begin(), stages_.end());
  }
  /// Every pass of module `m` may have changed.
  void add_module(ModuleId m) {
    for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight}) add(m, p);
  }
  /// Also what `other` changed.
  void merge(const CostChange& other) {
    if (other.all_) {
      all_ = true;
      stages_.clear();
      return;
    }
    for (const auto& [m, p] : other.stages_) add(m, p);
  }

  [[nodiscard]] bool all() const noexcept { return all_; }
  [[nodiscard]] bool empty() const noexcept { return !all_ && stages_.empty(); }
  [[nodiscard]] bool affects(ModuleId m, Pass p) const noexcept {
    return all_ || std::binary_search(stages_.begin(), stages_.end(), std::pair<ModuleId, Pass>{m, p});
  }
  /// The pairs listed, sorted (empty when all() is true).
  [[nodiscard]] const std::vector<std::pair<ModuleId, Pass>>& stages() const noexcept { return stages_; }
  friend bool operator==(const CostChange&, const CostChange&) = default;

 private:
  bool all_ = false;
  std::vector<std::pair<ModuleId, Pass>> stages_;  // sorted, unique
};

}  // namespace pipeweaver
