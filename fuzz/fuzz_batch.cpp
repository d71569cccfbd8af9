// Fuzz target of the batch reader (the --batch file of `pipeweaver plan`): read, check against
// tiny-vlm on cpu-pp4 with a budget of 2^20 tokens, then split it over a one-chunk-per-module
// partition and build its stage graph, the first things the planner does with a batch.
#include <cstddef>
#include <cstdint>

#include <pipeweaver/data/batch_check.hpp>
#include <pipeweaver/io/batch_json.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include "fuzz_support.hpp"

namespace pw = pipeweaver;

namespace pwfuzz {

void batch_input(std::string_view text) {
  const auto& ref = reference();
  const pw::Batch batch = pw::io::parse_batch(text, "batch.json");
  pw::Setup setup = ref.setup;
  setup.microbatch.max_tokens = std::int64_t{1} << 20;
  pw::io::check_batch(ref.model, setup, batch, "batch.json");
  pw::Partition whole;
  whole.name = "whole";
  whole.ranks = 2;
  for (std::size_t m = 0; m < ref.model.modules.size(); ++m)
    whole.modules.push_back(pw::ModulePlacement{{pw::Chunk{0, ref.model.modules[m].layers, pw::RankId{static_cast<int>(m % 2)}}}, 2});
  const auto smbs = pw::split(ref.model, whole, batch);
  (void)pw::build_stage_graph(ref.model, whole, smbs);
}

}  // namespace pwfuzz
