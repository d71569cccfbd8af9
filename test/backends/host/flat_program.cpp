// A consumer of the flat rank program alone: a small sequential interpreter, written here
// independently of the executor, runs a plan's flat-program JSON with the toy VLM's math
// (examples/toy_vlm) and must reproduce the host backend's loss and gradients for the same plan,
// for the searched (dip) plan and every baseline's.
//
// The interpreter reads nothing but the JSON (and the toy model's weights and data). Ranks are
// simulated one action at a time, with the strictest semantics of docs/architecture.md: a Send
// blocks until the receiver has posted its Recv (rendezvous), the Recvs of one link are matched in
// the order they were posted, a Recv never blocks, a Wait blocks until the data arrived, and a
// stage may only use data its rank computed or received and waited for. Data is kept per item:
// a forward output by (module, chunk, microbatch, sample, item); the gradient of a chunk's output
// likewise; the gradient one sub-microbatch of a fed module hands back to a feeder item also by
// the sub-microbatch it comes from. A stalled simulation (no rank can move) is a deadlock.
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/host/gradients.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/baselines/compare.hpp>
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/flat_program_json.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace pw = pipeweaver;

namespace {

using Floats = std::vector<float>;

enum class Kind { output, output_grad, contribution };

/// One item's data on a rank (see the header comment).
struct DataKey {
  Kind kind = Kind::output;
  int module = 0, chunk = 0, microbatch = 0, sample = 0, item = 0;
  int from = -1;  ///< contribution: the consumer sub-microbatch that computed it
  friend auto operator<=>(const DataKey&, const DataKey&) = default;
};

struct Message {
  std::vector<std::pair<DataKey, Floats>> data;
};

/// An item of a module in a microbatch, as the program's forwards list them.
struct CatalogItem {
  int sample = 0, item = 0, sub_microbatch = 0;
  std::size_t index = 0;  ///< within its sub-microbatch
};

class Interpreter {
 public:
  Interpreter(const pw::FlatProgram& p, toy_vlm::Callbacks& callbacks, pw::BufferSizes sizes)
      : p_(p), cb_(callbacks), sizes_(std::move(sizes)), ranks_(p.programs.size()) {
    for (std::size_t r = 0; r < ranks_.size(); ++r) ranks_[r].posted.resize(p.programs.size());
    catalog_items();
  }

  void run() {
    for (;;) {
      bool all_done = true, moved = false;
      for (std::size_t r = 0; r < ranks_.size(); ++r) {
        while (ranks_[r].pc < p_.programs[r].actions.size() && step(r)) moved = true;
        all_done = all_done && ranks_[r].pc == p_.programs[r].actions.size();
      }
      if (all_done) return;
      if (!moved) throw std::runtime_error("deadlock: no rank can move");
    }
  }

 private:
  struct StageState {
    Floats input;
    std::vector<pw::InputSegment> segments;
  };
  struct Rank {
    std::size_t pc = 0;
    std::map<DataKey, Floats> visible;
    std::map<std::tuple<int, int, int>, StageState> saved;  // (module, chunk, sub-microbatch) -> forward input
    std::vector<std::deque<int>> posted;                      // per sender: recvs not yet matched, in order
    std::map<int, Message> arrived;                           // transfer -> data not yet waited for
  };

  [[noreturn]] void fail(std::size_t r, const std::string& what) const {
    throw std::runtime_error("rank " + std::to_string(r) + ", action " + std::to_string(ranks_[r].pc) + ": " + what);
  }

  void catalog_items() {
    for (const auto& prog : p_.programs)
      for (const auto& a : prog.actions) {
        if (a.op != pw::FlatOp::forward || a.stage.chunk != 0) continue;
        auto& list = catalog_[{a.stage.module_id.value(), a.stage.microbatch.value()}];
        for (std::size_t k = 0; k < a.stage.items.size(); ++k)
          list.push_back(CatalogItem{a.stage.items[k].sample, a.stage.items[k].item, a.stage.sub_microbatch.value(), k});
      }
    for (auto& [key, list] : catalog_)
      std::sort(list.begin(), list.end(), [](const CatalogItem& a, const CatalogItem& b) { return std::tie(a.sample, a.item) < std::tie(b.sample, b.item); });
  }

