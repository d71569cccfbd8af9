#pragma once
// Umbrella header for model/: model and setup descriptions, per-layer FLOPs and bytes, device
// memory, and model/setup checks.
#include "pipeweaver/model/layer_math.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/model/validate.hpp"
