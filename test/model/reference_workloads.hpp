#pragma once
// The reference models and setups of examples/workloads/, built in code from the numbers in
// the JSON files (the cost tests must not depend on the JSON reader).
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/model/setup.hpp>

#include <optional>
#include <string>

namespace pipeweaver::test {

inline ModuleSpec module(std::string name, ModuleRole role, std::string modality, int layers, std::int64_t hidden,
                         std::int64_t ffn_hidden, int heads, int kv_heads, FfnKind ffn, AttentionKind attention) {
  ModuleSpec m;
  m.name = std::move(name);
  m.role = role;
  m.modality = std::move(modality);
  m.layers = layers;
  m.hidden = hidden;
  m.ffn_hidden = ffn_hidden;
  m.heads = heads;
  m.kv_heads = kv_heads;
  m.ffn = ffn;
  m.attention = attention;
  return m;
}

/// vit + llm of models/vlm-{s,m,l}.json and models/tiny-vlm.json.
inline ModelSpec vlm(std::string name, ModuleSpec vit, ModuleSpec llm, std::int64_t vocab) {
  vit.feeds = ModuleId{1};
  vit.output_tokens_per_input_token = 0.25;
  llm.vocab = vocab;
  return ModelSpec{std::move(name), "", {std::move(vit), std::move(llm)}};
}
inline ModelSpec vlm_s() {
  return vlm("vlm-s",
             module("vit", ModuleRole::encoder, "image", 45, 3200, 12800, 25, 25, FfnKind::gelu, AttentionKind::bidirectional),
             module("llm", ModuleRole::backbone, "text", 32, 4096, 14336, 32, 8, FfnKind::swiglu, AttentionKind::causal),
             128256);
}
inline ModelSpec vlm_m() {
  return vlm("vlm-m",
             module("vit", ModuleRole::encoder, "image", 45, 3200, 12800, 25, 25, FfnKind::gelu, AttentionKind::bidirectional),
             module("llm", ModuleRole::backbone, "text", 64, 5120, 27648, 40, 8, FfnKind::swiglu, AttentionKind::causal),
             152064);
}
inline ModelSpec vlm_l() {
  return vlm("vlm-l",
             module("vit", ModuleRole::encoder, "image", 48, 6144, 24576, 48, 48, FfnKind::gelu, AttentionKind::bidirectional),
             module("llm", ModuleRole::backbone, "text", 80, 8192, 29568, 64, 8, FfnKind::swiglu, AttentionKind::causal),
             152064);
}
inline ModelSpec tiny_vlm() {
  return vlm("tiny-vlm",
             module("vit", ModuleRole::encoder, "image", 4, 64, 256, 4, 4, FfnKind::gelu, AttentionKind::bidirectional),
             module("llm", ModuleRole::backbone, "text", 8, 96, 384, 4, 4, FfnKind::swiglu, AttentionKind::causal), 512);
}
/// llm + dit of models/t2v-s.json.
inline ModelSpec t2v_s() {
  auto llm = module("llm", ModuleRole::backbone, "text", 32, 4096, 14336, 32, 8, FfnKind::swiglu, AttentionKind::causal);
  llm.vocab = 128256;
  llm.feeds = ModuleId{1};
  auto dit = module("dit", ModuleRole::generator, "video", 32, 3584, 14336, 28, 28, FfnKind::gelu, AttentionKind::bidirectional);
  dit.cross_attention = true;
  return ModelSpec{"t2v-s", "", {std::move(llm), std::move(dit)}};
}

/// setups/h800-tp4-pp4.json (tp = 4) and its tp = 8 variants.
inline Setup h800(int tensor_parallel = 4, int pipeline_stages = 4) {
  Setup s;
  s.name = "h800-tp" + std::to_string(tensor_parallel) + "-pp" + std::to_string(pipeline_stages);
  s.pipeline_stages = pipeline_stages;
  s.tensor_parallel = tensor_parallel;
  s.data_parallel = 1;
  s.device = DeviceSpec{"H800-SXM", 989, 3350, 80, 6};
  s.pipeline_link = LinkSpec{25, 8};
  s.tensor_parallel_link = LinkSpec{200, 3};
  s.microbatch = MicrobatchBudget{"llm", 8192, std::nullopt};
  s.microbatches_per_step = 64;
  s.optimizer_bytes_per_param = 16;
  return s;
}
/// setups/cpu-pp4.json.
inline Setup cpu_pp4() {
  Setup s;
  s.name = "cpu-pp4";
  s.pipeline_stages = 4;
  s.device = DeviceSpec{"host-cpu", 0.05, 10, 1, 0};
  s.pipeline_link = LinkSpec{5, 2};
  s.microbatch = MicrobatchBudget{"llm", 256, std::nullopt};
  s.microbatches_per_step = 8;
  return s;
}

}  // namespace pipeweaver::test
