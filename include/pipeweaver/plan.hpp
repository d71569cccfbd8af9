#pragma once
// Umbrella header for plan/: the plan result, asynchronous planning with fallback, plan
// broadcast hooks, the baseline comparison and the Planner facade.
#include "pipeweaver/plan/async_planner.hpp"
#include "pipeweaver/plan/broadcast_hook.hpp"
#include "pipeweaver/plan/compare.hpp"
#include "pipeweaver/plan/plan_result.hpp"
#include "pipeweaver/plan/planner.hpp"
