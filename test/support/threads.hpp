#pragma once
// Counting the threads of this process, for tests that check a component leaves none behind.
#include <cstddef>
#include <filesystem>
#include <thread>

namespace test_support {

/// Threads of this process (Linux: one entry per thread in /proc/self/task). The first call
/// starts and joins one thread before counting, so that a helper thread a runtime starts lazily
/// at the first thread creation (ThreadSanitizer's background thread) is in every count.
inline std::size_t thread_count() {
  static const bool started = [] {
    std::thread([] {}).join();
    return true;
  }();
  (void)started;
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

}  // namespace test_support
