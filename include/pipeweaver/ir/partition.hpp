#pragma once
// Where each module's layers live: every module is cut into chunks of consecutive layers,
// each chunk on one pipeline rank. DIP places chunk c of a module with P·K chunks on rank
// c mod P; the baselines place contiguous ranges. Plain data, std-only (compiles under nvcc).
#include <cstdint>
#include <string>
#include <vector>

#include "pipeweaver/core/ids.hpp"

namespace pipeweaver {

struct Chunk {
  int first_layer = 0;
  int layer_count = 0;
  RankId rank{0};
  friend bool operator==(const Chunk&, const Chunk&) = default;
};

struct ModulePlacement {
  std::vector<Chunk> chunks{};  ///< in data-flow order; a sub-microbatch passes them in sequence
  /// Items per sub-microbatch (B_i); 0 means the module's items of a microbatch form one
  /// sub-microbatch.
  std::int64_t sub_microbatch_items = 0;
  friend bool operator==(const ModulePlacement&, const ModulePlacement&) = default;
};

struct Partition {
  std::string name{};  ///< e.g. "dip", "1f1b"
  int ranks = 1;     ///< P
  std::vector<ModulePlacement> modules{};  ///< indexed by ModuleId

  [[nodiscard]] const ModulePlacement& placement(ModuleId m) const { return modules.at(m.index()); }
  [[nodiscard]] const Chunk& chunk(ModuleId m, int c) const {
    return modules.at(m.index()).chunks.at(static_cast<std::size_t>(c));
  }
  [[nodiscard]] int chunk_count(ModuleId m) const { return static_cast<int>(modules.at(m.index()).chunks.size()); }
  friend bool operator==(const Partition&, const Partition&) = default;
};

}  // namespace pipeweaver
