#pragma once
// The pieces every JSON reader of the library shares: parsing text with line/column errors,
// duplicate-key detection and a nesting bound (limits::max_json_depth); reading a file with a
// size cap (limits::max_file_bytes, checked while reading, so /dev/zero or a pipe cannot exhaust
// memory); and CheckedObject, a view of a JSON object that knows its JSON path (RFC 6901),
// rejects keys it was not told about and turns every missing key, wrong type or number out of
// range (1e999 included) into Error(input) naming file, path and what was expected.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/model/validate.hpp"  // json_pointer_token

namespace pipeweaver::io::detail {

using pipeweaver::detail::json_pointer_token;  // model/validate.hpp: the JSON paths of every check
using pipeweaver::detail::module_names;

[[nodiscard]] inline std::string json_type_name(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a non-integer number";
    default: return "an unsupported value";
  }
}

/// The SAX handler of parse_json_text: builds the document through nlohmann's DOM builder and,
/// on the way, knows the JSON path of the value being read, refuses a key repeated within one
/// object, nesting deeper than limits::max_json_depth and any parse error (with its line and
/// column, and the path). Every event is O(1) (nlohmann's callback parser rescans an array each
/// time one of its objects ends, quadratic in the array).
class CheckedSax {
 public:
  using json = nlohmann::json;
  CheckedSax(json& root, std::string_view text, std::string_view source) : dom_(root), text_(text), source_(source) {}

  bool null() { return value(dom_.null()); }
  bool boolean(bool v) { return value(dom_.boolean(v)); }
  bool number_integer(json::number_integer_t v) { return value(dom_.number_integer(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return value(dom_.number_unsigned(v)); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return value(dom_.number_float(v, s)); }
  bool string(json::string_t& v) { return value(dom_.string(v)); }
  bool binary(json::binary_t& v) { return value(dom_.binary(v)); }
  bool start_object(std::size_t n) {
    open(false);
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    Frame& f = stack_.back();
    f.key = k;
    if (!f.keys.insert(k).second)
      throw input_error("duplicate key \"" + k + "\"", {.file = std::string(source_), .path = path(), .expected = "each key at most once per object"});
    return dom_.key(k);
  }
  bool end_object() {
    stack_.pop_back();
    return value(dom_.end_object());
  }
  bool start_array(std::size_t n) {
    open(true);
    return dom_.start_array(n);
  }
  bool end_array() {
    stack_.pop_back();
    return value(dom_.end_array());
  }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& /*last_token*/, const Exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..." -> the explanation
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    if (what.rfind("parse error", 0) == 0)
      if (auto pos = what.find(": "); pos != std::string::npos) what = what.substr(pos + 2);
    const std::string where = "line " + std::to_string(line_column(position).first) + ", column " + std::to_string(line_column(position).second);
    if (e.id == 406)  // a number beyond double's range (1e999): the value being read has a path
      throw input_error(what + " at " + where, {.file = std::string(source_), .path = stack_.empty() ? std::string("/") : path(),
                                                .expected = "a number within the range of a double"});
    throw input_error("malformed JSON: " + what, {.file = std::string(source_), .path = where, .expected = "valid JSON"});
  }

 private:
  struct Frame {
    bool array = false;
    std::size_t index = 0;
    std::string key{};
    std::set<std::string> keys{};
  };

  void open(bool array) {
    if (stack_.size() >= static_cast<std::size_t>(limits::max_json_depth))
      throw input_error("JSON nested deeper than " + std::to_string(limits::max_json_depth) + " levels",
                        {.file = std::string(source_), .path = path(), .expected = "at most " + std::to_string(limits::max_json_depth) + " nested arrays and objects"});
    stack_.push_back(Frame{array, 0, {}, {}});
  }
  bool value(bool ok) {
    if (!stack_.empty() && stack_.back().array) ++stack_.back().index;
    return ok;
  }
  /// The JSON path of the value being read.
  [[nodiscard]] std::string path() const {
    std::string p;
    for (const Frame& f : stack_) {
      p += '/';  // appends, not "/" + string: g++ 12 -O3 warns falsely (-Wrestrict) on the latter
      if (f.array) p += std::to_string(f.index);
      else p += json_pointer_token(f.key);
    }
    return p;
  }
  /// Line and column (1-based) of the byte offset of the last character read.
  [[nodiscard]] std::pair<std::size_t, std::size_t> line_column(std::size_t byte) const {
    std::size_t line = 1, column = 0;
    const std::size_t end = std::min(byte, text_.size());
    for (std::size_t i = 0; i < end; ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 0;
      } else {
        ++column;
      }
    }
    return {line, column == 0 ? 1 : column};
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::string_view text_;
  std::string_view source_;
  std::vector<Frame> stack_;
};

/// Parses JSON text (see CheckedSax). Malformed JSON -> Error(input) with "line L, column C" as
/// the location; a key repeated within one object -> Error(input) at its path (the last one
/// would silently win otherwise); a number beyond double's range -> Error(input) at its path.
[[nodiscard]] inline nlohmann::json parse_json_text(std::string_view text, std::string_view source) {
  nlohmann::json root;
  CheckedSax sax(root, text, source);
  nlohmann::json::sax_parse(text.begin(), text.end(), &sax, nlohmann::json::input_format_t::json, /*strict=*/true,
                            /*ignore_comments=*/false);
  return root;
}

/// The whole file as text; Error(input) naming the file if it cannot be read or holds more than
/// limits::max_file_bytes (checked while reading: a device or a pipe that never ends is refused
/// once it passes the cap).
[[nodiscard]] inline std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw input_error("is a directory, not a file", {.file = path.string(), .expected = "a readable JSON file"});
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw input_error("cannot open the file", {.file = path.string(), .expected = "a readable JSON file"});
  const auto cap = static_cast<std::size_t>(limits::max_file_bytes);
  auto too_big = [&](const std::string& size) {
    return input_error("the file holds " + size + " bytes", {.file = path.string(), .expected = "at most " + std::to_string(cap) + " bytes"});
  };
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > cap) throw too_big(std::to_string(size));
  std::string text;
  std::vector<char> chunk(std::size_t{1} << 16);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (text.size() + got > cap) throw too_big("more than " + std::to_string(cap));
    text.append(chunk.data(), got);
  }
  if (in.bad())
    throw input_error("cannot read the file", {.file = path.string(), .expected = "a readable JSON file"});
  return text;
}

