# Type stubs of the C++ module (python/src). Times are int nanoseconds, sizes int bytes, ids ints,
# a pass is its name: "forward", "backward", "backward_input" or "backward_weight".
import os
from typing import Any, Iterable, Optional, Protocol, Sequence, Union

__version__: str
built_for_python: str

PathLike = Union[str, os.PathLike]

class Error(RuntimeError):
    kind: str
    message: str
    file: str
    path: str
    expected: str

class InputError(Error): ...
class InfeasibleError(Error): ...
class InvalidPlanError(Error): ...
class ExecutionError(Error): ...
class CancelledError(Error): ...

class ModuleSpec:
    name: str
    role: str
    modality: str
    layers: int
    hidden: int
    ffn_hidden: int
    heads: int
    kv_heads: int
    ffn: str
    attention: str
    vocab: Optional[int]
    feeds: Optional[int]
    output_tokens_per_input_token: float
    trainable: bool

class ModelSpec:
    name: str
    description: str
    modules: list[ModuleSpec]
    backbone: int
    def find(self, name: str) -> Optional[int]: ...
    def feeders(self, module: int) -> list[int]: ...

class Setup:
    name: str
    description: str
    pipeline_stages: int
    tensor_parallel: int
    data_parallel: int
    microbatches_per_step: int
    microbatch_module: str
    microbatch_max_tokens: int
    memory_capacity: int

class DatasetSpec:
    name: str
    description: str
    sources: list[str]

class Sample:
    text: int
    items: dict[str, list[int]]
    def __init__(self, text: int = 0, items: Union[dict[str, list[int]], Sequence[tuple[str, list[int]]]] = ...) -> None: ...
    def tokens_of(self, modality: str) -> list[int]: ...

class Batch:
    microbatches: list[list[Sample]]
    truncated_samples: int
    sample_count: int
    def __len__(self) -> int: ...

class MemoryStrategy:
    full_recompute: int
    selective_recompute: int
    offload: int
    def __init__(self, full_recompute: int = 0, selective_recompute: int = 0, offload: int = 0) -> None: ...

class Chunk:
    first_layer: int
    layer_count: int
    rank: int

class ModulePlacement:
    chunks: list[Chunk]
    sub_microbatch_items: int

class Partition:
    name: str
    ranks: int
    modules: list[ModulePlacement]

class StageSpec:
    module: int
    chunk: int
    rank: int
    pass_: str
    first_layer: int
    layer_count: int
    def __init__(self, module: int, chunk: int, rank: int, pass_: str, first_layer: int, layer_count: int) -> None: ...

class SubMicrobatch:
    module: int
    microbatch: int
    item_tokens: list[int]
    context_tokens: list[int]
    items: list[tuple[int, int]]
    total_tokens: int
    def __init__(self, module: int, microbatch: int, item_tokens: list[int], context_tokens: list[int] = ...) -> None: ...

class StageRef:
    module: int
    chunk: int
    sub_microbatch: int
    pass_: str

class Transfer:
    from_rank: int
    to_rank: int
    producer: StageRef
    consumer: StageRef
    bytes: int

class Forward:
    kind: str  # "forward"
    module: int
    chunk: int
    sub_microbatch: int
    strategy: MemoryStrategy
    pass_: str

class Backward:
    kind: str  # "backward"
    module: int
    chunk: int
    sub_microbatch: int
    strategy: MemoryStrategy
    pass_: str

class Send:
    kind: str  # "send"
    transfer: int

class Recv:
    kind: str  # "recv"
    transfer: int

class Wait:
    kind: str  # "wait"
    transfer: int

Action = Union[Forward, Backward, Send, Recv, Wait]

class Plan:
    name: str
    model: str
    setup: str
    microbatches: int
    partition: Partition
    sub_microbatches: list[SubMicrobatch]
    transfers: list[Transfer]
    rank_count: int
    ranks: list[list[Action]]
    def program(self, rank: int) -> list[Action]: ...

class FlatItem:
    sample: int
    item: int
    tokens: int
    context_tokens: int

class FlatStage:
    module: str
    module_id: int
    chunk: int
    first_layer: int
    layer_count: int
    rank: int
    pass_: str
    microbatch: int
    sub_microbatch: int
    items: list[FlatItem]
    tokens: int

class FlatAction:
    op: str  # forward, backward, backward_input, backward_weight, send, recv, wait
    stage: FlatStage
    strategy: MemoryStrategy
    transfer: int
    peer: int
    bytes: int
    peer_stage: FlatStage

