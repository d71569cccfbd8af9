#pragma once
// Umbrella header for ir/: the plan IR: Plan, Partition, stage and sub-microbatch specs, labels,
// the binary form, the flat rank program and measured stage timings.
#include "pipeweaver/ir/flat_program.hpp"
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/stage_timing.hpp"
#include "pipeweaver/ir/sub_microbatch_index.hpp"
