#pragma once
// Which half of training a stage performs.
#include <cstdint>
#include <string_view>

namespace pipeweaver {

/// A stage's pass. `backward` computes input and weight gradients together; a plan may instead
/// split it into `backward_input` (on the critical path) and `backward_weight` (deferrable), as
/// zero-bubble schedules do. A split backward has both parts in the plan, input part first.
enum class Pass : std::uint8_t { forward, backward, backward_input, backward_weight };

[[nodiscard]] constexpr std::string_view to_string(Pass p) noexcept {
  switch (p) {
    case Pass::forward: return "forward";
    case Pass::backward: return "backward";
    case Pass::backward_input: return "backward_input";
    case Pass::backward_weight: return "backward_weight";
  }
  return "?";
}
[[nodiscard]] constexpr bool is_backward(Pass p) noexcept { return p != Pass::forward; }

}  // namespace pipeweaver
