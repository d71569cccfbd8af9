// Plan JSON: round trips (in memory and through files, JSON and binary), and rejection of
// unknown keys, wrong types and other versions with the JSON path.
#include <doctest/doctest.h>

#include <pipeweaver/io/plan_json.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "io/error_check.hpp"
#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

std::filesystem::path temp_file(const std::string& name) { return pwtest::temp_file("plan_json", name); }

void expect_input_error(const nlohmann::json& j, const std::string& path, const std::string& text) {
  pwtest::check_input_error([&] { (void)pw::io::plan_from_json(j, "plan.json"); }, "plan.json", path, text);
}

}  // namespace

TEST_CASE("JSON round trip gives back an equal plan") {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    pw::ModelSpec model;
    const auto plan = random_plan(seed, &model);
    const auto j = pw::io::to_json(plan);
    CHECK(j.at("version") == pw::Plan::format_version);
    const auto back = pw::io::plan_from_json(nlohmann::json::parse(j.dump()), "mem");
    CHECK(back == plan);
    pw::validate(back, model);
  }
}

TEST_CASE("write_plan / io::read_plan through files, JSON and binary") {
  pw::ModelSpec model;
  const auto plan = random_plan(42, &model);
  const auto json_path = temp_file("plan.json");
  pw::io::write_plan(json_path, plan);
  CHECK(pw::io::read_plan(json_path) == plan);
  // The file is readable JSON with one action per line.
  std::ifstream in(json_path);
  std::string first_line;
  std::getline(in, first_line);
  CHECK(first_line == "{");

  const auto bin_path = temp_file("plan.bin");
  {
    const auto bytes = pw::to_binary(plan);
    std::ofstream out(bin_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  CHECK(pw::io::read_plan(bin_path) == plan);
  {
    std::ofstream out(bin_path, std::ios::binary | std::ios::app);
    out << 'x';
  }
  try {
    (void)pw::io::read_plan(bin_path);
    FAIL("accepted");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::input);
    CHECK(e.context().file == bin_path.string());
  }
  CHECK_THROWS_AS((void)pw::io::read_plan(temp_file("does-not-exist.json")), pw::Error);
}

TEST_CASE("bad plan JSON is rejected with the JSON path") {
  std::uint64_t seed = 3;
  auto plan = random_plan(seed);
  while (plan.transfers.empty()) plan = random_plan(++seed);  // one with transfers and actions
  REQUIRE(!plan.ranks.empty());
  REQUIRE(!plan.ranks[0].empty());
  const auto good = pw::io::to_json(plan);
  SUBCASE("unknown top-level key") {
    auto j = good;
    j["extra"] = 1;
    expect_input_error(j, "/extra", "unknown key");
  }
  SUBCASE("unknown key in an action") {
    auto j = good;
    j["ranks"][0][0]["foo"] = true;
    expect_input_error(j, "/ranks/0/0/foo", "unknown key");
  }
  SUBCASE("unknown op") {
    auto j = good;
    j["ranks"][0][0] = {{"op", "jump"}, {"module", 0}, {"chunk", 0}, {"sub_microbatch", 0}};
    expect_input_error(j, "/ranks/0/0/op", "unknown action \"jump\"");
  }
  SUBCASE("other version") {
    auto j = good;
    j["version"] = 2;
    expect_input_error(j, "/version", "unsupported plan format version 2");
  }
  SUBCASE("wrong type") {
    auto j = good;
    j["microbatches"] = "many";
    expect_input_error(j, "/microbatches", "found a string");
  }
  SUBCASE("missing key") {
    auto j = good;
    j.erase("transfers");
    expect_input_error(j, "/transfers", "missing required key");
  }
  SUBCASE("negative token count") {
    auto j = good;
    j["sub_microbatches"][0]["item_tokens"][0] = -4;
    expect_input_error(j, "/sub_microbatches/0/item_tokens/0", "out of range");
  }
  SUBCASE("bad pass name in a transfer") {
    auto j = good;
    j["transfers"][0]["producer"]["pass"] = "sideways";
    expect_input_error(j, "/transfers/0/producer/pass", "unknown pass");
  }
  SUBCASE("malformed text") {
    try {
      (void)pw::io::parse_plan("{\"version\": 1,", "broken.json");
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(e.context().file == "broken.json");
    }
  }
}
