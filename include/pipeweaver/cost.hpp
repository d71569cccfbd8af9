#pragma once
// Umbrella header for cost/: the analytic roofline cost model, the table (profiled) model and
// calibration.
#include "pipeweaver/cost/analytic.hpp"
#include "pipeweaver/cost/calibration.hpp"
#include "pipeweaver/cost/table.hpp"
