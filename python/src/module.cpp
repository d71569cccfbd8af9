// The module _pipeweaver: the error hierarchy and the file and JSON functions (pipeweaver::io).
// Readers take a path or a Python dict (a dict is serialized with Python's json module and read
// by the same reader as a file, so it is checked the same way; its errors name "<dict>").
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <array>
#include <filesystem>
#include <string>

#include "bindings.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/data/sampler.hpp"
#include "pipeweaver/io.hpp"

namespace pipeweaver::python {

namespace {

std::array<py::object, 5> error_types;  // indexed by ErrorKind
py::object base_error;

void make_errors(py::module_& m) {
  base_error = py::reinterpret_steal<py::object>(
      PyErr_NewExceptionWithDoc("pipeweaver._pipeweaver.Error",
                                "Everything pipeweaver refuses: kind, message, file, path and expected.",
                                PyExc_RuntimeError, nullptr));
  m.attr("Error") = base_error;
  const std::array<const char*, 5> names{"InputError", "InfeasibleError", "InvalidPlanError", "ExecutionError", "CancelledError"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string full = std::string("pipeweaver._pipeweaver.") + names[i];
    error_types[i] = py::reinterpret_steal<py::object>(PyErr_NewException(full.c_str(), base_error.ptr(), nullptr));
    m.attr(names[i]) = error_types[i];
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object type = error_types[static_cast<std::size_t>(e.kind())];
      py::object value = type(py::str(e.what()));
      value.attr("kind") = py::str(to_string(e.kind()));
      value.attr("message") = py::str(e.message());
      value.attr("file") = py::str(e.context().file);
      value.attr("path") = py::str(e.context().path);
      value.attr("expected") = py::str(e.context().expected);
      PyErr_SetObject(type.ptr(), value.ptr());
    }
  });
}

/// A path (str or os.PathLike) or a dict: the JSON text and the name errors will carry.
struct Source {
  std::string text;
  std::string name;
  bool is_dict = false;
  std::filesystem::path path;
};

Source source_of(const py::handle& obj, const char* what) {
  Source s;
  if (py::isinstance<py::dict>(obj)) {
    s.is_dict = true;
    s.text = py::module_::import("json").attr("dumps")(obj).cast<std::string>();
    s.name = std::string("<") + what + " dict>";
    return s;
  }
  if (py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__")) {
    s.path = obj.cast<std::filesystem::path>();
    return s;
  }
  throw input_error(std::string("a ") + what + " must be a path or a dict",
                    {.path = what, .expected = "str, os.PathLike or dict, got " + py::str(py::type::of(obj)).cast<std::string>()});
}

ModelSpec read_model_any(const py::handle& obj) {
  const Source s = source_of(obj, "model");
  return s.is_dict ? io::parse_model(s.text, s.name) : io::read_model(s.path);
}
Setup read_setup_any(const py::handle& obj, const ModelSpec* model) {
  const Source s = source_of(obj, "setup");
  Setup setup = s.is_dict ? io::parse_setup(s.text, s.name) : io::read_setup(s.path);
  if (model) io::check_compatible(*model, setup, s.is_dict ? s.name : s.path.string());
  return setup;
}
DatasetSpec read_dataset_any(const py::handle& obj, const ModelSpec* model) {
  const Source s = source_of(obj, "dataset");
  DatasetSpec d = s.is_dict ? io::parse_dataset(s.text, s.name) : io::read_dataset(s.path);
  if (model) io::check_compatible(*model, d, s.is_dict ? s.name : s.path.string());
  return d;
}
Plan read_plan_any(const py::handle& obj) {
  if (py::isinstance<py::str>(obj) && !obj.cast<std::string>().empty() && obj.cast<std::string>().front() == '{')
    return io::parse_plan(obj.cast<std::string>(), "<plan JSON text>");
  const Source s = source_of(obj, "plan");
  return s.is_dict ? io::parse_plan(s.text, s.name) : io::read_plan(s.path);
}
Batch read_batch_any(const py::handle& obj) {
  const Source s = source_of(obj, "batch");
  return s.is_dict ? io::parse_batch(s.text, s.name) : io::read_batch(s.path);
}

py::object json_object(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

}  // namespace

