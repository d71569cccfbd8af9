// The fuzz driver: one libFuzzer executable for every target, chosen with --target=NAME (libFuzzer
// leaves flags that start with "--" to the program): model, setup, dataset, suite, batch,
// plan_json, plan_binary. One executable keeps the sanitized build to a single link.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"

namespace pwfuzz {
void model_input(std::string_view text);
void setup_input(std::string_view text);
void dataset_input(std::string_view text);
void suite_input(std::string_view text);
void batch_input(std::string_view text);
void plan_input(std::string_view text, bool binary);
}  // namespace pwfuzz

namespace {
std::string target;
}

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; i < *argc; ++i)
    if (std::strncmp((*argv)[i], "--target=", 9) == 0) target = (*argv)[i] + 9;
  static const char* const known[] = {"model", "setup", "dataset", "suite", "batch", "plan_json", "plan_binary"};
  for (const char* k : known)
    if (target == k) {
      (void)pwfuzz::reference();
      return 0;
    }
  std::fprintf(stderr, "pipeweaver_fuzz: give --target=model|setup|dataset|suite|batch|plan_json|plan_binary\n");
  std::exit(2);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = pwfuzz::text_of(data, size);
  pwfuzz::accept_or_refuse([&] {
    if (target == "model") pwfuzz::model_input(text);
    else if (target == "setup") pwfuzz::setup_input(text);
    else if (target == "dataset") pwfuzz::dataset_input(text);
    else if (target == "suite") pwfuzz::suite_input(text);
    else if (target == "batch") pwfuzz::batch_input(text);
    else if (target == "plan_json") pwfuzz::plan_input(text, false);
    else pwfuzz::plan_input(text, true);
  });
  return 0;
}