  [[nodiscard]] int last_chunk(int m) const { return static_cast<int>(p_.modules.at(static_cast<std::size_t>(m)).chunks.size()) - 1; }
  [[nodiscard]] std::vector<int> feeders(int m) const {
    std::vector<int> out;
    for (std::size_t f = 0; f < p_.modules.size(); ++f)
      if (p_.modules[f].feeds == p_.modules.at(static_cast<std::size_t>(m)).name) out.push_back(static_cast<int>(f));
    return out;
  }
  [[nodiscard]] bool feeds_something(int m) const { return !p_.modules.at(static_cast<std::size_t>(m)).feeds.empty(); }

  static pw::StageSpec spec_of(const pw::FlatStage& s, pw::Pass pass) {
    return pw::StageSpec{s.module_id, s.chunk, s.rank, pass, s.first_layer, s.layer_count};
  }
  static pw::SubMicrobatchSpec smb_of(const pw::FlatStage& s) {
    std::vector<std::int64_t> tokens;
    std::vector<pw::ItemRef> items;
    for (const auto& i : s.items) {
      tokens.push_back(i.tokens);
      items.push_back(pw::ItemRef{i.sample, i.item});
    }
    return pw::SubMicrobatchSpec(s.module_id, s.microbatch, tokens, {}, items);
  }
  /// Bytes of item k of the forward output of chunk `chunk` of the stage's module.
  [[nodiscard]] std::size_t item_bytes(const pw::FlatStage& s, int chunk, std::size_t k) const {
    const pw::Chunk& ch = p_.modules.at(s.module_id.index()).chunks.at(static_cast<std::size_t>(chunk));
    const pw::StageSpec st{s.module_id, chunk, ch.rank, pw::Pass::forward, ch.first_layer, ch.layer_count};
    return sizes_.item_output_bytes(st, smb_of(s), k);
  }
  const Floats& need(std::size_t r, const DataKey& k, const char* what) const {
    const auto it = ranks_[r].visible.find(k);
    if (it == ranks_[r].visible.end()) fail(r, std::string(what) + " is not available on this rank");
    return it->second;
  }
  static void append(Floats& to, const Floats& from) { to.insert(to.end(), from.begin(), from.end()); }

  bool step(std::size_t r) {
    const pw::FlatAction& a = p_.programs[r].actions[ranks_[r].pc];
    switch (a.op) {
      case pw::FlatOp::forward: forward(r, a.stage); break;
      case pw::FlatOp::backward:
      case pw::FlatOp::backward_input:
      case pw::FlatOp::backward_weight: backward(r, a.stage); break;
      case pw::FlatOp::send:
        if (!send(r, a)) return false;
        break;
      case pw::FlatOp::recv: ranks_[r].posted[a.peer.index()].push_back(a.transfer.value()); break;
      case pw::FlatOp::wait: {
        auto it = ranks_[r].arrived.find(a.transfer.value());
        if (it == ranks_[r].arrived.end()) return false;
        for (auto& [key, data] : it->second.data) ranks_[r].visible[key] = std::move(data);
        ranks_[r].arrived.erase(it);
        break;
      }
    }
    ++ranks_[r].pc;
    return true;
  }

  // The input of a forward: the previous chunk's output, the feeders' items gathered per item, or nothing.
  StageState gather_input(std::size_t r, const pw::FlatStage& s) const {
    StageState in;
    const int m = s.module_id.value(), mb = s.microbatch.value();
    if (s.chunk > 0) {
      for (const auto& item : s.items) append(in.input, need(r, DataKey{Kind::output, m, s.chunk - 1, mb, item.sample, item.item}, "the previous chunk's output"));
      return in;
    }
    for (std::size_t k = 0; k < s.items.size(); ++k)
      for (int f : feeders(m)) {
        const auto found = catalog_.find({f, mb});
        if (found == catalog_.end()) continue;
        for (const CatalogItem& c : found->second) {
          if (c.sample != s.items[k].sample) continue;
          const Floats& data = need(r, DataKey{Kind::output, f, last_chunk(f), mb, c.sample, c.item}, "a feeder's output");
          in.segments.push_back(pw::InputSegment{pw::ModuleId{f}, pw::SubMicrobatchId{c.sub_microbatch}, c.index, pw::ItemRef{c.sample, c.item}, k,
                                                 in.input.size() * sizeof(float), data.size() * sizeof(float)});
          append(in.input, data);
        }
      }
    return in;
  }