void bind_io(py::module_& m) {
  make_errors(m);
  m.def("read_model", &read_model_any, py::arg("source"),
        "A ModelSpec from a JSON file or a dict of the same layout (checked as a file is).");
  m.def("read_setup", [](const py::object& src, const std::optional<ModelSpec>& model) {
          return read_setup_any(src, model ? &*model : nullptr);
        }, py::arg("source"), py::arg("model") = py::none(),
        "A Setup from a JSON file or a dict; with `model`, also checked against it.");
  m.def("read_dataset", [](const py::object& src, const std::optional<ModelSpec>& model) {
          return read_dataset_any(src, model ? &*model : nullptr);
        }, py::arg("source"), py::arg("model") = py::none(),
        "A DatasetSpec from a JSON file or a dict; with `model`, also checked against it.");
  m.def("read_batch", &read_batch_any, py::arg("source"), "A Batch from a JSON file or a dict.");
  m.def("read_plan", &read_plan_any, py::arg("source"), "A Plan from a JSON file, a dict or JSON text.");
  m.def("write_plan", [](const std::filesystem::path& p, const Plan& plan) { io::write_plan(p, plan); },
        py::arg("path"), py::arg("plan"));
  m.def("write_batch", [](const std::filesystem::path& p, const Batch& b) { io::write_batch(p, b); },
        py::arg("path"), py::arg("batch"));
  m.def("plan_to_json", [](const Plan& plan) { return json_object(io::to_json(plan).dump()); }, py::arg("plan"),
        "The plan's JSON document as Python objects (what write_plan writes).");
  m.def("batch_to_json", [](const Batch& b) { return json_object(io::to_json(b).dump()); }, py::arg("batch"));
  m.def("check_compatible", [](const ModelSpec& model, const Setup& setup) { io::check_compatible(model, setup, "setup '" + setup.name + "'"); },
        py::arg("model"), py::arg("setup"), "Error(input) when the setup does not fit the model.");
  m.def("check_batch", [](const ModelSpec& model, const Setup& setup, const Batch& batch) {
          io::check_batch(model, setup, batch, "<batch>");
        }, py::arg("model"), py::arg("setup"), py::arg("batch"),
        "Error(input) naming microbatch, sample and field when the planner cannot honor the batch.");
  m.def("make_batch", [](const ModelSpec& model, const Setup& setup, const std::vector<std::vector<Sample>>& microbatches) {
          Batch b;
          for (const auto& mb : microbatches) b.microbatches.push_back(Microbatch{mb});
          io::check_batch(model, setup, b, "<batch>");
          return b;
        }, py::arg("model"), py::arg("setup"), py::arg("microbatches"),
        "A Batch from lists of Samples, one list per microbatch, checked as check_batch does.");
  m.def("pack", [](const ModelSpec& model, const Setup& setup, const std::vector<Sample>& samples) {
          return pack(model, setup, samples);
        }, py::arg("model"), py::arg("setup"), py::arg("samples"),
        "Packs samples in order into microbatches under the setup's token budget.");
  m.def("sample_step", [](const ModelSpec& model, const DatasetSpec& d, const Setup& setup, std::uint64_t seed, int step) {
          check_compatible(model, d);
          return sample_step(model, d, setup, seed, step);
        }, py::arg("model"), py::arg("dataset"), py::arg("setup"), py::arg("seed"), py::arg("step"),
        "The samples of training step `step` drawn from the dataset and packed (the same on every platform).");
  m.def("flatten", [](const Plan& plan, const ModelSpec& model) { return flatten(plan, model); }, py::arg("plan"), py::arg("model"),
        "The plan's flat program: per rank its actions with module names, layers, items, peers and bytes resolved.");
  m.def("write_flat_program", [](const std::filesystem::path& p, const Plan& plan, const ModelSpec& model) {
          io::write_flat_program(p, plan, model);
        }, py::arg("path"), py::arg("plan"), py::arg("model"));
  m.def("read_flat_program", [](const std::filesystem::path& p) { return io::read_flat_program(p); }, py::arg("path"));
  m.def("flat_program_to_json", [](const FlatProgram& fp) { return json_object(io::to_json(fp).dump()); }, py::arg("program"),
        "The flat program's JSON document as Python objects (what write_flat_program writes).");
  m.def("chrome_trace", [](const Plan& plan, const ModelSpec& model, const EmulationResult& r) {
          return io::chrome_trace_json(plan, model, r);
        }, py::arg("plan"), py::arg("model"), py::arg("emulation"),
        "The Chrome trace (chrome://tracing, Perfetto) of an emulation made with timeline=True.");
  m.def("write_chrome_trace", [](const std::filesystem::path& p, const Plan& plan, const ModelSpec& model, const EmulationResult& r) {
          io::write_chrome_trace(p, plan, model, r);
        }, py::arg("path"), py::arg("plan"), py::arg("model"), py::arg("emulation"));
  m.def("svg_timeline", [](const Plan& plan, const ModelSpec& model, const EmulationResult& r, int width, const std::string& title) {
          return io::svg_timeline(plan, model, r, {.width = width, .title = title});
        }, py::arg("plan"), py::arg("model"), py::arg("emulation"), py::arg("width") = 1200, py::arg("title") = "",
        "The SVG timeline of an emulation made with timeline=True.");
  m.def("write_svg_timeline", [](const std::filesystem::path& p, const Plan& plan, const ModelSpec& model, const EmulationResult& r) {
          io::write_svg_timeline(p, plan, model, r);
        }, py::arg("path"), py::arg("plan"), py::arg("model"), py::arg("emulation"));
}

}  // namespace pipeweaver::python

PYBIND11_MODULE(_pipeweaver, m) {
  namespace pw = pipeweaver::python;
  m.doc() = "pipeweaver: dynamic interleaved pipeline schedules for multimodal model training";
  m.attr("__version__") = PIPEWEAVER_VERSION;
  m.attr("built_for_python") = PIPEWEAVER_BUILT_FOR_PYTHON;
  pw::bind_types(m);
  pw::bind_io(m);
  pw::bind_planning(m);
}
