// The workload readers: every shipped file reads with the values it holds; every class of bad
// input is an Error(input) naming file, JSON path and what was expected.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/error_check.hpp"
#include "pipeweaver/io/workload_json.hpp"

using namespace pipeweaver;
using pwtest::contains;
using pwtest::error_of;
using json = nlohmann::json;

namespace {
const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;

json load(const std::string& rel) {
  std::ifstream in(workloads + "/" + rel);
  return json::parse(in);
}

struct Expect {
  std::string path;
  std::string message;  // a substring of Error::message()
};

/// Applies `mutate` to the JSON of `rel`, parses it with `parse`, and checks the error.
template <class Parse>
void check_error(const std::string& rel, const std::function<void(json&)>& mutate, Expect want, Parse parse) {
  json j = load(rel);
  mutate(j);
  const std::string source = "mutated/" + rel;
  const auto e = error_of([&] { (void)parse(j.dump(2), source); });
  REQUIRE_MESSAGE(e, "no error for " << want.path);
  CHECK(e->kind() == ErrorKind::input);
  CHECK(e->context().file == source);
  CHECK(e->context().path == want.path);
  CHECK_MESSAGE(contains(e->message(), want.message), std::string(e->what()));
  CHECK(!e->context().expected.empty());
  CHECK(contains(e->what(), source));  // the one-line message names the file too
}

void model_error(const std::function<void(json&)>& mutate, Expect want, const std::string& rel = "models/vlm-s.json") {
  check_error(rel, mutate, want, [](std::string_view t, std::string_view s) { return io::parse_model(t, s); });
}
void setup_error(const std::function<void(json&)>& mutate, Expect want, const std::string& rel = "setups/h800-tp4-pp4.json") {
  check_error(rel, mutate, want, [](std::string_view t, std::string_view s) { return io::parse_setup(t, s); });
}
void dataset_error(const std::function<void(json&)>& mutate, Expect want, const std::string& rel = "datasets/vlm-web-mix.json") {
  check_error(rel, mutate, want, [](std::string_view t, std::string_view s) { return io::parse_dataset(t, s); });
}
}  // namespace

TEST_CASE("every shipped workload file reads and holds the values of its JSON") {
  for (const auto& entry : std::filesystem::directory_iterator(workloads + "/models")) {
    CAPTURE(entry.path().string());
    const ModelSpec m = io::read_model(entry.path());
    const json j = load("models/" + entry.path().filename().string());
    CHECK(m.name == j["name"]);
    REQUIRE(m.modules.size() == j["modules"].size());
    for (std::size_t i = 0; i < m.modules.size(); ++i) {
      const json& jm = j["modules"][i];
      CHECK(m.modules[i].name == jm["name"]);
      CHECK(to_string(m.modules[i].role) == jm["role"].get<std::string>());
      CHECK(m.modules[i].layers == jm["layers"]);
      CHECK(m.modules[i].hidden == jm["hidden"]);
      CHECK(m.modules[i].ffn_hidden == jm["ffn_hidden"]);
      CHECK(m.modules[i].heads == jm["heads"]);
      CHECK(m.modules[i].kv_heads == jm["kv_heads"]);
      CHECK(to_string(m.modules[i].ffn) == jm["ffn"].get<std::string>());
      CHECK(to_string(m.modules[i].attention) == jm["attention"].get<std::string>());
      CHECK(m.modules[i].cross_attention == jm.value("cross_attention", false));
      CHECK(m.modules[i].vocab.has_value() == jm.contains("vocab"));
      if (jm.contains("feeds")) {
        REQUIRE(m.modules[i].feeds);
        CHECK(m.module(*m.modules[i].feeds).name == jm["feeds"]);
      } else {
        CHECK_FALSE(m.modules[i].feeds);
      }
      CHECK(m.modules[i].output_tokens_per_input_token == jm.value("output_tokens_per_input_token", 1.0));
    }
  }
  for (const auto& entry : std::filesystem::directory_iterator(workloads + "/setups")) {
    CAPTURE(entry.path().string());
    const Setup s = io::read_setup(entry.path());
    const json j = load("setups/" + entry.path().filename().string());
    CHECK(s.name == j["name"]);
    CHECK(s.pipeline_stages == j["pipeline_stages"]);
    CHECK(s.tensor_parallel == j["tensor_parallel"]);
    CHECK(s.device.bf16_tflops == j["device"]["bf16_tflops"]);
    CHECK(s.device.reserved_gib == j["device"]["reserved_gib"]);
    CHECK(s.pipeline_link.gb_per_s == j["links"]["pipeline"]["gb_per_s"]);
    CHECK(s.tensor_parallel_link.has_value() == j["links"].contains("tensor_parallel"));
    CHECK(s.microbatch.module == j["microbatch"]["module"]);
    CHECK(s.microbatch.max_tokens == j["microbatch"]["max_tokens"]);
    CHECK(s.microbatch.max_items.has_value() == j["microbatch"].contains("max_items"));
    CHECK(s.microbatches_per_step == j["microbatches_per_step"]);
  }
  for (const auto& entry : std::filesystem::directory_iterator(workloads + "/datasets")) {
    CAPTURE(entry.path().string());
    const DatasetSpec d = io::read_dataset(entry.path());
    const json j = load("datasets/" + entry.path().filename().string());
    REQUIRE(d.mixture.size() == j["mixture"].size());
    for (std::size_t i = 0; i < d.mixture.size(); ++i) {
      CHECK(d.mixture[i].weight == j["mixture"][i]["weight"]);
      CHECK(d.mixture[i].items.size() == j["mixture"][i]["items"].size());
    }
  }
}

