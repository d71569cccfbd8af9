#pragma once
// Umbrella header for partition/: the modality-aware DIP partitioner and the sub-microbatch
// splitter.
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/partition/splitter.hpp"
