#pragma once
// What every fuzz target shares: the reference model and setup the decoded inputs are checked
// against (read once, from the workloads folder), and the one rule of the campaign: an input is
// either accepted or refused with a pipeweaver::Error. Any other exception aborts (libFuzzer
// reports it with the input), and so do a crash, a sanitizer finding, a time-out
// (-timeout) and memory beyond -rss_limit_mb (2 GB by default), which is how the bounds of
// core/limits.hpp are held to.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/io/workload_json.hpp>

namespace pwfuzz {

/// tiny-vlm on cpu-pp4 (4 ranks), the workload of the plan seeds.
struct Reference {
  pipeweaver::ModelSpec model = pipeweaver::io::read_model(PIPEWEAVER_WORKLOADS_DIR "/models/tiny-vlm.json");
  pipeweaver::Setup setup = pipeweaver::io::read_setup(PIPEWEAVER_WORKLOADS_DIR "/setups/cpu-pp4.json");
};

inline const Reference& reference() {
  static const Reference r;
  return r;
}

[[nodiscard]] inline std::string_view text_of(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `f`; a pipeweaver::Error is a refusal (fine), anything else aborts with its message.
template <class F>
void accept_or_refuse(F&& f) {
  try {
    f();
  } catch (const pipeweaver::Error& e) {
    if (e.what()[0] == '\0') {  // every refusal says what is wrong
      std::fprintf(stderr, "an Error with an empty message\n");
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "not a pipeweaver::Error: %s\n", e.what());
    std::abort();
  }
}

}  // namespace pwfuzz
