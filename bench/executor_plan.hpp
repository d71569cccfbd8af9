#pragma once
// Bench helper: the plan the executor benchmarks run (bench/host_executor.cpp and
// bench/cuda_runtime.cpp), built as the host backend's tests build theirs
// (test/backends/host/plans.hpp: dual-queue order, unit costs). 16 microbatches of 4 samples
// (two images each); ViT 4 chunks, LLM 8 chunks (one layer each, chunk c on rank c mod P), one
// item per sub-microbatch: a few thousand actions.
#include <pipeweaver/execute.hpp>

#include "backends/host/plans.hpp"

#include <vector>

namespace bench_plans {

namespace pw = pipeweaver;

inline const pw::ModelSpec& model() {
  static const pw::ModelSpec m = test_plans::tiny_vlm();
  return m;
}

inline pw::Plan executor_plan(int ranks) {
  pw::Batch batch;
  for (int mb = 0; mb < 16; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 4; ++s) m.samples.push_back(pw::Sample{12, {pw::SampleItems{"image", {16, 8}}}});
    batch.microbatches.push_back(m);
  }
  const auto spread = [ranks](int chunks) {
    std::vector<int> r;
    for (int c = 0; c < chunks; ++c) r.push_back(c % ranks);
    return r;
  };
  const pw::Partition partition{"dip", ranks,
                                {test_plans::placement(std::vector<int>(4, 1), spread(4), 1),
                                 test_plans::placement(std::vector<int>(8, 1), spread(8), 1)}};
  return test_plans::make_plan(model(), partition, batch);
}

}  // namespace bench_plans
