#pragma once
// Everything of pipeweaver::pipeweaver: the std-only library, the JSON and picture I/O and the
// host backend. Include a folder's umbrella header or a single component to compile less.
#include "pipeweaver/host.hpp"
#include "pipeweaver/io.hpp"
#include "pipeweaver/pipeweaver_core.hpp"
