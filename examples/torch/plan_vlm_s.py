"""Plans one step of vlm-s from Python and prints each rank's program (a newcomer's first script).

    PYTHONPATH=build/test/python /usr/bin/python3 examples/torch/plan_vlm_s.py
"""
import pathlib

import pipeweaver as pw

root = pathlib.Path(__file__).resolve().parents[1] / "workloads"
model = pw.read_model(root / "models" / "vlm-s.json")
setup = pw.read_setup(root / "setups" / "h800-tp4-pp4.json", model)
dataset = pw.read_dataset(root / "datasets" / "vlm-web-mix.json", model)
batch = pw.sample_step(model, dataset, setup, seed=0, step=0)

result = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=20).plan(batch)
print(f"plan {result.source}: step {result.step_time / 1e6:.2f} ms, bound {result.lower_bound / 1e6:.2f} ms")
for rank in range(result.plan.rank_count):
    print(f"rank {rank}:")
    for action in result.plan.program(rank):
        print("   ", action)
