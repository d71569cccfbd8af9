"""A PyTorch pipeline runtime: each rank runs its program of a pipeweaver Plan over torch.distributed.

What it does with a plan (docs/python.md has the full contract):

* Forward / Backward actions run the chunk's stage module through autograd, one stage module per
  (module, chunk) of the plan's partition. A stage's input is a leaf tensor (the producer's
  output, detached), so a Backward computes the gradient of its input and of the chunk's
  parameters with torch.autograd.grad; a split backward computes the input part first
  (graph retained) and the weight part later, as the plan places them.
* Send and Recv actions that follow one another in a rank's list form one batch_isend_irecv
  call, in list order; a Recv's buffer has the shape the plan gives (the model's output_shape
  on the transfer's sub-microbatch), so no rank exchanges shapes. A Wait blocks until its
  transfer has arrived (with a backend that completes a group as a whole, as nccl does, until
  its group has).
* A failure on one rank (an exception in a stage, a timeout) is published in the store
  (key "pipeweaver/failed"); every other rank sees it at its next wait and raises
  pipeweaver.ExecutionError naming the failed rank. A wait that sees nothing within `timeout`
  seconds raises an ExecutionError naming the peer it waited for.

Works with gloo on CPUs and nccl on GPUs (the device of the stage modules' parameters; one GPU
per rank). With nccl a Wait makes the compute stream wait instead of the CPU, so a silent peer
is caught by nccl's own timeout rather than by `timeout`.
"""
from __future__ import annotations

import datetime
import queue
import threading
import time
from collections import defaultdict

import torch
import torch.distributed as dist

from . import PASSES, ExecutionError, StageTiming, flatten

FAILED_KEY = "pipeweaver/failed"  # the first failure's notice: "rank R: ..."
FAILURES_KEY = "pipeweaver/failures"  # how many ranks have failed


def _error(message, path="", expected=""):
    e = ExecutionError(f"{path}: {message}" if path else message)
    e.kind, e.message, e.file, e.path, e.expected = "execution error", message, "", path, expected
    return e


def _key(ref):
    return (ref.module, ref.chunk, ref.sub_microbatch)


class _Action:
    """One action of the rank's flat program in the runtime's terms."""

    __slots__ = ("kind", "pass_", "module", "chunk", "sub_microbatch", "transfer", "strategy")

    def __init__(self, a):
        compute = a.op in PASSES
        self.kind = ("forward" if a.op == "forward" else "backward") if compute else a.op
        self.pass_ = a.op if compute else None
        self.module, self.chunk, self.sub_microbatch = a.stage.module_id, a.stage.chunk, a.stage.sub_microbatch
        self.transfer, self.strategy = a.transfer, a.strategy


class _PlanView:
    """A plan's parts converted to Python lists once (each attribute access of a bound Plan
    converts the whole vector), and the rank's flat program (flatten(plan, model))."""

    def __init__(self, plan, rank, spec):
        self.plan = plan
        self.rank_count = plan.rank_count
        self.partition = plan.partition
        self.sub_microbatches = plan.sub_microbatches
        self.transfers = plan.transfers
        self.actions = [_Action(a) for a in flatten(plan, spec).programs[rank].actions]


class _PlanIndex:
    """What a rank needs to know about a plan's transfers, computed once per plan."""

    def __init__(self, plan, rank):
        self.forward_in = {}  # (consumer key, producer key) -> transfer id
        self.grad_in = defaultdict(list)  # key of the stage whose output gradient arrives -> transfer ids
        self.owner = {}  # (module, chunk) -> rank
        for m, placement in enumerate(plan.partition.modules):
            for c, ch in enumerate(placement.chunks):
                self.owner[(m, c)] = ch.rank
        self.chunks = [len(p.chunks) for p in plan.partition.modules]
        self.by_microbatch = defaultdict(list)  # (module, microbatch) -> sub-microbatch ids
        for s, smb in enumerate(plan.sub_microbatches):
            self.by_microbatch[(smb.module, smb.microbatch)].append(s)
        for t, tr in enumerate(plan.transfers):
            if tr.to_rank != rank:
                continue
            if tr.producer.pass_ == "forward":
                self.forward_in[(_key(tr.consumer), _key(tr.producer))] = t
            else:
                self.grad_in[_key(tr.consumer)].append(t)


