// Packing and sample_step: invariants (budget, order, greediness, truncation counts, max_items)
// checked against an independent replay of the sample stream, plus hand-computed cases.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/error_check.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/workload_json.hpp"

using namespace pipeweaver;

namespace {
const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;

Sample sample(std::int64_t text, std::vector<std::int64_t> images) {
  Sample s;
  s.text = text;
  if (!images.empty()) s.items.push_back(SampleItems{"image", std::move(images)});
  return s;
}

Setup budget(std::string module, std::int64_t max_tokens, std::optional<std::int64_t> max_items = {}, int mbs = 4) {
  Setup s;
  s.name = "test";
  s.microbatch = MicrobatchBudget{std::move(module), max_tokens, max_items};
  s.microbatches_per_step = mbs;
  return s;
}
}  // namespace

TEST_CASE("backbone tokens: text + ceil(item tokens x output_tokens_per_input_token)") {
  const ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  const ModuleId vit{0}, llm{1};
  CHECK(encoder_output_tokens(m.module(vit), 676) == 169);
  CHECK(encoder_output_tokens(m.module(vit), 677) == 170);  // ceil(169.25)
  CHECK(encoder_output_tokens(m.module(vit), 1) == 1);
  CHECK(encoder_output_tokens(m.module(vit), 0) == 0);
  const Sample s = sample(100, {676, 676, 10});
  CHECK(module_load(m, llm, s) == ModuleLoad{100 + 169 + 169 + 3, 1});
  CHECK(module_load(m, vit, s) == ModuleLoad{676 + 676 + 10, 3});
  const Sample text_only = sample(40, {});
  CHECK(module_load(m, vit, text_only) == ModuleLoad{0, 0});
  Microbatch mb{{s, text_only}};
  CHECK(module_load(m, llm, mb) == ModuleLoad{441 + 40, 2});
}

TEST_CASE("pack: greedy in arrival order (hand-computed)") {
  const ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  // llm loads: 60, 30, 20, 50 + 169 = 219 > 200 (truncated: text to 31), 10
  const std::vector<Sample> in = {sample(60, {}), sample(30, {}), sample(20, {}), sample(50, {676}), sample(10, {})};
  const Batch b = pack(m, budget("llm", 200), in);
  REQUIRE(b.microbatches.size() == 3);
  CHECK(b.microbatches[0].samples == std::vector<Sample>{in[0], in[1], in[2]});  // 110
  CHECK(b.microbatches[1].samples == std::vector<Sample>{sample(31, {676})});   // 200, truncated
  CHECK(b.microbatches[2].samples == std::vector<Sample>{in[4]});
  CHECK(b.truncated_samples == 1);
}

