#pragma once
// The smallest model the schedule-level tests need: one backbone module of identical layers with
// tiny shapes, so that static memory stays small.
#include <cstdint>
#include <optional>

#include <pipeweaver/model/model_spec.hpp>

namespace pwtest {

/// The module "llm" of `layers` layers; `vocab` gives it a loss (a trainable module without one
/// gets no backward stages in a built stage graph).
inline pipeweaver::ModelSpec tiny_chain_model(int layers, std::optional<std::int64_t> vocab = std::nullopt) {
  pipeweaver::ModelSpec m;
  m.name = "chain";
  m.modules.push_back(pipeweaver::ModuleSpec{.name = "llm", .role = pipeweaver::ModuleRole::backbone, .modality = "text",
                                             .layers = layers, .hidden = 64, .ffn_hidden = 256, .heads = 4, .kv_heads = 4,
                                             .vocab = vocab});
  return m;
}

}  // namespace pwtest
