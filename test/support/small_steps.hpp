#pragma once
// Random small training steps with realistic cost ratios, for the exact-optimum checks and the
// exact-solver study (bench/exact_study.cpp): the reference models' layer shapes (vlm-s's
// InternViT-like encoder and Llama-3-8B-like backbone, t2v-s's diffusion transformer) with
// fewer layers, on P = 2..4 ranks of the reference H800 setups with 2..8 microbatches per step,
// costs from the analytic model. Three families:
//  * "vlm": encoder + backbone (vlm-s shapes, the 45 : 32 layer ratio kept), vlm-web-mix samples;
//  * "t2v": text backbone + diffusion transformer (t2v-s shapes, 1 : 1), t2v-clips samples;
//  * "i2v": encoder + backbone + diffusion transformer (an image-to-video model: every sample
//    has a caption, one conditioning image and one clip), packed by video tokens like t2v.
// Deterministic: the same seed gives the same step everywhere. Needs PIPEWEAVER_WORKLOADS_DIR.
// No test framework here: bench/ includes it too.
#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/data/dataset_spec.hpp>
#include <pipeweaver/data/packing.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/model/setup.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

#include "splitmix.hpp"

namespace pwtest {
namespace pw = pipeweaver;

struct SmallStepLimits {
  int min_ranks = 2, max_ranks = 4;
  int min_microbatches = 2, max_microbatches = 8;
  int max_layers_per_rank = 2;  ///< backbone layers = P · k, k in 1..this
};

struct SmallStep {
  std::string family{};  ///< "vlm", "t2v" or "i2v"
  pw::ModelSpec model{};
  pw::Setup setup{};
  pw::DatasetSpec dataset{};
  pw::Batch batch{};
  [[nodiscard]] std::string label() const {
    std::string s = family + " P=" + std::to_string(setup.pipeline_stages) + " M=" + std::to_string(setup.microbatches_per_step) + " layers";
    for (const auto& m : model.modules) s += " " + m.name + ":" + std::to_string(m.layers);
    return s;
  }
};

namespace detail {
/// The image-to-video dataset of the "i2v" family: a caption, one 676-patch image, one clip of
/// 1-8 s at 2048 latent tokens per second.
inline pw::DatasetSpec i2v_dataset() {
  pw::DatasetSpec d;
  d.name = "i2v-clips";
  pw::SourceSpec s;
  s.name = "image-to-video";
  s.text.kind = pw::LognormalDist{100, 0.6};
  s.text.min = 8;
  s.text.max = 600;
  pw::ItemsSpec image;
  image.modality = "image";
  image.count.kind = pw::FixedDist{1};
  image.tokens.kind = pw::FixedDist{676};
  pw::ItemsSpec video;
  video.modality = "video";
  video.count.kind = pw::FixedDist{1};
  video.tokens.kind = pw::UniformDist{1, 8};
  video.tokens.scale = 2048;
  s.items = {image, video};  // sorted by modality name
  d.mixture = {s};
  return d;
}
}  // namespace detail

/// The small step of `seed` (see the header comment).
inline SmallStep small_step(std::uint64_t seed, const SmallStepLimits& limits = {}) {
  const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
  SplitMix rng{seed};
  SmallStep s;
  const int family = rng.uniform(0, 2);
  const int P = rng.uniform(limits.min_ranks, limits.max_ranks);
  const int M = rng.uniform(limits.min_microbatches, limits.max_microbatches);
  const int backbone_layers = P * rng.uniform(1, std::max(1, limits.max_layers_per_rank));
  const pw::ModelSpec vlm = pw::io::read_model(dir + "/models/vlm-s.json");
  const pw::ModelSpec t2v = pw::io::read_model(dir + "/models/t2v-s.json");
  if (family == 0) {
    s.family = "vlm";
    s.model = vlm;
    s.model.modules[0].layers = std::max(P, (backbone_layers * 45 + 16) / 32);  // vit
    s.model.modules[1].layers = backbone_layers;                                // llm
    s.setup = pw::io::read_setup(dir + "/setups/h800-tp4-pp4.json");
    s.dataset = pw::io::read_dataset(dir + "/datasets/vlm-web-mix.json");
  } else {
    s.family = family == 1 ? "t2v" : "i2v";
    s.model = t2v;
    s.model.modules[0].layers = backbone_layers;  // llm
    s.model.modules[1].layers = backbone_layers;  // dit
    s.setup = pw::io::read_setup(dir + "/setups/t2v-h800-tp4-pp4.json");
    s.dataset = pw::io::read_dataset(dir + "/datasets/t2v-clips.json");
    if (family == 2) {
      pw::ModuleSpec vit = vlm.modules[0];
      vit.layers = std::max(P, backbone_layers);
      vit.feeds = pw::ModuleId{1};  // the backbone, once the encoder is inserted first
      s.model.modules.insert(s.model.modules.begin(), vit);
      s.model.modules[1].feeds = pw::ModuleId{2};  // llm feeds dit
      s.model.name = "i2v-s";
      s.dataset = detail::i2v_dataset();
    }
  }
  s.model.name += "-small";
  s.setup.pipeline_stages = P;
  s.setup.microbatches_per_step = M;
  s.setup.name += "-p" + std::to_string(P) + "-m" + std::to_string(M);
  s.batch = pw::sample_step(s.model, s.dataset, s.setup, seed, 0);
  return s;
}

}  // namespace pwtest