TEST_CASE("truncation: text first then trailing items (counted)") {
  const ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  const Setup s = budget("llm", 8192);
  const ModuleId llm{1};
  SUBCASE("text only over") {
    Sample x = sample(10000, {676, 676});
    CHECK(fit_to_budget(m, s, llm, x));
    CHECK(x == sample(8192 - 338, {676, 676}));
  }
  SUBCASE("items alone over: trailing items dropped, text fills the rest") {
    Sample x = sample(500, std::vector<std::int64_t>(60, 676));  // 60 x 169 = 10140
    CHECK(fit_to_budget(m, s, llm, x));
    CHECK(x.tokens_of("image").size() == 48);  // 48 x 169 = 8112
    CHECK(x.text == 80);
    CHECK(module_load(m, llm, x).tokens == 8192);
  }
  SUBCASE("a sample that fits is untouched") {
    Sample x = sample(8192 - 169, {676});
    CHECK_FALSE(fit_to_budget(m, s, llm, x));
    CHECK(x == sample(8192 - 169, {676}));
  }
  SUBCASE("an item that alone exceeds the budget is infeasible") {
    Sample x = sample(1, {676, 40000});  // 40000 x 0.25 = 10000 > 8192
    const auto e = pwtest::error_of([&] { (void)fit_to_budget(m, s, llm, x); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::infeasible);
    CHECK(pwtest::contains(e->message(), "40000"));
    CHECK(pwtest::contains(e->message(), "8192"));
    CHECK(pwtest::contains(e->message(), "\"llm\""));
  }
  SUBCASE("encoder budget with max_items: trailing items of its modality dropped") {
    const ModelSpec t2v = io::read_model(workloads + "/models/t2v-s.json");
    const ModuleId dit{1};
    const Setup vs = budget("dit", 32768, 8);
    Sample x;
    x.text = 5000;  // does not count towards a dit budget
    x.items.push_back(SampleItems{"video", std::vector<std::int64_t>(10, 2048)});
    CHECK(fit_to_budget(t2v, vs, dit, x));
    CHECK(x.text == 5000);
    CHECK(x.tokens_of("video").size() == 8);
    Sample big;
    big.items.push_back(SampleItems{"video", {16 * 2048, 16 * 2048, 4 * 2048}});  // 73728 tokens
    CHECK(fit_to_budget(t2v, vs, dit, big));
    CHECK(big.tokens_of("video") == std::vector<std::int64_t>{16 * 2048});
    Sample huge;
    huge.items.push_back(SampleItems{"video", {40000}});
    const auto e = pwtest::error_of([&] { (void)fit_to_budget(t2v, vs, dit, huge); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::infeasible);
  }
}

TEST_CASE("sample_step: invariants against a replay of the step's sample stream") {
  struct Case {
    const char* model;
    const char* dataset;
    const char* setup;
  };
  const Case cases[] = {
      {"vlm-s", "vlm-web-mix", "h800-tp4-pp4"},
      {"vlm-s", "vlm-docs", "h800-tp4-pp4"},
      {"vlm-s", "vlm-captions", "h800-tp4-pp4"},
      {"tiny-vlm", "vlm-web-mix", "cpu-pp4"},  // 256-token budget: many truncations
      {"t2v-s", "t2v-clips", "t2v-h800-tp4-pp4"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.model);
    CAPTURE(c.dataset);
    const ModelSpec m = io::read_model(workloads + "/models/" + c.model + ".json");
    const DatasetSpec d = io::read_dataset(workloads + "/datasets/" + c.dataset + ".json");
    const Setup s = io::read_setup(workloads + "/setups/" + c.setup + ".json");
    const ModuleId bm = *m.find(s.microbatch.module);
    const auto& b = s.microbatch;
    for (int step : {0, 1, 5}) {
      CAPTURE(step);
      const Batch batch = sample_step(m, d, s, 1234, step);
      REQUIRE(batch.microbatches.size() == static_cast<std::size_t>(s.microbatches_per_step));
      // Replay: the step's own stream, each sample fitted alone, must be the concatenation.
      DatasetSampler replay(d, step_seed(1234, step));
      int truncated = 0;
      const Microbatch* prev = nullptr;
      for (const Microbatch& mb : batch.microbatches) {
        REQUIRE(!mb.samples.empty());
        const ModuleLoad load = module_load(m, bm, mb);
        CHECK(load.tokens <= b.max_tokens);
        if (b.max_items) CHECK(load.items <= *b.max_items);
        for (const Sample& got : mb.samples) {
          Sample want = replay.next();
          truncated += fit_to_budget(m, s, bm, want) ? 1 : 0;
          REQUIRE(got == want);
        }
        if (prev != nullptr) {  // greedy: the first sample did not fit into the previous microbatch
          const ModuleLoad before = module_load(m, bm, *prev);
          const ModuleLoad first = module_load(m, bm, mb.samples.front());
          CHECK((before.tokens + first.tokens > b.max_tokens || (b.max_items && before.items + first.items > *b.max_items)));
        }
        prev = &mb;
      }
      CHECK(batch.truncated_samples == truncated);
      // step K is reproducible on its own and differs from other steps
      const Batch again = sample_step(m, d, s, 1234, step);
      CHECK(again.microbatches.front().samples == batch.microbatches.front().samples);
      CHECK(again.microbatches.back().samples == batch.microbatches.back().samples);
    }
    CHECK_FALSE(sample_step(m, d, s, 1234, 0).microbatches.front().samples ==
                sample_step(m, d, s, 1234, 1).microbatches.front().samples);
  }
}

TEST_CASE("tiny budgets truncate and count") {
  const ModelSpec m = io::read_model(workloads + "/models/tiny-vlm.json");
  const DatasetSpec d = io::read_dataset(workloads + "/datasets/vlm-web-mix.json");
  const Setup s = io::read_setup(workloads + "/setups/cpu-pp4.json");  // 256 llm tokens
  const Batch b = sample_step(m, d, s, 9, 0);
  CHECK(b.truncated_samples > 0);  // web documents have a median of 700 text tokens
}

TEST_CASE("budget errors") {
  using pwtest::error_of;
  const ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  const DatasetSpec d = io::read_dataset(workloads + "/datasets/vlm-web-mix.json");
  {
    const auto e = error_of([&] { (void)sample_step(m, d, budget("vision", 100), 1, 0); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
    CHECK(e->context().path == "/microbatch/module");
  }
  {
    const auto e = error_of([&] { (void)sample_step(m, d, budget("llm", 100, 4), 1, 0); });
    REQUIRE(e);
    CHECK(e->context().path == "/microbatch/max_items");
  }
  {
    const auto e = error_of([&] { (void)sample_step(m, d, budget("llm", 100), 1, -1); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
  }
  {  // a budget the data never gives tokens to: an error, not an endless loop
    const DatasetSpec text_only = io::read_dataset(workloads + "/datasets/vlm-web-mix.json");
    DatasetSpec no_images = text_only;
    for (auto& src : no_images.mixture) src.items.clear();
    const auto e = error_of([&] { (void)sample_step(m, no_images, budget("vit", 1000), 1, 0); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::infeasible);
  }
  {  // budget of 100 llm tokens and 169-token images: infeasible, names the budget and the item
    const auto e = error_of([&] { (void)sample_step(m, d, budget("llm", 100), 1, 0); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::infeasible);
    CHECK(pwtest::contains(e->message(), "676"));
    CHECK(pwtest::contains(e->message(), "budget of 100"));
  }
}
