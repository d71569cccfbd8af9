"""The PyTorch pipeline runtime on 4 gloo processes: gradients equal the unpipelined model's for
DIP and every baseline plan, the loss falls, and a failing rank stops every rank."""
import os
import time

import pytest

torch = pytest.importorskip("torch")

import pipeweaver as pw  # noqa: E402
from pipeweaver import torch_pipeline as tp  # noqa: E402
import train  # noqa: E402  (examples/torch)


def relative_error(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def split_backward(plan, model):
    """The plan with every backward split into its input part, in place, and its weight part,
    at the end of the rank's list (as a zero-bubble schedule defers them); validated."""
    doc = pw.plan_to_json(plan)
    for rank in doc["ranks"]:
        out, weights = [], []
        for a in rank:
            if a["op"] == "backward":
                out.append(dict(a, op="backward_input"))
                weights.append(dict(a, op="backward_weight"))
            else:
                out.append(a)
        rank[:] = out + weights
    for t in doc["transfers"]:
        for end in ("producer", "consumer"):
            if t[end]["pass"] == "backward":
                t[end]["pass"] = "backward_input"
    doc["name"] = plan.name + "-split"
    split = pw.read_plan(doc)
    pw.validate(split, model)
    return split


def test_gradients_equal_the_unpipelined_model_for_dip_and_every_baseline():
    model, setup, dataset = train.workload(4)
    planner = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=8, consider_baselines=False)
    batch = pw.sample_step(model, dataset, setup, 0, 0)
    batch_json = pw.batch_to_json(batch)
    dip = planner.plan(batch).plan
    plans = [("dip", dip)] + [(n, r.plan) for n, r in planner.baseline_plans(batch)]
    plans.append(("dip, split backward", split_backward(dip, model)))
    names = [n for n, _ in plans]
    assert names[0] == "dip" and len(names) >= 4 and len(set(names)) == len(names)
    assert any(len(p.transfers) > 0 for _, p in plans)
    import json

    jobs = [(n, batch_json, json.dumps(pw.plan_to_json(p))) for n, p in plans]
    results = tp.run_ranks(train.rank_gradients, 4, (jobs,), timeout=120)
    ref, ref_loss = train.reference_gradients(batch_json)
    for name in names:
        merged, loss = {}, 0.0
        for rank_grads, rank_loss in (r[name] for r in results):
            loss += rank_loss
            for k, g in rank_grads.items():
                assert k not in merged, f"{name}: {k} has a gradient on two ranks"
                merged[k] = g
        assert set(merged) == set(ref), name
        worst = max(relative_error(merged[k], ref[k]) for k in ref)
        assert worst <= 1e-9, f"{name}: relative gradient error {worst}"
        assert abs(loss - ref_loss) <= 1e-9 * abs(ref_loss)


def test_loss_falls_over_a_few_dozen_steps():
    steps = train.plan_steps(30, 4, "dip", iterations=4)
    results = tp.run_ranks(train.rank_train, 4, (steps,), timeout=120)
    losses = [sum(r[0][k] for r in results) for k in range(len(steps))]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, losses


class FaultyModel:
    """Rank `rank`'s third stage call raises."""

    def __init__(self, model, rank):
        self.model, self.rank, self.calls = model, rank, 0

    def stage(self, module, first, count):
        inner = self.model.stage(module, first, count)
        outer = self

        class Faulty(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def parameters(self, recurse=True):
                return inner.parameters()

            def forward(self, x, smb):
                outer.calls += 1
                if outer.calls == 3:
                    raise RuntimeError("injected fault in the third stage")
                return inner(x, smb)

        return Faulty()

    def output_shape(self, *a):
        return self.model.output_shape(*a)

    def parameters(self):
        return self.model.parameters()


def faulty_rank(rank, world, store, batch_json, plan_json, failing, timeout):
    from torch_vlm import TorchVLM

    spec = pw.read_model(train.MODEL)
    model = TorchVLM(spec, seed=0)
    used = FaultyModel(model, failing) if rank == failing else model
    runtime = tp.PipelineRuntime(used, spec, rank=rank, store=store, timeout=timeout)
    model.set_step(pw.read_batch(batch_json), 0)
    runtime.run_step(pw.read_plan(plan_json))
    return os.getpid()


def test_a_failing_rank_stops_every_rank_with_an_error_naming_it():
    (batch_json, plan_json), = train.plan_steps(1, 4, "dip", iterations=4)
    timeout = 30.0
    t0 = time.monotonic()
    with pytest.raises(pw.ExecutionError) as e:
        tp.run_ranks(faulty_rank, 4, (batch_json, plan_json, 2, timeout), timeout=timeout)
    elapsed = time.monotonic() - t0
    errors = e.value.rank_errors
    assert len(errors) == 4, errors
    for r, msg in enumerate(errors):
        assert msg.startswith(f"rank {r}: ") and "rank 2" in msg.split(": ", 1)[1], msg
    assert "injected fault in the third stage" in errors[2]
    assert elapsed < timeout, elapsed  # every rank stopped on the notice, not on the timeout
    for pid in e.value.pids:  # no process left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_measured_stages_calibrate_the_cost_models():
    import calibrate

    rows, measured_ms, analytic = calibrate.run(warmup=3, steps=3)
    before, fitted, table = (r[2] for r in rows)  # mean relative step-time errors on held-out steps
    assert analytic.samples > 0 and analytic.last_fit.iterations >= 1
    assert fitted < before and table < before, rows
