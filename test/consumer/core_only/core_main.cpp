// A consumer of pipeweaver::core alone: a model, a setup and a batch built in code, planned
// with the analytic cost model and checked. No JSON, no backend.
#include <pipeweaver/pipeweaver_core.hpp>

#include <cstdio>

int main() {
  namespace pw = pipeweaver;
  pw::ModelSpec model;
  model.name = "core-only";
  pw::ModuleSpec vit{.name = "vit", .role = pw::ModuleRole::encoder, .modality = "image", .layers = 8, .hidden = 1024,
                     .ffn_hidden = 4096, .heads = 16, .kv_heads = 16, .ffn = pw::FfnKind::gelu,
                     .attention = pw::AttentionKind::bidirectional, .feeds = pw::ModuleId{1}, .output_tokens_per_input_token = 0.25};
  pw::ModuleSpec llm{.name = "llm", .role = pw::ModuleRole::backbone, .modality = "text", .layers = 16, .hidden = 2048,
                     .ffn_hidden = 8192, .heads = 16, .kv_heads = 4, .ffn = pw::FfnKind::swiglu, .vocab = 32000};
  model.modules = {vit, llm};
  pw::Setup setup;
  setup.name = "core-only-pp4";
  setup.pipeline_stages = 4;
  setup.device = {.name = "gpu", .bf16_tflops = 900, .hbm_gb_per_s = 3000, .memory_gib = 80, .reserved_gib = 4};
  setup.pipeline_link = {.gb_per_s = 50, .latency_us = 5};
  setup.microbatch = {.module = "llm", .max_tokens = 4096, .max_items = {}};
  setup.microbatches_per_step = 8;
  pw::validate(model);
  pw::validate(setup);

  pw::Batch batch;
  for (int m = 0; m < 8; ++m) {
    pw::Sample s;
    s.text = 200 + 50 * m;
    s.items.push_back(pw::SampleItems{"image", {576, 576 * (1 + m % 3)}});
    batch.microbatches.push_back(pw::Microbatch{{s, s}});
  }
  const pw::AnalyticCostModel cost(model, setup);
  pw::Planner<pw::AnalyticCostModel> planner(model, setup, cost, std::vector<pw::Batch>{batch},
                                             {.budget = std::chrono::nanoseconds{0}, .iterations = 4});
  const pw::PlanResult r = planner.plan(batch);
  pw::validate(r.plan, model, setup, cost);
  const pw::EmulationResult e = pw::emulate(r.plan, model, setup, cost);
  std::printf("pipeweaver core consumer: plan '%s', %.3f ms (emulated %.3f ms), lower bound %.3f ms\n", r.source.c_str(),
              pw::to_ms(r.step_time), pw::to_ms(e.step_time), pw::to_ms(r.lower_bound));
  return e.step_time == r.step_time && r.lower_bound <= r.step_time ? 0 : 1;
}
