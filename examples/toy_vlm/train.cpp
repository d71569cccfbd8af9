// The toy trainer: tiny-vlm with real float32 math on the CPU, trained through planned,
// pipelined steps on the host backend (P = 4 rank threads).
//
//   toy_vlm_train [--steps N] [--seed S] [--lr X] [--workloads DIR] [--split-backward] [--repack]
//
// Each step: draw a synthetic batch (examples/toy_vlm/toy_vlm.hpp), split it into
// sub-microbatches for a DIP placement (every module over all four ranks: ViT K = 1, LLM
// K = 2), order the stages with the dual-queue interleaver on the analytic cost model, lower
// the schedule to a plan, run it on four threads, apply SGD, print the loss.
// --split-backward: every backward split into its input and weight parts, the weight parts
// deferred into the bubbles. --repack: the step's samples regrouped into microbatches of even
// cost (planner/repacking.hpp) and the data fed in that grouping (toy_vlm::regroup); the same
// samples train, so the loss and gradients are those of the step as drawn.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/planner/repacking.hpp>
#include <pipeweaver/schedule/dual_queue_interleaver.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include "toy_vlm.hpp"

namespace pw = pipeweaver;

namespace {

pw::ModulePlacement spread(int layers, int chunks, int ranks, std::int64_t items) {
  pw::ModulePlacement p;
  for (int c = 0; c < chunks; ++c) p.chunks.push_back(pw::Chunk{c * layers / chunks, layers / chunks, pw::RankId{c % ranks}});
  p.sub_microbatch_items = items;
  return p;
}

pw::Plan plan_step(const pw::ModelSpec& model, const pw::Setup& setup, const pw::AnalyticCostModel& cost,
                   const pw::Partition& partition, const pw::Batch& batch, bool split_backward) {
  auto smbs = pw::split(model, partition, batch);
  const auto graph = pw::build_stage_graph(model, partition, smbs, {.split_backward = split_backward});
  std::vector<std::int64_t> priority(graph.size());
  std::vector<pw::Nanoseconds> latency(graph.size());
  for (std::size_t n = 0; n < graph.size(); ++n) {
    const auto& st = graph.nodes[n].stage;
    const auto& smb = smbs[st.sub_microbatch.index()];
    priority[n] = -static_cast<std::int64_t>(smb.microbatch().value());  // earlier microbatches first
    latency[n] = cost.latency(pw::StageSpec::of(partition, st.module, st.chunk, st.pass), smb, pw::MemoryStrategy{});
  }
  pw::InterleaveInput in;
  in.priority = priority;
  in.latency = latency;
  in.defer_weight = split_backward;
  pw::DualQueueInterleaver interleaver;
  const auto result = interleaver.run(graph, in, [&](pw::NodeIndex from, pw::NodeIndex) {
    const auto& st = graph.nodes[static_cast<std::size_t>(from)].stage;
    const auto& smb = smbs[st.sub_microbatch.index()];
    return cost.transfer_time(cost.output_bytes(pw::StageSpec::of(partition, st.module, st.chunk, pw::Pass::forward), smb));
  });
  pw::Plan plan = pw::lower(model, partition, smbs, graph, result.schedule, cost, "dip", setup.name);
  pw::validate(plan, model);
  return plan;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 50;
  std::uint64_t seed = 1;
  double lr = 0.05;
  std::string dir = PIPEWEAVER_EXAMPLE_WORKLOADS;
  bool split_backward = false, repack = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool value = i + 1 < argc;
    if (a == "--split-backward") split_backward = true;
    else if (a == "--repack") repack = true;
    else if (a == "--steps" && value) steps = std::atoi(argv[++i]);
    else if (a == "--seed" && value) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--lr" && value) lr = std::atof(argv[++i]);
    else if (a == "--workloads" && value) dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: toy_vlm_train [--steps N] [--seed S] [--lr X] [--workloads DIR] [--split-backward] [--repack]\n");
      return 2;
    }
  }
  try {
    const pw::ModelSpec model = pw::io::read_model(dir + "/models/tiny-vlm.json");
    const pw::Setup setup = pw::io::read_setup(dir + "/setups/cpu-pp4.json");
    const pw::AnalyticCostModel cost{model, setup};
    const auto cfg = toy_vlm::Config::from(model);
    const int P = setup.pipeline_stages;
    const pw::Partition partition{"dip", P,
                                  {spread(cfg.vit_layers, P, P, 2), spread(cfg.llm_layers, 2 * P, P, 1)}};
    toy_vlm::Model<float> net(cfg, seed);
    pw::host::Options options;
    options.timeout = std::chrono::seconds(30);
    {
      const toy_vlm::ToyBatch none{{}, {}, 1};
      options.executor.sizes = toy_vlm::Callbacks(net, none, P).sizes();  // depends on the model only
    }
    pw::host::HostExecutor executor(options);  // keeps pools and channels across steps
    toy_vlm::DatasetOptions data;
    data.microbatches = 4;
    data.samples_per_microbatch = 2;
    for (int step = 0; step < steps; ++step) {
      // A small pool of 4 batches, seen in turn: the loss falls as the model learns them.
      const auto drawn = toy_vlm::make_batch(cfg, seed * 1000 + static_cast<std::uint64_t>(step % 4), data);
      const pw::Repacking packing = repack ? pw::repack(model, setup, cost, drawn.meta) : pw::Repacking{};
      const toy_vlm::ToyBatch batch = packing.changed ? toy_vlm::regroup(drawn, packing.origin) : drawn;
      const pw::Plan plan = plan_step(model, setup, cost, partition, batch.meta, split_backward);
      toy_vlm::Callbacks callbacks(net, batch, P);
      net.zero_grad();
      executor.run(plan, model, callbacks, step);
      net.sgd(lr);
      std::printf("step %3d  loss %.4f  actions %zu  transfers %zu  %.1f ms%s\n", step, callbacks.loss(),
                  [&] {
                    std::size_t n = 0;
                    for (const auto& r : plan.ranks) n += r.size();
                    return n;
                  }(),
                  plan.transfers.size(), static_cast<double>(executor.last_step_time().count()) / 1e6,
                  packing.changed ? "  (repacked)" : "");
    }
  } catch (const pw::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
