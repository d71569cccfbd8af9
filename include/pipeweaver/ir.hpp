#pragma once
// Umbrella header for ir/: the plan IR: Plan, Partition, stage and sub-microbatch specs, labels
// and the binary form.
#include "pipeweaver/ir/labels.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/ir/sub_microbatch_index.hpp"
