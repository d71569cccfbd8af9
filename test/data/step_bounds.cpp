// Bounds of sampling and of batches (core/limits.hpp): a step that needs more items than
// limits::max_items_per_step is refused with Error(infeasible) naming the setup's field instead
// of growing without bound; batch checks refuse counts beyond the limits and every module's
// tokens beyond limits::max_module_tokens_per_microbatch, naming the microbatch.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"

namespace pw = pipeweaver;

namespace {
const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;
}

TEST_CASE("a dataset whose samples carry 65,536 items each cannot make a step hold more than max_items_per_step") {
  const pw::ModelSpec model = pw::io::read_model(workloads + "/models/tiny-vlm.json");
  pw::Setup setup = pw::io::read_setup(workloads + "/setups/cpu-pp4.json");
  setup.microbatches_per_step = 65536;
  pw::DatasetSpec d;
  d.name = "many-items";
  pw::SourceSpec s;
  s.text.kind = pw::FixedDist{1};
  s.items.push_back(pw::ItemsSpec{"image", pw::Distribution{pw::FixedDist{65536}}, pw::Distribution{pw::FixedDist{1}}});
  d.mixture.push_back(s);
  try {
    (void)pw::sample_step(model, d, setup, 1, 0);
    FAIL("sampled");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::infeasible);
    CHECK(e.context().path == "/microbatches_per_step");
    CHECK(std::string(e.what()).find(std::to_string(pw::limits::max_items_per_step) + " items") != std::string::npos);
  }
}

TEST_CASE("batch checks: a microbatch's tokens on a module are bounded even where no budget counts them") {
  const pw::ModelSpec model = pw::io::read_model(workloads + "/models/tiny-vlm.json");
  pw::Setup setup = pw::io::read_setup(workloads + "/setups/cpu-pp4.json");
  setup.microbatch.module = "vit";  // the budget counts the encoder; the backbone's text is unbudgeted
  setup.microbatch.max_tokens = 1 << 20;
  pw::Batch b;
  pw::Microbatch mb;
  // 2^36 / 2^30 = 64 samples of the largest text fill the backbone; one more is over.
  for (int i = 0; i < 65; ++i) mb.samples.push_back(pw::Sample{pw::limits::max_item_tokens, {}});
  b.microbatches.push_back(mb);
  try {
    pw::check_batch(model, setup, b);
    FAIL("accepted");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::input);
    CHECK(e.context().path == "/microbatches/0");
    CHECK(std::string(e.what()).find("tokens on module \"llm\"") != std::string::npos);
  }
  b.microbatches[0].samples.pop_back();
  CHECK_NOTHROW(pw::check_batch(model, setup, b));
  b.microbatches[0].samples[0].text = pw::limits::max_item_tokens + 1;
  CHECK_THROWS_AS(pw::check_batch(model, setup, b), pw::Error);
}

TEST_CASE("module loads saturate instead of wrapping on counts no check has seen yet") {
  const pw::ModelSpec model = pw::io::read_model(workloads + "/models/tiny-vlm.json");
  pw::Microbatch mb;
  for (int i = 0; i < 4; ++i) mb.samples.push_back(pw::Sample{std::int64_t{1} << 61, {}});
  const auto load = pw::module_load(model, model.backbone(), mb);
  CHECK(load.tokens == std::int64_t{1} << 62);  // 4 x 2^61 is held at 2^62, not wrapped to a negative count
}
