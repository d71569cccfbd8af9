#pragma once
// Helpers for tests that expect a pipeweaver::Error, and the scratch files of the io tests.
#include <doctest/doctest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "pipeweaver/core/error.hpp"

namespace pwtest {

/// The pipeweaver::Error `f` throws, or nullopt if it returns normally.
template <class F>
std::optional<pipeweaver::Error> error_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const pipeweaver::Error& e) {
    return e;
  }
  return std::nullopt;
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// Checks that `read` throws an input error at `path` of `file` whose message contains `text`.
template <class F>
void check_input_error(F&& read, const std::string& file, const std::string& path, const std::string& text) {
  try {
    std::forward<F>(read)();
    FAIL("accepted");
  } catch (const pipeweaver::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == pipeweaver::ErrorKind::input);
    CHECK(e.context().file == file);
    CHECK(e.context().path == path);
    CHECK(contains(e.what(), text));
  }
}

/// `name` in the test's own scratch folder `folder` of the build tree (created if missing).
inline std::filesystem::path temp_file(const std::string& folder, const std::string& name) {
  const auto dir = std::filesystem::path(PIPEWEAVER_BINARY_DIR) / "test-tmp" / folder;
  std::filesystem::create_directories(dir);
  return dir / name;
}

}  // namespace pwtest
