// Execution correctness: the gradients of one pipelined step of tiny-vlm on the host
// backend (P = 4, several sub-microbatches per module) equal those of the same samples run
// sequentially without a pipeline, and SGD through pipelined steps lowers the loss.
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/host/gradients.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/host.hpp>

#include <chrono>
#include <cmath>
#include <string>

namespace pw = pipeweaver;

namespace {

using test_plans::gradient_norm;
using test_plans::max_relative_gradient_error;

}  // namespace

TEST_CASE("host: a pipelined tiny-vlm step gives the sequential step's gradients") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const auto cfg = toy_vlm::Config::from(spec);
  toy_vlm::DatasetOptions o;
  o.microbatches = 3;
  o.samples_per_microbatch = 3;
  // A batch with text-only samples and samples of two images (whose merged tokens must reach
  // the LLM in image order, possibly from different ViT sub-microbatches).
  toy_vlm::ToyBatch batch;
  for (std::uint64_t seed = 2024;; ++seed) {
    batch = toy_vlm::make_batch(cfg, seed, o);
    int two = 0, none = 0;
    for (const auto& mb : batch.samples)
      for (const auto& s : mb) {
        two += s.images.size() == 2 ? 1 : 0;
        none += s.images.empty() ? 1 : 0;
      }
    if (two >= 2 && none >= 1) break;
  }

  for (const pw::Partition& partition : {test_plans::dip_partition(2, 1), test_plans::chain_partition()}) {
    CAPTURE(partition.name);
    const pw::Plan plan = test_plans::make_plan(spec, partition, batch.meta);
    if (partition.name == "dip") {  // several sub-microbatches of each module per microbatch
      CHECK(test_plans::count_module(plan, cfg.llm_module) == 9);
      CHECK(test_plans::count_module(plan, cfg.vit_module) > 3);
    }
    toy_vlm::Model<float> seq(cfg, 42), pipe(cfg, 42);
    const double loss_seq = toy_vlm::reference_step(seq, batch);

    toy_vlm::Callbacks callbacks(pipe, batch, plan.rank_count());
    pw::host::Options options;
    options.timeout = std::chrono::seconds(60);
    options.executor.sizes = callbacks.sizes();
    pw::host::HostExecutor executor(options);
    executor.run(plan, spec, callbacks);

    CHECK(gradient_norm(seq) > 0);
    const double err = max_relative_gradient_error(seq, pipe);
    MESSAGE("partition " << partition.name << ": max relative gradient error " << err);
    CHECK(err <= 1e-5);
    CHECK(callbacks.loss() == doctest::Approx(loss_seq).epsilon(1e-9));
    for (int r = 0; r < plan.rank_count(); ++r) {  // the pool reuses memory
      const auto& ex = executor.executor(pw::RankId{r});
      CHECK(ex.pool_bytes() <= ex.unpooled_bytes());
    }

    SUBCASE("a second step with the same executor reuses everything and agrees again") {
      seq.zero_grad();
      pipe.zero_grad();
      toy_vlm::reference_step(seq, batch);
      callbacks.reset_loss();
      executor.run(plan, spec, callbacks);
      CHECK(max_relative_gradient_error(seq, pipe) <= 1e-5);
    }
  }
}

TEST_CASE("host: SGD through pipelined steps lowers the loss over 50 steps") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const auto cfg = toy_vlm::Config::from(spec);
  toy_vlm::DatasetOptions o;
  o.microbatches = 2;
  o.samples_per_microbatch = 2;
  o.min_text = 5;
  o.max_text = 7;
  o.min_image_tokens = 4;
  o.max_image_tokens = 8;
  const auto batch = toy_vlm::make_batch(cfg, 77, o);
  const pw::Plan plan = test_plans::make_plan(spec, test_plans::dip_partition(1, 1), batch.meta);
  toy_vlm::Model<float> model(cfg, 7);
  toy_vlm::Callbacks callbacks(model, batch, plan.rank_count());
  pw::host::Options options;
  options.executor.sizes = callbacks.sizes();
  pw::host::HostExecutor executor(options);
  std::vector<double> losses;
  for (int step = 0; step < 50; ++step) {
    model.zero_grad();
    callbacks.reset_loss();
    executor.run(plan, spec, callbacks);
    losses.push_back(callbacks.loss());
    model.sgd(0.05);
  }
  MESSAGE("loss: first " << losses.front() << ", step 10 " << losses[10] << ", last " << losses.back());
  CHECK(losses.front() == doctest::Approx(std::log(512.0)).epsilon(0.2));  // about uniform at the start
  CHECK(losses.back() < 0.5 * losses.front());
  CHECK(losses[25] < losses[0]);
  CHECK(losses.back() < losses[25]);
}