TEST_CASE("a few values by hand from vlm-s and vlm-web-mix and the t2v setups") {
  const ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  REQUIRE(m.modules.size() == 2);
  CHECK(m.modules[0].role == ModuleRole::encoder);
  CHECK(m.modules[0].feeds == ModuleId{1});
  CHECK(m.modules[0].output_tokens_per_input_token == 0.25);
  CHECK(m.modules[1].vocab == 128256);
  CHECK(m.backbone() == ModuleId{1});
  const DatasetSpec d = io::read_dataset(workloads + "/datasets/vlm-web-mix.json");
  const auto& docs = d.mixture[0];
  CHECK(docs.name == "interleaved-docs");
  REQUIRE(std::holds_alternative<LognormalDist>(docs.text.kind));
  CHECK(std::get<LognormalDist>(docs.text.kind).median == 700);
  CHECK(docs.text.min == 32);
  CHECK(docs.text.max == 7000);
  REQUIRE(docs.items.size() == 1);
  CHECK(std::get<PoissonDist>(docs.items[0].count.kind).mean == 2.5);
  CHECK(docs.items[0].count.max == 30);
  const auto& qa = std::get<ChoiceDist>(d.mixture[2].items[0].count.kind);
  CHECK(qa.values == std::vector<double>{0, 1});
  const DatasetSpec clips = io::read_dataset(workloads + "/datasets/t2v-clips.json");
  CHECK(clips.mixture[0].items[0].tokens.scale == 2048);
  const Setup s = io::read_setup(workloads + "/setups/t2v-h800-tp4-pp4.json");
  CHECK(s.microbatch.max_items == 8);
  CHECK(s.tensor_parallel_link->latency_us == 3);
}

