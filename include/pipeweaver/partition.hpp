#pragma once
// Umbrella header for partition/: placing modules' chunks on ranks and splitting microbatches
// into sub-microbatches.
#include "pipeweaver/partition/splitter.hpp"
