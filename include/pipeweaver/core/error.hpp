#pragma once
// One error type for everything the library rejects. It carries where the problem is (a file
// and a JSON path, or a rank and an action position) and what was expected, so that a user can
// fix the input without reading our code.
//
// One way to build one: the helper named for its kind, with the location as designated fields,
//   throw input_error("layers is 0", {.file = path, .path = "/modules/1/layers", .expected = ">= 1"});
//   throw invalid_plan_error(label + ": sent twice", {.path = "rank 2, action 17", .expected = "one Send"});
// and in_file(e, file) to add the file to an error raised where the file was not known.
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
    return s;
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
