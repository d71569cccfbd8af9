// The library's value types as Python classes: workloads (ModelSpec, Setup, DatasetSpec),
// samples and batches, the plan IR (Plan, Partition, sub-microbatches, transfers, actions) and
// what planning and emulation report. Ids are plain ints, times are int nanoseconds, sizes are
// int bytes, a pass is its name ("forward", "backward", "backward_input", "backward_weight").
#include <pybind11/operators.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/ir/flat_program.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage_timing.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/planner/plan_result.hpp"

namespace pipeweaver::python {

namespace {

std::string pass_name(Pass p) { return std::string(to_string(p)); }

void bind_workload(py::module_& m) {
  py::class_<ModuleSpec>(m, "ModuleSpec", "One module of a model (read-only).")
      .def_readonly("name", &ModuleSpec::name)
      .def_property_readonly("role", [](const ModuleSpec& s) { return std::string(to_string(s.role)); })
      .def_readonly("modality", &ModuleSpec::modality)
      .def_readonly("layers", &ModuleSpec::layers)
      .def_readonly("hidden", &ModuleSpec::hidden)
      .def_readonly("ffn_hidden", &ModuleSpec::ffn_hidden)
      .def_readonly("heads", &ModuleSpec::heads)
      .def_readonly("kv_heads", &ModuleSpec::kv_heads)
      .def_property_readonly("ffn", [](const ModuleSpec& s) { return std::string(to_string(s.ffn)); })
      .def_property_readonly("attention", [](const ModuleSpec& s) { return std::string(to_string(s.attention)); })
      .def_readonly("vocab", &ModuleSpec::vocab)
      .def_property_readonly("feeds", [](const ModuleSpec& s) -> std::optional<int> {
        if (!s.feeds) return std::nullopt;
        return s.feeds->value();
      })
      .def_readonly("output_tokens_per_input_token", &ModuleSpec::output_tokens_per_input_token)
      .def_readonly("trainable", &ModuleSpec::trainable)
      .def("__repr__", [](const ModuleSpec& s) { return "<ModuleSpec " + s.name + ">"; });

  py::class_<ModelSpec>(m, "ModelSpec", "A model: modules in data-flow order (read with read_model).")
      .def_readonly("name", &ModelSpec::name)
      .def_readonly("description", &ModelSpec::description)
      .def_readonly("modules", &ModelSpec::modules)
      .def("find", [](const ModelSpec& s, const std::string& name) -> std::optional<int> {
        if (auto id = s.find(name)) return id->value();
        return std::nullopt;
      }, py::arg("name"), "The id of the module with this name, or None.")
      .def("feeders", [](const ModelSpec& s, int id) {
        std::vector<int> out;
        for (ModuleId f : s.feeders(ModuleId{id})) out.push_back(f.value());
        return out;
      }, py::arg("module"), "Ids of the modules feeding `module`, in module order.")
      .def_property_readonly("backbone", [](const ModelSpec& s) { return s.backbone().value(); })
      .def("__repr__", [](const ModelSpec& s) { return "<ModelSpec " + s.name + ">"; });

  py::class_<Setup>(m, "Setup", "Machines and batch shape of a training job (read with read_setup).")
      .def_readonly("name", &Setup::name)
      .def_readonly("description", &Setup::description)
      .def_readonly("pipeline_stages", &Setup::pipeline_stages)
      .def_readonly("tensor_parallel", &Setup::tensor_parallel)
      .def_readonly("data_parallel", &Setup::data_parallel)
      .def_readonly("microbatches_per_step", &Setup::microbatches_per_step)
      .def_property_readonly("microbatch_module", [](const Setup& s) { return s.microbatch.module; })
      .def_property_readonly("microbatch_max_tokens", [](const Setup& s) { return s.microbatch.max_tokens; })
      .def_property_readonly("memory_capacity", [](const Setup& s) { return memory_capacity(s).count(); },
                             "Bytes a plan may use per device.")
      .def("__repr__", [](const Setup& s) { return "<Setup " + s.name + ">"; });

  py::class_<DatasetSpec>(m, "DatasetSpec", "A dataset description: a mixture of sources (read with read_dataset).")
      .def_readonly("name", &DatasetSpec::name)
      .def_readonly("description", &DatasetSpec::description)
      .def_property_readonly("sources", [](const DatasetSpec& d) {
        std::vector<std::string> out;
        for (const auto& s : d.mixture) out.push_back(s.name);
        return out;
      }, "The names of the mixture's sources.")
      .def("__repr__", [](const DatasetSpec& d) { return "<DatasetSpec " + d.name + ">"; });
}

void bind_batch(py::module_& m) {
  py::class_<Sample>(m, "Sample", "One training sample: its text tokens and, per modality, the token count of each item.")
      .def(py::init([](std::int64_t text, const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& items) {
             Sample s;
             s.text = text;
             for (const auto& [modality, tokens] : items) s.items.push_back(SampleItems{modality, tokens});
             return s;
           }),
           py::arg("text") = 0, py::arg("items") = std::vector<std::pair<std::string, std::vector<std::int64_t>>>{},
           "items: (modality, [tokens of each item]) pairs, or a dict (its insertion order is kept).")
      .def(py::init([](std::int64_t text, const py::dict& items) {
             Sample s;
             s.text = text;
             for (auto [k, v] : items) s.items.push_back(SampleItems{k.cast<std::string>(), v.cast<std::vector<std::int64_t>>()});
             return s;
           }),
           py::arg("text"), py::arg("items"))
      .def_readwrite("text", &Sample::text)
      .def_property_readonly("items", [](const Sample& s) {
        py::dict d;
        for (const auto& it : s.items) d[py::str(it.modality)] = it.tokens;
        return d;
      }, "{modality: [tokens of each item]}")
      .def("tokens_of", &Sample::tokens_of, py::arg("modality"))
      .def(py::self == py::self)
      .def("__repr__", [](const Sample& s) {
        std::string out = "Sample(text=" + std::to_string(s.text);
        for (const auto& it : s.items) out += ", " + it.modality + "=" + std::to_string(it.tokens.size()) + " items";
        return out + ")";
      });

  py::class_<Batch>(m, "Batch", "One training step's samples, packed into microbatches (build with make_batch, pack or sample_step).")
      .def_property_readonly("microbatches", [](const Batch& b) {
        std::vector<std::vector<Sample>> out;
        for (const auto& mb : b.microbatches) out.push_back(mb.samples);
        return out;
      }, "One list of Samples per microbatch.")
      .def_readonly("truncated_samples", &Batch::truncated_samples)
      .def_property_readonly("sample_count", [](const Batch& b) {
        std::size_t n = 0;
        for (const auto& mb : b.microbatches) n += mb.samples.size();
        return n;
      })
      .def("__len__", [](const Batch& b) { return b.microbatches.size(); })
      .def("__repr__", [](const Batch& b) { return "<Batch of " + std::to_string(b.microbatches.size()) + " microbatches>"; });
}

void bind_plan_parts(py::module_& m) {
  py::class_<MemoryStrategy>(m, "MemoryStrategy", "Layers of a stage that recompute fully, selectively or offload.")
      .def(py::init([](int full, int selective, int offload) {
             return MemoryStrategy{static_cast<std::int16_t>(full), static_cast<std::int16_t>(selective), static_cast<std::int16_t>(offload)};
           }),
           py::arg("full_recompute") = 0, py::arg("selective_recompute") = 0, py::arg("offload") = 0)
      .def_readonly("full_recompute", &MemoryStrategy::full_recompute)
      .def_readonly("selective_recompute", &MemoryStrategy::selective_recompute)
      .def_readonly("offload", &MemoryStrategy::offload)
      .def(py::self == py::self)
      .def("__str__", [](const MemoryStrategy& s) { return to_string(s); })
      .def("__repr__", [](const MemoryStrategy& s) { return "<MemoryStrategy " + to_string(s) + ">"; });

  py::class_<Chunk>(m, "Chunk", "Consecutive layers of a module placed on one rank.")
      .def_readonly("first_layer", &Chunk::first_layer)
      .def_readonly("layer_count", &Chunk::layer_count)
      .def_property_readonly("rank", [](const Chunk& c) { return c.rank.value(); });
  py::class_<ModulePlacement>(m, "ModulePlacement")
      .def_readonly("chunks", &ModulePlacement::chunks)
      .def_readonly("sub_microbatch_items", &ModulePlacement::sub_microbatch_items);
  py::class_<Partition>(m, "Partition", "Where each module's layers live.")
      .def_readonly("name", &Partition::name)
      .def_readonly("ranks", &Partition::ranks)
      .def_readonly("modules", &Partition::modules);

  py::class_<StageSpec>(m, "StageSpec", "One chunk's forward or backward work (what a cost model is asked about).")
      .def(py::init([](int module, int chunk, int rank, const std::string& pass, int first_layer, int layer_count) {
             for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
               if (to_string(p) == pass) return StageSpec{ModuleId{module}, chunk, RankId{rank}, p, first_layer, layer_count};
             throw input_error("unknown pass \"" + pass + "\"", {.path = "StageSpec.pass_", .expected = "forward, backward, backward_input or backward_weight"});
           }),
           py::arg("module"), py::arg("chunk"), py::arg("rank"), py::arg("pass_"), py::arg("first_layer"), py::arg("layer_count"))
      .def_property_readonly("module", [](const StageSpec& s) { return s.module().value(); })
      .def_property_readonly("chunk", &StageSpec::chunk)
      .def_property_readonly("rank", [](const StageSpec& s) { return s.rank().value(); })
      .def_property_readonly("pass_", [](const StageSpec& s) { return pass_name(s.pass()); })
      .def_property_readonly("first_layer", &StageSpec::first_layer)
      .def_property_readonly("layer_count", &StageSpec::layer_count);

  py::class_<SubMicrobatchSpec>(m, "SubMicrobatch", "A modality-specific piece of a microbatch with its shape.")
      .def(py::init([](int module, int microbatch, std::vector<std::int64_t> tokens, std::vector<std::int64_t> context) {
             return SubMicrobatchSpec{ModuleId{module}, MicrobatchId{microbatch}, std::move(tokens), std::move(context)};
           }),
           py::arg("module"), py::arg("microbatch"), py::arg("item_tokens"), py::arg("context_tokens") = std::vector<std::int64_t>{})
      .def_property_readonly("module", [](const SubMicrobatchSpec& s) { return s.module().value(); })
      .def_property_readonly("microbatch", [](const SubMicrobatchSpec& s) { return s.microbatch().value(); })
      .def_property_readonly("item_tokens", [](const SubMicrobatchSpec& s) { return std::vector<std::int64_t>(s.item_tokens().begin(), s.item_tokens().end()); })
      .def_property_readonly("context_tokens", [](const SubMicrobatchSpec& s) { return std::vector<std::int64_t>(s.context_tokens().begin(), s.context_tokens().end()); })
      .def_property_readonly("items", [](const SubMicrobatchSpec& s) {
        std::vector<std::pair<int, int>> out;
        for (const ItemRef& r : s.items()) out.emplace_back(r.sample, r.item);
        return out;
      }, "Per item: (sample in the microbatch, item of that sample; -1 for a backbone sequence).")
      .def_property_readonly("total_tokens", &SubMicrobatchSpec::total_tokens);

  py::class_<StageRef>(m, "StageRef", "The compute stage an endpoint of a transfer belongs to.")
      .def_property_readonly("module", [](const StageRef& s) { return s.module.value(); })
      .def_readonly("chunk", &StageRef::chunk)
      .def_property_readonly("sub_microbatch", [](const StageRef& s) { return s.sub_microbatch.value(); })
      .def_property_readonly("pass_", [](const StageRef& s) { return pass_name(s.pass); })
      .def("__repr__", [](const StageRef& s) {
        return "<StageRef " + pass_name(s.pass) + " module " + std::to_string(s.module.value()) + " chunk " + std::to_string(s.chunk) +
               " sub-microbatch " + std::to_string(s.sub_microbatch.value()) + ">";
      });

  py::class_<Transfer>(m, "Transfer", "One point-to-point message between ranks.")
      .def_property_readonly("from_rank", [](const Transfer& t) { return t.from.value(); })
      .def_property_readonly("to_rank", [](const Transfer& t) { return t.to.value(); })
      .def_readonly("producer", &Transfer::producer)
      .def_readonly("consumer", &Transfer::consumer)
      .def_property_readonly("bytes", [](const Transfer& t) { return t.bytes.count(); });
}

void bind_actions(py::module_& m) {
  py::class_<Forward>(m, "Forward", "Forward pass of one chunk on one sub-microbatch.")
      .def_property_readonly("kind", [](const Forward&) { return "forward"; })
      .def_property_readonly("module", [](const Forward& a) { return a.module.value(); })
      .def_readonly("chunk", &Forward::chunk)
      .def_property_readonly("sub_microbatch", [](const Forward& a) { return a.sub_microbatch.value(); })
      .def_readonly("strategy", &Forward::strategy)
      .def_property_readonly("pass_", [](const Forward&) { return "forward"; })
      .def("__repr__", [](const Forward& a) {
        return "Forward(module=" + std::to_string(a.module.value()) + ", chunk=" + std::to_string(a.chunk) +
               ", sub_microbatch=" + std::to_string(a.sub_microbatch.value()) + ")";
      });
  py::class_<Backward>(m, "Backward", "Backward pass (whole, or its input- or weight-gradient part) of one chunk.")
      .def_property_readonly("kind", [](const Backward&) { return "backward"; })
      .def_property_readonly("module", [](const Backward& a) { return a.module.value(); })
      .def_readonly("chunk", &Backward::chunk)
      .def_property_readonly("sub_microbatch", [](const Backward& a) { return a.sub_microbatch.value(); })
      .def_readonly("strategy", &Backward::strategy)
      .def_property_readonly("pass_", [](const Backward& a) { return pass_name(a.pass); })
      .def("__repr__", [](const Backward& a) {
        return "Backward(module=" + std::to_string(a.module.value()) + ", chunk=" + std::to_string(a.chunk) +
               ", sub_microbatch=" + std::to_string(a.sub_microbatch.value()) + ", pass_='" + pass_name(a.pass) + "')";
      });
  py::class_<Send>(m, "Send", "Send of a transfer (issued once the data before it exists).")
      .def_property_readonly("kind", [](const Send&) { return "send"; })
      .def_property_readonly("transfer", [](const Send& a) { return a.transfer.value(); })
      .def("__repr__", [](const Send& a) { return "Send(transfer=" + std::to_string(a.transfer.value()) + ")"; });
  py::class_<Recv>(m, "Recv", "Receive of a transfer (posted at its position, never blocks compute).")
      .def_property_readonly("kind", [](const Recv&) { return "recv"; })
      .def_property_readonly("transfer", [](const Recv& a) { return a.transfer.value(); })
      .def("__repr__", [](const Recv& a) { return "Recv(transfer=" + std::to_string(a.transfer.value()) + ")"; });
  py::class_<Wait>(m, "Wait", "Compute waits until the transfer's receive has completed.")
      .def_property_readonly("kind", [](const Wait&) { return "wait"; })
      .def_property_readonly("transfer", [](const Wait& a) { return a.transfer.value(); })
      .def("__repr__", [](const Wait& a) { return "Wait(transfer=" + std::to_string(a.transfer.value()) + ")"; });
}

py::list actions_of(const std::vector<Action>& list) {
  py::list out;
  for (const Action& a : list) std::visit([&](const auto& x) { out.append(py::cast(x)); }, a);
  return out;
}

void bind_plan(py::module_& m) {
  py::class_<Plan>(m, "Plan", "For every pipeline rank an ordered list of actions, with every shape resolved.")
      .def_readonly("name", &Plan::name)
      .def_readonly("model", &Plan::model)
      .def_readonly("setup", &Plan::setup)
      .def_readonly("microbatches", &Plan::microbatches)
      .def_readonly("partition", &Plan::partition)
      .def_readonly("sub_microbatches", &Plan::sub_microbatches)
      .def_readonly("transfers", &Plan::transfers)
      .def_property_readonly("rank_count", &Plan::rank_count)
      .def_property_readonly("ranks", [](const Plan& p) {
        py::list out;
        for (const auto& list : p.ranks) out.append(actions_of(list));
        return out;
      }, "Per rank, its actions in order.")
      .def("program", [](const Plan& p, int rank) {
        if (rank < 0 || rank >= p.rank_count())
          throw input_error("rank " + std::to_string(rank), {.path = "Plan.program", .expected = "a rank in [0, " + std::to_string(p.rank_count()) + ")"});
        return actions_of(p.ranks[static_cast<std::size_t>(rank)]);
      }, py::arg("rank"), "The flat program of one rank: its actions in order, as a framework's executor runs them.")
      .def(py::self == py::self)
      .def("__repr__", [](const Plan& p) {
        return "<Plan " + p.name + " of " + p.model + " on " + p.setup + ", " + std::to_string(p.rank_count()) + " ranks>";
      });
}

void bind_flat_program(py::module_& m) {
  py::class_<FlatItem>(m, "FlatItem", "One item of a sub-microbatch: its origin and shape.")
      .def_readonly("sample", &FlatItem::sample)
      .def_readonly("item", &FlatItem::item)
      .def_readonly("tokens", &FlatItem::tokens)
      .def_readonly("context_tokens", &FlatItem::context_tokens);
  py::class_<FlatStage>(m, "FlatStage", "A stage with its chunk and sub-microbatch resolved.")
      .def_readonly("module", &FlatStage::module)
      .def_property_readonly("module_id", [](const FlatStage& s) { return s.module_id.value(); })
      .def_readonly("chunk", &FlatStage::chunk)
      .def_readonly("first_layer", &FlatStage::first_layer)
      .def_readonly("layer_count", &FlatStage::layer_count)
      .def_property_readonly("rank", [](const FlatStage& s) { return s.rank.value(); })
      .def_property_readonly("pass_", [](const FlatStage& s) { return pass_name(s.pass); })
      .def_property_readonly("microbatch", [](const FlatStage& s) { return s.microbatch.value(); })
      .def_property_readonly("sub_microbatch", [](const FlatStage& s) { return s.sub_microbatch.value(); })
      .def_readonly("items", &FlatStage::items)
      .def_readonly("tokens", &FlatStage::tokens);
  py::class_<FlatAction>(m, "FlatAction", "One action of a rank's flat program, everything resolved (docs/flat_program.md).")
      .def_property_readonly("op", [](const FlatAction& a) { return std::string(to_string(a.op)); },
                             "forward, backward, backward_input, backward_weight, send, recv or wait")
      .def_readonly("stage", &FlatAction::stage)
      .def_readonly("strategy", &FlatAction::strategy)
      .def_property_readonly("transfer", [](const FlatAction& a) { return a.transfer.value(); }, "-1 for compute ops")
      .def_property_readonly("peer", [](const FlatAction& a) { return a.peer.value(); }, "-1 for compute ops")
      .def_property_readonly("bytes", [](const FlatAction& a) { return a.bytes.count(); })
      .def_readonly("peer_stage", &FlatAction::peer_stage)
      .def("__repr__", [](const FlatAction& a) {
        std::string out = std::string(to_string(a.op)) + " " + a.stage.module + " chunk " + std::to_string(a.stage.chunk) +
                          " sub-microbatch " + std::to_string(a.stage.sub_microbatch.value());
        if (!is_compute(a.op))
          out += " transfer " + std::to_string(a.transfer.value()) + (a.op == FlatOp::send ? " to rank " : " from rank ") +
                 std::to_string(a.peer.value());
        return "<FlatAction " + out + ">";
      });
  py::class_<FlatModule>(m, "FlatModule")
      .def_readonly("name", &FlatModule::name)
      .def_readonly("layers", &FlatModule::layers)
      .def_readonly("feeds", &FlatModule::feeds)
      .def_readonly("trainable", &FlatModule::trainable)
      .def_readonly("sub_microbatch_items", &FlatModule::sub_microbatch_items)
      .def_readonly("chunks", &FlatModule::chunks);
  py::class_<FlatRankProgram>(m, "FlatRankProgram")
      .def_property_readonly("rank", [](const FlatRankProgram& p) { return p.rank.value(); })
      .def_readonly("actions", &FlatRankProgram::actions);
  py::class_<FlatProgram>(m, "FlatProgram", "A plan with every id resolved: per rank its actions (flatten(plan, model)).")
      .def_readonly("plan", &FlatProgram::plan)
      .def_readonly("model", &FlatProgram::model)
      .def_readonly("setup", &FlatProgram::setup)
      .def_readonly("ranks", &FlatProgram::ranks)
      .def_readonly("microbatches", &FlatProgram::microbatches)
      .def_readonly("modules", &FlatProgram::modules)
      .def_readonly("programs", &FlatProgram::programs)
      .def(py::self == py::self);

  py::class_<StageTiming>(m, "StageTiming", "A measured Forward or Backward action of a rank (for latency_samples).")
      .def(py::init([](int rank, std::size_t action, int module, int chunk, int sub_microbatch, const std::string& pass,
                       std::int64_t duration, const MemoryStrategy& strategy) {
             StageTiming t;
             t.rank = RankId{rank};
             t.action = action;
             t.module = ModuleId{module};
             t.chunk = chunk;
             t.sub_microbatch = SubMicrobatchId{sub_microbatch};
             bool known = false;
             for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
               if (to_string(p) == pass) {
                 t.pass = p;
                 known = true;
               }
             if (!known)
               throw input_error("unknown pass \"" + pass + "\"", {.path = "StageTiming.pass_", .expected = "forward, backward, backward_input or backward_weight"});
             t.strategy = strategy;
             t.duration = Nanoseconds{duration};
             return t;
           }),
           py::arg("rank"), py::arg("action"), py::arg("module"), py::arg("chunk"), py::arg("sub_microbatch"), py::arg("pass_"),
           py::arg("duration"), py::arg("strategy") = MemoryStrategy{})
      .def_property_readonly("rank", [](const StageTiming& t) { return t.rank.value(); })
      .def_readonly("action", &StageTiming::action)
      .def_property_readonly("duration", [](const StageTiming& t) { return t.duration.count(); });
}

void bind_results(py::module_& m) {
  py::class_<PlanResult>(m, "PlanResult", "A plan and how it was obtained.")
      .def_readonly("plan", &PlanResult::plan)
      .def_property_readonly("step_time", [](const PlanResult& r) { return r.step_time.count(); }, "emulated step time (ns)")
      .def_property_readonly("lower_bound", [](const PlanResult& r) { return r.lower_bound.count(); }, "a lower bound on any plan's step time (ns)")
      .def_property_readonly("search_time", [](const PlanResult& r) { return r.search_time.count(); }, "wall-clock of the search (ns)")
      .def_readonly("iterations", &PlanResult::iterations)
      .def_readonly("fallback", &PlanResult::fallback)
      .def_readonly("source", &PlanResult::source)
      .def_readonly("cost_version", &PlanResult::cost_version, "the planner's cost version that planned it");

  py::class_<RankStats>(m, "RankStats")
      .def_property_readonly("busy", [](const RankStats& r) { return r.busy.count(); })
      .def_property_readonly("idle", [](const RankStats& r) { return r.idle.count(); })
      .def_property_readonly("static_memory", [](const RankStats& r) { return r.static_memory.count(); })
      .def_property_readonly("peak_memory", [](const RankStats& r) { return r.peak_memory.count(); })
      .def_readonly("fits_memory", &RankStats::fits_memory)
      .def_readonly("compute_actions", &RankStats::compute_actions);
  py::class_<TimelineEvent>(m, "TimelineEvent")
      .def_property_readonly("kind", [](const TimelineEvent& e) { return e.kind == TimelineEvent::Kind::compute ? "compute" : "transfer"; })
      .def_property_readonly("rank", [](const TimelineEvent& e) { return e.rank.value(); })
      .def_property_readonly("peer", [](const TimelineEvent& e) { return e.peer.value(); })
      .def_readonly("stage", &TimelineEvent::stage)
      .def_property_readonly("transfer", [](const TimelineEvent& e) { return e.transfer.value(); })
      .def_readonly("action", &TimelineEvent::action)
      .def_property_readonly("start", [](const TimelineEvent& e) { return e.start.count(); })
      .def_property_readonly("end", [](const TimelineEvent& e) { return e.end.count(); })
      .def_property_readonly("bytes", [](const TimelineEvent& e) { return e.bytes.count(); });
  py::class_<EmulationResult>(m, "EmulationResult", "What emulating a plan reports.")
      .def_property_readonly("step_time", [](const EmulationResult& r) { return r.step_time.count(); })
      .def_readonly("ranks", &EmulationResult::ranks)
      .def_readonly("timeline", &EmulationResult::timeline)
      .def_property_readonly("memory_capacity", [](const EmulationResult& r) { return r.memory_capacity.count(); })
      .def_property_readonly("peak_memory", [](const EmulationResult& r) { return r.peak_memory().count(); })
      .def_property_readonly("fits_memory", &EmulationResult::fits_memory)
      .def_readonly("actions", &EmulationResult::actions);
}

}  // namespace

void bind_types(py::module_& m) {
  bind_workload(m);
  bind_batch(m);
  bind_plan_parts(m);
  bind_actions(m);
  bind_plan(m);
  bind_flat_program(m);
  bind_results(m);
}

}  // namespace pipeweaver::python
