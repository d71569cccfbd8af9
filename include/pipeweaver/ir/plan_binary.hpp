#pragma once
// Compact binary form of a Plan, for broadcasting it to the ranks. Explicit
// little-endian encoding field by field (never a memcpy of a struct), so it reads the same on
// every platform:
//   "PWPL" (4 bytes) | format version u32 (Plan::format_version) | body | FNV-1a-64 u64 of
//   everything before it.
// Body: strings are u32 length + UTF-8 bytes; lists are u32 count + elements; ids and ints are
// i32, Bytes and token counts i64, MemoryStrategy three i16, Pass u8, an action a u8 tag
// (0 Forward, 1 Backward, 2 Send, 3 Recv, 4 Wait) + its fields. Field order follows plan.hpp.
// plan_from_binary checks everything before trusting it: magic, version, checksum, every read
// bounds-checked (it never reads past the end), counts larger than the remaining bytes could
// hold are rejected before allocating, enum values range-checked, strings valid UTF-8, no
// trailing bytes. Any failure is Error{input} with the byte offset. Then the decoded plan is held
// to the bounds of ir/plan_limits.hpp, as the JSON form is (errors at the JSON path of the
// field). Semantic checks are the validator's job.
// std-only (nvcc).
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_limits.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

inline constexpr std::array<std::byte, 4> plan_binary_magic{std::byte{'P'}, std::byte{'W'}, std::byte{'P'}, std::byte{'L'}};

namespace detail {

[[nodiscard]] inline std::uint64_t fnv1a64(std::span<const std::byte> data) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (std::byte b : data) {
    h ^= static_cast<std::uint64_t>(b);
    h *= 1099511628211ull;
  }
  return h;
}

class BinaryWriter {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) { uint(v, 2); }
  void u32(std::uint32_t v) { uint(v, 4); }
  void u64(std::uint64_t v) { uint(v, 8); }
  void i16(std::int16_t v) { u16(static_cast<std::uint16_t>(v)); }
  void i32(std::int32_t v) { u32(static_cast<std::uint32_t>(v)); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void count(std::size_t n) { u32(static_cast<std::uint32_t>(n)); }
  void str(const std::string& s) {
    count(s.size());
    for (char c : s) out_.push_back(static_cast<std::byte>(c));
  }
  void raw(std::span<const std::byte> b) {  // push_back: insert() trips a false g++ 12 -Wstringop-overflow at -O2
    for (std::byte x : b) out_.push_back(x);
  }
  [[nodiscard]] std::vector<std::byte>& bytes() noexcept { return out_; }

 private:
  void uint(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
  }
  std::vector<std::byte> out_;
};

class BinaryReader {
 public:
  explicit BinaryReader(std::span<const std::byte> data) noexcept : data_(data) {}
  [[nodiscard]] std::size_t pos() const noexcept { return pos_; }
  [[nodiscard]] std::size_t left() const noexcept { return data_.size() - pos_; }

  [[noreturn]] void fail(const std::string& message, std::size_t at, std::string expected = {}) const {
    throw input_error("binary plan: " + message, {.path = "byte " + std::to_string(at), .expected = std::move(expected)});
  }
  std::uint64_t uint(int n, const char* what) {
    if (left() < static_cast<std::size_t>(n))
      fail(std::string("truncated while reading ") + what, pos_, std::to_string(n) + " more bytes, found " + std::to_string(left()));
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(data_[pos_ + static_cast<std::size_t>(i)]) << (8 * i);
    pos_ += static_cast<std::size_t>(n);
    return v;
  }
  std::uint8_t u8(const char* what) { return static_cast<std::uint8_t>(uint(1, what)); }
  std::int16_t i16(const char* what) { return static_cast<std::int16_t>(static_cast<std::uint16_t>(uint(2, what))); }
  std::int32_t i32(const char* what) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(uint(4, what))); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(uint(8, what)); }
  /// A list length; rejects one whose elements (each at least `min_bytes`) cannot fit in what is left.
  std::size_t count(const char* what, std::size_t min_bytes) {
    const std::size_t at = pos_;
    const auto n = static_cast<std::size_t>(uint(4, what));
    if (min_bytes > 0 && n > left() / min_bytes)
      fail(std::string("count of ") + what + " (" + std::to_string(n) + ") exceeds the remaining data", at,
           "at most " + std::to_string(left() / min_bytes));
    return n;
  }
  std::string str(const char* what) {
    const std::size_t at = pos_;
    const std::size_t n = count(what, 1);
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(data_[pos_ + i]);
    pos_ += n;
    if (!valid_utf8(s)) fail(std::string(what) + " is not valid UTF-8", at, "a UTF-8 string");
    return s;
  }
  /// Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
  [[nodiscard]] static bool valid_utf8(const std::string& s) noexcept {
    for (std::size_t i = 0; i < s.size();) {
      const auto b = static_cast<unsigned char>(s[i]);
      if (b < 0x80) {
        ++i;
        continue;
      }
      const std::size_t n = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 0;
      if (n == 0 || b < 0xc2 || b > 0xf4 || i + n > s.size()) return false;
      for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
      const auto b1 = static_cast<unsigned char>(s[i + 1]);
      if ((b == 0xe0 && b1 < 0xa0) || (b == 0xed && b1 >= 0xa0) || (b == 0xf0 && b1 < 0x90) || (b == 0xf4 && b1 >= 0x90)) return false;
      i += n;
    }
    return true;
  }

 private:
  std::span<const std::byte> data_;
  std::size_t pos_ = 0;
};

