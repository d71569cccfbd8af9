#pragma once
// Umbrella header for cost/: the analytic roofline cost model, the table (profiled) model,
// calibration (offline, and online from measured stage times) and cost-model changes.
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/cost/calibration.hpp"
#include "pipeweaver/cost/cost_change.hpp"
#include "pipeweaver/cost/online_calibration.hpp"
#include "pipeweaver/cost/stage_bytes.hpp"
#include "pipeweaver/cost/table.hpp"
