#pragma once
// One error type for everything the library rejects. It carries where the problem
// is (a file and a JSON path, or a rank and an action position) and what was
// expected, so that a user can fix the input without reading our code.
#include <stdexcept>
#include <string>
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
  std::string file;      ///< file the input came from, if any
  std::string path;      ///< JSON path (e.g. "/modules/1/layers") or a location such as "rank 2, action 17"
  std::string expected;  ///< what would have been accepted
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

}  // namespace pipeweaver
