#pragma once
// Umbrella header for execute/: the Runtime concept, the stage-callback interface, the buffer
// pool and the generic executor (std-only: compiles under nvcc).
#include "pipeweaver/execute/buffer_pool.hpp"
#include "pipeweaver/execute/executor.hpp"
#include "pipeweaver/execute/plan_broadcast.hpp"
#include "pipeweaver/execute/runtime.hpp"
#include "pipeweaver/execute/stage_io.hpp"
