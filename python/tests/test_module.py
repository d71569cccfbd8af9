"""The module's public functions, each checked against an independent truth: the C++ tool's files
and rules, round trips, closed forms on small cases, invariants of plans and emulations."""
import json
import os
import pathlib
import threading
import time

import pytest

import pipeweaver as pw

ROOT = pathlib.Path(os.environ.get("PIPEWEAVER_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
W = ROOT / "examples" / "workloads"
T = ROOT / "examples" / "torch"


@pytest.fixture(scope="module")
def tiny():
    model = pw.read_model(W / "models" / "tiny-vlm.json")
    setup = pw.read_setup(W / "setups" / "cpu-pp4.json", model)
    return model, setup


@pytest.fixture(scope="module")
def torch_vlm():
    model = pw.read_model(T / "torch-vlm.json")
    setup = pw.read_setup(T / "torch-cpu-pp4.json", model)
    dataset = pw.read_dataset(T / "torch-vlm-data.json", model)
    return model, setup, dataset


def small_batch(model, setup):
    s = [pw.Sample(text=10, items={"image": [16, 8]}), pw.Sample(text=20), pw.Sample(text=12, items=[("image", [12])])]
    return pw.make_batch(model, setup, [s[:2], s[2:]])


def test_version_and_interpreter():
    import sys

    assert pw.__version__.count(".") == 2
    assert pw.built_for_python == "%d.%d.%d" % sys.version_info[:3]


def test_readers_files_and_dicts_agree(tiny):
    model, setup = tiny
    text = json.loads((W / "models" / "tiny-vlm.json").read_text())
    from_dict = pw.read_model(text)
    assert [m.name for m in from_dict.modules] == ["vit", "llm"]
    assert from_dict.modules[0].hidden == 64 and from_dict.modules[1].vocab == 512
    assert from_dict.modules[0].feeds == 1 and from_dict.modules[1].feeds is None
    assert model.find("llm") == 1 and model.find("nope") is None and model.backbone == 1 and model.feeders(1) == [0]
    assert (model.modules[0].role, model.modules[0].ffn, model.modules[0].attention) == ("encoder", "gelu", "bidirectional")
    assert setup.pipeline_stages == 4 and setup.microbatches_per_step == 8
    assert setup.microbatch_module == "llm" and setup.microbatch_max_tokens == 256
    assert setup.memory_capacity == 1 << 30  # memory_gib 1, reserved 0
    s2 = pw.read_setup(json.loads((W / "setups" / "cpu-pp4.json").read_text()))
    assert s2.name == setup.name and s2.tensor_parallel == 1 and s2.data_parallel == 1
    d = pw.read_dataset(json.loads((W / "datasets" / "vlm-captions.json").read_text()))
    assert d.sources == ["caption-pairs"] and d.name == "vlm-captions" and d.description


def test_errors_are_mapped_with_their_fields(tiny, tmp_path):
    model, setup = tiny
    bad = json.loads((W / "models" / "tiny-vlm.json").read_text())
    bad["modules"][0]["layers"] = 0
    with pytest.raises(pw.InputError) as e:
        pw.read_model(bad)
    assert isinstance(e.value, pw.Error) and e.value.kind == "input error"
    assert e.value.path == "/modules/0/layers" and e.value.file == "<model dict>" and e.value.expected
    assert str(e.value).startswith("<model dict>: /modules/0/layers: ")
    with pytest.raises(pw.InputError):
        pw.read_model(tmp_path / "missing.json")
    with pytest.raises(pw.InputError):
        pw.read_model(42)
    # A setup whose budget names a module the model lacks: refused as by the C++ tool.
    bad_setup = json.loads((W / "setups" / "cpu-pp4.json").read_text())
    bad_setup["microbatch"]["module"] = "nope"
    with pytest.raises(pw.InputError, match="nope"):
        pw.read_setup(bad_setup, model)
    # Every kind has its own class under Error.
    for cls in (pw.InputError, pw.InfeasibleError, pw.InvalidPlanError, pw.ExecutionError, pw.CancelledError):
        assert issubclass(cls, pw.Error) and issubclass(pw.Error, RuntimeError)


def test_batches_checked_as_in_cpp(tiny):
    model, setup = tiny
    b = small_batch(model, setup)
    assert len(b) == 2 and b.sample_count == 3 and b.truncated_samples == 0
    assert b.microbatches[0][0] == pw.Sample(text=10, items={"image": [16, 8]})
    assert b.microbatches[0][0].items == {"image": [16, 8]} and b.microbatches[0][0].tokens_of("image") == [16, 8]
    # A modality no module consumes, and an empty sample, are refused naming microbatch and sample.
    with pytest.raises(pw.InputError, match="/microbatches/0/1/audio"):
        pw.make_batch(model, setup, [[pw.Sample(text=4), pw.Sample(text=4, items={"audio": [3]})]])
    with pytest.raises(pw.InputError, match="/microbatches/1/0"):
        pw.make_batch(model, setup, [[pw.Sample(text=4)], [pw.Sample()]])
    pw.check_batch(model, setup, b)
    pw.check_compatible(model, setup)
    # pack(): samples in order, microbatches under the token budget (256 backbone tokens),
    # each sample's backbone tokens = text + image tokens / 4 (the 2x2 merge).
    samples = [pw.Sample(text=100, items={"image": [64]}) for _ in range(5)]
    packed = pw.pack(model, setup, samples)
    assert [len(mb) for mb in packed.microbatches] == [2, 2, 1]  # 116 tokens each: two fit in 256


def test_sample_step_is_deterministic_and_json_round_trips(torch_vlm, tmp_path):
    model, setup, dataset = torch_vlm
    a = pw.sample_step(model, dataset, setup, 7, 3)
    b = pw.sample_step(model, dataset, setup, 7, 3)
    c = pw.sample_step(model, dataset, setup, 7, 4)
    assert len(a) == setup.microbatches_per_step
    assert a.microbatches == b.microbatches and a.microbatches != c.microbatches
    pw.write_batch(tmp_path / "b.json", a)
    assert pw.read_batch(tmp_path / "b.json").microbatches == a.microbatches
    assert pw.read_batch(pw.batch_to_json(a)).microbatches == a.microbatches


def check_plan_invariants(plan, model, setup):
    """Every stage of every sub-microbatch appears once per pass on its chunk's rank."""
    seen = set()
    for r, actions in enumerate(plan.ranks):
        for a in actions:
            if a.kind in ("forward", "backward"):
                assert plan.partition.modules[a.module].chunks[a.chunk].rank == r
                key = (a.kind, a.pass_, a.module, a.chunk, a.sub_microbatch)
                assert key not in seen
                seen.add(key)
            else:
                t = plan.transfers[a.transfer]
                assert r == (t.from_rank if a.kind == "send" else t.to_rank)
    forwards = sum(1 for k in seen if k[0] == "forward")
    expected = sum(len(plan.partition.modules[s.module].chunks) for s in plan.sub_microbatches)
    assert forwards == expected
    assert plan.rank_count == setup.pipeline_stages and plan.model == model.name and plan.setup == setup.name


def test_planner_plans_emulates_and_exports(torch_vlm, tmp_path):
    model, setup, dataset = torch_vlm
    planner = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=10)
    assert planner.placement_ready and planner.partition.ranks == 4
    batch = pw.sample_step(model, dataset, setup, 0, 0)
    r = planner.plan(batch, iterations=10)
    again = planner.plan(batch, iterations=10)
    assert r.plan == again.plan  # an iteration budget alone is reproducible
    check_plan_invariants(r.plan, model, setup)
    pw.validate(r.plan, model)
    pw.validate(r.plan, model, setup)
    em = pw.emulate(r.plan, model, setup, timeline=True)
    assert em.step_time == r.step_time  # the planner's figure is the analytic emulation's
    assert r.lower_bound <= r.step_time and pw.lower_bound(r.plan, model, setup).value <= em.step_time
    assert all(rs.busy + rs.idle == em.step_time for rs in em.ranks)
    assert em.peak_memory == max(pw.peak_memory_by_rank(r.plan, model, setup)) and em.fits_memory
    computes = [e for e in em.timeline if e.kind == "compute"]
    assert len(computes) == sum(rs.compute_actions for rs in em.ranks)
    assert max(e.end for e in em.timeline) == em.step_time
    trace = json.loads(pw.chrome_trace(r.plan, model, em))
    assert "traceEvents" in trace
    assert pw.svg_timeline(r.plan, model, em).startswith("<svg") or "<svg" in pw.svg_timeline(r.plan, model, em)[:200]
    pw.write_chrome_trace(tmp_path / "t.json", r.plan, model, em)
    pw.write_svg_timeline(tmp_path / "t.svg", r.plan, model, em)
    assert (tmp_path / "t.json").stat().st_size > 0 and (tmp_path / "t.svg").stat().st_size > 0
    # JSON round trips: file, dict and text.
    pw.write_plan(tmp_path / "p.json", r.plan)
    assert pw.read_plan(tmp_path / "p.json") == r.plan
    assert pw.read_plan(pw.plan_to_json(r.plan)) == r.plan
    assert pw.read_plan(json.dumps(pw.plan_to_json(r.plan))) == r.plan
    # fallback() is the best baseline: its time is the smallest of baseline_plans().
    fb = planner.fallback(batch)
    bases = dict(planner.baseline_plans(batch))
    assert set(bases) == set(planner.baselines) and fb.source in bases
    assert fb.step_time == min(b.step_time for b in bases.values())
    assert r.step_time <= fb.step_time
    for name, b in bases.items():
        pw.validate(b.plan, model)
        assert pw.emulate(b.plan, model, setup).step_time == b.step_time
    # program(rank) is the rank's list.
    assert [repr(a) for a in r.plan.program(1)] == [repr(a) for a in r.plan.ranks[1]]
    with pytest.raises(pw.InputError):
        r.plan.program(4)


def test_invalid_plan_names_rank_and_action(tiny, tmp_path):
    model, setup = tiny
    planner = pw.Planner(model, setup, budget=0, iterations=4)
    plan = planner.fallback(small_batch(model, setup)).plan
    doc = pw.plan_to_json(plan)
    # Drop the first Send of some rank: its Recv has no match.
    for r, actions in enumerate(doc["ranks"]):
        idx = next((i for i, a in enumerate(actions) if a.get("op") == "send" or a.get("kind") == "send"), None)
        if idx is not None:
            del actions[idx]
            break
    else:
        pytest.skip("no transfer in the plan")
    broken = pw.read_plan(doc)
    with pytest.raises(pw.InvalidPlanError) as e:
        pw.validate(broken, model)
    assert "rank" in str(e.value)


def test_cost_models_table_python_and_calibration(torch_vlm):
    model, setup, dataset = torch_vlm
    analytic = pw.AnalyticCostModel(model, setup)
    stage = pw.StageSpec(module=1, chunk=0, rank=0, pass_="forward", first_layer=0, layer_count=2)
    smb = pw.SubMicrobatch(module=1, microbatch=0, item_tokens=[40, 24])
    t = analytic.latency(stage, smb)
    assert t > 0 and analytic.output_bytes(stage, smb) > 0 and analytic.activation_bytes(stage, smb) > 0
    # transfer_time: latency + bytes / bandwidth (50 us + 1 GB/s = 1 byte/ns).
    assert analytic.transfer_time(1000) == 50_000 + 1000
    # The table model reproduces a linear per-layer latency it was given (T = tokens).
    samples = []
    for m in (0, 1):
        for p in ("forward", "backward"):
            for kind, k in (("none", 1), ("full_recompute", 2), ("selective_recompute", 3), ("offload", 4)):
                for tokens in (16, 64):
                    samples.append(pw.TableSample(module=m, pass_=p, layers=1, tokens=tokens, sum_sq_tokens=tokens * tokens,
                                                  latency=k * 1000 * tokens, strategy=kind))
    table = pw.TableCostModel(model, setup, samples)
    smb1 = pw.SubMicrobatch(module=1, microbatch=0, item_tokens=[32])
    assert table.latency(stage, smb1) == 2 * 1000 * 32
    # A Python cost model gives the same plans as the table model it wraps (slower, same numbers).
    class Wrapped:
        def __init__(self):
            self.calls = 0

        def latency(self, st, sm, strategy):
            self.calls += 1
            return table.latency(st, sm, strategy)

        def activation_bytes(self, st, sm, strategy):
            return table.activation_bytes(st, sm, strategy)

        def output_bytes(self, st, sm):
            return table.output_bytes(st, sm)

        def transfer_time(self, nbytes):
            return table.transfer_time(nbytes)

    batch = pw.sample_step(model, dataset, setup, 0, 1)
    w = Wrapped()
    a = pw.Planner(model, setup, table, budget=0, iterations=6, partition_steps=0).plan(batch)
    b = pw.Planner(model, setup, w, budget=0, iterations=6, partition_steps=0).plan(batch)
    assert w.calls > 0 and a.plan == b.plan and a.step_time == b.step_time
    assert pw.emulate(a.plan, model, setup, w).step_time == pw.emulate(a.plan, model, setup, table).step_time
    # A cost model missing a member, or raising, is an input error naming it.
    with pytest.raises(pw.InputError, match="transfer_time"):
        pw.Planner(model, setup, object())

    class Raising(Wrapped):
        def latency(self, st, sm, strategy):
            raise ValueError("no measurement")

    with pytest.raises(pw.InputError, match="latency"):
        pw.emulate(a.plan, model, setup, Raising())
    # Calibration recovers the factor a model was scaled by (measurements = 3 x analytic).
    meas = []
    for s in a.plan.sub_microbatches:
        st = pw.StageSpec(module=s.module, chunk=0, rank=0, pass_="forward", first_layer=0, layer_count=1)
        meas.append(pw.LatencySample(st, s, 3 * analytic.latency(st, s)))
    fit = pw.calibrate(model, setup, meas)
    assert fit.rms_relative_error < 1e-3 and fit.iterations >= 1
    fitted = pw.AnalyticCostModel(model, setup, fit.options)
    st0 = pw.StageSpec(module=0, chunk=0, rank=0, pass_="forward", first_layer=0, layer_count=1)
    probe = pw.SubMicrobatch(module=0, microbatch=0, item_tokens=[16])
    want = 3 * analytic.latency(st0, probe)
    assert abs(fitted.latency(st0, probe) - want) <= 0.01 * want
    with pytest.raises(pw.InputError):
        pw.calibrate(model, setup, [])


def test_async_planner_and_gil_released(torch_vlm):
    model, setup, dataset = torch_vlm
    planner = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=10)
    batches = [pw.sample_step(model, dataset, setup, 0, k) for k in range(3)]
    expected = [planner.plan(b, iterations=10).plan for b in batches]
    ap = pw.AsyncPlanner(planner, lookahead=2)
    assert ap.submit(batches[0]) == 0 and ap.submit(batches[1]) == 1
    with pytest.raises(pw.InputError):
        ap.submit(batches[2])  # beyond the lookahead
    r0 = ap.next_when_ready()
    assert ap.submit(batches[2]) == 2
    r1 = ap.next_when_ready()
    r2 = ap.next_when_ready()
    assert [r0.plan, r1.plan, r2.plan] == expected and not r0.fallback
    assert ap.stats.submitted == 3 and ap.outstanding() == 0 and not ap.ready()
    ap.cancel()
    with pytest.raises(pw.CancelledError):
        ap.submit(batches[0])
    # The GIL is released while a plan is searched: a Python thread makes progress meanwhile
    # (with the GIL held it could not run between the call's start and its end).
    slow = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=10)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    th = threading.Thread(target=tick)
    th.start()
    try:
        time.sleep(0.05)
        t0 = time.monotonic()
        slow.plan(batches[0], budget=0.5, iterations=0)  # a 0.5 s search
        t1 = time.monotonic()
    finally:
        stop.set()
        th.join()
    assert t1 - t0 >= 0.3
    assert sum(1 for t in ticks if t0 + 0.1 < t < t1 - 0.1) > 10
    # The same through the AsyncPlanner: next_when_ready() waits with the GIL released.
    ap2 = pw.AsyncPlanner(slow, lookahead=1, search_budget=0.3)
    ap2.submit(batches[1])
    assert ap2.next_when_ready().plan.rank_count == 4