inline void write_stage_ref(BinaryWriter& w, const StageRef& s) {
  w.i32(s.module.value());
  w.i32(s.chunk);
  w.i32(s.sub_microbatch.value());
  w.u8(static_cast<std::uint8_t>(s.pass));
}
inline void write_strategy(BinaryWriter& w, const MemoryStrategy& s) {
  w.i16(s.full_recompute);
  w.i16(s.selective_recompute);
  w.i16(s.offload);
}
inline Pass read_pass(BinaryReader& r) {
  const std::size_t at = r.pos();
  const auto p = r.u8("pass");
  if (p > static_cast<std::uint8_t>(Pass::backward_weight)) r.fail("unknown pass " + std::to_string(p), at, "0..3");
  return static_cast<Pass>(p);
}
inline StageRef read_stage_ref(BinaryReader& r) {
  StageRef s;
  s.module = ModuleId{r.i32("stage module")};
  s.chunk = r.i32("stage chunk");
  s.sub_microbatch = SubMicrobatchId{r.i32("stage sub-microbatch")};
  s.pass = read_pass(r);
  return s;
}
inline MemoryStrategy read_strategy(BinaryReader& r) {
  MemoryStrategy s;
  s.full_recompute = r.i16("strategy");
  s.selective_recompute = r.i16("strategy");
  s.offload = r.i16("strategy");
  return s;
}

}  // namespace detail

/// Encodes a plan (see the header comment).
[[nodiscard]] inline std::vector<std::byte> to_binary(const Plan& plan) {
  detail::BinaryWriter w;
  w.raw(plan_binary_magic);
  w.u32(Plan::format_version);
  w.str(plan.name);
  w.str(plan.model);
  w.str(plan.setup);
  w.i32(plan.microbatches);
  w.str(plan.partition.name);
  w.i32(plan.partition.ranks);
  w.count(plan.partition.modules.size());
  for (const auto& m : plan.partition.modules) {
    w.i64(m.sub_microbatch_items);
    w.count(m.chunks.size());
    for (const auto& c : m.chunks) {
      w.i32(c.first_layer);
      w.i32(c.layer_count);
      w.i32(c.rank.value());
    }
  }
  w.count(plan.sub_microbatches.size());
  for (const auto& s : plan.sub_microbatches) {
    w.i32(s.module().value());
    w.i32(s.microbatch().value());
    w.count(s.item_tokens().size());
    for (auto t : s.item_tokens()) w.i64(t);
    w.count(s.context_tokens().size());
    for (auto t : s.context_tokens()) w.i64(t);
    w.count(s.items().size());
    for (const auto& it : s.items()) {
      w.i32(it.sample);
      w.i32(it.item);
    }
  }
  w.count(plan.transfers.size());
  for (const auto& t : plan.transfers) {
    w.i32(t.from.value());
    w.i32(t.to.value());
    detail::write_stage_ref(w, t.producer);
    detail::write_stage_ref(w, t.consumer);
    w.i64(t.bytes.count());
  }
  w.count(plan.ranks.size());
  for (const auto& list : plan.ranks) {
    w.count(list.size());
    for (const auto& a : list) {
      w.u8(static_cast<std::uint8_t>(a.index()));
      if (const auto* f = std::get_if<Forward>(&a)) {
        w.i32(f->module.value());
        w.i32(f->chunk);
        w.i32(f->sub_microbatch.value());
        detail::write_strategy(w, f->strategy);
      } else if (const auto* b = std::get_if<Backward>(&a)) {
        w.i32(b->module.value());
        w.i32(b->chunk);
        w.i32(b->sub_microbatch.value());
        detail::write_strategy(w, b->strategy);
        w.u8(static_cast<std::uint8_t>(b->pass));
      } else if (const auto* s = std::get_if<Send>(&a)) {
        w.i32(s->transfer.value());
      } else if (const auto* r = std::get_if<Recv>(&a)) {
        w.i32(r->transfer.value());
      } else {
        w.i32(std::get<Wait>(a).transfer.value());
      }
    }
  }
  auto& bytes = w.bytes();
  const std::uint64_t sum = detail::fnv1a64(bytes);
  w.u64(sum);
  return std::move(bytes);
}

