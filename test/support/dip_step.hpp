#pragma once
// One sampled step of a reference workload cut by DIP's partition (one segment per module, four
// items per sub-microbatch) and split into sub-microbatches: the common input of the tests that
// run the planning pipeline end to end on the suite's cases.
#include <cstdint>
#include <vector>

#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/ir/partition.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>

namespace planir_test {

namespace pw = pipeweaver;

struct DipStep {
  pw::Batch batch{};
  pw::Partition partition{};
  std::vector<pw::SubMicrobatchSpec> smbs{};
};

/// Step `step` of `w` sampled with `seed`, under DIP's partition, split.
inline DipStep dip_step(const pw::io::Workload& w, std::uint64_t seed, int step = 0) {
  DipStep d;
  d.batch = pw::sample_step(w.model, w.dataset, w.setup, seed, step);
  const std::vector<int> segments(w.model.size(), 1);
  const std::vector<std::int64_t> items(w.model.size(), 4);
  d.partition = pw::make_dip_partition(w.model, w.setup.pipeline_stages, segments, items);
  d.smbs = pw::split(w.model, d.partition, d.batch);
  return d;
}

}  // namespace planir_test
