#pragma once
// Umbrella header for execute/: the Runtime concept, stage callbacks, the buffer pool, the
// rank-program compiler and the generic executor (std-only).
#include "pipeweaver/execute/buffer_pool.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/execute/plan_broadcast.hpp"
#include "pipeweaver/execute/rank_errors.hpp"
#include "pipeweaver/execute/rank_program.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"