def test_flat_program_resolves_the_plan(torch_vlm, tmp_path):
    model, setup, dataset = torch_vlm
    batch = pw.sample_step(model, dataset, setup, 0, 2)
    plan = pw.Planner(model, setup, budget=0, iterations=4, partition_steps=0).plan(batch).plan
    flat = pw.flatten(plan, model)
    assert (flat.plan, flat.model, flat.setup, flat.ranks) == (plan.name, plan.model, plan.setup, plan.rank_count)
    smbs, transfers = plan.sub_microbatches, plan.transfers
    for r in range(plan.rank_count):
        ours, theirs = flat.programs[r].actions, plan.program(r)
        assert flat.programs[r].rank == r and len(ours) == len(theirs)
        for f, a in zip(ours, theirs):
            if a.kind in ("forward", "backward"):
                assert f.op == a.pass_ and (f.stage.module_id, f.stage.chunk, f.stage.sub_microbatch) == (a.module, a.chunk, a.sub_microbatch)
                assert f.stage.module == model.modules[a.module].name and f.stage.rank == r and f.transfer == -1
                smb = smbs[a.sub_microbatch]
                assert [i.tokens for i in f.stage.items] == smb.item_tokens and f.stage.tokens == sum(smb.item_tokens)
                assert [(i.sample, i.item) for i in f.stage.items] == smb.items
            else:
                t = transfers[a.transfer]
                assert f.op == a.kind and f.transfer == a.transfer and f.bytes == t.bytes
                assert f.peer == (t.to_rank if a.kind == "send" else t.from_rank)
    pw.write_flat_program(tmp_path / "flat.json", plan, model)
    assert pw.read_flat_program(tmp_path / "flat.json") == flat
    assert len(pw.flat_program_to_json(flat)["programs"]) == plan.rank_count


