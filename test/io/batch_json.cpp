// The batch file format (io/batch_json.hpp): a sampled batch survives writing and reading
// unchanged, and each kind of bad input is Error(input) naming the source and the JSON path.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/io/batch_json.hpp"
#include "pipeweaver/io/workload_json.hpp"

using namespace pipeweaver;

namespace {
void same(const Batch& a, const Batch& b) {
  REQUIRE(a.microbatches.size() == b.microbatches.size());
  for (std::size_t i = 0; i < a.microbatches.size(); ++i) CHECK(a.microbatches[i].samples == b.microbatches[i].samples);
  CHECK(a.truncated_samples == b.truncated_samples);
}

void bad(const std::string& text, const std::string& path, const std::string& what) {
  CAPTURE(text);
  try {
    (void)io::parse_batch(text, "b.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::input);
    CHECK(e.context().file == "b.json");
    CHECK(e.context().path == path);
    CHECK(std::string(e.what()).find(what) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("batch json: sampled batches round-trip through text and files") {
  const std::string w = PIPEWEAVER_WORKLOADS_DIR;
  const ModelSpec model = io::read_model(w + "/models/vlm-s.json");
  const Setup setup = io::read_setup(w + "/setups/h800-tp4-pp4.json");
  const DatasetSpec ds = io::read_dataset(w + "/datasets/vlm-web-mix.json");
  for (int step = 0; step < 2; ++step) {
    const Batch b = sample_step(model, ds, setup, 3, step);
    same(io::parse_batch(io::to_json(b).dump(), "mem"), b);
    const auto file = std::filesystem::temp_directory_path() / ("pw-batch-" + std::to_string(step) + ".json");
    io::write_batch(file, b);
    same(io::read_batch(file), b);
    CHECK_NOTHROW(io::check_batch(model, setup, io::read_batch(file), file.string()));
    std::filesystem::remove(file);
  }
  // Item lists come back sorted by modality, whatever the key order.
  const Batch b = io::parse_batch(R"({"microbatches": [[{"video": [5], "text": 3, "image": [1, 2]}]]})", "x");
  REQUIRE(b.microbatches[0].samples[0].items.size() == 2);
  CHECK(b.microbatches[0].samples[0].items[0].modality == "image");
  CHECK(b.microbatches[0].samples[0].items[1].tokens == std::vector<std::int64_t>{5});
}

TEST_CASE("batch json: bad input names the file and the path") {
  bad(R"({"microbatches": [[{"text": 1}]], "extra": 1})", "/extra", "unknown key");
  bad(R"({"microbatch": []})", "/microbatch", "unknown key");
  bad(R"({"microbatches": []})", "/microbatches", "empty array");
  bad(R"({"microbatches": [[]]})", "/microbatches/0", "empty microbatch");
  bad(R"({"microbatches": [{"text": 1}]})", "/microbatches/0", "found an object");
  bad(R"({"microbatches": [[{"text": 1}], [{"image": [4]}]]})", "/microbatches/1/0/text", "missing required key");
  bad(R"({"microbatches": [[{"text": -1}]]})", "/microbatches/0/0/text", "out of range");
  bad(R"({"microbatches": [[{"text": 1, "image": []}]]})", "/microbatches/0/0/image", "empty item list");
  bad(R"({"microbatches": [[{"text": 1, "image": [3, 0]}]]})", "/microbatches/0/0/image/1", "out of range");
  bad(R"({"microbatches": [[{"text": 1, "image": 3}]]})", "/microbatches/0/0/image", "found an integer");
  bad(R"({"microbatches": [[{"text": 1.5}]]})", "/microbatches/0/0/text", "found a non-integer");
  bad(R"({"microbatches": [[{"text": 1}]], "truncated_samples": "no"})", "/truncated_samples", "found a string");
  bad(R"({"microbatches": [[{"text": 1}]])", "line 1, column 32", "malformed JSON");
  CHECK_THROWS_AS((void)io::read_batch("/no/such/batch.json"), Error);

  const ModelSpec model = io::read_model(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/models/vlm-s.json");
  const Setup setup = io::read_setup(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/setups/h800-tp4-pp4.json");
  try {
    io::check_batch(model, setup, io::parse_batch(R"({"microbatches": [[{"text": 1}, {"text": 2, "imgae": [4]}]]})", "t.json"), "t.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.context().file == "t.json");
    CHECK(e.context().path == "/microbatches/0/1/imgae");
  }
}