class PipelineRuntime:
    """Runs one rank's program of each plan it is given.

    model: the user's model with stage(module, first_layer, layer_count) -> nn.Module (called
    as stage(inputs, sub_microbatch): inputs is None for the first chunk of a module nobody
    feeds, a tensor for a later chunk, and for the first chunk of a fed module, per item of the
    sub-microbatch, the list of the feeder items of the same sample in (sample, item) order;
    it returns the chunk's output rows, or a scalar loss for the module's last chunk when the
    module feeds nobody) and output_shape(module, chunk, sub_microbatch, partition) ->
    (rows of each item, width). spec: the pipeweaver ModelSpec the plans were made for.
    store: a torch.distributed Store shared by the ranks (failure notices); timeout: seconds a
    wait may last; dtype and device of the messages: those of the model's parameters unless given.
    """

    def __init__(self, model, spec, *, rank=None, store=None, timeout=60.0, dtype=None, device=None, group=None):
        first = next(iter(model.parameters()))
        self.model, self.spec, self.store, self.timeout = model, spec, store, float(timeout)
        self.dtype = dtype if dtype is not None else first.dtype  # of every message
        self.rank = dist.get_rank(group) if rank is None else rank
        self.group = group
        self.device = device if device is not None else first.device
        self.stages = {}
        self.timings = []
        self._indices = {}
        self._failure_checked = 0.0
        self._waiter = None
        self._waited = {}  # id(work) -> (work, its done event); cleared after every step
        self._barriers = 0  # barriers passed (each has its own store key)

    # ---- public -------------------------------------------------------------------------------

    def run_step(self, plan, record_timings=False, barrier=True):
        """Runs this rank's flat program of `plan` (forward and backward of one step; gradients
        are accumulated into the parameters' .grad). With record_timings, appends a
        pipeweaver.StageTiming per compute action to self.timings (latency_samples(plan,
        timings) turns them into calibration samples). A timing carries the memory strategy the
        plan named, although the runtime keeps every activation (it neither recomputes nor
        offloads): it is what a stage so planned costs on this runtime. Returns the loss
        computed on this rank (0.0 where no loss stage runs). With `barrier` (and a store), returns only once every rank
        has finished the step, so a rank whose own work is done still learns of a failure.
        Raises ExecutionError naming the failed rank on any failure."""
        if plan.rank_count <= self.rank:
            raise _error(f"the plan has {plan.rank_count} ranks", f"rank {self.rank}", "a plan with a program for this rank")
        try:
            loss = self._run(plan, record_timings)
            if barrier:
                self.barrier(plan.rank_count)
            return loss
        except ExecutionError as e:
            self._publish(str(e) if getattr(e, "failed_rank", None) is not None else f"rank {self.rank}: {e}")
            raise
        except Exception as e:  # a stage raised: tell everyone which rank failed
            self._publish(f"rank {self.rank}: {type(e).__name__}: {e}")
            err = _error(f"{type(e).__name__}: {e}", f"rank {self.rank}", "every stage to succeed")
            err.failed_rank = self.rank
            raise err from e

    def stage_module(self, plan, module, chunk):
        """The stage module of a chunk of the plan's partition (made once per layer range)."""
        ch = plan.partition.modules[module].chunks[chunk]
        key = (module, ch.first_layer, ch.layer_count)
        if key not in self.stages:
            self.stages[key] = self.model.stage(module, ch.first_layer, ch.layer_count)
        return self.stages[key]

    # ---- the walk -------------------------------------------------------------------------------

    def _index(self, plan):
        ix = self._indices.get(id(plan))
        if ix is None or ix[0] is not plan:
            view = _PlanView(plan, self.rank, self.spec)
            ix = (plan, view, _PlanIndex(view, self.rank))
            self._indices = {id(plan): ix}
        return ix[1], ix[2]

    def _run(self, plan, record):
        plan, ix = self._index(plan)
        st = _StepState()
        actions = plan.actions
        i = 0
        while i < len(actions):
            a = actions[i]
            if a.kind in ("send", "recv"):
                j = i
                while j < len(actions) and actions[j].kind in ("send", "recv"):
                    j += 1
                self._post_group(plan, ix, st, actions[i:j])
                i = j
                continue
            if a.kind == "wait":
                self._wait_transfer(plan, st, a.transfer)
            elif a.kind == "forward":
                self._timed(record, i, a, lambda: self._forward(plan, ix, st, a))
            else:
                self._timed(record, i, a, lambda: self._backward(plan, ix, st, a))
            i += 1
        for t, works in st.send_works:
            self._wait_works(works, f"send of transfer {t} to rank {plan.transfers[t].to_rank}", plan.transfers[t].to_rank)
        self._waited = {}
        return st.loss

    def _timed(self, record, i, a, fn):
        if not record:
            return fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter_ns()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings.append(StageTiming(rank=self.rank, action=i, module=a.module, chunk=a.chunk, sub_microbatch=a.sub_microbatch,
                                        pass_=a.pass_, duration=time.perf_counter_ns() - t0, strategy=a.strategy))

    # ---- transfers ------------------------------------------------------------------------------

    def _shape(self, plan, key):
        m, c, s = key
        rows, width = self.model.output_shape(m, c, plan.sub_microbatches[s], plan.partition)
        return (sum(rows), width)

    def _post_group(self, plan, ix, st, group):
        ops, ids = [], []
        for a in group:
            tr = plan.transfers[a.transfer]
            if a.kind == "send":
                tensor = self._payload(st, tr)
                st.sent[a.transfer] = tensor  # kept alive until the step ends
                ops.append(dist.P2POp(dist.isend, tensor, tr.to_rank, self.group))
            else:
                out_key = _key(tr.producer) if tr.producer.pass_ == "forward" else _key(tr.consumer)
                buf = torch.empty(self._shape(plan, out_key), dtype=self.dtype, device=self.device)
                st.received[a.transfer] = buf
                ops.append(dist.P2POp(dist.irecv, buf, tr.from_rank, self.group))
            ids.append(a)
        works = dist.batch_isend_irecv(ops)
        # gloo gives one work per operation: a Wait waits for its own transfer only. A backend
        # that coalesces the group into one work (nccl) completes the group as a whole.
        per_op = len(works) == len(ops)
        for i, a in enumerate(ids):
            mine = [works[i]] if per_op else works
            if a.kind == "send":
                st.send_works.append((a.transfer, mine))
            else:
                st.recv_works[a.transfer] = mine

    def _payload(self, st, tr):
        if tr.producer.pass_ == "forward":
            out = st.outputs.get(_key(tr.producer))
            if out is None:
                raise _error(f"transfer from {_key(tr.producer)} sent before its forward ran", f"rank {self.rank}")
            return out[0].detach().contiguous()
        g = st.grad_out.pop((_key(tr.producer), _key(tr.consumer)), None)
        if g is None:
            raise _error(f"gradient for {_key(tr.consumer)} sent before its backward ran", f"rank {self.rank}")
        return g.contiguous()

    def _wait_transfer(self, plan, st, t):
        works = st.recv_works.get(t)
        if works is None:
            raise _error(f"Wait of transfer {t} before its Recv", f"rank {self.rank}", "a Recv earlier in the list")
        if t not in st.waited:
            self._wait_works(works, f"transfer {t} from rank {plan.transfers[t].from_rank}", plan.transfers[t].from_rank)
            st.waited.add(t)

    def _wait_works(self, works, what, peer):
        # A gloo work completes only inside wait() (is_completed() stays False until then), and a
        # gloo wait with a timeout closes the connection when it expires: so a helper thread
        # blocks in wait() (which releases the GIL) while this thread watches for failure
        # notices and the timeout.
        if self.device.type == "cuda":
            # nccl: wait() only makes the current stream wait (the CPU goes on); a peer that
            # never sends is caught by nccl's own timeout, not by this loop.
            for w in works:
                if id(w) not in self._waited:
                    self._waited[id(w)] = (w, None)
                    w.wait()
            return
        # A gloo work's wait() must run once: a second call blocks for good.
        if self._waiter is None:
            self._waiter = _Waiter()
        events = []
        for w in works:
            if id(w) not in self._waited:
                self._waited[id(w)] = (w, self._waiter.submit(w))
            events.append(self._waited[id(w)][1])
        deadline = time.monotonic() + self.timeout
        for done in events:
            while not done.wait(0.01):
                self._check_failure()
                if time.monotonic() > deadline:
                    msg = f"no progress on {what} within {self.timeout:g} s"
                    raise _error(msg, f"rank {self.rank}", f"rank {peer} to take part")
            if done.error is not None:
                raise done.error

    def barrier(self, world):
        """Returns once all `world` ranks have called it as often (through the store), raising
        ExecutionError when a rank has failed meanwhile or after `timeout`."""
        if self.store is None:
            return
        self._barriers += 1
        key = f"pipeweaver/barrier/{self._barriers}"
        self.store.add(key, 1)
        deadline = time.monotonic() + self.timeout
        while int(self.store.add(key, 0)) < world:
            self._check_failure(force=True)
            if time.monotonic() > deadline:
                raise _error(f"not every rank reached barrier {self._barriers} within {self.timeout:g} s", f"rank {self.rank}",
                             f"{world} ranks at the barrier")
            time.sleep(0.001)

    def _check_failure(self, force=False):
        if self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._failure_checked < 0.05:
            return
        self._failure_checked = now
        if int(self.store.add(FAILURES_KEY, 0)) > 0:
            notice = self.store.get(FAILED_KEY).decode()
            e = _error(f"stopped: {notice}", f"rank {self.rank}", "every rank to succeed")
            e.failed_rank = int(notice.split(":")[0].split()[1]) if notice.startswith("rank ") else None
            raise e

    def _publish(self, notice):
        if self.store is None:
            return
        try:
            if int(self.store.add(FAILURES_KEY, 1)) == 1:  # the first failure names the rank
                self.store.set(FAILED_KEY, notice)
        except Exception:  # the store may be gone when the master rank has exited
            pass

    # ---- compute --------------------------------------------------------------------------------

    def _input_of(self, plan, ix, st, key):
        """The stage's input and its leaves {producer key: leaf tensor}."""
        m, c, s = key
        if c > 0:
            src = (m, c - 1, s)
            leaf = self._source(plan, ix, st, key, src, required=True).detach().requires_grad_()
            return leaf, {src: leaf}
        feeders = self.spec.feeders(m)
        if not feeders:
            return None, {}
        smb = plan.sub_microbatches[s]
        samples = [ref[0] for ref in smb.items]
        pieces = {sample: [] for sample in samples}
        leaves = {}
        for f in feeders:
            last = ix.chunks[f] - 1
            for e in ix.by_microbatch[(f, smb.microbatch)]:
                fsmb = plan.sub_microbatches[e]
                wanted = [k for k, ref in enumerate(fsmb.items) if ref[0] in pieces]
                if not wanted:
                    continue
                src = (f, last, e)
                leaf = self._source(plan, ix, st, key, src, required=True).detach().requires_grad_()
                leaves[src] = leaf
                rows, _ = self.model.output_shape(f, last, fsmb, plan.partition)
                parts = torch.split(leaf, rows)
                for k in wanted:
                    pieces[fsmb.items[k][0]].append((fsmb.items[k], parts[k]))
        gathered = [[p for _, p in sorted(pieces[sample], key=lambda x: x[0])] for sample in samples]
        return gathered, leaves

    def _source(self, plan, ix, st, key, src, required):
        if ix.owner[src[:2]] == self.rank:
            out = st.outputs.get(src)
            if out is None:
                raise _error(f"stage {key} needs {src}, which has not run on this rank", f"rank {self.rank}")
            return out[0]
        t = ix.forward_in.get((key, src))
        if t is None or t not in st.received:
            raise _error(f"stage {key} needs {src} from rank {ix.owner[src[:2]]}, not received", f"rank {self.rank}",
                         "a Recv and Wait of the transfer before the Forward")
        if t not in st.waited:
            self._wait_transfer(plan, st, t)
        return st.received[t]

    def _forward(self, plan, ix, st, a):
        key = (a.module, a.chunk, a.sub_microbatch)
        stage = self.stage_module(plan, a.module, a.chunk)
        inputs, leaves = self._input_of(plan, ix, st, key)
        with torch.enable_grad():
            y = stage(inputs, plan.sub_microbatches[a.sub_microbatch])
        if y.dim() == 0:
            st.loss += float(y.detach())
        st.outputs[key] = (y, leaves)

    def _output_grad(self, plan, ix, st, key, y):
        if y.dim() == 0:
            return None
        grads = st.grad_local.pop(key, [])
        for t in ix.grad_in.get(key, []):
            self._wait_transfer(plan, st, t)
            grads.append(st.received[t])
        if not grads:
            return torch.zeros_like(y)
        g = grads[0]
        for x in grads[1:]:
            g = g + x
        return g

    def _backward(self, plan, ix, st, a):
        key = (a.module, a.chunk, a.sub_microbatch)
        if key not in st.outputs:
            raise _error(f"Backward of {key} before its Forward", f"rank {self.rank}")
        y, leaves = st.outputs[key]
        if key not in st.out_grad:
            st.out_grad[key] = self._output_grad(plan, ix, st, key, y)
        g = st.out_grad[key]
        params = [p for p in self.stage_module(plan, a.module, a.chunk).parameters() if p.requires_grad]
        srcs = list(leaves)
        if a.pass_ == "backward_weight":
            self._accumulate(params, torch.autograd.grad(y, params, g, allow_unused=True))
        else:
            targets = [leaves[s] for s in srcs] + (params if a.pass_ == "backward" else [])
            grads = torch.autograd.grad(y, targets, g, retain_graph=a.pass_ == "backward_input", allow_unused=True) if targets else []
            for s, gs in zip(srcs, grads[: len(srcs)]):
                gs = torch.zeros_like(leaves[s]) if gs is None else gs
                if ix.owner[s[:2]] == self.rank:
                    st.grad_local.setdefault(s, []).append(gs)
                else:
                    st.grad_out[(key, s)] = gs
            self._accumulate(params, grads[len(srcs):])
        if a.pass_ != "backward_input":  # the stage is done: free its graph and gradient
            del st.outputs[key]
            st.out_grad.pop(key, None)

    @staticmethod
    def _accumulate(params, grads):
        for p, g in zip(params, grads):
            if g is None:
                continue
            p.grad = g.detach().clone() if p.grad is None else p.grad + g


