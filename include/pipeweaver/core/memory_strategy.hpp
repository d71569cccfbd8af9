#pragma once
// How a stage trades time for activation memory. A chunk's layers are identical, so a
// strategy is fully described by how many of them use each technique; the remaining
// layers keep their activations on the device until the backward pass.
#include <compare>
#include <cstdint>
#include <string>

namespace pipeweaver {

struct MemoryStrategy {
  std::int16_t full_recompute = 0;       ///< layers that keep only their input and rerun the forward in the backward
  std::int16_t selective_recompute = 0;  ///< layers that drop the attention core's intermediates and recompute them
  std::int16_t offload = 0;              ///< layers whose activations go to host memory and come back for the backward

  [[nodiscard]] constexpr int layers_changed() const noexcept { return full_recompute + selective_recompute + offload; }
  [[nodiscard]] constexpr bool is_none() const noexcept { return layers_changed() == 0; }
  /// Every one of `layers` layers fully recomputed.
  [[nodiscard]] static constexpr MemoryStrategy full(int layers) noexcept {
    return MemoryStrategy{static_cast<std::int16_t>(layers), 0, 0};
  }
  /// Every one of `layers` layers selectively recomputed.
  [[nodiscard]] static constexpr MemoryStrategy selective(int layers) noexcept {
    return MemoryStrategy{0, static_cast<std::int16_t>(layers), 0};
  }
  friend constexpr auto operator<=>(const MemoryStrategy&, const MemoryStrategy&) noexcept = default;
  // Declared explicitly: nvcc 13 never defines the == implied by a defaulted <=> on a non-template
  // class (undefined reference at link time).
  friend constexpr bool operator==(const MemoryStrategy&, const MemoryStrategy&) noexcept = default;
};

/// "none", or e.g. "recompute 3 + selective 1 + offload 2".
[[nodiscard]] inline std::string to_string(const MemoryStrategy& s) {
  if (s.is_none()) return "none";
  std::string out;
  auto add = [&](const char* name, int n) {
    if (n == 0) return;
    if (!out.empty()) out += " + ";
    out += name;
    out += ' ';
    out += std::to_string(n);
  };
  add("recompute", s.full_recompute);
  add("selective", s.selective_recompute);
  add("offload", s.offload);
  return out;
}

}  // namespace pipeweaver