def test_online_calibration_from_stage_timings(torch_vlm):
    model, setup, dataset = torch_vlm
    batch = pw.sample_step(model, dataset, setup, 0, 3)
    plan = pw.Planner(model, setup, budget=0, iterations=4, partition_steps=0).plan(batch).plan
    truth = pw.AnalyticCostModel(model, setup, pw.AnalyticOptions(alpha_flops=3.0, alpha_memory=3.0))
    parts = plan.partition
    timings = []
    for r in range(plan.rank_count):
        for i, a in enumerate(plan.program(r)):
            if a.kind in ("forward", "backward"):
                ch = parts.modules[a.module].chunks[a.chunk]
                st = pw.StageSpec(module=a.module, chunk=a.chunk, rank=r, pass_=a.pass_, first_layer=ch.first_layer, layer_count=ch.layer_count)
                ns = truth.latency(st, plan.sub_microbatches[a.sub_microbatch], a.strategy)
                timings.append(pw.StageTiming(rank=r, action=i, module=a.module, chunk=a.chunk, sub_microbatch=a.sub_microbatch,
                                              pass_=a.pass_, duration=ns, strategy=a.strategy))
    samples = pw.latency_samples(plan, timings)
    assert len(samples) == len(timings) and [s.measured for s in samples] == [t.duration for t in timings]
    cal = pw.AnalyticCalibrator(model, setup, window=2)
    fitted = cal.add_step(samples)
    # Measurements are whole nanoseconds: the fit recovers alpha to their rounding.
    assert abs(cal.options.alpha_flops - 3.0) < 1e-4 * 3 and cal.samples == len(samples)
    want = pw.emulate(plan, model, setup, truth).step_time
    assert abs(pw.emulate(plan, model, setup, fitted).step_time - want) <= 1e-4 * want
    with pytest.raises(pw.InputError):
        pw.latency_samples(plan, [pw.StageTiming(rank=0, action=0, module=0, chunk=0, sub_microbatch=10**6, pass_="forward", duration=5)])
    # The table calibrator answers a measured shape with its measurement.
    base = [pw.TableSample(module=m, pass_=p, layers=1, tokens=n, sum_sq_tokens=float(n * n), latency=7 * n, strategy=k)
            for m in (0, 1) for p in ("forward", "backward", "backward_input", "backward_weight")
            for k in ("none", "full_recompute", "selective_recompute", "offload") for n in (8, 512)]
    tab = pw.TableCalibrator(model, setup, base, window=1)
    first = next(s for s in samples if s.stage.pass_ == "forward")
    s0 = pw.LatencySample(first.stage, first.sub_microbatch, first.measured)  # measured without a memory technique
    model_after = tab.add_step([s0])
    assert abs(model_after.latency(s0.stage, s0.sub_microbatch, s0.strategy) - s0.measured) <= 1
    # The planner takes the calibrated model: later plans are emulated under it.
    planner = pw.Planner(model, setup, budget=0, iterations=4, partition_steps=0)
    assert planner.plan(batch).cost_version == 0 and planner.cost_version == 0
    assert planner.update_cost(fitted) == 1 and planner.cost_version == 1
    r = planner.plan(batch)
    assert r.cost_version == 1 and r.step_time == pw.emulate(r.plan, model, setup, fitted).step_time
    with pytest.raises(pw.InputError):
        planner.update_cost(model_after)  # a table model for an analytic planner
    assert tab.skipped == 0


