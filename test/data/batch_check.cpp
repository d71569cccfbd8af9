// check_batch: every shape the planner cannot honor is refused with the microbatch, sample and
// field in the error's path; what is flexible by design (a microbatch count other than the
// setup's) passes; pack() output always passes.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/error_check.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"

using namespace pipeweaver;
using pwtest::contains;
using pwtest::error_of;

namespace {
const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;

Sample sample(std::int64_t text, std::vector<std::int64_t> images = {}, std::string modality = "image") {
  Sample s;
  s.text = text;
  if (!images.empty()) s.items.push_back(SampleItems{std::move(modality), std::move(images)});
  return s;
}

Batch batch_of(std::vector<std::vector<Sample>> mbs) {
  Batch b;
  for (auto& m : mbs) b.microbatches.push_back(Microbatch{std::move(m)});
  return b;
}

struct Fixture {
  ModelSpec model = io::read_model(workloads + "/models/vlm-s.json");
  Setup setup = io::read_setup(workloads + "/setups/h800-tp4-pp4.json");
};
}  // namespace

TEST_CASE_FIXTURE(Fixture, "check_batch: well-formed batches pass, whatever their microbatch count") {
  CHECK_NOTHROW(check_batch(model, setup, batch_of({{sample(100, {576})}})));  // 1 microbatch, the setup says 64
  CHECK_NOTHROW(check_batch(model, setup, batch_of({{sample(100), sample(200, {576, 676})}, {sample(30)}})));
  const Batch packed = sample_step(model, io::read_dataset(workloads + "/datasets/vlm-web-mix.json"), setup, 3, 0);
  CHECK_NOTHROW(check_batch(model, setup, packed));
}

TEST_CASE_FIXTURE(Fixture, "check_batch: each refused shape names microbatch, sample and field") {
  struct Case {
    std::string what;
    Batch batch;
    std::string path;
    std::string message;
  };
  Sample repeated = sample(10, {576});
  repeated.items.push_back(SampleItems{"image", {100}});
  Sample empty_list = sample(10);
  empty_list.items.push_back(SampleItems{"image", {}});
  std::vector<Sample> crowd(3, sample(3000));  // 9000 backbone tokens, the budget is the setup's max_tokens
  const std::vector<Case> cases{
      {"no microbatches", Batch{}, "/microbatches", "no microbatches"},
      {"an empty microbatch", batch_of({{sample(10)}, {}}), "/microbatches/1", "no samples"},
      {"a modality typo drops nothing silently", batch_of({{sample(10)}, {sample(10), sample(20, {576}, "images")}}),
       "/microbatches/1/1/images", "which no module"},
      {"negative text", batch_of({{sample(-5, {576})}}), "/microbatches/0/0/text", "-5 text tokens"},
      {"a 0-token image", batch_of({{sample(10, {576, 0})}}), "/microbatches/0/0/image/1", "item of 0 tokens"},
      {"an empty sample", batch_of({{sample(10), sample(0)}}), "/microbatches/0/1", "empty sample"},
      {"a modality listed twice", batch_of({{repeated}}), "/microbatches/0/0/image", "out of order or repeated"},
      {"an empty item list", batch_of({{empty_list}}), "/microbatches/0/0/image", "empty item list"},
      {"a microbatch over the token budget", batch_of({{sample(10)}, crowd}), "/microbatches/1", "over the setup's budget"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const auto e = error_of([&] { check_batch(model, setup, c.batch); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
    CHECK(e->context().path == c.path);
    CHECK(contains(e->message(), c.message));
  }
}

TEST_CASE("check_batch: the item budget of an encoder-budget setup") {
  ModelSpec model = io::read_model(workloads + "/models/vlm-s.json");
  Setup setup = io::read_setup(workloads + "/setups/h800-tp4-pp4.json");
  setup.microbatch = MicrobatchBudget{model.modules[0].name, 100000, 3};  // at most 3 images
  CHECK_NOTHROW(check_batch(model, setup, batch_of({{sample(10, {576, 576}), sample(10, {576})}})));
  const auto e = error_of([&] { check_batch(model, setup, batch_of({{sample(10, {576, 576}), sample(10, {576, 576})}})); });
  REQUIRE(e);
  CHECK(e->context().path == "/microbatches/0");
  CHECK(contains(e->message(), "holds 4 items"));
  CHECK(contains(e->context().expected, "max_items = 3"));
}