  void forward(std::size_t r, const pw::FlatStage& s) {
    StageState in = gather_input(r, s);
    const pw::StageSpec st = spec_of(s, pw::Pass::forward);
    const pw::SubMicrobatchSpec smb = smb_of(s);
    std::vector<std::size_t> bytes;
    std::size_t total = 0;
    for (std::size_t k = 0; k < s.items.size(); ++k) total += bytes.emplace_back(sizes_.item_output_bytes(st, smb, k));
    Floats out(total / sizeof(float), 0.0f);
    pw::StageIO io;
    io.rank = s.rank;
    io.sub_microbatch = s.sub_microbatch;
    io.input = std::as_bytes(std::span<const float>(in.input));
    io.segments = in.segments;
    io.output = std::as_writable_bytes(std::span<float>(out));
    cb_.forward(st, smb, io);
    std::size_t at = 0;
    for (std::size_t k = 0; k < s.items.size(); ++k) {
      const std::size_t n = bytes[k] / sizeof(float);
      ranks_[r].visible[DataKey{Kind::output, s.module_id.value(), s.chunk, s.microbatch.value(), s.items[k].sample, s.items[k].item}] =
          Floats(out.begin() + static_cast<std::ptrdiff_t>(at), out.begin() + static_cast<std::ptrdiff_t>(at + n));
      at += n;
    }
    ranks_[r].saved[{s.module_id.value(), s.chunk, s.sub_microbatch.value()}] = std::move(in);
  }

  // The gradient of a stage's output: from the next chunk, summed from the fed module's
  // sub-microbatches that used each item, or nothing (the loss chunk).
  Floats output_grad(std::size_t r, const pw::FlatStage& s) const {
    Floats g;
    const int m = s.module_id.value(), mb = s.microbatch.value();
    if (s.chunk < last_chunk(m)) {
      for (const auto& item : s.items) append(g, need(r, DataKey{Kind::output_grad, m, s.chunk, mb, item.sample, item.item}, "the next chunk's gradient"));
      return g;
    }
    if (!feeds_something(m)) return g;
    for (const auto& item : s.items) {
      Floats sum;
      int contributions = 0;
      for (const auto& [key, data] : ranks_[r].visible) {
        if (key.kind != Kind::contribution || key.module != m || key.chunk != s.chunk || key.microbatch != mb || key.sample != item.sample ||
            key.item != item.item)
          continue;
        if (sum.empty()) sum = data;
        else
          for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += data[i];
        ++contributions;
      }
      if (contributions == 0) fail(r, "no gradient contribution for a feeder item");
      append(g, sum);
    }
    return g;
  }

