#pragma once
// What the binding translation units share: the three binding entry points, the cost-model
// holder every cost-dependent function takes, and the Python cost model adapter.
//
// Invariants: every call into the library that may search or emulate for long runs with the GIL
// released; a Python cost model takes the GIL back for each of its calls (so it is the slow way
// to bring measured numbers; the table model is the fast one). Library errors reach Python as
// the pipeweaver.Error hierarchy (module.cpp); an exception raised by a Python cost model becomes
// an input error naming the member that raised.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/cost/table.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver::python {

namespace py = pybind11;

void bind_types(py::module_& m);
void bind_io(py::module_& m);
void bind_planning(py::module_& m);

/// A Python object with latency, activation_bytes, output_bytes and transfer_time (all returning
/// ints: nanoseconds or bytes). Copies share the object; the last copy releases it under the GIL.
class PythonCostModel {
 public:
  explicit PythonCostModel(py::object obj);

  [[nodiscard]] Nanoseconds latency(const StageSpec& stage, const SubMicrobatchSpec& smb, const MemoryStrategy& strategy) const;
  [[nodiscard]] Bytes activation_bytes(const StageSpec& stage, const SubMicrobatchSpec& smb, const MemoryStrategy& strategy) const;
  [[nodiscard]] Bytes output_bytes(const StageSpec& stage, const SubMicrobatchSpec& smb) const;
  [[nodiscard]] Nanoseconds transfer_time(Bytes bytes) const;
  [[nodiscard]] py::object object() const;

 private:
  std::shared_ptr<py::object> obj_;
};

/// The cost model a Python call names: the library's analytic or table model, or a Python object.
using AnyCost = std::variant<AnalyticCostModel, TableCostModel, PythonCostModel>;

/// `obj` as an AnyCost: a bound AnalyticCostModel or TableCostModel, else a Python cost model
/// (checked for its four members: Error(input) naming the one missing).
[[nodiscard]] AnyCost cost_from(const py::handle& obj);

}  // namespace pipeweaver::python
