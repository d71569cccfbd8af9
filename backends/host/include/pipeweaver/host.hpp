#pragma once
// Umbrella header for the host backend: rank threads, in-process channels, run_step, the
// in-process broadcast of plan binaries, and execution in emulated time (timed.hpp).
#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/host/run_step.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/host/timed.hpp"
