// Regression cases of the hostile-input campaign against the readers: each is refused with
// Error(input) naming the file and the JSON path (never a crash, an exception of another type,
// a silent default or memory in proportion to a number in the file), or read correctly.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/error_check.hpp"
#include "pipeweaver/io/batch_json.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/workload_json.hpp"

namespace pw = pipeweaver;
using json = nlohmann::json;
using pwtest::contains;
using pwtest::error_of;

namespace {

const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;

json load(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

void expect_input_error(const std::optional<pw::Error>& e, const std::string& file, const std::string& path, const std::string& part = "") {
  REQUIRE(e.has_value());
  INFO(e->what());
  CHECK(e->kind() == pw::ErrorKind::input);
  CHECK(e->context().file == file);
  CHECK(e->context().path == path);
  if (!part.empty()) CHECK(contains(e->what(), part));
}

/// A small valid plan of tiny-vlm as JSON (the fuzz seed).
json seed_plan() { return load(std::string(PIPEWEAVER_SOURCE_DIR) + "/fuzz/corpus/plan_json/tiny-vlm-2mb.plan.json"); }

}  // namespace

TEST_CASE("1e999 in any numeric field names the file and the field's path") {
  std::string text = load(workloads + "/setups/cpu-pp4.json").dump();
  const auto at = text.find("\"bf16_tflops\":");
  REQUIRE(at != std::string::npos);
  text.replace(at, text.find(',', at) - at, "\"bf16_tflops\":1e999");
  expect_input_error(error_of([&] { (void)pw::io::parse_setup(text, "s.json"); }), "s.json", "/device/bf16_tflops", "number overflow");
  // In an array element and at the top level too.
  expect_input_error(error_of([&] { (void)pw::io::parse_batch(R"({"microbatches": [[{"text": 1, "image": [3, -1e999]}]]})", "b.json"); }),
                     "b.json", "/microbatches/0/0/image/1");
  expect_input_error(error_of([&] { (void)pw::io::parse_model("1e999", "m.json"); }), "m.json", "/");
}

TEST_CASE("device figures that overflow time or memory are refused where they are read") {
  const json base = load(workloads + "/setups/cpu-pp4.json");
  const auto with = [&](const std::string& key, double v) {
    json s = base;
    s["device"][key] = v;
    return error_of([&] { (void)pw::io::parse_setup(s.dump(), "s.json"); });
  };
  expect_input_error(with("memory_gib", 1e10), "s.json", "/device/memory_gib");  // was a negative capacity, exit 0
  expect_input_error(with("bf16_tflops", 1e-300), "s.json", "/device/bf16_tflops");  // was negative times
  expect_input_error(with("hbm_gb_per_s", 1e-12), "s.json", "/device/hbm_gb_per_s");
  json link = base;
  link["links"]["pipeline"]["gb_per_s"] = 1e-9;
  expect_input_error(error_of([&] { (void)pw::io::parse_setup(link.dump(), "s.json"); }), "s.json", "/links/pipeline/gb_per_s");
}

TEST_CASE("tensor_parallel must split every module evenly") {
  const pw::ModelSpec tiny = pw::io::read_model(workloads + "/models/tiny-vlm.json");
  json s = load(workloads + "/setups/cpu-pp4.json");
  s["tensor_parallel"] = 3;  // tiny-vlm: 4 heads, hidden 64 and 96: used to be modeled as a perfect 3-way split
  s["links"]["tensor_parallel"] = {{"gb_per_s", 100}, {"latency_us", 1}};
  const pw::Setup setup = pw::io::parse_setup(s.dump(), "s.json");
  expect_input_error(error_of([&] { pw::io::check_compatible(tiny, setup, "s.json"); }), "s.json", "/tensor_parallel", "does not divide");
  s["tensor_parallel"] = 8;  // divides every hidden size, but 8 > 4 heads
  const pw::Setup eight = pw::io::parse_setup(s.dump(), "s.json");
  expect_input_error(error_of([&] { pw::io::check_compatible(tiny, eight, "s.json"); }), "s.json", "/tensor_parallel", "fewer than tensor_parallel");
  s["tensor_parallel"] = 4;
  CHECK_NOTHROW(pw::io::check_compatible(tiny, pw::io::parse_setup(s.dump(), "s.json"), "s.json"));
}

TEST_CASE("plan files: numbers that drove allocations or passed unchecked are refused at their path") {
  SUBCASE("a sub-microbatch of microbatch 400,000,000") {
    json p = seed_plan();
    p["sub_microbatches"][0]["microbatch"] = 400000000;
    expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/sub_microbatches/0/microbatch");
  }
  SUBCASE("6,000 ranks") {
    json p = seed_plan();
    p["partition"]["ranks"] = 6000;
    p["ranks"] = json::array();
    for (int r = 0; r < 6000; ++r) p["ranks"].push_back(json::array());
    expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/partition/ranks");
  }
  SUBCASE("2^31 - 1 and 70,000 microbatches") {
    for (std::int64_t n : {std::int64_t{2147483647}, std::int64_t{70000}}) {
      json p = seed_plan();
      p["microbatches"] = n;
      expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/microbatches");
    }
  }
  SUBCASE("items and item tokens of different lengths") {
    json p = seed_plan();
    p["sub_microbatches"][0]["items"].push_back(json::array({0, 1}));
    expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/sub_microbatches/0/items");
  }
  SUBCASE("token counts whose times leave 64 bits") {
    json p = seed_plan();
    p["sub_microbatches"][1]["item_tokens"][0] = std::int64_t{1} << 40;
    expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/sub_microbatches/1/item_tokens/0");
  }
  SUBCASE("transfer sizes beyond a pebibyte") {
    json p = seed_plan();
    p["transfers"][0]["bytes"] = std::int64_t{1} << 62;
    expect_input_error(error_of([&] { (void)pw::io::parse_plan(p.dump(), "p.json"); }), "p.json", "/transfers/0/bytes");
  }
  SUBCASE("the seed itself reads") { CHECK_NOTHROW((void)pw::io::parse_plan(seed_plan().dump(), "p.json")); }
}

TEST_CASE("batch files: counts beyond the limits are refused while reading") {
  json b = {{"microbatches", json::array()}};
  for (int m = 0; m < 65537; ++m) b["microbatches"].push_back(json::array({{{"text", 1}}}));
  expect_input_error(error_of([&] { (void)pw::io::parse_batch(b.dump(), "b.json"); }), "b.json", "/microbatches", "65537 microbatches");
  const std::string big_text = R"({"microbatches": [[{"text": 1073741825}]]})";
  expect_input_error(error_of([&] { (void)pw::io::parse_batch(big_text, "b.json"); }), "b.json", "/microbatches/0/0/text");
}

TEST_CASE("deep nesting, huge files and devices are refused, naming the file") {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  std::string at;
  for (int i = 0; i < pw::limits::max_json_depth; ++i) at += "/0";
  expect_input_error(error_of([&] { (void)pw::io::parse_model(deep, "d.json"); }), "d.json", at, "nested deeper than 64");
#if defined(__linux__)
  // /dev/zero never ends: it is refused once it passes the cap, not read until memory runs out.
  const auto e = error_of([] { (void)pw::io::read_model("/dev/zero"); });
  REQUIRE(e.has_value());
  CHECK(e->context().file == "/dev/zero");
  CHECK(contains(e->what(), "more than " + std::to_string(pw::limits::max_file_bytes) + " bytes"));
#endif
}
