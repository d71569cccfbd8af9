#pragma once
// Umbrella header for model/: model and setup descriptions and the per-layer math.
#include "pipeweaver/model/layer_math.hpp"
#include "pipeweaver/model/memory.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