  void backward(std::size_t r, const pw::FlatStage& s) {
    const int m = s.module_id.value(), mb = s.microbatch.value();
    const auto saved = ranks_[r].saved.find({m, s.chunk, s.sub_microbatch.value()});
    if (saved == ranks_[r].saved.end()) fail(r, "a backward whose forward did not run on this rank");
    const StageState& in = saved->second;
    const Floats dout = output_grad(r, s);
    const bool wants_input_grad = s.pass != pw::Pass::backward_weight && (s.chunk > 0 || !in.segments.empty());
    Floats din(wants_input_grad ? in.input.size() : 0, 0.0f);
    pw::StageIO io;
    io.rank = s.rank;
    io.sub_microbatch = s.sub_microbatch;
    io.input = std::as_bytes(std::span<const float>(in.input));
    io.segments = in.segments;
    io.output_grad = std::as_bytes(std::span<const float>(dout));
    io.input_grad = std::as_writable_bytes(std::span<float>(din));
    cb_.backward(spec_of(s, s.pass), smb_of(s), io);
    if (!wants_input_grad) return;
    auto& visible = ranks_[r].visible;
    if (s.chunk > 0) {
      std::size_t at = 0;
      for (std::size_t k = 0; k < s.items.size(); ++k) {
        const std::size_t n = item_bytes(s, s.chunk - 1, k) / sizeof(float);
        visible[DataKey{Kind::output_grad, m, s.chunk - 1, mb, s.items[k].sample, s.items[k].item}] =
            Floats(din.begin() + static_cast<std::ptrdiff_t>(at), din.begin() + static_cast<std::ptrdiff_t>(at + n));
        at += n;
      }
      return;
    }
    for (const pw::InputSegment& sg : in.segments) {
      const std::size_t at = sg.offset / sizeof(float), n = sg.bytes / sizeof(float);
      visible[DataKey{Kind::contribution, sg.module.value(), last_chunk(sg.module.value()), mb, sg.origin.sample, sg.origin.item, s.sub_microbatch.value()}] =
          Floats(din.begin() + static_cast<std::ptrdiff_t>(at), din.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
  }

  // What a transfer carries: the producer's per-item data the consumer uses (see the header).
  Message message(std::size_t r, const pw::FlatAction& a) const {
    const pw::FlatStage& from = a.stage;
    const pw::FlatStage& to = a.peer_stage;
    const int mb = from.microbatch.value();
    Message msg;
    const auto samples_of = [](const pw::FlatStage& s) {
      std::vector<int> out;
      for (const auto& i : s.items) out.push_back(i.sample);
      return out;
    };
    const auto has = [](const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };
    if (from.pass == pw::Pass::forward) {
      const std::vector<int> used = samples_of(to);
      for (const auto& item : from.items)
        if (to.module_id == from.module_id || has(used, item.sample)) {
          const DataKey k{Kind::output, from.module_id.value(), from.chunk, mb, item.sample, item.item};
          msg.data.emplace_back(k, need(r, k, "the data of a send"));
        }
    } else if (to.module_id == from.module_id) {
      for (const auto& item : from.items) {
        const DataKey k{Kind::output_grad, from.module_id.value(), to.chunk, mb, item.sample, item.item};
        msg.data.emplace_back(k, need(r, k, "the gradient of a send"));
      }
    } else {
      const std::vector<int> used = samples_of(from);
      for (const auto& item : to.items)
        if (has(used, item.sample)) {
          const DataKey k{Kind::contribution, to.module_id.value(), to.chunk, mb, item.sample, item.item, from.sub_microbatch.value()};
          msg.data.emplace_back(k, need(r, k, "the gradient contribution of a send"));
        }
    }
    if (msg.data.empty()) fail(r, "a send that carries nothing");
    return msg;
  }

  // Rendezvous: the send completes only once the peer has posted this very transfer's Recv as the
  // oldest unmatched one on the link.
  bool send(std::size_t r, const pw::FlatAction& a) {
    auto& posted = ranks_.at(a.peer.index()).posted[r];
    if (posted.empty()) return false;
    if (posted.front() != a.transfer.value())
      fail(r, "send of transfer " + std::to_string(a.transfer.value()) + " meets the receive of transfer " + std::to_string(posted.front()));
    posted.pop_front();
    ranks_[a.peer.index()].arrived[a.transfer.value()] = message(r, a);
    return true;
  }

  const pw::FlatProgram& p_;
  toy_vlm::Callbacks& cb_;
  pw::BufferSizes sizes_;
  std::vector<Rank> ranks_;
  std::map<std::pair<int, int>, std::vector<CatalogItem>> catalog_;  // (module, microbatch) -> items
};

using test_plans::cpu_pp4;

toy_vlm::ToyBatch toy_batch(const toy_vlm::Config& cfg) {
  toy_vlm::DatasetOptions o;
  o.microbatches = 3;
  o.samples_per_microbatch = 3;
  o.max_images = 2;
  for (std::uint64_t seed = 11;; ++seed) {  // some samples with two images, some with none
    toy_vlm::ToyBatch b = toy_vlm::make_batch(cfg, seed, o);
    int two = 0, none = 0;
    for (const auto& mb : b.samples)
      for (const auto& s : mb) {
        two += s.images.size() == 2 ? 1 : 0;
        none += s.images.empty() ? 1 : 0;
      }
    if (two >= 1 && none >= 1) return b;
  }
}

/// The plan run by the host backend and, from its flat-program JSON only, by the interpreter.
void check_plan(const pw::ModelSpec& spec, const toy_vlm::ToyBatch& batch, const pw::Plan& plan) {
  CAPTURE(plan.name);
  const auto cfg = toy_vlm::Config::from(spec);
  toy_vlm::Model<float> on_host(cfg, 42), interpreted(cfg, 42);
  toy_vlm::Callbacks host_callbacks(on_host, batch, plan.rank_count());
  pw::host::Options options;
  options.timeout = std::chrono::seconds(60);
  options.executor.sizes = host_callbacks.sizes();
  pw::host::run_step(plan, spec, host_callbacks, options);

  const std::string json = pw::io::to_json(pw::flatten(plan, spec)).dump();
  const pw::FlatProgram flat = pw::io::parse_flat_program(json, "flat-program");
  toy_vlm::Callbacks callbacks(interpreted, batch, flat.ranks);
  Interpreter interpreter(flat, callbacks, callbacks.sizes());
  interpreter.run();

  REQUIRE(test_plans::gradient_norm(on_host) > 0);
  const double err = test_plans::max_relative_gradient_error(on_host, interpreted);
  MESSAGE("plan " << plan.name << ": interpreter vs host backend, max relative gradient error " << err);
  CHECK(err <= 1e-6);
  CHECK(callbacks.loss() == doctest::Approx(host_callbacks.loss()).epsilon(1e-12));
}

}  // namespace

TEST_CASE("flat program: an interpreter of the JSON alone reproduces the host backend (dip and every baseline)") {
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const pw::Setup setup = cpu_pp4();
  const pw::AnalyticCostModel cost(spec, setup);
  const toy_vlm::ToyBatch batch = toy_batch(toy_vlm::Config::from(spec));

  SUBCASE("the searched plan") {
    pw::PlannerOptions po;
    po.budget = std::chrono::nanoseconds{0};
    po.iterations = 3;
    po.partition_iterations = 1;
    po.partition_steps = 0;
    po.consider_baselines = false;
    po.dip.efficiency_threshold = 0.3;  // DIP cuts the images of a microbatch into several pieces
    const pw::Planner<pw::AnalyticCostModel> planner(spec, setup, cost, std::vector<pw::Batch>{batch.meta}, po);
    const pw::PlanResult r = planner.plan(batch.meta);
    REQUIRE(r.source == "dip");
    check_plan(spec, batch, r.plan);
  }
  SUBCASE("every baseline") {
    const std::vector<pw::Batch> profile{batch.meta};
    pw::BaselineComparison<pw::AnalyticCostModel> cmp(spec, setup, cost, profile);
    const pw::StepComparison step = cmp.compare(batch.meta);
    REQUIRE(step.plans.size() == pw::baseline_names.size());
    for (const auto& p : step.plans) check_plan(spec, batch, p.plan);
  }
}

TEST_CASE("flat program interpreter: a plan whose receive comes too late is a deadlock, not a wrong answer") {
  // The interpreter is strict: a plan with a Wait moved before its Send's data exists stalls.
  const pw::ModelSpec spec = test_plans::tiny_vlm();
  const auto cfg = toy_vlm::Config::from(spec);
  const toy_vlm::ToyBatch batch = toy_batch(cfg);
  pw::Plan plan = test_plans::make_plan(spec, test_plans::dip_partition(), batch.meta);
  // Move rank 1's first Wait to the front of its list: it now waits before anything is sent
  // to it, and the sender waits (rendezvous) for a Recv that is posted only after it.
  auto& list = plan.ranks[1];
  const auto wait = std::find_if(list.begin(), list.end(), [](const pw::Action& a) { return std::holds_alternative<pw::Wait>(a); });
  REQUIRE(wait != list.end());
  const pw::Action w = *wait;
  list.erase(wait);
  list.insert(list.begin(), w);
  toy_vlm::Model<float> model(cfg, 1);
  toy_vlm::Callbacks callbacks(model, batch, 4);
  const pw::FlatProgram flat = pw::flatten(plan, spec);
  Interpreter interpreter(flat, callbacks, callbacks.sizes());
  try {
    interpreter.run();
    FAIL("the interpreter ran a plan that cannot run");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("deadlock") != std::string::npos);
  }
}