/// Decodes a plan. Throws Error{input} (with the byte offset) on anything but a well-formed
/// encoding of this format version.
[[nodiscard]] inline Plan plan_from_binary(std::span<const std::byte> data) {
  constexpr std::size_t header = 8, trailer = 8;
  auto fail = [](const std::string& message, std::size_t at, std::string expected) {
    throw input_error("binary plan: " + message, {.path = "byte " + std::to_string(at), .expected = std::move(expected)});
  };
  if (data.size() < header + trailer)
    fail("truncated: only " + std::to_string(data.size()) + " bytes", data.size(), "at least " + std::to_string(header + trailer));
  for (std::size_t i = 0; i < plan_binary_magic.size(); ++i)
    if (data[i] != plan_binary_magic[i]) fail("not a pipeweaver binary plan (bad magic)", i, "the bytes \"PWPL\"");
  detail::BinaryReader head(data.subspan(4, 4));
  const auto version = static_cast<std::uint32_t>(head.uint(4, "format version"));
  if (version != Plan::format_version)
    fail("unsupported format version " + std::to_string(version), 4, "version " + std::to_string(Plan::format_version));
  const auto body_end = data.size() - trailer;
  detail::BinaryReader tail(data.subspan(body_end));
  if (tail.uint(8, "checksum") != detail::fnv1a64(data.first(body_end)))
    fail("checksum mismatch (corrupt or truncated data)", body_end, "the FNV-1a-64 of the preceding bytes");

  detail::BinaryReader r(data.first(body_end));
  (void)r.uint(8, "header");
  Plan plan;
  plan.name = r.str("plan name");
  plan.model = r.str("model name");
  plan.setup = r.str("setup name");
  plan.microbatches = r.i32("microbatches");
  plan.partition.name = r.str("partition name");
  plan.partition.ranks = r.i32("partition ranks");
  plan.partition.modules.resize(r.count("modules", 12));
  for (auto& m : plan.partition.modules) {
    m.sub_microbatch_items = r.i64("sub-microbatch items");
    m.chunks.resize(r.count("chunks", 12));
    for (auto& c : m.chunks) {
      c.first_layer = r.i32("chunk first layer");
      c.layer_count = r.i32("chunk layer count");
      c.rank = RankId{r.i32("chunk rank")};
    }
  }
  const std::size_t smbs = r.count("sub-microbatches", 20);
  plan.sub_microbatches.reserve(smbs);
  for (std::size_t s = 0; s < smbs; ++s) {
    const ModuleId module{r.i32("sub-microbatch module")};
    const MicrobatchId mb{r.i32("sub-microbatch microbatch")};
    std::vector<std::int64_t> tokens(r.count("item tokens", 8));
    for (auto& t : tokens) t = r.i64("item tokens");
    std::vector<std::int64_t> context(r.count("context tokens", 8));
    for (auto& t : context) t = r.i64("context tokens");
    std::vector<ItemRef> items(r.count("item origins", 8));
    for (auto& it : items) {
      it.sample = r.i32("item sample");
      it.item = r.i32("item index");
    }
    plan.sub_microbatches.emplace_back(module, mb, std::move(tokens), std::move(context), std::move(items));
  }
  plan.transfers.resize(r.count("transfers", 42));
  for (auto& t : plan.transfers) {
    t.from = RankId{r.i32("transfer from")};
    t.to = RankId{r.i32("transfer to")};
    t.producer = detail::read_stage_ref(r);
    t.consumer = detail::read_stage_ref(r);
    t.bytes = Bytes{r.i64("transfer bytes")};
  }
  plan.ranks.resize(r.count("ranks", 4));
  for (auto& list : plan.ranks) {
    const std::size_t n = r.count("actions", 5);
    list.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t at = r.pos();
      switch (r.u8("action tag")) {
        case 0: {
          Forward f;
          f.module = ModuleId{r.i32("forward module")};
          f.chunk = r.i32("forward chunk");
          f.sub_microbatch = SubMicrobatchId{r.i32("forward sub-microbatch")};
          f.strategy = detail::read_strategy(r);
          list.emplace_back(f);
          break;
        }
        case 1: {
          Backward b;
          b.module = ModuleId{r.i32("backward module")};
          b.chunk = r.i32("backward chunk");
          b.sub_microbatch = SubMicrobatchId{r.i32("backward sub-microbatch")};
          b.strategy = detail::read_strategy(r);
          b.pass = detail::read_pass(r);
          list.emplace_back(b);
          break;
        }
        case 2: list.emplace_back(Send{TransferId{r.i32("send transfer")}}); break;
        case 3: list.emplace_back(Recv{TransferId{r.i32("recv transfer")}}); break;
        case 4: list.emplace_back(Wait{TransferId{r.i32("wait transfer")}}); break;
        default: r.fail("unknown action tag", at, "0 (Forward) .. 4 (Wait)");
      }
    }
  }
  if (r.left() != 0) fail(std::to_string(r.left()) + " trailing bytes after the plan", r.pos(), "the checksum right after the last rank");
  check_plan_limits(plan);
  return plan;
}

}  // namespace pipeweaver
