// Fuzz targets of the workload readers: model, setup, dataset and suite JSON, and what a command
// does right after reading them (cross-checks, memory figures, a stage's latency, sampling one
// step).
#include <cstddef>
#include <cstdint>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/batch_check.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/model/layer_math.hpp>
#include <pipeweaver/model/memory.hpp>

#include "fuzz_support.hpp"

namespace pw = pipeweaver;

namespace pwfuzz {

void model_input(std::string_view text) {
  const auto& ref = reference();
  const pw::ModelSpec model = pw::io::parse_model(text, "model.json");
  const std::vector<std::int64_t> seq{4096};
  for (std::size_t i = 0; i < model.modules.size(); ++i) {
    const pw::ModuleId id{static_cast<pw::ModuleId::rep>(i)};
    (void)pw::chunk_state_bytes(model, id, ref.setup, 0, model.module(id).layers);
    (void)pw::stage_activation_bytes(model, 1, id, 0, model.module(id).layers, seq, {}, pw::MemoryStrategy{});
  }
  pw::io::check_compatible(model, ref.setup, "setup.json");
  const pw::AnalyticCostModel cost(model, ref.setup);
  const pw::SubMicrobatchSpec smb(model.backbone(), pw::MicrobatchId{0}, seq);
  const pw::ModuleId b = model.backbone();
  (void)cost.latency(pw::StageSpec{b, 0, pw::RankId{0}, pw::Pass::forward, 0, model.module(b).layers}, smb, pw::MemoryStrategy{});
}

void setup_input(std::string_view text) {
  const auto& ref = reference();
  const pw::Setup setup = pw::io::parse_setup(text, "setup.json");
  (void)pw::memory_capacity(setup);
  pw::io::check_compatible(ref.model, setup, "setup.json");
  const pw::AnalyticCostModel cost(ref.model, setup);
  const pw::SubMicrobatchSpec smb(ref.model.backbone(), pw::MicrobatchId{0}, std::vector<std::int64_t>{setup.microbatch.max_tokens});
  const pw::ModuleId b = ref.model.backbone();
  (void)cost.latency(pw::StageSpec{b, 0, pw::RankId{0}, pw::Pass::backward, 0, ref.model.module(b).layers}, smb, pw::MemoryStrategy{});
  (void)cost.transfer_time(pw::Bytes{std::int64_t{1} << 40});
  // One step of the reference dataset under this setup's budget.
  static const pw::DatasetSpec captions = pw::io::read_dataset(PIPEWEAVER_WORKLOADS_DIR "/datasets/vlm-captions.json");
  if (setup.microbatches_per_step <= 64) (void)pw::sample_step(ref.model, captions, setup, 1, 0);
}

void dataset_input(std::string_view text) {
  const auto& ref = reference();
  const pw::DatasetSpec dataset = pw::io::parse_dataset(text, "dataset.json");
  pw::io::check_compatible(ref.model, dataset, "dataset.json");
  const pw::Batch batch = pw::sample_step(ref.model, dataset, ref.setup, 7, 0);
  pw::check_batch(ref.model, ref.setup, batch);
}

void suite_input(std::string_view text) { (void)pw::io::parse_suite(text, "suite.json"); }

}  // namespace pwfuzz
