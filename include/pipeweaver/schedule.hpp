#pragma once
// Umbrella header for schedule/: the plan IR and everything that builds or checks plans.
#include "pipeweaver/schedule/partition.hpp"
#include "pipeweaver/schedule/plan.hpp"
#include "pipeweaver/schedule/stage.hpp"
