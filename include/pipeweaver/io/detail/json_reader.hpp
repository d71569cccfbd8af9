#pragma once
// The pieces every JSON reader of the library shares: parsing text with line/column errors and
// duplicate-key detection, reading a file, and CheckedObject, a view of a JSON object that
// knows its JSON path (RFC 6901), rejects keys it was not told about and turns every missing
// key or wrong type into Error(input) naming file, path and what was expected.
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

/// Parses JSON text. Malformed JSON -> Error(input) with "line L, column C" as the location;
/// a key repeated within one object -> Error(input) at its path (the last one would silently
/// win otherwise).
[[nodiscard]] inline nlohmann::json parse_json_text(std::string_view text, std::string_view source) {
  struct Frame {
    bool array = false;
    std::size_t index = 0;
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  std::vector<std::string> current_key;  // current key of each object frame
  auto path = [&]() {
    std::string p;
    std::size_t k = 0;
    for (const Frame& f : stack) {
      p += '/';  // appends, not "/" + string: g++ 12 -O3 warns falsely (-Wrestrict) on the latter
      if (f.array) p += std::to_string(f.index);
      else p += json_pointer_token(current_key[k++]);
    }
    return p;
  };
  using E = nlohmann::json::parse_event_t;
  auto after_value = [&]() {
    if (!stack.empty() && stack.back().array) ++stack.back().index;
  };
  nlohmann::json::parser_callback_t cb = [&](int, E ev, nlohmann::json& parsed) -> bool {
    switch (ev) {
      case E::object_start:
        stack.push_back(Frame{false, 0, {}});
        current_key.emplace_back();
        break;
      case E::array_start: stack.push_back(Frame{true, 0, {}}); break;
      case E::key: {
        std::string key = parsed.get<std::string>();
        current_key.back() = key;
        if (!stack.back().keys.insert(key).second)
          throw input_error("duplicate key \"" + key + "\"", {.file = std::string(source), .path = path(), .expected = "each key at most once per object"});
        break;
      }
      case E::object_end:
        stack.pop_back();
        current_key.pop_back();
        after_value();
        break;
      case E::array_end:
        stack.pop_back();
        after_value();
        break;
      case E::value: after_value(); break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::parse_error& e) {
    // Location from the byte offset of the last character read (1-based).
    std::size_t line = 1, column = 0;
    const std::size_t end = std::min<std::size_t>(e.byte == 0 ? 0 : e.byte, text.size());
    for (std::size_t i = 0; i < end; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 0;
      } else {
        ++column;
      }
    }
    if (column == 0) column = 1;
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..." -> the explanation
    if (auto pos = what.find(": "); pos != std::string::npos) what = what.substr(pos + 2);
    throw input_error("malformed JSON: " + what, {.file = std::string(source), .path = "line " + std::to_string(line) + ", column " + std::to_string(column), .expected = "valid JSON"});
  }
}

/// The whole file as text; Error(input) naming the file if it cannot be read.
[[nodiscard]] inline std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw input_error("is a directory, not a file", {.file = path.string(), .expected = "a readable JSON file"});
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw input_error("cannot open the file", {.file = path.string(), .expected = "a readable JSON file"});
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw input_error("cannot read the file", {.file = path.string(), .expected = "a readable JSON file"});
  return std::move(ss).str();
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
