#pragma once
// A multimodal model as the interchange format describes it: a small DAG of transformer
// modules (examples/workloads/README.md, "models/*.json"). Plain data; the math lives in
// model/layer_math.hpp and the JSON reader in io/workload_json.hpp.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"

namespace pipeweaver {

enum class ModuleRole : std::uint8_t { encoder, backbone, generator };
enum class FfnKind : std::uint8_t { gelu, swiglu };
enum class AttentionKind : std::uint8_t { causal, bidirectional };

[[nodiscard]] constexpr std::string_view to_string(ModuleRole r) noexcept {
  switch (r) {
    case ModuleRole::encoder: return "encoder";
    case ModuleRole::backbone: return "backbone";
    case ModuleRole::generator: return "generator";
  }
  return "?";
}
[[nodiscard]] constexpr std::string_view to_string(FfnKind f) noexcept {
  return f == FfnKind::gelu ? "gelu" : "swiglu";
}
[[nodiscard]] constexpr std::string_view to_string(AttentionKind a) noexcept {
  return a == AttentionKind::causal ? "causal" : "bidirectional";
}

/// One transformer module (an encoder, the backbone, a generator).
struct ModuleSpec {
  std::string name{};
  ModuleRole role = ModuleRole::backbone;
  std::string modality{};  ///< sample field this module consumes: "text", "image", "video", ...
  int layers = 0;
  std::int64_t hidden = 0;
  std::int64_t ffn_hidden = 0;
  int heads = 0;
  int kv_heads = 0;  ///< grouped-query attention when kv_heads < heads
  FfnKind ffn = FfnKind::gelu;
  AttentionKind attention = AttentionKind::causal;
  bool cross_attention = false;                 ///< each layer also attends to the feeding module's output
  std::optional<std::int64_t> vocab{};            ///< embedding + output head + loss on the backbone
  std::optional<ModuleId> feeds{};                ///< module that consumes this module's output
  double output_tokens_per_input_token = 1.0;   ///< encoders: tokens handed on per input token
  bool trainable = true;                        ///< a frozen module runs forward only

  [[nodiscard]] std::int64_t head_dim() const noexcept { return heads > 0 ? hidden / heads : 0; }
};

/// A model: modules in data-flow order. ModuleId(i) is modules[i].
struct ModelSpec {
  std::string name{};
  std::string description{};
  std::vector<ModuleSpec> modules{};

  [[nodiscard]] const ModuleSpec& module(ModuleId id) const { return modules.at(id.index()); }
  [[nodiscard]] std::size_t size() const noexcept { return modules.size(); }

  /// The module with this name, if any.
  [[nodiscard]] std::optional<ModuleId> find(std::string_view module_name) const noexcept {
    for (std::size_t i = 0; i < modules.size(); ++i)
      if (modules[i].name == module_name) return ModuleId{static_cast<ModuleId::rep>(i)};
    return std::nullopt;
  }
  /// Modules that feed `id` (its inputs), in module order.
  [[nodiscard]] std::vector<ModuleId> feeders(ModuleId id) const {
    std::vector<ModuleId> out;
    for (std::size_t i = 0; i < modules.size(); ++i)
      if (modules[i].feeds && *modules[i].feeds == id) out.push_back(ModuleId{static_cast<ModuleId::rep>(i)});
    return out;
  }
  /// The backbone (the language model). Every valid model has exactly one.
  [[nodiscard]] ModuleId backbone() const {
    for (std::size_t i = 0; i < modules.size(); ++i)
      if (modules[i].role == ModuleRole::backbone) return ModuleId{static_cast<ModuleId::rep>(i)};
    throw input_error("model '" + name + "' has no backbone module", {.path = "/modules", .expected = "one module with role \"backbone\""});
  }
};

}  // namespace pipeweaver
