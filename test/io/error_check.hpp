#pragma once
// Helpers for tests that expect a pipeweaver::Error.
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

}  // namespace pwtest
