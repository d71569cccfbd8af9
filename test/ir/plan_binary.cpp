// Binary plan form: round trips give back an equal Plan; truncated, corrupted or forged data is
// rejected with Error{input}, never read past its end; fields beyond the bounds of
// ir/plan_limits.hpp are refused at their JSON path, as the JSON reader refuses them.
#include <doctest/doctest.h>

#include <pipeweaver/ir/plan_binary.hpp>
#include <pipeweaver/ir/plan_limits.hpp>

#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

#include "support/plan_ir_support.hpp"

namespace pw = pipeweaver;
using namespace planir_test;

namespace {

pw::Plan odd_plan() {  // fields lowering never sets: negative ids, empty names, extreme values
  pw::Plan p;
  p.partition.name = "odd";
  p.partition.ranks = 2;
  p.partition.modules.push_back({{pw::Chunk{0, 3, pw::RankId{1}}}, 7});
  p.sub_microbatches.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{0}, std::vector<std::int64_t>{INT64_MAX, 0},
                                  std::vector<std::int64_t>{5, 6}, std::vector<pw::ItemRef>{{0, -1}, {2147483647, 3}});
  p.transfers.push_back({pw::RankId{0}, pw::RankId{1}, {pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::backward_weight},
                         {pw::ModuleId{-1}, -5, pw::SubMicrobatchId{0}, pw::Pass::forward}, pw::Bytes{-3}});
  p.ranks = {{pw::Forward{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::MemoryStrategy{-1, 32767, -32768}},
              pw::Backward{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, {}, pw::Pass::backward_input}, pw::Send{pw::TransferId{0}}},
             {}, {pw::Recv{pw::TransferId{0}}, pw::Wait{pw::TransferId{0}}}};
  return p;
}

pw::Plan edge_plan() {  // every field at the edge of what ir/plan_limits.hpp accepts
  namespace lim = pw::limits;
  pw::Plan p;
  p.name = "edge";
  p.microbatches = static_cast<int>(lim::max_microbatches_per_step);
  p.partition.name = "edge";
  p.partition.ranks = static_cast<int>(lim::max_ranks);
  p.partition.modules.push_back({{pw::Chunk{static_cast<int>(lim::max_layers), 0, pw::RankId{static_cast<int>(lim::max_ranks - 1)}}},
                                 lim::max_items_per_sub_microbatch});
  p.sub_microbatches.emplace_back(pw::ModuleId{0}, pw::MicrobatchId{static_cast<int>(lim::max_microbatches_per_step - 1)},
                                  std::vector<std::int64_t>{lim::max_item_tokens, 1}, std::vector<std::int64_t>{0, lim::max_item_tokens},
                                  std::vector<pw::ItemRef>{{0, -1}, {static_cast<int>(lim::max_samples_per_microbatch - 1), static_cast<int>(lim::max_items_per_sample - 1)}});
  p.transfers.push_back({pw::RankId{0}, pw::RankId{static_cast<int>(lim::max_ranks - 1)},
                         {pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::Pass::backward_weight},
                         {pw::ModuleId{static_cast<int>(lim::max_modules - 1)}, static_cast<int>(lim::max_chunks_per_module - 1),
                          pw::SubMicrobatchId{static_cast<int>(lim::max_sub_microbatches - 1)}, pw::Pass::forward},
                         pw::Bytes{lim::max_transfer_bytes}});
  p.ranks = {{pw::Forward{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, pw::MemoryStrategy{0, 32767, 0}},
              pw::Backward{pw::ModuleId{0}, 0, pw::SubMicrobatchId{0}, {}, pw::Pass::backward_input}, pw::Send{pw::TransferId{0}}},
             {}, {pw::Recv{pw::TransferId{0}}, pw::Wait{pw::TransferId{static_cast<int>(lim::max_transfers - 1)}}}};
  return p;
}

std::vector<std::byte> with_checksum(std::vector<std::byte> body) {  // body includes magic + version
  const auto sum = pw::detail::fnv1a64(body);
  for (int i = 0; i < 8; ++i) body.push_back(static_cast<std::byte>((sum >> (8 * i)) & 0xff));
  return body;
}

}  // namespace

TEST_CASE("binary round trip gives back an equal plan") {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const auto plan = random_plan(seed);
    const auto bytes = pw::to_binary(plan);
    CHECK(pw::plan_from_binary(bytes) == plan);
    CHECK(pw::to_binary(pw::plan_from_binary(bytes)) == bytes);
  }
  CHECK(pw::plan_from_binary(pw::to_binary(pw::Plan{})) == pw::Plan{});
  // Every field at the edge of ir/plan_limits.hpp survives the round trip.
  const auto edge = edge_plan();
  CHECK_NOTHROW(pw::check_plan_limits(edge));
  CHECK(pw::plan_from_binary(pw::to_binary(edge)) == edge);
}

