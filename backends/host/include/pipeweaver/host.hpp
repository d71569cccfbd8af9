#pragma once
// Umbrella header for the host backend: rank threads, in-process channels, run_step, and the
// in-process broadcast of plan binaries.
#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/host/run_step.hpp"
#include "pipeweaver/host/runtime.hpp"
