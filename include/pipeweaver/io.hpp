#pragma once
// Umbrella header for io/: JSON readers and writers (workloads, batches, plans, flat rank
// programs), Chrome trace and SVG timeline (needs nlohmann-json).
#include "pipeweaver/io/batch_json.hpp"
#include "pipeweaver/io/chrome_trace.hpp"
#include "pipeweaver/io/flat_program_json.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/svg_timeline.hpp"
#include "pipeweaver/io/workload_json.hpp"
