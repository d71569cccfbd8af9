#pragma once
// Umbrella header for the CUDA backend: the device-API policy and its CUDA/NCCL implementation,
// the runtime, communicators and their bootstrap, the watchdog, and the single-process
// executor. The fake device for tests (pipeweaver/cuda/fake/fake_device_api.hpp) is included
// on its own.
#include "pipeweaver/cuda/bootstrap.hpp"
#include "pipeweaver/cuda/check.hpp"
#include "pipeweaver/cuda/comm_links.hpp"
#include "pipeweaver/cuda/cuda_api.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/kernels.hpp"
#include "pipeweaver/cuda/run_step.hpp"
#include "pipeweaver/cuda/runtime.hpp"
#include "pipeweaver/cuda/watchdog.hpp"
#include "pipeweaver/cuda/world.hpp"
