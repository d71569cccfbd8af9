// Flat-program JSON: round trips of random valid plans' flat programs (in memory and through
// files), the example of docs/flat_program.md read as documented, and rejection of malformed
// documents with the JSON path.
#include <doctest/doctest.h>

#include <pipeweaver/io/flat_program_json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "io/error_check.hpp"
#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

std::filesystem::path temp_file(const std::string& name) { return pwtest::temp_file("flat_program_json", name); }

void expect_input_error(const nlohmann::json& j, const std::string& path, const std::string& text) {
  pwtest::check_input_error([&] { (void)pw::io::flat_program_from_json(j, "flat.json"); }, "flat.json", path, text);
}

/// The first ```json block of docs/flat_program.md.
std::string doc_example() {
  std::ifstream in(std::filesystem::path(PIPEWEAVER_SOURCE_DIR) / "docs" / "flat_program.md");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const auto begin = doc.find("```json\n");
  REQUIRE(begin != std::string::npos);
  const auto end = doc.find("```", begin + 8);
  REQUIRE(end != std::string::npos);
  return doc.substr(begin + 8, end - begin - 8);
}

}  // namespace

TEST_CASE("flat program JSON round trip gives back an equal flat program") {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    pw::ModelSpec model;
    const auto plan = random_plan(seed, &model);
    const pw::FlatProgram flat = pw::flatten(plan, model);
    const auto j = pw::io::to_json(flat);
    CHECK(j.at("format") == "pipeweaver-flat-program");
    CHECK(j.at("version") == pw::FlatProgram::format_version);
    CHECK(pw::io::flat_program_from_json(nlohmann::json::parse(j.dump()), "mem") == flat);
  }
}

TEST_CASE("write_flat_program / read_flat_program through a file, one action per line") {
  pw::ModelSpec model;
  const auto plan = random_plan(7, &model);
  const auto path = temp_file("flat.json");
  pw::io::write_flat_program(path, plan, model);
  const pw::FlatProgram back = pw::io::read_flat_program(path);
  CHECK(back == pw::flatten(plan, model));
  std::size_t actions = 0, lines = 0;
  for (const auto& r : back.programs) actions += r.actions.size();
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines += line.find("{\"op\":") != std::string::npos;
  CHECK(lines == actions);
}

TEST_CASE("the example of docs/flat_program.md reads as the document describes it") {
  const pw::FlatProgram p = pw::io::parse_flat_program(doc_example(), "docs/flat_program.md");
  REQUIRE(p.programs.size() == static_cast<std::size_t>(p.ranks));
  REQUIRE(p.modules.size() == 2);
  CHECK(p.modules[0].feeds == p.modules[1].name);
  // Every send has its recv and wait on the peer, naming the same stages.
  for (const auto& r : p.programs)
    for (const auto& a : r.actions) {
      if (a.op != pw::FlatOp::send) continue;
      int found = 0;
      for (const auto& b : p.programs.at(a.peer.index()).actions)
        if ((b.op == pw::FlatOp::recv || b.op == pw::FlatOp::wait) && b.transfer == a.transfer) {
          CHECK(b.peer == r.rank);
          CHECK(b.stage == a.peer_stage);
          CHECK(b.peer_stage == a.stage);
          ++found;
        }
      CHECK(found == 2);
    }
}

TEST_CASE("malformed flat programs are refused with the JSON path") {
  pw::ModelSpec model;
  const auto plan = random_plan(3, &model);
  const nlohmann::json good = nlohmann::json::parse(pw::io::to_json(pw::flatten(plan, model)).dump());
  std::size_t r = 0;  // a rank with actions
  while (r < good.at("programs").size() && good.at("programs").at(r).at("actions").empty()) ++r;
  REQUIRE(r < good.at("programs").size());
  const std::string at = "/programs/" + std::to_string(r);
  SUBCASE("another format") {
    auto j = good;
    j["format"] = "pipeweaver-plan";
    expect_input_error(j, "/format", "not a flat program");
  }
  SUBCASE("another version") {
    auto j = good;
    j["version"] = 2;
    expect_input_error(j, "/version", "unsupported flat program version 2");
  }
  SUBCASE("an unknown op") {
    auto j = good;
    j["programs"][r]["actions"][0]["op"] = "launch";
    expect_input_error(j, at + "/actions/0/op", "unknown op \"launch\"");
  }
  SUBCASE("a module not in modules") {
    auto j = good;
    j["programs"][r]["actions"][0]["stage"]["module"] = "audio";
    expect_input_error(j, at + "/actions/0/stage/module", "\"audio\" is not in \"modules\"");
  }
  SUBCASE("an unknown key") {
    auto j = good;
    j["programs"][r]["actions"][0]["stage"]["colour"] = 1;
    expect_input_error(j, at + "/actions/0/stage/colour", "unknown key");
  }
  SUBCASE("a rank program out of place") {
    auto j = good;
    j["programs"][r]["rank"] = static_cast<int>(r) + 1;
    expect_input_error(j, at + "/rank", "out of range");
  }
  SUBCASE("a stage whose pass is not the op's") {
    auto j = good;
    for (auto& a : j["programs"][r]["actions"])
      if (a["op"] == "forward") {
        a["stage"]["pass"] = "backward";
        break;
      }
    bool any = false;
    for (const auto& a : good["programs"][r]["actions"]) any = any || a["op"] == "forward";
    if (any) CHECK_THROWS_AS((void)pw::io::flat_program_from_json(j, "flat.json"), pw::Error);
  }
}
