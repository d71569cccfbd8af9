#pragma once
// Umbrella header for schedule/: the stage graph, the activation-memory rule, the classic
// pipeline orders, the dual-queue interleaver, lowering to a Plan and the validator.
#include "pipeweaver/schedule/activation_memory.hpp"
#include "pipeweaver/schedule/dual_queue_interleaver.hpp"
#include "pipeweaver/schedule/lowering.hpp"
#include "pipeweaver/schedule/pipeline_orders.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/schedule/validator.hpp"
