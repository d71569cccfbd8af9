#pragma once
// Umbrella header for planner/: the Planner facade, its placement choice and per-call search
// control, asynchronous planning with fallback, plan results, sample re-packing and plan
// broadcast hooks.
#include "pipeweaver/planner/async_planner.hpp"
#include "pipeweaver/planner/broadcast_hook.hpp"
#include "pipeweaver/planner/placement.hpp"
#include "pipeweaver/planner/plan_result.hpp"
#include "pipeweaver/planner/planner.hpp"
#include "pipeweaver/planner/repacking.hpp"
#include "pipeweaver/planner/search_control.hpp"
