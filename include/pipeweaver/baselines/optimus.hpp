#pragma once
// Optimus-style baseline (after Feng et al., "Optimus: accelerating large-scale
// multi-modal LLM training by bubble exploitation"). What is implemented:
//  * Partition. The backbone and any generators form their own chain, split into P·v contiguous
//    ranges placed round-robin (range j on rank j mod P), i.e. Megatron's interleaved 1F1B for
//    the language part. Every encoder is spread over all ranks separately: its layers are cut
//    into P contiguous near-equal chunks (the first L mod P one layer longer), chunk c on rank c.
//  * Schedule. Each rank runs its backbone/generator stages in Megatron's interleaved 1F1B order
//    (interleaved_1f1b.hpp). Its encoder stages fill the bubbles of that order: a list scheduler
//    driven by the cost model (builder.hpp, bubble_fill_schedule) runs the rank's next backbone
//    stage whenever it is ready; when it is not (warm-up, cool-down, any stall) the rank runs the
//    next ready encoder stage instead: encoder backwards first (they free memory), then encoder
//    forwards, each in microbatch order. Encoder forwards therefore land in the warm-up bubbles
//    (the backbone cannot start before the first encoder outputs exist), encoder backwards in
//    the cool-down bubbles (they become ready only as the backbone's backwards finish).
//    Encoder forwards that are not needed yet stay within the memory the backbone's own
//    schedule leaves free. Variant (chosen like v, on the profile): encoder forwards of the P
//    microbatches after the oldest one the backbone has not started are "due" and go first,
//    so that the backbone never stalls waiting for them once the warm-up bubbles are used up
//    (more activations in flight; the recompute choice pays for them).
//  * Not modeled: Optimus' fine-grained interleaving of encoder kernels into the tensor-
//    parallel communication bubbles inside a backbone stage, and its separate parallel layout
//    for the encoder; both need a kernel-level cost model.
//  * Choice. The filler variant, v ∈ options.virtual_stages and the backbone split are chosen once on the profile
//    steps (min-max DP over the backbone chain's per-layer costs, neighboring splits emulated),
//    like interleaved-1f1b; v = 1 if the backbone chain has too few layers. A model without
//    encoders degenerates to interleaved 1F1B of its chain.
// Uniform recompute per step: the cheapest setting that fits memory (encoder activations are held
// from the warm-up to the cool-down, so Optimus often needs recompute where 1F1B does not).
// std-only.
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/baselines/builder.hpp"

namespace pipeweaver {

/// Optimus' layout: `split` over the non-encoder chain (backbone, generators), encoders as filler
/// chunks spread over the ranks (chunk c on rank c, near-equal layer counts).
[[nodiscard]] inline PipelineLayout optimus_layout(const ModelSpec& model, const ChainSplit& split) {
  std::vector<ModuleId> main;
  for (ModuleId m : chain_modules(model))
    if (model.module(m).role != ModuleRole::encoder) main.push_back(m);
  PipelineLayout layout = chain_layout(model, main, split, "optimus");
  for (std::size_t i = 0; i < model.modules.size(); ++i) {
    if (model.modules[i].role != ModuleRole::encoder) continue;
    int first = 0, rank = 0;
    for (int n : even_layer_counts(model.modules[i].layers, split.ranks)) {
      layout.partition.modules[i].chunks.push_back(Chunk{first, n, RankId{rank++}});
      layout.range_of_chunk[i].push_back(-1);
      first += n;
    }
  }
  return layout;
}

template <class C>
[[nodiscard]] PreparedBaseline prepare_optimus(BaselineContext<C>& ctx, std::span<const Batch> profile,
                                               const BaselineOptions& options = {}) {
  const ModelSpec& model = ctx.model();
  const int P = ctx.setup().pipeline_stages;
  std::vector<ModuleId> main;
  for (ModuleId m : chain_modules(model))
    if (model.module(m).role != ModuleRole::encoder) main.push_back(m);
  const auto weights = chain_layer_costs(ctx, main, profile);
  const auto make = [&](const ChainSplit& s) {
    StaticBaseline b;
    b.name = "optimus";
    b.layout = optimus_layout(model, s);
    b.chain = chain_modules(model);
    b.order = BaselineOrder::bubble_fill;
    b.description = "v=" + std::to_string(s.virtual_stages) + ", backbone ranges " + describe_bounds(s) +
                    ", encoders spread over all ranks in the bubbles";
    return b;
  };
  std::vector<int> vs;
  for (int v : options.virtual_stages)
    if (v >= 1 && static_cast<int>(weights.size()) >= P * v) vs.push_back(v);
  if (vs.empty()) vs.push_back(1);
  if (static_cast<int>(weights.size()) < P)
    throw infeasible_error("model '" + model.name + "' has " + std::to_string(weights.size()) + " backbone layers for " +
                    std::to_string(P) + " pipeline stages", {.path = "optimus", .expected = "at least one backbone layer per pipeline stage"});
  PreparedBaseline best;
  bool found = false;
  for (int lookahead : {-1, P})
    for (int v : vs) {
      const ChainSplit start{P, v, min_max_split(weights, P * v)};
      const auto make_la = [&](const ChainSplit& s) {
        StaticBaseline b = make(s);
        b.filler_lookahead = lookahead;
        b.description += lookahead < 0 ? " only" : ", encoder forwards due " + std::to_string(lookahead) + " microbatches ahead";
        return b;
      };
      auto [b, score] = refine_split(ctx, start, weights, make_la, profile, options.refine_evaluations);
      if (!found || score < best.score) {
        best = {std::move(b), score};
        found = true;
      }
    }
  return best;
}

}  // namespace pipeweaver
