#pragma once
// Gradient comparisons of toy_vlm models for the host backend's correctness tests: the
// measures, a batch that exercises image splitting, and a pipelined step on four host threads
// checked against the sequential step (examples/toy_vlm's reference).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <doctest/doctest.h>

#include <pipeweaver/host.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/model/model_spec.hpp>

#include "../../../examples/toy_vlm/toy_vlm.hpp"

namespace test_plans {

/// Largest elementwise |a - b| / (|a| + tiny) over every parameter gradient.
inline double max_relative_gradient_error(toy_vlm::Model<float>& a, toy_vlm::Model<float>& b) {
  auto pa = a.params(), pb = b.params();
  double worst = 0;
  for (std::size_t t = 0; t < pa.size(); ++t)
    for (std::size_t i = 0; i < pa[t]->g.size(); ++i) {
      const double x = pa[t]->g[i], y = pb[t]->g[i];
      worst = std::max(worst, std::abs(x - y) / (std::abs(x) + 1e-12));
    }
  return worst;
}

/// Euclidean norm of all parameter gradients.
inline double gradient_norm(toy_vlm::Model<float>& m) {
  double s = 0;
  for (auto* p : m.params())
    for (double g : p->g) s += g * g;
  return std::sqrt(s);
}

/// A batch where every microbatch has several images (so DIP cuts the ViT's work into several
/// sub-microbatches per microbatch) and some samples have two images or none: the first seed
/// from 31 whose batch of four microbatches of four samples has that shape.
inline toy_vlm::ToyBatch varied_batch(const toy_vlm::Config& cfg) {
  toy_vlm::DatasetOptions o;
  o.microbatches = 4;
  o.samples_per_microbatch = 4;
  o.max_images = 2;
  for (std::uint64_t seed = 31;; ++seed) {
    toy_vlm::ToyBatch batch = toy_vlm::make_batch(cfg, seed, o);
    int two = 0, none = 0, min_images = 1 << 30;
    for (const auto& mb : batch.samples) {
      int images = 0;
      for (const auto& s : mb) {
        two += s.images.size() == 2 ? 1 : 0;
        none += s.images.empty() ? 1 : 0;
        images += static_cast<int>(s.images.size());
      }
      min_images = std::min(min_images, images);
    }
    if (two >= 2 && none >= 1 && min_images >= 3) return batch;
  }
}

/// Runs `plan` on `run_batch` (the data in the plan's microbatches) on four host threads and
/// compares its gradients (within 1e-5 relative error) and loss with the sequential step over
/// `reference_batch` (the same samples, grouped as given).
inline void check_sequential_gradients(const pipeweaver::ModelSpec& spec, const toy_vlm::ToyBatch& reference_batch,
                                       const toy_vlm::ToyBatch& run_batch, const pipeweaver::Plan& plan) {
  const auto cfg = toy_vlm::Config::from(spec);
  toy_vlm::Model<float> seq(cfg, 42), pipe(cfg, 42);
  const double loss_seq = toy_vlm::reference_step(seq, reference_batch);
  toy_vlm::Callbacks callbacks(pipe, run_batch, plan.rank_count());
  pipeweaver::host::Options options;
  options.timeout = std::chrono::seconds(60);
  options.executor.sizes = callbacks.sizes();
  pipeweaver::host::run_step(plan, spec, callbacks, options);
  REQUIRE(gradient_norm(seq) > 0);
  const double err = max_relative_gradient_error(seq, pipe);
  MESSAGE("plan " << plan.name << ": max relative gradient error " << err);
  CHECK(err <= 1e-5);
  CHECK(callbacks.loss() == doctest::Approx(loss_seq).epsilon(1e-9));
}

}  // namespace test_plans
