"""Measured vs emulated step time of torch_vlm on 2 gloo processes, before and after calibration.

    PYTHONPATH=build/test/python:examples/torch /usr/bin/python3 examples/torch/calibrate.py

Runs `--warmup` + `--steps` steps of DIP plans (made with the setup's analytic model), the
runtime measuring every stage. The first `--warmup` steps feed the online calibration, step by
step: their stage timings become latency samples (pipeweaver.latency_samples) that an
AnalyticCalibrator refits the alpha factors on and a TableCalibrator adds to a table whose base
is the uncalibrated analytic model. The last `--steps` steps (not used for fitting) compare each
step's measured wall-clock time with its plan's emulated step time under each cost model.
"""
from __future__ import annotations

import argparse
import os

import pipeweaver as pw
from pipeweaver import torch_pipeline as tp
import train

KINDS = ("none", "full_recompute", "selective_recompute", "offload")
PASSES = ("forward", "backward")  # the runtime measures whole backwards unless a plan splits them


def analytic_table(model, setup):
    """A table made of the analytic model's latencies (one layer, a few token counts): the base
    the measured entries replace."""
    cost = pw.AnalyticCostModel(model, setup)
    out = []
    for m, spec in enumerate(model.modules):
        for p in PASSES:
            for kind in KINDS:
                strategy = pw.MemoryStrategy(**({} if kind == "none" else {kind: 1}))
                stage = pw.StageSpec(module=m, chunk=0, rank=0, pass_=p, first_layer=0, layer_count=1)
                for tokens in (8, 32, 128):
                    smb = pw.SubMicrobatch(module=m, microbatch=0, item_tokens=[tokens])
                    out.append(pw.TableSample(module=m, pass_=p, layers=1, tokens=tokens, sum_sq_tokens=float(tokens * tokens),
                                              latency=cost.latency(stage, smb, strategy), strategy=kind))
    return out


def errors(measured, emulated):
    rel = [abs(e - m) / m for m, e in zip(measured, emulated)]
    return sum(rel) / len(rel), max(rel)


def run(warmup=5, steps=10, ranks=2, seed=0):
    model, setup, _ = train.workload(ranks)
    jobs = train.plan_steps(warmup + steps, ranks, "dip", seed=seed, iterations=8)
    plans = [pw.read_plan(p) for _, p in jobs]
    results = tp.run_ranks(train.rank_train, ranks, (jobs, 3e-3, 120.0, True), timeout=300)
    measured = [int(max(r[1][k] for r in results) * 1e9) for k in range(len(jobs))]
    analytic = pw.AnalyticCalibrator(model, setup, window=warmup)
    table = pw.TableCalibrator(model, setup, analytic_table(model, setup), window=warmup)
    for k in range(warmup):
        timings = train.stage_timings(plans[k], [t for r in results for t in r[2][k]])
        samples = pw.latency_samples(plans[k], timings)
        analytic.add_step(samples)
        table.add_step(samples)
    costs = {
        "analytic, before calibration": pw.AnalyticCostModel(model, setup),
        "analytic, calibrated (AnalyticCalibrator)": analytic.model,
        "table, calibrated (TableCalibrator)": table.model,
    }
    rows = []
    for name, cost in costs.items():
        emulated = [pw.emulate(p, model, setup, cost).step_time for p in plans[warmup:]]
        mean, worst = errors(measured[warmup:], emulated)
        rows.append((name, sum(emulated) / len(emulated) / 1e6, mean, worst))
    return rows, sum(measured[warmup:]) / steps / 1e6, analytic


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    rows, measured_ms, analytic = run(args.warmup, args.steps)
    fit = analytic.last_fit
    print(f"measured step time: mean {measured_ms:.2f} ms over {args.steps} steps on 2 gloo processes")
    print(f"calibration: alpha_flops {fit.options.alpha_flops:.3g}, alpha_memory {fit.options.alpha_memory:.3g}, "
          f"rms relative stage error {fit.rms_relative_error:.3f} over {analytic.samples} stages")
    print("| cost model | mean emulated step (ms) | mean error | worst error |")
    print("| --- | --- | --- | --- |")
    for name, ms, mean, worst in rows:
        print(f"| {name} | {ms:.2f} | {mean * 100:.1f}% | {worst * 100:.1f}% |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
