// Everything that takes a cost model: the analytic and table models, calibration, the Planner
// and the AsyncPlanner, emulation, lower bounds and validation. A Python call names its cost
// model as a bound AnalyticCostModel or TableCostModel, or as any Python object with the four
// members (the slow way: each call takes the GIL). Searches and emulations run with the GIL
// released, so other Python threads make progress meanwhile.
#include <pybind11/chrono.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "pipeweaver/cost/calibration.hpp"
#include "pipeweaver/cost/online_calibration.hpp"
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/schedule/validator.hpp"

namespace pipeweaver::python {

// ---- the Python cost model ---------------------------------------------------------------

PythonCostModel::PythonCostModel(py::object obj)
    : obj_(new py::object(std::move(obj)), [](py::object* o) {
        py::gil_scoped_acquire gil;
        delete o;
      }) {}

py::object PythonCostModel::object() const { return *obj_; }

namespace {

template <class R>
R call_member(const py::object& obj, const char* member, auto&&... args) {
  py::gil_scoped_acquire gil;
  try {
    return obj.attr(member)(std::forward<decltype(args)>(args)...).template cast<R>();
  } catch (py::error_already_set& e) {
    throw input_error(std::string("the Python cost model's ") + member + "() raised " + e.what(),
                      {.path = std::string("cost.") + member, .expected = "an int"});
  } catch (const py::cast_error&) {
    throw input_error(std::string("the Python cost model's ") + member + "() did not return an int",
                      {.path = std::string("cost.") + member, .expected = "an int (nanoseconds or bytes)"});
  }
}

}  // namespace

Nanoseconds PythonCostModel::latency(const StageSpec& stage, const SubMicrobatchSpec& smb, const MemoryStrategy& strategy) const {
  return Nanoseconds{call_member<std::int64_t>(*obj_, "latency", stage, smb, strategy)};
}
Bytes PythonCostModel::activation_bytes(const StageSpec& stage, const SubMicrobatchSpec& smb, const MemoryStrategy& strategy) const {
  return Bytes{call_member<std::int64_t>(*obj_, "activation_bytes", stage, smb, strategy)};
}
Bytes PythonCostModel::output_bytes(const StageSpec& stage, const SubMicrobatchSpec& smb) const {
  return Bytes{call_member<std::int64_t>(*obj_, "output_bytes", stage, smb)};
}
Nanoseconds PythonCostModel::transfer_time(Bytes bytes) const {
  return Nanoseconds{call_member<std::int64_t>(*obj_, "transfer_time", bytes.count())};
}

AnyCost cost_from(const py::handle& obj) {
  if (py::isinstance<AnalyticCostModel>(obj)) return obj.cast<AnalyticCostModel>();
  if (py::isinstance<TableCostModel>(obj)) return obj.cast<TableCostModel>();
  for (const char* member : {"latency", "activation_bytes", "output_bytes", "transfer_time"})
    if (!py::hasattr(obj, member))
      throw input_error(std::string("the cost model has no ") + member + "()",
                        {.path = "cost", .expected = "an AnalyticCostModel, a TableCostModel or an object with latency, activation_bytes, output_bytes and transfer_time"});
  return PythonCostModel(py::reinterpret_borrow<py::object>(obj));
}

namespace {

// ---- the Planner and the AsyncPlanner over any cost model ----------------------------------

using AnyPlanner = std::variant<Planner<AnalyticCostModel>, Planner<TableCostModel>, Planner<PythonCostModel>>;

struct PyPlanner {
  AnyPlanner p;
};

struct PyAsyncPlanner {
  std::variant<std::unique_ptr<AsyncPlanner<Planner<AnalyticCostModel>>>, std::unique_ptr<AsyncPlanner<Planner<TableCostModel>>>,
               std::unique_ptr<AsyncPlanner<Planner<PythonCostModel>>>>
      a;
  PyAsyncPlanner() = default;
  PyAsyncPlanner(const PyAsyncPlanner&) = delete;
  PyAsyncPlanner& operator=(const PyAsyncPlanner&) = delete;
  ~PyAsyncPlanner() {
    // Joining the search threads may wait for a Python cost model that needs the GIL.
    py::gil_scoped_release nogil;
    std::visit([](auto& x) { x.reset(); }, a);
  }
};

std::chrono::nanoseconds seconds_to_ns(double s, const char* what) {
  if (!(s >= 0) || s > 1e9)
    throw input_error(std::string(what) + " = " + std::to_string(s), {.path = what, .expected = "seconds >= 0"});
  return std::chrono::nanoseconds(static_cast<std::int64_t>(s * 1e9));
}

PyPlanner make_planner(const ModelSpec& model, const Setup& setup, const py::object& cost_obj, const std::optional<DatasetSpec>& dataset,
                       const std::optional<std::vector<Batch>>& samples, PlannerOptions opt) {
  AnyCost cost = cost_obj.is_none() ? AnyCost{AnalyticCostModel(model, setup)} : cost_from(cost_obj);
  py::gil_scoped_release nogil;
  return std::visit([&](auto& c) -> PyPlanner {
    using C = std::decay_t<decltype(c)>;
    if (dataset) return PyPlanner{Planner<C>(model, setup, std::move(c), *dataset, opt)};
    if (samples) return PyPlanner{Planner<C>(model, setup, std::move(c), *samples, opt)};
    return PyPlanner{Planner<C>(model, setup, std::move(c), opt)};
  }, cost);
}

SearchControl control_of(const std::optional<double>& budget, const std::optional<std::int64_t>& iterations) {
  SearchControl c;
  if (budget) c.budget = seconds_to_ns(*budget, "budget");
  if (iterations) {
    if (*iterations < 0) throw input_error("iterations = " + std::to_string(*iterations), {.path = "iterations", .expected = ">= 0"});
    c.iterations = *iterations;
  }
  return c;
}

void bind_planner(py::module_& m) {
  py::class_<PyPlanner>(m, "Planner", R"(Plans each training step's batch (see docs/python.md).

cost: an AnalyticCostModel (the default), a TableCostModel, or any object with latency(stage,
sub_microbatch, strategy), activation_bytes(stage, sub_microbatch, strategy),
output_bytes(stage, sub_microbatch) and transfer_time(bytes), all returning ints (slower: each
call takes the GIL). With `dataset` or `samples` the placement is chosen at construction.
budget is in seconds (0: none); iterations is the MCTS iteration budget (0: none); only an
iteration budget with budget=0 is reproducible.)")
      .def(py::init([](const ModelSpec& model, const Setup& setup, const py::object& cost, const std::optional<DatasetSpec>& dataset,
                       const std::optional<std::vector<Batch>>& samples, double budget, std::int64_t iterations, int threads,
                       std::uint64_t seed, int partition_steps, bool consider_baselines) {
             PlannerOptions o;
             o.budget = seconds_to_ns(budget, "budget");
             o.iterations = iterations;
             o.threads = threads;
             o.seed = seed;
             o.partition_steps = partition_steps;
             o.consider_baselines = consider_baselines;
             return make_planner(model, setup, cost, dataset, samples, o);
           }),
           py::arg("model"), py::arg("setup"), py::arg("cost") = py::none(), py::kw_only(), py::arg("dataset") = py::none(),
           py::arg("samples") = py::none(), py::arg("budget") = 1.0, py::arg("iterations") = 0, py::arg("threads") = 1,
           py::arg("seed") = 0, py::arg("partition_steps") = 2, py::arg("consider_baselines") = true)
      .def("plan", [](const PyPlanner& self, const Batch& batch, const std::optional<double>& budget, const std::optional<std::int64_t>& iterations) {
             const SearchControl c = control_of(budget, iterations);
             py::gil_scoped_release nogil;
             return std::visit([&](const auto& p) { return p.plan(batch, c); }, self.p);
           },
           py::arg("batch"), py::kw_only(), py::arg("budget") = py::none(), py::arg("iterations") = py::none(),
           "The step's plan: the searched one or the best baseline, whichever is faster (GIL released).")
      .def("fallback", [](const PyPlanner& self, const Batch& batch) {
             py::gil_scoped_release nogil;
             return std::visit([&](const auto& p) { return p.fallback(batch); }, self.p);
           }, py::arg("batch"), "The best baseline plan that fits memory, without a search.")
      .def("update_cost", [](PyPlanner& self, const py::object& cost) {
             return std::visit([&](auto& p) -> std::uint64_t {
               using C = std::decay_t<decltype(*p.cost())>;
               AnyCost c = cost_from(cost);
               if (!std::holds_alternative<C>(c))
                 throw input_error("update_cost: a cost model of another kind than the planner's", {.path = "cost", .expected = "the kind the planner was built with (analytic, table or a Python object)"});
               py::gil_scoped_release nogil;
               return p.update_cost(std::get<C>(std::move(c)));
             }, self.p);
           }, py::arg("cost"),
           "Makes `cost` (of the planner's kind, e.g. a calibrator's model) the model of the calls that start from now on; returns its version.")
      .def_property_readonly("cost_version", [](const PyPlanner& self) { return std::visit([](const auto& p) { return p.cost_version(); }, self.p); },
                             "0 for the model given at construction, +1 for each update_cost.")
      .def("check", [](const PyPlanner& self, const Batch& batch) { std::visit([&](const auto& p) { p.check(batch); }, self.p); },
           py::arg("batch"), "Error(input) when the planner cannot honor the batch.")
      .def_property_readonly("placement_ready", [](const PyPlanner& self) { return std::visit([](const auto& p) { return p.placement_ready(); }, self.p); })
      .def_property_readonly("partition", [](const PyPlanner& self) { return std::visit([](const auto& p) { return p.partition(); }, self.p); },
                             "The chosen placement (Error(input) before it is chosen).")
      .def_property_readonly("baselines", [](const PyPlanner& self) {
        return std::visit([](const auto& p) {
          std::vector<std::string> out;
          for (const auto& b : p.baselines()) out.push_back(b.baseline.name);
          return out;
        }, self.p);
      }, "Names of the baselines the planner compares against.")
      .def("baseline_plans", [](const PyPlanner& self, const Batch& batch) {
        py::gil_scoped_release nogil;
        return std::visit([&](const auto& p) {
          p.check(batch);
          (void)p.fallback(batch);  // chooses the placement and the baselines on a first batch
          const auto cost = p.cost();  // the snapshot the context refers to, alive to the end
          BaselineContext ctx(p.model(), p.setup(), *cost);
          std::vector<std::pair<std::string, PlanResult>> out;
          for (const PreparedBaseline& pb : p.baselines()) {
            BaselinePlan b = build_baseline_plan(ctx, pb.baseline, batch);
            PlanResult r;
            r.step_time = b.emulation.step_time;
            r.source = pb.baseline.name;
            r.plan = std::move(b.plan);
            out.emplace_back(pb.baseline.name, std::move(r));
          }
          return out;
        }, self.p);
      }, py::arg("batch"), "Every baseline's plan for the batch, as (name, PlanResult) pairs in the planner's order.");

  py::class_<AsyncPlannerStats>(m, "AsyncPlannerStats")
      .def_readonly("submitted", &AsyncPlannerStats::submitted)
      .def_readonly("plans_ready_in_time", &AsyncPlannerStats::plans_ready_in_time)
      .def_readonly("plans_after_wait", &AsyncPlannerStats::plans_after_wait)
      .def_readonly("fallbacks", &AsyncPlannerStats::fallbacks)
      .def_readonly("failures", &AsyncPlannerStats::failures)
      .def_property_readonly("waited", [](const AsyncPlannerStats& s) { return s.waited.count(); });

  py::class_<PyAsyncPlanner>(m, "AsyncPlanner", R"(Searches the next steps' plans in background threads (GIL released).

submit(batch) enqueues a search; next() returns the oldest one's plan, or the fallback when the
search is not done within `grace` seconds; next_when_ready() always waits.)")
      .def(py::init([](const PyPlanner& planner, int threads, int lookahead, double grace, const std::optional<double>& search_budget) {
             AsyncPlannerOptions o;
             o.threads = threads;
             o.lookahead = lookahead;
             o.grace = seconds_to_ns(grace, "grace");
             if (search_budget) o.search_budget = seconds_to_ns(*search_budget, "search_budget");
             auto out = std::make_unique<PyAsyncPlanner>();
             std::visit([&](const auto& p) {
               using P = std::decay_t<decltype(p)>;
               out->a = std::make_unique<AsyncPlanner<P>>(p, o);
             }, planner.p);
             return out;
           }),
           py::arg("planner"), py::kw_only(), py::arg("threads") = 1, py::arg("lookahead") = 2, py::arg("grace") = 0.0,
           py::arg("search_budget") = py::none())
      .def("submit", [](PyAsyncPlanner& self, const Batch& batch) {
             py::gil_scoped_release nogil;
             return std::visit([&](auto& a) { return a->submit(batch); }, self.a);
           }, py::arg("batch"), "Enqueues the search of the next step's plan; returns its step number.")
      .def("next", [](PyAsyncPlanner& self) {
             py::gil_scoped_release nogil;
             return std::visit([&](auto& a) { return a->next(); }, self.a);
           })
      .def("next_when_ready", [](PyAsyncPlanner& self) {
             py::gil_scoped_release nogil;
             return std::visit([&](auto& a) { return a->next_when_ready(); }, self.a);
           })
      .def("cancel", [](PyAsyncPlanner& self) {
             py::gil_scoped_release nogil;
             std::visit([&](auto& a) { a->cancel(); }, self.a);
           })
      .def("ready", [](PyAsyncPlanner& self) { return std::visit([&](auto& a) { return a->ready(); }, self.a); },
           "Whether the oldest outstanding search has finished.")
      .def("outstanding", [](PyAsyncPlanner& self) { return std::visit([&](auto& a) { return a->outstanding(); }, self.a); })
      .def_property_readonly("stats", [](PyAsyncPlanner& self) { return std::visit([&](auto& a) { return a->stats(); }, self.a); });
}

// ---- cost models, calibration, emulation, bounds, validation -------------------------------

Pass pass_from(const std::string& name) {
  for (Pass p : {Pass::forward, Pass::backward, Pass::backward_input, Pass::backward_weight})
    if (to_string(p) == name) return p;
  throw input_error("unknown pass \"" + name + "\"", {.path = "pass_", .expected = "forward, backward, backward_input or backward_weight"});
}

StrategyKind strategy_kind_from(const std::string& name) {
  for (StrategyKind k : {StrategyKind::none, StrategyKind::full_recompute, StrategyKind::selective_recompute, StrategyKind::offload})
    if (to_string(k) == name) return k;
  throw input_error("unknown strategy \"" + name + "\"", {.path = "strategy", .expected = "none, full_recompute, selective_recompute or offload"});
}

void bind_cost_models(py::module_& m) {
  py::class_<AnalyticOptions>(m, "AnalyticOptions", "The analytic model's factors (calibrate() fits the alpha factors).")
      .def(py::init([](double af, double am, double an) { return AnalyticOptions{.alpha_flops = af, .alpha_memory = am, .alpha_network = an}; }),
           py::arg("alpha_flops") = 1.0, py::arg("alpha_memory") = 1.0, py::arg("alpha_network") = 1.0)
      .def_readwrite("alpha_flops", &AnalyticOptions::alpha_flops)
      .def_readwrite("alpha_memory", &AnalyticOptions::alpha_memory)
      .def_readwrite("alpha_network", &AnalyticOptions::alpha_network)
      .def_readwrite("half_saturation_tokens", &AnalyticOptions::half_saturation_tokens)
      .def_readwrite("host_link_gb_per_s", &AnalyticOptions::host_link_gb_per_s)
      .def_readwrite("attention_backward_factor", &AnalyticOptions::attention_backward_factor);

  const auto cost_methods = [](auto& cls) {
    using C = typename std::decay_t<decltype(cls)>::type;
    cls.def("latency", [](const C& c, const StageSpec& s, const SubMicrobatchSpec& smb, const MemoryStrategy& st) { return c.latency(s, smb, st).count(); },
            py::arg("stage"), py::arg("sub_microbatch"), py::arg("strategy") = MemoryStrategy{}, "ns")
        .def("activation_bytes", [](const C& c, const StageSpec& s, const SubMicrobatchSpec& smb, const MemoryStrategy& st) { return c.activation_bytes(s, smb, st).count(); },
             py::arg("stage"), py::arg("sub_microbatch"), py::arg("strategy") = MemoryStrategy{})
        .def("output_bytes", [](const C& c, const StageSpec& s, const SubMicrobatchSpec& smb) { return c.output_bytes(s, smb).count(); },
             py::arg("stage"), py::arg("sub_microbatch"))
        .def("transfer_time", [](const C& c, std::int64_t bytes) { return c.transfer_time(Bytes{bytes}).count(); }, py::arg("bytes"));
  };
  py::class_<AnalyticCostModel> analytic(m, "AnalyticCostModel", "The roofline model of the model's layers on the setup's devices.");
  analytic.def(py::init<ModelSpec, Setup, AnalyticOptions>(), py::arg("model"), py::arg("setup"), py::arg("options") = AnalyticOptions{})
      .def_property_readonly("options", &AnalyticCostModel::options);
  cost_methods(analytic);

  py::class_<TableSample>(m, "TableSample", "One measured stage latency for the table model.")
      .def(py::init([](int module, const std::string& pass, int layers, std::int64_t tokens, double sum_sq, std::int64_t latency,
                       const std::string& strategy) {
             return TableSample{.module = ModuleId{module}, .pass = pass_from(pass), .strategy = strategy_kind_from(strategy),
                                .layers = layers, .tokens = tokens, .sum_sq_tokens = sum_sq, .latency = Nanoseconds{latency}};
           }),
           py::arg("module"), py::arg("pass_"), py::arg("layers"), py::arg("tokens"), py::arg("sum_sq_tokens"), py::arg("latency"),
           py::arg("strategy") = "none", "strategy: what every layer of the measured stage used (none, full_recompute, selective_recompute, offload).")
      .def_property_readonly("strategy", [](const TableSample& s) { return std::string(to_string(s.strategy)); })
      .def_property_readonly("module", [](const TableSample& s) { return s.module.value(); })
      .def_property_readonly("latency", [](const TableSample& s) { return s.latency.count(); });
  py::class_<TableCostModel> table(m, "TableCostModel", "Interpolates measured stage latencies: the fast way to bring measured numbers.");
  table.def(py::init<ModelSpec, Setup, std::vector<TableSample>>(), py::arg("model"), py::arg("setup"), py::arg("samples"));
  cost_methods(table);

  py::class_<LatencySample>(m, "LatencySample", "One measured stage latency for calibrate().")
      .def(py::init([](const StageSpec& s, const SubMicrobatchSpec& smb, std::int64_t measured, const MemoryStrategy& st) {
             return LatencySample{s, smb, st, Nanoseconds{measured}};
           }),
           py::arg("stage"), py::arg("sub_microbatch"), py::arg("measured"), py::arg("strategy") = MemoryStrategy{})
      .def_property_readonly("measured", [](const LatencySample& s) { return s.measured.count(); })
      .def_readonly("stage", &LatencySample::stage)
      .def_readonly("sub_microbatch", &LatencySample::sub_microbatch)
      .def_readonly("strategy", &LatencySample::strategy);
  py::class_<CalibrationResult>(m, "CalibrationResult")
      .def_readonly("options", &CalibrationResult::options)
      .def_readonly("rms_relative_error", &CalibrationResult::rms_relative_error)
      .def_readonly("iterations", &CalibrationResult::iterations)
      .def_readonly("converged", &CalibrationResult::converged);
  m.def("calibrate", [](const ModelSpec& model, const Setup& setup, const std::vector<LatencySample>& samples, const AnalyticOptions& initial) {
          py::gil_scoped_release nogil;
          return calibrate(model, setup, samples, initial);
        }, py::arg("model"), py::arg("setup"), py::arg("samples"), py::arg("initial") = AnalyticOptions{},
        "Least-squares fit of the analytic model's alpha factors to measured stage latencies.");

  m.def("latency_samples", [](const Plan& plan, const std::vector<StageTiming>& timings, double time_scale) {
          return latency_samples(plan, timings, time_scale);
        }, py::arg("plan"), py::arg("timings"), py::arg("time_scale") = 1.0,
        "The step's measured stages of `plan` as LatencySamples (durations divided by time_scale).");
  py::class_<AnalyticCalibrator>(m, "AnalyticCalibrator", "Refits the analytic model's alpha factors over a running window of measured steps.")
      .def(py::init([](const ModelSpec& model, const Setup& setup, const AnalyticOptions& initial, int window) {
             return AnalyticCalibrator(model, setup, initial, OnlineCalibrationOptions{.window = window});
           }),
           py::arg("model"), py::arg("setup"), py::arg("initial") = AnalyticOptions{}, py::arg("window") = 4)
      .def("add_step", [](AnalyticCalibrator& c, const std::vector<LatencySample>& samples) {
             py::gil_scoped_release nogil;
             return c.add_step(samples).model;
           }, py::arg("samples"), "Adds one step's samples and refits; returns the new cost model.")
      .def_property_readonly("model", &AnalyticCalibrator::model)
      .def_property_readonly("options", &AnalyticCalibrator::options)
      .def_property_readonly("last_fit", &AnalyticCalibrator::last_fit)
      .def_property_readonly("samples", &AnalyticCalibrator::samples);
  py::class_<TableCalibrator>(m, "TableCalibrator", "Adds measured entries to a table model, replacing profiled ones of the same shape.")
      .def(py::init([](const ModelSpec& model, const Setup& setup, std::vector<TableSample> base, int window) {
             return TableCalibrator(model, setup, std::move(base), OnlineCalibrationOptions{.window = window});
           }),
           py::arg("model"), py::arg("setup"), py::arg("base"), py::arg("window") = 4)
      .def("add_step", [](TableCalibrator& c, const std::vector<LatencySample>& samples) { return c.add_step(samples).model; },
           py::arg("samples"), "Adds one step's samples; returns the new table model.")
      .def_property_readonly("model", &TableCalibrator::model)
      .def_property_readonly("skipped", &TableCalibrator::skipped);
}

void bind_evaluation(py::module_& m) {
  py::class_<LowerBound>(m, "LowerBound")
      .def_property_readonly("value", [](const LowerBound& b) { return b.value.count(); })
      .def_property_readonly("total_work", [](const LowerBound& b) { return b.total_work.count(); })
      .def_property_readonly("work_bound", [](const LowerBound& b) { return b.work_bound.count(); })
      .def_property_readonly("critical_path", [](const LowerBound& b) { return b.critical_path.count(); });

  m.def("emulate", [](const Plan& plan, const ModelSpec& model, const Setup& setup, const py::object& cost, bool timeline) {
          const AnyCost c = cost.is_none() ? AnyCost{AnalyticCostModel(model, setup)} : cost_from(cost);
          py::gil_scoped_release nogil;
          return std::visit([&](const auto& x) { return emulate(plan, model, setup, x, EmulateOptions{.record_timeline = timeline}); }, c);
        }, py::arg("plan"), py::arg("model"), py::arg("setup"), py::arg("cost") = py::none(), py::kw_only(), py::arg("timeline") = false,
        "Emulates the plan under the cost model (default: analytic); timeline=True for traces.");
  m.def("lower_bound", [](const Plan& plan, const ModelSpec& model, const Setup& setup, const py::object& cost) {
          const AnyCost c = cost.is_none() ? AnyCost{AnalyticCostModel(model, setup)} : cost_from(cost);
          py::gil_scoped_release nogil;
          return std::visit([&](const auto& x) { return lower_bound(plan, model, x); }, c);
        }, py::arg("plan"), py::arg("model"), py::arg("setup"), py::arg("cost") = py::none(),
        "A lower bound on the step time of every plan with this plan's partition and sub-microbatches.");
  m.def("validate", [](const Plan& plan, const ModelSpec& model, const std::optional<Setup>& setup, const py::object& cost) {
          if (!setup) {
            py::gil_scoped_release nogil;
            validate(plan, model);
            return;
          }
          const AnyCost c = cost.is_none() ? AnyCost{AnalyticCostModel(model, *setup)} : cost_from(cost);
          py::gil_scoped_release nogil;
          std::visit([&](const auto& x) { validate(plan, model, *setup, x); }, c);
        }, py::arg("plan"), py::arg("model"), py::arg("setup") = py::none(), py::arg("cost") = py::none(),
        "Error(invalid_plan) naming rank and action when the plan breaks a rule; with a setup, memory too.");
  m.def("peak_memory_by_rank", [](const Plan& plan, const ModelSpec& model, const Setup& setup, const py::object& cost) {
          const AnyCost c = cost.is_none() ? AnyCost{AnalyticCostModel(model, setup)} : cost_from(cost);
          py::gil_scoped_release nogil;
          return std::visit([&](const auto& x) {
            std::vector<std::int64_t> out;
            for (Bytes b : peak_memory_by_rank(plan, model, setup, x)) out.push_back(b.count());
            return out;
          }, c);
        }, py::arg("plan"), py::arg("model"), py::arg("setup"), py::arg("cost") = py::none());
}

}  // namespace

void bind_planning(py::module_& m) {
  bind_cost_models(m);
  bind_planner(m);
  bind_evaluation(m);
}

}  // namespace pipeweaver::python