TEST_CASE("decoding refuses fields beyond the plan's bounds, as the JSON reader does, at the field's JSON path") {
  // Each field of odd_plan() alone, on the edge plan: the error names exactly that field.
  struct Case {
    const char* path;
    void (*spoil)(pw::Plan&);
  };
  const Case cases[] = {
      {"/sub_microbatches/0/item_tokens/0", [](pw::Plan& p) { p.sub_microbatches[0] = pw::SubMicrobatchSpec(pw::ModuleId{0}, pw::MicrobatchId{0}, {INT64_MAX}); }},
      {"/sub_microbatches/0/item_tokens/1", [](pw::Plan& p) { p.sub_microbatches[0] = pw::SubMicrobatchSpec(pw::ModuleId{0}, pw::MicrobatchId{0}, {1, 0}); }},
      {"/sub_microbatches/0/items/0/0", [](pw::Plan& p) { p.sub_microbatches[0] = pw::SubMicrobatchSpec(pw::ModuleId{0}, pw::MicrobatchId{0}, {1}, {}, {{-4, 0}}); }},
      {"/sub_microbatches/0/items", [](pw::Plan& p) { p.sub_microbatches[0] = pw::SubMicrobatchSpec(pw::ModuleId{0}, pw::MicrobatchId{0}, {1}, {}, {{0, 0}, {1, 0}}); }},
      {"/sub_microbatches/0/microbatch", [](pw::Plan& p) { p.microbatches = 0; }},
      {"/transfers/0/bytes", [](pw::Plan& p) { p.transfers[0].bytes = pw::Bytes{-3}; }},
      {"/transfers/0/consumer/module", [](pw::Plan& p) { p.transfers[0].consumer.module = pw::ModuleId{-1}; }},
      {"/ranks/0/0/strategy/full_recompute", [](pw::Plan& p) { std::get<pw::Forward>(p.ranks[0][0]).strategy.full_recompute = -1; }},
      {"/partition/ranks", [](pw::Plan& p) { p.partition.ranks = 5000; }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.path);
    pw::Plan plan = edge_plan();
    c.spoil(plan);
    try {
      (void)pw::plan_from_binary(pw::to_binary(plan));
      FAIL("decoded");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(e.context().path == c.path);
    }
  }
  // The plan with all of them at once is refused too (it was accepted before plans were bounded).
  CHECK_THROWS_AS((void)pw::plan_from_binary(pw::to_binary(odd_plan())), pw::Error);
}

TEST_CASE("the encoding is explicit little-endian") {
  const auto bytes = pw::to_binary(pw::Plan{});
  REQUIRE(bytes.size() > 12);
  CHECK(bytes[0] == std::byte{'P'});
  CHECK(bytes[3] == std::byte{'L'});
  CHECK(bytes[4] == std::byte{static_cast<unsigned char>(pw::Plan::format_version)});
  CHECK(bytes[5] == std::byte{0});
  // Body of an empty plan: 3 empty strings, microbatches, partition name, ranks (1), 4 empty lists.
  CHECK(bytes.size() == 8 + 4 * 3 + 4 + 4 + 4 + 4 * 4 + 8);
  const std::size_t ranks_at = 8 + 12 + 4 + 4;
  CHECK(bytes[ranks_at] == std::byte{1});
  CHECK(bytes[ranks_at + 1] == std::byte{0});
}

TEST_CASE("truncated or corrupted data is rejected with Error{input}") {
  const auto bytes = pw::to_binary(random_plan(5));
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_THROWS_AS((void)pw::plan_from_binary(cut), pw::Error);
  }
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto bad = bytes;
    bad[i] ^= std::byte{0x5a};
    CAPTURE(i);
    try {
      (void)pw::plan_from_binary(bad);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(e.context().path.rfind("byte ", 0) == 0);
    }
  }
  auto longer = bytes;
  longer.push_back(std::byte{0});
  CHECK_THROWS_AS((void)pw::plan_from_binary(longer), pw::Error);
}

TEST_CASE("forged data with a valid checksum is still bounds-checked") {
  auto header = [] {
    std::vector<std::byte> b{std::byte{'P'}, std::byte{'W'}, std::byte{'P'}, std::byte{'L'}, std::byte{1}, std::byte{0}, std::byte{0}, std::byte{0}};
    return b;
  };
  auto expect = [](const std::vector<std::byte>& data, const std::string& text) {
    try {
      (void)pw::plan_from_binary(data);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::input);
      CHECK(std::string(e.what()).find(text) != std::string::npos);
    }
  };
  SUBCASE("absurd string length") {
    auto b = header();
    for (int i = 0; i < 4; ++i) b.push_back(std::byte{0xff});
    expect(with_checksum(b), "exceeds the remaining data");
  }
  SUBCASE("body ends early") {
    auto b = header();
    b.push_back(std::byte{0});
    expect(with_checksum(b), "truncated while reading plan name");
  }
  SUBCASE("unknown version") {
    auto b = header();
    b[4] = std::byte{9};
    expect(with_checksum(b), "unsupported format version 9");
  }
  SUBCASE("unknown action tag") {
    auto bytes = pw::to_binary(odd_plan());
    bytes.resize(bytes.size() - 8);
    // The last rank's last action is a Wait: tag (1 byte) + transfer (4 bytes) at the end.
    bytes[bytes.size() - 5] = std::byte{7};
    expect(with_checksum(bytes), "unknown action tag");
  }
  SUBCASE("bad magic") {
    auto b = header();
    b[0] = std::byte{'X'};
    b.resize(40);
    expect(with_checksum(b), "bad magic");
  }
}
