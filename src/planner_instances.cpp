// The compiled mode's instances (target pipeweaver::compiled): the Planner of the library's own
// cost models, instantiated once here; planner/planner.hpp declares them extern when
// PIPEWEAVER_COMPILED is defined.
#include "pipeweaver/planner/planner.hpp"

namespace pipeweaver {
template class Planner<AnalyticCostModel>;
template class Planner<TableCostModel>;
}  // namespace pipeweaver
