#pragma once
// Test helpers for the baseline tests: a step of the toy chain (pwtest::chain_model) on P ranks
// with M microbatches of one short sample each, on a device that only its memory limits, and a
// baseline over the chain split evenly into P·v chunks.
#include <optional>
#include <string>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"

namespace pwtest {

inline pipeweaver::Setup toy_setup(int P, int M, double memory_gib = 1000) {
  pipeweaver::Setup s;
  s.name = "toy";
  s.pipeline_stages = P;
  s.device = pipeweaver::DeviceSpec{"toy", 1, 1, memory_gib, 0};
  s.pipeline_link = pipeweaver::LinkSpec{1, 0};
  s.microbatch = pipeweaver::MicrobatchBudget{"llm", 1 << 20, std::nullopt};
  s.microbatches_per_step = M;
  return s;
}

/// Microbatch i holds one text-only sample of 128 + i tokens.
inline pipeweaver::Batch toy_batch(int M) {
  pipeweaver::Batch b;
  for (int i = 0; i < M; ++i) b.microbatches.push_back(pipeweaver::Microbatch{{pipeweaver::Sample{128 + i, {}}}});
  return b;
}

/// The chain's layers split evenly into P·v chunks, run in `order`.
inline pipeweaver::StaticBaseline even_chain(const pipeweaver::ModelSpec& model, int P, int v, pipeweaver::BaselineOrder order,
                                             const std::string& name = "t") {
  const int L = model.modules[0].layers;
  pipeweaver::ChainSplit split{P, v, {}};
  for (int j = 0; j <= P * v; ++j) split.bounds.push_back(L * j / (P * v));
  pipeweaver::StaticBaseline b;
  b.name = name;
  b.chain = pipeweaver::chain_modules(model);
  b.layout = pipeweaver::chain_layout(model, b.chain, split, name);
  b.order = order;
  return b;
}

}  // namespace pwtest