class FlatModule:
    name: str
    layers: int
    feeds: str
    trainable: bool
    sub_microbatch_items: int
    chunks: list[Chunk]

class FlatRankProgram:
    rank: int
    actions: list[FlatAction]

class FlatProgram:
    plan: str
    model: str
    setup: str
    ranks: int
    microbatches: int
    modules: list[FlatModule]
    programs: list[FlatRankProgram]

class StageTiming:
    rank: int
    action: int
    duration: int
    def __init__(self, rank: int, action: int, module: int, chunk: int, sub_microbatch: int, pass_: str, duration: int,
                 strategy: MemoryStrategy = ...) -> None: ...

class PlanResult:
    plan: Plan
    step_time: int
    lower_bound: int
    search_time: int
    iterations: int
    fallback: bool
    source: str
    cost_version: int

class RankStats:
    busy: int
    idle: int
    static_memory: int
    peak_memory: int
    fits_memory: bool
    compute_actions: int

class TimelineEvent:
    kind: str  # "compute" or "transfer"
    rank: int
    peer: int
    stage: StageRef
    transfer: int
    action: int
    start: int
    end: int
    bytes: int

class EmulationResult:
    step_time: int
    ranks: list[RankStats]
    timeline: list[TimelineEvent]
    memory_capacity: int
    peak_memory: int
    fits_memory: bool
    actions: int

class LowerBound:
    value: int
    total_work: int
    work_bound: int
    critical_path: int

class AnalyticOptions:
    alpha_flops: float
    alpha_memory: float
    alpha_network: float
    half_saturation_tokens: float
    host_link_gb_per_s: float
    attention_backward_factor: float
    def __init__(self, alpha_flops: float = 1.0, alpha_memory: float = 1.0, alpha_network: float = 1.0) -> None: ...

class _CostMethods:
    def latency(self, stage: StageSpec, sub_microbatch: SubMicrobatch, strategy: MemoryStrategy = ...) -> int: ...
    def activation_bytes(self, stage: StageSpec, sub_microbatch: SubMicrobatch, strategy: MemoryStrategy = ...) -> int: ...
    def output_bytes(self, stage: StageSpec, sub_microbatch: SubMicrobatch) -> int: ...
    def transfer_time(self, bytes: int) -> int: ...

class AnalyticCostModel(_CostMethods):
    options: AnalyticOptions
    def __init__(self, model: ModelSpec, setup: Setup, options: AnalyticOptions = ...) -> None: ...

class TableSample:
    module: int
    latency: int
    strategy: str
    def __init__(self, module: int, pass_: str, layers: int, tokens: int, sum_sq_tokens: float, latency: int, strategy: str = "none") -> None: ...

class TableCostModel(_CostMethods):
    def __init__(self, model: ModelSpec, setup: Setup, samples: Sequence[TableSample]) -> None: ...

class CostModel(Protocol):
    """What a Python cost model provides (slower than the table model: each call takes the GIL)."""
    def latency(self, stage: StageSpec, sub_microbatch: SubMicrobatch, strategy: MemoryStrategy) -> int: ...
    def activation_bytes(self, stage: StageSpec, sub_microbatch: SubMicrobatch, strategy: MemoryStrategy) -> int: ...
    def output_bytes(self, stage: StageSpec, sub_microbatch: SubMicrobatch) -> int: ...
    def transfer_time(self, bytes: int) -> int: ...

AnyCost = Union[AnalyticCostModel, TableCostModel, CostModel]

class LatencySample:
    measured: int
    stage: StageSpec
    sub_microbatch: SubMicrobatch
    strategy: MemoryStrategy
    def __init__(self, stage: StageSpec, sub_microbatch: SubMicrobatch, measured: int, strategy: MemoryStrategy = ...) -> None: ...

class CalibrationResult:
    options: AnalyticOptions
    rms_relative_error: float
    iterations: int
    converged: bool

def calibrate(model: ModelSpec, setup: Setup, samples: Sequence[LatencySample], initial: AnalyticOptions = ...) -> CalibrationResult: ...

def latency_samples(plan: Plan, timings: Sequence[StageTiming], time_scale: float = 1.0) -> list[LatencySample]: ...

class AnalyticCalibrator:
    model: AnalyticCostModel
    options: AnalyticOptions
    last_fit: CalibrationResult
    samples: int
    def __init__(self, model: ModelSpec, setup: Setup, initial: AnalyticOptions = ..., window: int = 4) -> None: ...
    def add_step(self, samples: Sequence[LatencySample]) -> AnalyticCostModel: ...

