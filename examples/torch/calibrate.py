"""Measured vs emulated step time of torch_vlm on 2 gloo processes, before and after calibration.

    PYTHONPATH=build/test/python:examples/torch /usr/bin/python3 examples/torch/calibrate.py

Runs `--warmup` + `--steps` steps of DIP plans (made with the setup's analytic model) with the
runtime measuring every stage. The first `--warmup` steps' stage timings are the calibration
data: they fit the analytic model's alpha factors (pipeweaver.calibrate) and build a table
model (pipeweaver.TableCostModel). The last `--steps` steps (not used for fitting) compare each
step's measured wall-clock time with its plan's emulated step time under each cost model.
"""
from __future__ import annotations

import argparse
import os

import pipeweaver as pw
from pipeweaver import torch_pipeline as tp
import train


def stage_of(plan, module, chunk, pass_):
    ch = plan.partition.modules[module].chunks[chunk]
    return pw.StageSpec(module=module, chunk=chunk, rank=ch.rank, pass_=pass_, first_layer=ch.first_layer, layer_count=ch.layer_count)


def measurements(plans, timings):
    """LatencySamples and TableSamples of every measured stage (seconds -> ns)."""
    latency, table = [], []
    for plan, per_rank in zip(plans, timings):
        for (module, chunk, smb_id, pass_, seconds) in per_rank:
            smb = plan.sub_microbatches[smb_id]
            ns = max(1, int(seconds * 1e9))
            stage = stage_of(plan, module, chunk, pass_)
            latency.append(pw.LatencySample(stage, smb, ns))
            tokens = smb.item_tokens
            # The runtime keeps every activation: a stage the plan marks for recomputation or
            # offload runs as a plain one, so one measurement stands for every strategy kind.
            for kind in ("none", "full_recompute", "selective_recompute", "offload"):
                table.append(pw.TableSample(module=module, pass_=pass_, layers=stage.layer_count, tokens=sum(tokens),
                                            sum_sq_tokens=float(sum(t * t for t in tokens)), latency=ns, strategy=kind))
    return latency, table


def errors(measured, emulated):
    rel = [abs(e - m) / m for m, e in zip(measured, emulated)]
    return sum(rel) / len(rel), max(rel)


def run(warmup=5, steps=10, ranks=2, seed=0):
    model, setup, _ = train.workload(ranks)
    jobs = train.plan_steps(warmup + steps, ranks, "dip", seed=seed, iterations=8)
    plans = [pw.read_plan(p) for _, p in jobs]
    results = tp.run_ranks(train.rank_train, ranks, (jobs, 3e-3, 120.0, True), timeout=300)
    measured = [int(max(r[1][k] for r in results) * 1e9) for k in range(len(jobs))]
    per_step = [[t for r in results for t in r[2][k]] for k in range(len(jobs))]
    latency, table = measurements(plans[:warmup], per_step[:warmup])
    fit = pw.calibrate(model, setup, latency)
    costs = {
        "analytic, before calibration": pw.AnalyticCostModel(model, setup),
        "analytic, calibrated": pw.AnalyticCostModel(model, setup, fit.options),
        "table of measured stages": pw.TableCostModel(model, setup, table),
    }
    rows = []
    for name, cost in costs.items():
        emulated = [pw.emulate(p, model, setup, cost).step_time for p in plans[warmup:]]
        mean, worst = errors(measured[warmup:], emulated)
        rows.append((name, sum(emulated) / len(emulated) / 1e6, mean, worst))
    return rows, sum(measured[warmup:]) / steps / 1e6, fit


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    rows, measured_ms, fit = run(args.warmup, args.steps)
    print(f"measured step time: mean {measured_ms:.2f} ms over {args.steps} steps on 2 gloo processes")
    print(f"calibration: alpha_flops {fit.options.alpha_flops:.3g}, alpha_memory {fit.options.alpha_memory:.3g}, "
          f"rms relative stage error {fit.rms_relative_error:.3f}")
    print("| cost model | mean emulated step (ms) | mean error | worst error |")
    print("| --- | --- | --- | --- |")
    for name, ms, mean, worst in rows:
        print(f"| {name} | {ms:.2f} | {mean * 100:.1f}% | {worst * 100:.1f}% |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
