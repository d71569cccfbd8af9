#pragma once
// Umbrella header for baselines/: the baseline plans (gpipe, 1f1b, interleaved-1f1b, megatron,
// optimus, zero-bubble) and their comparison.
#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/compare.hpp"
#include "pipeweaver/baselines/gpipe.hpp"
#include "pipeweaver/baselines/interleaved_1f1b.hpp"
#include "pipeweaver/baselines/megatron.hpp"
#include "pipeweaver/baselines/one_f_one_b.hpp"
#include "pipeweaver/baselines/optimus.hpp"
#include "pipeweaver/baselines/zero_bubble.hpp"