class TableCalibrator:
    model: TableCostModel
    skipped: int
    def __init__(self, model: ModelSpec, setup: Setup, base: Sequence[TableSample], window: int = 4) -> None: ...
    def add_step(self, samples: Sequence[LatencySample]) -> TableCostModel: ...

class Planner:
    placement_ready: bool
    partition: Partition
    baselines: list[str]
    def __init__(self, model: ModelSpec, setup: Setup, cost: Optional[AnyCost] = None, *, dataset: Optional[DatasetSpec] = None,
                 samples: Optional[Sequence[Batch]] = None, budget: float = 1.0, iterations: int = 0, threads: int = 1,
                 seed: int = 0, partition_steps: int = 2, consider_baselines: bool = True) -> None: ...
    def plan(self, batch: Batch, *, budget: Optional[float] = None, iterations: Optional[int] = None) -> PlanResult: ...
    def fallback(self, batch: Batch) -> PlanResult: ...
    cost_version: int
    def update_cost(self, cost: AnyCost) -> int: ...
    def check(self, batch: Batch) -> None: ...
    def baseline_plans(self, batch: Batch) -> list[tuple[str, PlanResult]]: ...

class AsyncPlannerStats:
    submitted: int
    plans_ready_in_time: int
    plans_after_wait: int
    fallbacks: int
    failures: int
    waited: int

class AsyncPlanner:
    stats: AsyncPlannerStats
    def __init__(self, planner: Planner, *, threads: int = 1, lookahead: int = 2, grace: float = 0.0,
                 search_budget: Optional[float] = None) -> None: ...
    def submit(self, batch: Batch) -> int: ...
    def next(self) -> PlanResult: ...
    def next_when_ready(self) -> PlanResult: ...
    def cancel(self) -> None: ...
    def ready(self) -> bool: ...
    def outstanding(self) -> int: ...

def read_model(source: Union[PathLike, dict[str, Any]]) -> ModelSpec: ...
def read_setup(source: Union[PathLike, dict[str, Any]], model: Optional[ModelSpec] = None) -> Setup: ...
def read_dataset(source: Union[PathLike, dict[str, Any]], model: Optional[ModelSpec] = None) -> DatasetSpec: ...
def read_batch(source: Union[PathLike, dict[str, Any]]) -> Batch: ...
def read_plan(source: Union[PathLike, dict[str, Any], str]) -> Plan: ...
def write_plan(path: PathLike, plan: Plan) -> None: ...
def write_batch(path: PathLike, batch: Batch) -> None: ...
def plan_to_json(plan: Plan) -> dict[str, Any]: ...
def batch_to_json(batch: Batch) -> dict[str, Any]: ...
def check_compatible(model: ModelSpec, setup: Setup) -> None: ...
def check_batch(model: ModelSpec, setup: Setup, batch: Batch) -> None: ...
def make_batch(model: ModelSpec, setup: Setup, microbatches: Sequence[Sequence[Sample]]) -> Batch: ...
def pack(model: ModelSpec, setup: Setup, samples: Sequence[Sample]) -> Batch: ...
def sample_step(model: ModelSpec, dataset: DatasetSpec, setup: Setup, seed: int, step: int) -> Batch: ...
def emulate(plan: Plan, model: ModelSpec, setup: Setup, cost: Optional[AnyCost] = None, *, timeline: bool = False) -> EmulationResult: ...
def lower_bound(plan: Plan, model: ModelSpec, setup: Setup, cost: Optional[AnyCost] = None) -> LowerBound: ...
def validate(plan: Plan, model: ModelSpec, setup: Optional[Setup] = None, cost: Optional[AnyCost] = None) -> None: ...
def peak_memory_by_rank(plan: Plan, model: ModelSpec, setup: Setup, cost: Optional[AnyCost] = None) -> list[int]: ...
def flatten(plan: Plan, model: ModelSpec) -> FlatProgram: ...
def write_flat_program(path: PathLike, plan: Plan, model: ModelSpec) -> None: ...
def read_flat_program(path: PathLike) -> FlatProgram: ...
def flat_program_to_json(program: FlatProgram) -> dict[str, Any]: ...
def chrome_trace(plan: Plan, model: ModelSpec, emulation: EmulationResult) -> str: ...
def write_chrome_trace(path: PathLike, plan: Plan, model: ModelSpec, emulation: EmulationResult) -> None: ...
def svg_timeline(plan: Plan, model: ModelSpec, emulation: EmulationResult, width: int = 1200, title: str = "") -> str: ...
def write_svg_timeline(path: PathLike, plan: Plan, model: ModelSpec, emulation: EmulationResult) -> None: ...