TEST_CASE("the suite: cases resolved relative to the suite file and every case consistent") {
  const io::Suite suite = io::read_suite(workloads + "/suite.json");
  CHECK(suite.name == "reference-suite");
  REQUIRE(suite.cases.size() == 10);
  for (const io::SuiteCase& c : suite.cases) {
    CAPTURE(c.name);
    CHECK(std::filesystem::exists(c.model));
    CHECK(std::filesystem::exists(c.dataset));
    CHECK(std::filesystem::exists(c.setup));
    CHECK_NOTHROW((void)io::read_case(c));
  }
  CHECK(suite.cases[0].model == std::filesystem::path(workloads) / "models/vlm-s.json");
  const io::Suite elsewhere = io::parse_suite(R"({"name": "s", "cases": [{"name": "a", "model": "m.json", "dataset": "/abs/d.json", "setup": "../s.json"}]})",
                                      "/some/dir/suite.json");
  CHECK(elsewhere.cases[0].model == std::filesystem::path("/some/dir/m.json"));
  CHECK(elsewhere.cases[0].dataset == std::filesystem::path("/abs/d.json"));
  CHECK(elsewhere.cases[0].setup == std::filesystem::path("/some/dir/../s.json"));
  const auto dup = error_of([] {
    (void)io::parse_suite(R"({"name": "s", "cases": [{"name": "a", "model": "m", "dataset": "d", "setup": "s"},
                                                 {"name": "a", "model": "m", "dataset": "d", "setup": "s"}]})",
                      "suite.json");
  });
  REQUIRE(dup);
  CHECK(dup->context().path == "/cases/1/name");
  const auto unknown = error_of([] { (void)io::parse_suite(R"({"name": "s", "cases": [{"name": "a", "modle": "m"}]})", "suite.json"); });
  REQUIRE(unknown);
  CHECK(unknown->context().path == "/cases/0/modle");
}

TEST_CASE("model errors name the path and the problem and what was expected") {
  SUBCASE("unknown keys") {
    model_error([](json& j) { j["modules"][0]["layer"] = 4; }, {"/modules/0/layer", "unknown key \"layer\""});
    model_error([](json& j) { j["extra"] = 1; }, {"/extra", "unknown key"});
  }
  SUBCASE("wrong types") {
    model_error([](json& j) { j["modules"][1]["layers"] = "32"; }, {"/modules/1/layers", "found a string"});
    model_error([](json& j) { j["modules"][1]["layers"] = 32.5; }, {"/modules/1/layers", "non-integer"});
    model_error([](json& j) { j["modules"][1]["cross_attention"] = 1; }, {"/modules/1/cross_attention", "found an integer"});
    model_error([](json& j) { j["modules"] = json::object(); }, {"/modules", "found an object"});
    model_error([](json& j) { j["modules"][0] = json::array(); }, {"/modules/0", "found an array"});
    model_error([](json& j) { j["modules"][0]["output_tokens_per_input_token"] = "0.25"; },
                {"/modules/0/output_tokens_per_input_token", "found a string"});
  }
  SUBCASE("missing required keys") {
    model_error([](json& j) { j["modules"][1].erase("hidden"); }, {"/modules/1/hidden", "missing required key \"hidden\""});
    model_error([](json& j) { j.erase("modules"); }, {"/modules", "missing required key"});
    model_error([](json& j) { j.erase("name"); }, {"/name", "missing required key"});
  }
  SUBCASE("non-positive and out-of-range sizes") {
    model_error([](json& j) { j["modules"][1]["layers"] = 0; }, {"/modules/1/layers", "out of range"});
    model_error([](json& j) { j["modules"][0]["hidden"] = -3200; }, {"/modules/0/hidden", "out of range"});
    model_error([](json& j) { j["modules"][1]["vocab"] = 0; }, {"/modules/1/vocab", "out of range"});
    model_error([](json& j) { j["modules"][1]["layers"] = 18446744073709551615ULL; }, {"/modules/1/layers", "out of range"});
    model_error([](json& j) { j["modules"][0]["output_tokens_per_input_token"] = -0.25; },
                {"/modules/0/output_tokens_per_input_token", "output_tokens_per_input_token is -0.25"});
    model_error([](json& j) { j["modules"] = json::array(); }, {"/modules", "empty array"});
  }
  SUBCASE("shape consistency") {
    model_error([](json& j) { j["modules"][1]["heads"] = 30; }, {"/modules/1/heads", "not divisible by heads 30"});
    model_error([](json& j) { j["modules"][1]["kv_heads"] = 5; }, {"/modules/1/kv_heads", "not divisible by kv_heads 5"});
  }
  SUBCASE("module graph") {
    model_error([](json& j) { j["modules"][1]["name"] = "vit"; }, {"/modules/1/name", "duplicate module name \"vit\""});
    model_error([](json& j) { j["modules"][0]["feeds"] = "lm"; }, {"/modules/0/feeds", "feeds \"lm\", which is not a module"});
    model_error([](json& j) { j["modules"][0]["feeds"] = "vit"; }, {"/modules/0/feeds", "cycle: vit -> vit"});
    model_error([](json& j) { j["modules"][1]["feeds"] = "llm"; }, {"/modules/1/feeds", "cycle"}, "models/t2v-s.json");
    model_error([](json& j) { j["modules"][1]["feeds"] = "vit"; }, {"/modules/1/feeds", "cycle: llm -> vit -> llm"});
    model_error([](json& j) { j["modules"][1]["role"] = "generator"; }, {"/modules", "0 backbone"});
    model_error([](json& j) {
      j["modules"][0]["role"] = "backbone";
      j["modules"][0].erase("output_tokens_per_input_token");
    }, {"/modules", "2 backbone"});
    model_error([](json& j) { j["modules"][0].erase("feeds"); }, {"/modules/0/feeds", "encoder \"vit\" feeds no module"});
    model_error([](json& j) { j["modules"][0].erase("feeds"); }, {"/modules/1/role", "generator \"dit\" is fed by no module"},
                "models/t2v-s.json");
    model_error([](json& j) { j["modules"][1]["output_tokens_per_input_token"] = 1; },
                {"/modules/1/output_tokens_per_input_token", "given for a backbone"});
  }
  SUBCASE("bad enum strings") {
    model_error([](json& j) { j["modules"][0]["role"] = "decoder"; }, {"/modules/0/role", "unknown role \"decoder\""});
    model_error([](json& j) { j["modules"][0]["ffn"] = "relu"; }, {"/modules/0/ffn", "unknown ffn \"relu\""});
    model_error([](json& j) { j["modules"][0]["attention"] = "sliding"; }, {"/modules/0/attention", "unknown attention"});
  }
}