class _Done(threading.Event):
    error = None


class _Waiter:
    """A daemon thread that blocks in Work.wait() for the works handed to it, in order."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True, name="pipeweaver-waiter").start()

    def submit(self, work):
        done = _Done()
        self._queue.put((work, done))
        return done

    def _run(self):
        while True:
            work, done = self._queue.get()
            try:
                work.wait()
            except Exception as e:  # reported by the thread that waits on `done`
                done.error = e
            done.set()


class _StepState:
    def __init__(self):
        self.outputs = {}  # key -> (output, {producer key: leaf})
        self.grad_local = {}  # key -> gradient contributions made on this rank
        self.grad_out = {}  # (producing stage key, receiving stage key) -> gradient to send
        self.out_grad = {}  # key -> summed output gradient (kept between split backward parts)
        self.received = {}  # transfer id -> buffer
        self.recv_works = {}
        self.waited = set()
        self.sent = {}
        self.send_works = []
        self.loss = 0.0


# ---- processes ---------------------------------------------------------------------------------


def init_process_group(rank, world_size, port, backend="gloo", timeout=60.0, host="127.0.0.1"):
    """Creates the ranks' shared TCPStore and the default process group; returns the store
    (give it to PipelineRuntime for failure notices)."""
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    store = dist.TCPStore(host, port, world_size, rank == 0, timeout=datetime.timedelta(seconds=timeout))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout))
    if backend == "nccl":
        dist.barrier()  # nccl: the first operation of a group must involve every rank
    return store


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world_size, port, backend, timeout, args, result_path):
    import os
    import pickle
    import traceback

    torch.set_num_threads(1)
    code, store = 0, None
    try:
        store = init_process_group(rank, world_size, port, backend, timeout)
        out = ("ok", fn(rank, world_size, store, *args))
    except BaseException as e:  # reported to the parent, which names the rank
        code = 1
        failed = getattr(e, "failed_rank", None)
        out = ("error", f"{type(e).__name__}: {e}", failed, traceback.format_exc())
    with open(result_path, "wb") as f:
        pickle.dump(out, f)
    # Leave together: a rank that exits closes its connections (and rank 0 the store) under
    # peers that may still be reading a failure notice.
    if store is not None:
        try:
            store.add("pipeweaver/exited", 1)
            deadline = time.monotonic() + timeout
            while int(store.add("pipeweaver/exited", 0)) < world_size and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:  # the store is gone: nobody is left to wait for
            pass
    # Skip interpreter teardown: a peer that failed may leave gloo operations pending forever.
    os._exit(code)


def run_ranks(fn, world_size, args=(), *, backend="gloo", timeout=60.0):
    """Runs fn(rank, world_size, store, *args) in `world_size` fresh processes (spawned, one
    process group) and returns their results in rank order. When any rank fails, waits for every
    process (killing those still alive `timeout` seconds after the first failure) and raises
    ExecutionError naming each failed rank and what it reported."""
    import os
    import pickle
    import tempfile

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"rank{r}.pkl") for r in range(world_size)]
        procs = [ctx.Process(target=_rank_main, args=(fn, r, world_size, port, backend, timeout, args, paths[r]))
                 for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = None
        while any(p.is_alive() for p in procs):
            if deadline is None and any(p.exitcode not in (None, 0) for p in procs):
                deadline = time.monotonic() + timeout
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.02)
        killed = []
        for r, p in enumerate(procs):
            if p.is_alive():
                p.kill()
                killed.append(r)
            p.join()
        results, errors = [], []
        for r, path in enumerate(paths):
            if not os.path.exists(path):
                errors.append(f"rank {r}: " + ("killed after the timeout" if r in killed else f"exited with code {procs[r].exitcode}"))
                results.append(None)
                continue
            with open(path, "rb") as f:
                out = pickle.load(f)
            if out[0] == "ok":
                results.append(out[1])
            else:
                errors.append(f"rank {r}: {out[1]}")
                results.append(None)
        if errors:
            e = _error("; ".join(errors), "run_ranks", "every rank to succeed")
            e.rank_errors = errors
            e.pids = [p.pid for p in procs]
            raise e
        return results
