#pragma once
// Umbrella header for io/: JSON readers and writers (nlohmann-json is used only under io/).
#include "pipeweaver/io/workload_json.hpp"
#include "pipeweaver/io/plan_json.hpp"
#include "pipeweaver/io/chrome_trace.hpp"
#include "pipeweaver/io/svg_timeline.hpp"
#include "pipeweaver/io/batch_json.hpp"