TEST_CASE("setup errors") {
  setup_error([](json& j) { j["links"].erase("tensor_parallel"); }, {"/links/tensor_parallel", "tensor_parallel is 4"});
  setup_error([](json& j) { j["links"].erase("pipeline"); }, {"/links/pipeline", "missing required key"});
  setup_error([](json& j) { j["microbatch"]["max_tokens"] = 0; }, {"/microbatch/max_tokens", "out of range"});
  setup_error([](json& j) { j["microbatch"]["max_items"] = -1; }, {"/microbatch/max_items", "out of range"});
  setup_error([](json& j) { j["microbatches_per_step"] = 0; }, {"/microbatches_per_step", "out of range"});
  setup_error([](json& j) { j["pipeline_stages"] = -4; }, {"/pipeline_stages", "out of range"});
  setup_error([](json& j) { j["device"]["reserved_gib"] = 80; }, {"/device/reserved_gib", "leaves no memory"});
  setup_error([](json& j) { j["device"]["bf16_tflops"] = 0; }, {"/device/bf16_tflops", "bf16_tflops is 0"});
  setup_error([](json& j) { j["device"]["hbm_gbps"] = 1; }, {"/device/hbm_gbps", "unknown key"});
  setup_error([](json& j) { j["links"]["pipeline"]["gb_per_s"] = -25; }, {"/links/pipeline/gb_per_s", "gb_per_s is -25"});
  setup_error([](json& j) { j["optimizer_bytes_per_param"] = 0; }, {"/optimizer_bytes_per_param", "optimizer_bytes_per_param is 0"});
  setup_error([](json& j) { j["microbatch"]["module"] = 3; }, {"/microbatch/module", "found an integer"});
  setup_error([](json& j) { j["tensor_parallel"] = 1; j["links"].erase("tensor_parallel"); j["oops"] = true; }, {"/oops", "unknown key"});
  // tensor_parallel 1 needs no tensor-parallel link
  json ok = load("setups/h800-tp4-pp4.json");
  ok["tensor_parallel"] = 1;
  ok["links"].erase("tensor_parallel");
  CHECK_NOTHROW((void)io::parse_setup(ok.dump(), "ok.json"));
}

