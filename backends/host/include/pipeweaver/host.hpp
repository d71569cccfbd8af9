#pragma once
// Umbrella header for the host backend: rank threads and in-process channels (runtime.hpp),
// run_step, the in-process broadcast of plan binaries, execution in emulated time (timed.hpp),
// the trainer loop (training.hpp) and online calibration between its steps (calibration.hpp).
#include "pipeweaver/host/broadcast.hpp"
#include "pipeweaver/host/calibration.hpp"
#include "pipeweaver/host/run_step.hpp"
#include "pipeweaver/host/runtime.hpp"
#include "pipeweaver/host/timed.hpp"
#include "pipeweaver/host/training.hpp"
