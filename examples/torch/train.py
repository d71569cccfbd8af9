"""Training torch_vlm through pipeweaver plans on several processes (torch.distributed, gloo).

    PYTHONPATH=build/test/python:examples/torch /usr/bin/python3 examples/torch/train.py --steps 30

The parent process samples each step's batch from the dataset file and plans it (DIP, or a
baseline with --source); every rank then runs its program of each step's plan with the
pipeline runtime (pipeweaver.torch_pipeline) and steps its optimizer on its own chunks.
The functions here are also what the Python tests run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import torch

import pipeweaver as pw
from pipeweaver import torch_pipeline as tp
from torch_vlm import TorchVLM

HERE = pathlib.Path(__file__).resolve().parent
MODEL, DATASET = HERE / "torch-vlm.json", HERE / "torch-vlm-data.json"
SETUPS = {4: HERE / "torch-cpu-pp4.json", 2: HERE / "torch-cpu-pp2.json"}


def workload(ranks=4):
    model = pw.read_model(MODEL)
    setup = pw.read_setup(SETUPS[ranks], model)
    return model, setup, pw.read_dataset(DATASET, model)


def plan_steps(steps, ranks=4, source="dip", seed=0, iterations=8, cost=None):
    """[(batch JSON, plan JSON)] of `steps` steps: the searched plan (source "dip") or a baseline's."""
    model, setup, dataset = workload(ranks)
    planner = pw.Planner(model, setup, cost, dataset=dataset, budget=0, iterations=iterations,
                         consider_baselines=source != "dip")
    out = []
    for k in range(steps):
        batch = pw.sample_step(model, dataset, setup, seed, k)
        if source == "dip":
            plan = planner.plan(batch).plan
        else:
            plan = dict(planner.baseline_plans(batch))[source].plan
        out.append((pw.batch_to_json(batch), json.dumps(pw.plan_to_json(plan))))
    return out


def _setup_rank(rank, store, ranks, timeout, dtype):
    spec = pw.read_model(MODEL)
    model = TorchVLM(spec, seed=0, dtype=dtype)
    runtime = tp.PipelineRuntime(model, spec, rank=rank, store=store, timeout=timeout, dtype=dtype)
    return spec, model, runtime


def rank_gradients(rank, world, store, plans, timeout=60.0):
    """One step per (name, batch JSON, plan JSON), from zero gradients: per name this rank's
    gradients {parameter name: tensor} and its loss."""
    spec, model, runtime = _setup_rank(rank, store, world, timeout, torch.float64)
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for name, batch_json, plan_json in plans:
        model.zero_grad(set_to_none=True)
        batch, plan = pw.read_batch(batch_json), pw.read_plan(plan_json)
        model.set_step(batch, 0)
        loss = runtime.run_step(plan)
        out[name] = ({names[id(p)]: p.grad.clone() for p in model.parameters() if p.grad is not None}, loss)
    return out


def rank_train(rank, world, store, steps, lr=3e-3, timeout=60.0, record_timings=False):
    """Trains on the given (batch JSON, plan JSON) steps; returns this rank's loss per step, its
    wall-clock seconds per step and, with record_timings, its measured stages per step as
    (rank, action, nanoseconds) (stage_timings() makes StageTimings of them)."""
    spec, model, runtime = _setup_rank(rank, store, world, timeout, torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, seconds, timings = [], [], []
    for k, (batch_json, plan_json) in enumerate(steps):
        batch, plan = pw.read_batch(batch_json), pw.read_plan(plan_json)
        model.set_step(batch, k)
        opt.zero_grad(set_to_none=True)
        runtime.timings = []
        runtime.barrier(world)  # every rank starts the step together
        t0 = time.perf_counter()
        losses.append(runtime.run_step(plan, record_timings=record_timings))
        seconds.append(time.perf_counter() - t0)
        timings.append([(t.rank, t.action, t.duration) for t in runtime.timings])  # picklable (strategy: the plan's)
        opt.step()
    return losses, seconds, timings


def stage_timings(plan, measured):
    """pipeweaver.StageTimings of one step's (rank, action, nanoseconds) measurements of `plan`."""
    out = []
    for rank, action, ns in measured:
        a = plan.program(rank)[action]
        out.append(pw.StageTiming(rank=rank, action=action, module=a.module, chunk=a.chunk, sub_microbatch=a.sub_microbatch,
                                  pass_=a.pass_, duration=ns, strategy=a.strategy))
    return out


def reference_gradients(batch_json):
    """The same step's gradients without a pipeline, in this process (float64)."""
    spec = pw.read_model(MODEL)
    model = TorchVLM(spec, seed=0, dtype=torch.float64)
    batch = pw.read_batch(batch_json)
    model.set_step(batch, 0)
    loss = model.reference_loss(batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, float(loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--source", default="dip", help="dip or a baseline's name (1f1b, gpipe, ...)")
    ap.add_argument("--ranks", type=int, default=4, choices=sorted(SETUPS))
    args = ap.parse_args()
    steps = plan_steps(args.steps, args.ranks, args.source)
    results = tp.run_ranks(rank_train, args.ranks, (steps,))
    for k in range(args.steps):
        loss = sum(r[0][k] for r in results)
        print(f"step {k:3d}  loss {loss:.4f}  {max(r[1][k] for r in results) * 1e3:.1f} ms")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