TEST_CASE("dataset errors") {
  dataset_error([](json& j) { j["mixture"][0]["text"] = {{"normal", {{"mean", 3}}}}; }, {"/mixture/0/text/normal", "unknown key \"normal\""});
  dataset_error([](json& j) { j["mixture"][0]["text"] = {{"min", 3}}; }, {"/mixture/0/text", "no distribution kind"});
  dataset_error([](json& j) { j["mixture"][0]["text"]["fixed"] = 3; }, {"/mixture/0/text/lognormal", "a second distribution kind"});
  dataset_error([](json& j) { j["mixture"][1]["text"] = {{"uniform", {9, 3}}}; }, {"/mixture/1/text/uniform", "reversed"});
  dataset_error([](json& j) { j["mixture"][1]["text"] = {{"uniform", {1, 2, 3}}}; }, {"/mixture/1/text/uniform", "3 elements"});
  dataset_error([](json& j) { j["mixture"][1]["text"] = {{"uniform", {1.5, 3}}}; }, {"/mixture/1/text/uniform/0", "non-integer"});
  dataset_error([](json& j) { j["mixture"][1]["weight"] = -0.4; }, {"/mixture/1/weight", "weight is -0.4"});
  dataset_error([](json& j) { j["mixture"][2]["items"]["image"]["count"]["choice"]["weights"] = {0.5, -0.5}; },
                {"/mixture/2/items/image/count/choice/weights/1", "choice weight is -0.5"});
  dataset_error([](json& j) { j["mixture"][2]["items"]["image"]["count"]["choice"]["weights"] = {1, 1, 1}; },
                {"/mixture/2/items/image/count/choice/weights", "2 values but 3 weights"});
  dataset_error([](json& j) { j["mixture"][2]["items"]["image"]["count"]["choice"]["values"] = {0, "1"}; },
                {"/mixture/2/items/image/count/choice/values/1", "found a string"});
  dataset_error([](json& j) { j["mixture"][0]["text"]["min"] = 8000; }, {"/mixture/0/text/min", "greater than max"});
  dataset_error([](json& j) { j["mixture"][0]["text"]["lognormal"]["sigma"] = -1; }, {"/mixture/0/text/lognormal/sigma", "sigma"});
  dataset_error([](json& j) { j["mixture"][0]["text"]["lognormal"]["mu"] = 1; }, {"/mixture/0/text/lognormal/mu", "unknown key"});
  dataset_error([](json& j) { j["mixture"][0]["items"]["image"]["size"] = 1; }, {"/mixture/0/items/image/size", "unknown key"});
  dataset_error([](json& j) { j["mixture"][0]["items"]["image"].erase("tokens"); }, {"/mixture/0/items/image/tokens", "missing"});
  dataset_error([](json& j) { j["mixture"][0]["items"]["text"] = j["mixture"][0]["items"]["image"]; },
                {"/mixture/0/items/text", "invalid item modality"});
  dataset_error([](json& j) { j["mixture"][0]["items"]["image"]["count"] = {{"poisson", {{"mean", -1}}}}; },
                {"/mixture/0/items/image/count/poisson/mean", "poisson mean is -1"});
  dataset_error([](json& j) { j["mixture"][0]["text"]["scale"] = 0; }, {"/mixture/0/text/scale", "scale is 0"});
  dataset_error([](json& j) { j["mixture"] = json::array(); }, {"/mixture", "empty array"});
  dataset_error([](json& j) { for (auto& s : j["mixture"]) s["weight"] = 0; }, {"/mixture", "sum to 0"});
}

