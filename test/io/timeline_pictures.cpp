// Chrome trace and SVG timeline of emulated plans: the trace parses, has one slice per compute
// action and per transfer at the emulated times and a flow arrow pair per transfer; the SVG has
// one box per compute action inside the plot, the step time in the title and a legend entry per
// module and pass. The files are also written under the build directory (test/pictures/) to be
// looked at.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/io/chrome_trace.hpp>
#include <pipeweaver/io/svg_timeline.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/schedule/lowering.hpp>
#include <pipeweaver/schedule/stage_graph.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "emulate/emu_support.hpp"

namespace pw = pipeweaver;

namespace {

const std::filesystem::path pictures = std::filesystem::path(PIPEWEAVER_BINARY_DIR) / "test" / "pictures";

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

void check_pictures(const pw::Plan& plan, const pw::ModelSpec& model, const pw::EmulationResult& res, const std::string& stem) {
  std::filesystem::create_directories(pictures);
  // --- Chrome trace ---
  const std::string trace_text = pw::io::chrome_trace_json(plan, model, res);
  pw::io::write_chrome_trace(pictures / (stem + ".trace.json"), plan, model, res);
  const auto trace = nlohmann::json::parse(trace_text);
  std::size_t compute = 0, transfers = 0, starts = 0, finishes = 0;
  for (const auto& e : res.timeline) (e.kind == pw::TimelineEvent::Kind::compute ? compute : transfers)++;
  CHECK(transfers == plan.transfers.size());
  std::size_t x_compute = 0, x_transfer = 0;
  std::size_t k = 0;  // X events appear in timeline order
  for (const auto& ev : trace.at("traceEvents")) {
    const std::string ph = ev.at("ph");
    if (ph == "s") ++starts;
    if (ph == "f") ++finishes;
    if (ph != "X") continue;
    const auto& e = res.timeline.at(k++);
    const bool is_compute = ev.at("cat") != "transfer";
    CHECK(is_compute == (e.kind == pw::TimelineEvent::Kind::compute));
    (is_compute ? x_compute : x_transfer)++;
    CHECK(ev.at("ts").get<double>() == doctest::Approx(static_cast<double>(e.start.count()) / 1000.0).epsilon(1e-12));
    CHECK(ev.at("dur").get<double>() == doctest::Approx(static_cast<double>((e.end - e.start).count()) / 1000.0).epsilon(1e-12));
    if (is_compute) {
      CHECK(ev.at("name") == pw::stage_label(model, e.stage));
      CHECK(ev.at("tid") == e.rank.value());
    }
  }
  CHECK(x_compute == compute);
  CHECK(x_transfer == transfers);
  CHECK(starts == transfers);
  CHECK(finishes == transfers);
  // --- SVG ---
  const std::string svg = pw::io::svg_timeline(plan, model, res);
  pw::io::write_svg_timeline(pictures / (stem + ".svg"), plan, model, res);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(count(svg, "<title>") == compute);  // one box per compute action
  char step[32];
  std::snprintf(step, sizeof step, "step %.2f ms", pw::to_ms(res.step_time));
  CHECK(svg.find(step) != std::string::npos);
  for (int r = 0; r < plan.rank_count(); ++r) CHECK(svg.find(">rank " + std::to_string(r) + "<") != std::string::npos);
  for (const auto& m : model.modules) {
    bool used = false;
    for (const auto& e : res.timeline) used = used || (e.kind == pw::TimelineEvent::Kind::compute && model.modules[e.stage.module.index()].name == m.name);
    if (used) CHECK(svg.find(">" + m.name + " forward<") != std::string::npos);
  }
  CHECK(svg.find("idle (bubble)") != std::string::npos);
  CHECK_THROWS_AS((void)pw::io::svg_timeline(plan, model, pw::EmulationResult{}), pw::Error);  // no timeline
}

}  // namespace

TEST_CASE("pictures of a hand-made interleaved 1F1B plan") {
  using namespace emu_test;
  const int P = 4, v = 2, M = 8;
  const auto model = chain_model(P * v * 2);
  const auto setup = test_setup(P);
  const auto part = interleaved_partition(P, v, 2);
  const auto graph = chain_graph(part, M);
  auto plan = mini_lower(model, part, one_per_microbatch(M), graph, chain_schedule(graph, part, interleaved_order(P, v, M)),
                         [](pw::NodeIndex, pw::NodeIndex) { return pw::Bytes{1}; });
  plan.name = "interleaved-1f1b (hand-made)";
  plan.setup = setup.name;
  plan.microbatches = M;
  TableCost cost;
  cost.f = 1'000'000;  // 1 ms forward, 2 ms backward per chunk, 0.2 ms per transfer
  cost.b = 2'000'000;
  cost.ns_per_byte = 200'000;
  const auto res = pw::emulate(plan, model, setup, cost, {.record_timeline = true});
  check_pictures(plan, model, res, "hand_interleaved");
}

TEST_CASE("pictures of a real vlm-s step") {
  const std::string dir = PIPEWEAVER_WORKLOADS_DIR;
  const auto model = pw::io::read_model(dir + "/models/vlm-s.json");
  const auto dataset = pw::io::read_dataset(dir + "/datasets/vlm-web-mix.json");
  auto setup = pw::io::read_setup(dir + "/setups/h800-tp4-pp4.json");
  setup.microbatches_per_step = 8;
  const pw::AnalyticCostModel cost(model, setup);
  pw::Partition part;
  part.name = "even";
  part.ranks = setup.pipeline_stages;
  for (const auto& m : model.modules) {
    pw::ModulePlacement mp;
    const int chunks = setup.pipeline_stages;
    for (int c = 0; c < chunks; ++c)
      mp.chunks.push_back(pw::Chunk{m.layers * c / chunks, m.layers * (c + 1) / chunks - m.layers * c / chunks, pw::RankId{c}});
    mp.sub_microbatch_items = m.role == pw::ModuleRole::encoder ? 8 : 0;
    part.modules.push_back(mp);
  }
  const auto batch = pw::sample_step(model, dataset, setup, 1, 0);
  const auto smbs = pw::split(model, part, batch);
  const auto graph = pw::build_stage_graph(model, part, smbs);
  const auto sched = emu_test::greedy_schedule(graph, part, smbs, cost);
  const auto plan = pw::lower(model, part, smbs, graph, sched, cost, "greedy (even split)", setup.name);
  const auto res = pw::emulate(plan, model, setup, cost, {.record_timeline = true});
  check_pictures(plan, model, res, "vlm_s_greedy");
}