def test_async_next_and_planner_check(torch_vlm):
    model, setup, dataset = torch_vlm
    planner = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=10)
    batch = pw.sample_step(model, dataset, setup, 0, 5)
    planner.check(batch)
    with pytest.raises(pw.InputError, match="/microbatches/0/0"):
        planner.check(pw.read_batch({"microbatches": [[{"text": 4, "items": {"audio": [2]}}]]}))
    # next() without grace: either the search was done, or the fallback (the best baseline) is used.
    ap = pw.AsyncPlanner(planner, lookahead=1, grace=0.0, search_budget=2.0)
    ap.submit(batch)
    r = ap.next()
    st = ap.stats
    assert st.plans_ready_in_time + st.plans_after_wait + st.fallbacks == 1
    if r.fallback:
        assert st.fallbacks == 1 and r.plan == planner.fallback(batch).plan
    else:
        assert r.plan == planner.plan(batch).plan
    ap.cancel()
    # The table model's other members agree with the analytic model's memory formulas.
    samples = [pw.TableSample(module=m, pass_=p, layers=1, tokens=16, sum_sq_tokens=256.0, latency=100)
               for m in (0, 1) for p in ("forward", "backward")]
    table = pw.TableCostModel(model, setup, samples)
    analytic = pw.AnalyticCostModel(model, setup)
    st = pw.StageSpec(module=0, chunk=0, rank=0, pass_="forward", first_layer=0, layer_count=2)
    smb = pw.SubMicrobatch(module=0, microbatch=0, item_tokens=[9, 7])
    assert table.activation_bytes(st, smb) == analytic.activation_bytes(st, smb)
    assert table.output_bytes(st, smb) == analytic.output_bytes(st, smb)
    assert table.transfer_time(4096) == analytic.transfer_time(4096)
