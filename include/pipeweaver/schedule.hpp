#pragma once
// Umbrella header for schedule/: the plan IR and everything that builds or checks plans.
#include "pipeweaver/schedule/partition.hpp"
#include "pipeweaver/schedule/plan.hpp"
#include "pipeweaver/schedule/stage.hpp"
#include "pipeweaver/schedule/labels.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/schedule/plan_binary.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/schedule/sub_microbatch_index.hpp"
#include "pipeweaver/schedule/validator.hpp"
