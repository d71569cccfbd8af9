"""pipeweaver: dynamic interleaved pipeline schedules for multimodal model training.

The C++ library's planner, emulator and I/O (module ``pipeweaver._pipeweaver``), and a PyTorch
pipeline runtime (``pipeweaver.torch_pipeline``, imported on demand: it needs torch). See
docs/python.md.
"""
from ._pipeweaver import *  # noqa: F401,F403
from ._pipeweaver import (  # noqa: F401  (the names a star import skips or editors miss)
    __version__,
    built_for_python,
    Error,
    InputError,
    InfeasibleError,
    InvalidPlanError,
    ExecutionError,
    CancelledError,
)

#: The pass names a plan's Backward actions may carry.
PASSES = ("forward", "backward", "backward_input", "backward_weight")
