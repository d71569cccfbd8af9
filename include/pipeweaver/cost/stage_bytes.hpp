#pragma once
// The terms every cost model of cost/ computes the same way, whatever its latencies: a stage's
// activation and output bytes (model/memory.hpp, the stage's module checked against the model
// first) and the transfer time of the pipeline link (latency + bytes / bandwidth). std-only.
#include <string>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pipeweaver::detail {

/// Refuses a stage whose module is not one of `model`'s.
inline void check_stage_module(const ModelSpec& model, ModuleId id) {
  if (!id.valid() || id.index() >= model.modules.size())
    throw input_error("stage names module " + std::to_string(id.value()),
                      {.path = "model '" + model.name + "'", .expected = "a module id below " + std::to_string(model.modules.size())});
}

/// Device bytes the forward of `stage` keeps until its backward (stage_activation_bytes).
template <Stage S, SubMicrobatch M>
[[nodiscard]] Bytes checked_activation_bytes(const ModelSpec& model, const Setup& setup, const S& stage, const M& smb,
                                             const MemoryStrategy& strategy) {
  check_stage_module(model, stage.module());
  return stage_activation_bytes(model, setup.tensor_parallel, stage.module(), stage.first_layer(), stage.layer_count(),
                                smb.item_tokens(), smb.context_tokens(), strategy);
}

/// Bytes the forward of `stage` hands to the next stage (stage_output_bytes).
template <Stage S, SubMicrobatch M>
[[nodiscard]] Bytes checked_output_bytes(const ModelSpec& model, const S& stage, const M& smb) {
  check_stage_module(model, stage.module());
  return stage_output_bytes(model, stage.module(), stage.first_layer(), stage.layer_count(), smb.item_tokens(),
                            smb.context_tokens());
}

/// latency_us + bytes / gb_per_s of the pipeline link.
[[nodiscard]] inline Nanoseconds pipeline_transfer_time(const Setup& setup, Bytes bytes) {
  return round_ns(setup.pipeline_link.latency_us * 1e3 + static_cast<double>(bytes.count()) / setup.pipeline_link.gb_per_s);
}

}  // namespace pipeweaver::detail
