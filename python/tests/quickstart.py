import pipeweaver as pw

root = "examples/workloads"
model = pw.read_model(f"{root}/models/vlm-s.json")
setup = pw.read_setup(f"{root}/setups/h800-tp4-pp4.json", model)
dataset = pw.read_dataset(f"{root}/datasets/vlm-captions.json", model)

planner = pw.Planner(model, setup, dataset=dataset, budget=0, iterations=20)
batch = pw.sample_step(model, dataset, setup, seed=0, step=0)
result = planner.plan(batch)
print(f"{result.source}: {result.step_time / 1e6:.1f} ms (lower bound {result.lower_bound / 1e6:.1f} ms)")
for rank in range(result.plan.rank_count):
    program = result.plan.program(rank)
    print(f"rank {rank}: {len(program)} actions, first {program[:3]}")
emulation = pw.emulate(result.plan, model, setup, timeline=True)
pw.write_chrome_trace("step0.trace.json", result.plan, model, emulation)