TEST_CASE("malformed JSON and duplicate keys and unreadable files") {
  SUBCASE("malformed JSON reports line and column") {
    const auto e = error_of([] { (void)io::parse_model("{\n  \"name\": \"x\",\n  \"modules\": [1,]\n}", "bad.json"); });
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
    CHECK(e->context().file == "bad.json");
    CHECK(e->context().path == "line 3, column 17");
    CHECK(contains(e->message(), "malformed JSON"));
    const auto empty = error_of([] { (void)io::parse_setup("", "empty.json"); });
    REQUIRE(empty);
    CHECK(contains(empty->message(), "malformed JSON"));
    const auto trailing = error_of([] { (void)io::parse_dataset("{} x", "t.json"); });
    REQUIRE(trailing);
    CHECK(trailing->context().path == "line 1, column 4");
  }
  SUBCASE("a repeated key is an error at its path") {
    const auto e = error_of([] {
      (void)io::parse_model(R"({"name": "m", "modules": [{"name": "a", "layers": 1, "layers": 2}]})", "dup.json");
    });
    REQUIRE(e);
    CHECK(e->context().path == "/modules/0/layers");
    CHECK(contains(e->message(), "duplicate key \"layers\""));
    const auto nested = error_of([] { (void)io::parse_setup(R"({"a": [{}, {"b": {"c~/": 1, "c~/": 2}}]})", "dup.json"); });
    REQUIRE(nested);
    CHECK(nested->context().path == "/a/1/b/c~0~1");
  }
  SUBCASE("the top level must be an object") {
    const auto e = error_of([] { (void)io::parse_model("[1, 2]", "arr.json"); });
    REQUIRE(e);
    CHECK(contains(e->message(), "found an array"));
    CHECK(contains(e->context().expected, "model"));
  }
  SUBCASE("unreadable files") {
    const auto missing = error_of([] { (void)io::read_model(workloads + "/models/no-such-model.json"); });
    REQUIRE(missing);
    CHECK(missing->kind() == ErrorKind::input);
    CHECK(contains(missing->context().file, "no-such-model.json"));
    CHECK(contains(missing->message(), "cannot open"));
    const auto dir = error_of([] { (void)io::read_setup(workloads + "/setups"); });
    REQUIRE(dir);
    CHECK(contains(dir->message(), "directory"));
  }
}

TEST_CASE("check_compatible(ModelSpec with Setup): the budget module exists and max_items only for item consumers") {
  const ModelSpec vlm = io::read_model(workloads + "/models/vlm-s.json");
  const ModelSpec t2v = io::read_model(workloads + "/models/t2v-s.json");
  const Setup h800 = io::read_setup(workloads + "/setups/h800-tp4-pp4.json");
  const Setup t2v_setup = io::read_setup(workloads + "/setups/t2v-h800-tp4-pp4.json");
  CHECK_NOTHROW(io::check_compatible(vlm, h800, "h800.json"));
  CHECK_NOTHROW(io::check_compatible(t2v, t2v_setup, "t2v.json"));
  {
    const auto e = error_of([&] { io::check_compatible(vlm, t2v_setup, "t2v.json"); });  // vlm has no "dit"
    REQUIRE(e);
    CHECK(e->kind() == ErrorKind::input);
    CHECK(e->context().file == "t2v.json");
    CHECK(e->context().path == "/microbatch/module");
    CHECK(contains(e->message(), "\"dit\" is not a module of model \"vlm-s\""));
    CHECK(contains(e->context().expected, "\"vit\", \"llm\""));
  }
  {
    Setup s = h800;
    s.microbatch.max_items = 4;
    const auto e = error_of([&] { io::check_compatible(vlm, s, "s.json"); });
    REQUIRE(e);
    CHECK(e->context().path == "/microbatch/max_items");
    s.microbatch.module = "vit";  // an encoder consumes items: fine
    CHECK_NOTHROW(io::check_compatible(vlm, s, "s.json"));
  }
}

TEST_CASE("validators hold specs built in code to the same rules") {
  ModelSpec m = io::read_model(workloads + "/models/vlm-s.json");
  CHECK_NOTHROW(validate(m));
  m.modules[1].feeds = ModuleId{0};  // llm -> vit -> llm
  const auto e = error_of([&] { validate(m); });
  REQUIRE(e);
  CHECK(e->context().file.empty());
  CHECK(e->context().path == "/modules/1/feeds");
  CHECK(contains(e->message(), "llm -> vit -> llm"));
  m.modules[1].feeds = ModuleId{7};
  const auto missing = error_of([&] { validate(m); });
  REQUIRE(missing);
  CHECK(missing->context().path == "/modules/1/feeds");
}