/// A JSON object being read: knows its file and path, and accepts only the listed keys.
class CheckedObject {
 public:
  CheckedObject(const nlohmann::json& j, std::string path, std::string file, std::initializer_list<std::string_view> allowed,
                std::string_view what = "a JSON object")
      : j_(j), path_(std::move(path)), file_(std::move(file)) {
    if (!j.is_object()) fail_at(path_, "found " + json_type_name(j), std::string(what));
    for (const auto& [key, value] : j.items()) {
      bool known = false;
      for (auto a : allowed) known = known || a == key;
      if (!known) {
        std::string list;
        for (auto a : allowed) {
          if (!list.empty()) list += ", ";
          list += a;
        }
        fail_at(child_path(key), "unknown key \"" + key + "\"", "one of: " + list);
      }
    }
  }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& file() const noexcept { return file_; }
  [[nodiscard]] std::string child_path(std::string_view key) const { return path_ + "/" + json_pointer_token(key); }
  [[nodiscard]] bool has(std::string_view key) const { return j_.contains(key); }

  /// The value at `key`; Error(input) "missing required key" if absent.
  [[nodiscard]] const nlohmann::json& at(std::string_view key, std::string_view expected) const {
    auto it = j_.find(key);
    if (it == j_.end()) fail_at(child_path(key), "missing required key \"" + std::string(key) + "\"", std::string(expected));
    return *it;
  }

  [[nodiscard]] std::string string(std::string_view key) const {
    const auto& v = at(key, "a string");
    if (!v.is_string()) fail_at(child_path(key), "found " + json_type_name(v), "a string");
    return v.get<std::string>();
  }
  [[nodiscard]] std::string string_or(std::string_view key, std::string fallback) const {
    return has(key) ? string(key) : std::move(fallback);
  }

  [[nodiscard]] bool boolean(std::string_view key) const {
    const auto& v = at(key, "true or false");
    if (!v.is_boolean()) fail_at(child_path(key), "found " + json_type_name(v), "true or false");
    return v.get<bool>();
  }
  [[nodiscard]] bool boolean_or(std::string_view key, bool fallback) const { return has(key) ? boolean(key) : fallback; }

  /// An integer in [lo, hi] (a JSON number without fraction or exponent).
  [[nodiscard]] std::int64_t integer(std::string_view key, std::int64_t lo, std::int64_t hi) const {
    return integer_value(at(key, range(lo, hi)), child_path(key), lo, hi);
  }
  [[nodiscard]] std::int64_t integer_value(const nlohmann::json& v, const std::string& p, std::int64_t lo, std::int64_t hi) const {
    if (!v.is_number_integer()) fail_at(p, "found " + json_type_name(v), range(lo, hi));
    std::int64_t x = 0;
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail_at(p, "integer " + std::to_string(u) + " is out of range", range(lo, hi));
      x = static_cast<std::int64_t>(u);
    } else {
      x = v.get<std::int64_t>();
    }
    if (x < lo || x > hi) fail_at(p, "value " + std::to_string(x) + " is out of range", range(lo, hi));
    return x;
  }

  /// A finite number (integer or not).
  [[nodiscard]] double number(std::string_view key) const { return number_value(at(key, "a number"), child_path(key)); }
  [[nodiscard]] double number_value(const nlohmann::json& v, const std::string& p) const {
    if (!v.is_number()) fail_at(p, "found " + json_type_name(v), "a number");
    const double x = v.get<double>();
    if (!std::isfinite(x)) fail_at(p, "number out of range", "a finite number");
    return x;
  }

  /// A nested object with its own allowed keys.
  [[nodiscard]] CheckedObject object(std::string_view key, std::initializer_list<std::string_view> allowed,
                                     std::string_view what = "a JSON object") const {
    return CheckedObject(at(key, what), child_path(key), file_, allowed, what);
  }

  /// An array (its elements are read by the caller, at child_path(key) + "/" + index).
  [[nodiscard]] const nlohmann::json& array(std::string_view key, bool non_empty = false) const {
    const auto& v = at(key, "an array");
    if (!v.is_array()) fail_at(child_path(key), "found " + json_type_name(v), "an array");
    if (non_empty && v.empty()) fail_at(child_path(key), "empty array", "a non-empty array");
    return v;
  }

  [[noreturn]] void fail_at(const std::string& p, std::string message, std::string expected) const {
    throw input_error(std::move(message), {.file = file_, .path = p, .expected = std::move(expected)});
  }
  [[noreturn]] void fail(std::string_view key, std::string message, std::string expected) const {
    fail_at(child_path(key), std::move(message), std::move(expected));
  }

 private:
  static std::string range(std::int64_t lo, std::int64_t hi) {
    return "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  }

  const nlohmann::json& j_;
  std::string path_;
  std::string file_;
};

}  // namespace pipeweaver::io::detail
