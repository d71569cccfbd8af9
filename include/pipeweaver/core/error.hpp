#pragma once
// One error type for everything the library rejects. It carries where the problem is (a file
// and a JSON path, or a rank and an action position) and what was expected, so that a user can
// fix the input without reading our code.
//
// One way to build one: the helper named for its kind, with the location as designated fields,
//   throw input_error("layers is 0", {.file = path, .path = "/modules/1/layers", .expected = ">= 1"});
//   throw invalid_plan_error(label + ": sent twice", {.path = "rank 2, action 17", .expected = "one Send"});
// and in_file(e, file) to add the file to an error raised where the file was not known.
// what() is printable: control characters and bytes that are not UTF-8 (input echoed into a
// message) are written as \xNN.
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace pipeweaver {

enum class ErrorKind {
  input,         ///< malformed or inconsistent input (file, JSON, option)
  infeasible,    ///< a well-formed setup that cannot work (does not fit memory, budget too small)
  invalid_plan,  ///< a plan that breaks a rule (dependency, matching, memory)
  execution,     ///< a failure while a plan runs (callback threw, transfer lost, timeout)
  cancelled,     ///< work abandoned on request (shutdown, cancellation)
};

[[nodiscard]] constexpr const char* to_string(ErrorKind k) noexcept {
  switch (k) {
    case ErrorKind::input: return "input error";
    case ErrorKind::infeasible: return "infeasible";
    case ErrorKind::invalid_plan: return "invalid plan";
    case ErrorKind::execution: return "execution error";
    case ErrorKind::cancelled: return "cancelled";
  }
  return "error";
}

/// Where an error is and what was expected there. Empty fields are omitted from the message.
struct ErrorContext {
  std::string file{};      ///< file the input came from, if any
  std::string path{};      ///< JSON path (e.g. "/modules/1/layers") or a location such as "rank 2, action 17"
  std::string expected{};  ///< what would have been accepted
};

/// `s` with control characters and bytes that are not UTF-8 written as \xNN, so that input
/// echoed into a message can neither drive a terminal nor break a log line.
[[nodiscard]] inline std::string printable_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto hex = [&out](unsigned char b) {
    constexpr char digits[] = "0123456789abcdef";
    out += "\\x";
    out += digits[b >> 4];
    out += digits[b & 15];
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (b < 0x20 || b == 0x7f) hex(b);
      else out += s[i];
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF) is kept.
    const std::size_t n = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 0;
    bool ok = n >= 2 && b >= 0xc2 && b <= 0xf4 && i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && n >= 3) {
      const auto b1 = static_cast<unsigned char>(s[i + 1]);
      if (b == 0xe0 && b1 < 0xa0) ok = false;
      if (b == 0xed && b1 >= 0xa0) ok = false;
      if (b == 0xf0 && b1 < 0x90) ok = false;
      if (b == 0xf4 && b1 >= 0x90) ok = false;
    }
    if (!ok) {
      hex(b);
      ++i;
      continue;
    }
    out.append(s, i, n);
    i += n;
  }
  return out;
}

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, ErrorContext context = {})
      : std::runtime_error(format(kind, message, context)),
        kind_(kind),
        message_(std::move(message)),
        context_(std::move(context)) {}

  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
  /// The problem alone, without location.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] const ErrorContext& context() const noexcept { return context_; }

 private:
  static std::string format(ErrorKind kind, const std::string& message, const ErrorContext& c) {
    std::string s;
    if (!c.file.empty()) s += c.file + ": ";
    if (!c.path.empty()) s += c.path + ": ";
    s += message;
    if (!c.expected.empty()) s += " (expected " + c.expected + ")";
    if (s.empty()) s = to_string(kind);
    return printable_text(s);
  }


  ErrorKind kind_;
  std::string message_;
  ErrorContext context_;
};

/// Malformed or inconsistent input: a file, a JSON value, an option, an argument.
[[nodiscard]] inline Error input_error(std::string message, ErrorContext where = {}) {
  return Error(ErrorKind::input, std::move(message), std::move(where));
}
/// A well-formed request that cannot work (does not fit memory, a budget below one sample).
[[nodiscard]] inline Error infeasible_error(std::string message, ErrorContext where = {}) {
  return Error(ErrorKind::infeasible, std::move(message), std::move(where));
}
/// A plan (or schedule) that breaks a rule: dependency, matching, order, memory.
[[nodiscard]] inline Error invalid_plan_error(std::string message, ErrorContext where = {}) {
  return Error(ErrorKind::invalid_plan, std::move(message), std::move(where));
}
/// A failure while a plan runs: a callback threw, a transfer was lost, a timeout.
[[nodiscard]] inline Error execution_error(std::string message, ErrorContext where = {}) {
  return Error(ErrorKind::execution, std::move(message), std::move(where));
}
/// Work abandoned on request (another rank failed, shutdown, cancellation).
[[nodiscard]] inline Error cancelled_error(std::string message, ErrorContext where = {}) {
  return Error(ErrorKind::cancelled, std::move(message), std::move(where));
}
/// The same error located in `file`, unless it already names one (errors of std-only checks
/// carry no file; the reader that called them knows it).
[[nodiscard]] inline Error in_file(const Error& e, std::string_view file) {
  ErrorContext c = e.context();
  if (c.file.empty()) c.file = std::string(file);
  return Error(e.kind(), e.message(), std::move(c));
}

}  // namespace pipeweaver
