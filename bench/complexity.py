#!/usr/bin/env python3
"""Complexity curves of the steps that grow with the input: time and peak memory vs size.

Runs the `pipeweaver` tool on generated inputs of growing size and prints one Markdown table per
curve (wall-clock and peak resident set from /usr/bin/time, plus the tool's own figures):

  * planner set-up (`plan --dataset`, setup_ms) vs microbatches per step;
  * sampling and packing (`sample`) vs samples per microbatch (the budget grows);
  * batch reading and planning (`plan --batch`) vs samples in one batch file;
  * the search's deadline (`plan --budget-ms 50`): search_ms at 4,096 microbatches.

  bench/complexity.py build/test/examples/pipeweaver [--quick] [--only=setup|sample|batch|budget ...]

The figures of bench/README.md ("Complexity of set-up, sampling and reading") come from it.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = os.path.join(ROOT, "examples", "workloads")
MODEL = os.path.join(W, "models", "tiny-vlm.json")
DATASET = os.path.join(W, "datasets", "vlm-captions.json")


def run(tool, args):
    """(seconds, peak RSS in MiB, stdout) of one run; raises on a non-zero exit."""
    cmd = ["/usr/bin/time", "-f", "%M", tool] + args
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    rss_kib = int(p.stderr.strip().splitlines()[-1])
    return wall, rss_kib / 1024.0, p.stdout


def setup_file(folder, microbatches, max_tokens=256, ranks=4):
    with open(os.path.join(W, "setups", "cpu-pp4.json")) as f:
        s = json.load(f)
    s["name"] = f"cpu-pp{ranks}-mb{microbatches}-t{max_tokens}"
    s["pipeline_stages"] = ranks
    s["microbatches_per_step"] = microbatches
    s["microbatch"]["max_tokens"] = max_tokens
    path = os.path.join(folder, s["name"] + ".json")
    with open(path, "w") as f:
        json.dump(s, f)
    return path


def batch_file(folder, samples, microbatches):
    """`samples` samples of 8 text tokens and one 16-token image, dealt over `microbatches`."""
    mbs = [[] for _ in range(microbatches)]
    for i in range(samples):
        mbs[i % microbatches].append({"text": 8, "image": [16]})
    path = os.path.join(folder, f"batch-{samples}.json")
    with open(path, "w") as f:
        json.dump({"microbatches": mbs}, f)
    return path, os.path.getsize(path)


def table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    sys.stdout.flush()


def main():
    tool = sys.argv[1]
    quick = "--quick" in sys.argv
    only = [a[len("--only="):] for a in sys.argv if a.startswith("--only=")]
    want = lambda name: not only or name in only
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for n in ([] if not want("setup") else [64, 256, 1024] if quick else [64, 256, 1024, 4096]):
            s = setup_file(folder, n)
            wall, rss, out = run(tool, ["plan", "--model", MODEL, "--setup", s, "--dataset", DATASET, "--iterations", "1",
                                        "--format", "json"])
            j = json.loads(out)
            rows.append([f"{n:,}", f"{j['setup_ms']:.0f}", f"{j['search_ms']:.0f}", f"{wall:.2f}", f"{rss:.0f}"])
        table("Planner set-up vs microbatches per step (tiny-vlm, vlm-captions, 4 ranks, --iterations 1)",
              ["microbatches", "setup_ms", "search_ms", "wall s", "peak RSS MiB"], rows)

        rows = []
        for t in ([] if not want("sample") else [2**12, 2**14, 2**16] if quick else [2**12, 2**14, 2**16, 2**18]):
            s = setup_file(folder, 8, max_tokens=t)
            wall, rss, out = run(tool, ["sample", "--model", MODEL, "--setup", s, "--dataset", DATASET, "--format", "json"])
            rows.append([f"{t:,}", f"{t // 700:,}", f"{wall:.2f}", f"{rss:.0f}"])
        table("Sampling and packing vs microbatch budget (`sample`, one step of 8 microbatches, vlm-captions)",
              ["max_tokens", "about samples per microbatch", "wall s", "peak RSS MiB"], rows)

        rows = []
        for n in ([] if not want("batch") else [1000, 10000, 100000] if quick else [1000, 10000, 100000, 300000]):
            mbs = max(4, n // 32768 + 1)  # at most 65,536 samples per microbatch (limits)
            b, size = batch_file(folder, n, mbs)
            s = setup_file(folder, mbs, max_tokens=1 << 30)
            wall, rss, out = run(tool, ["plan", "--model", MODEL, "--setup", s, "--batch", b, "--iterations", "1", "--format", "json"])
            j = json.loads(out)
            rows.append([f"{n:,}", f"{size / 2**20:.1f}", f"{j['setup_ms']:.0f}", f"{wall:.2f}", f"{rss:.0f}"])
        table("Batch reading and planning vs samples in the batch file (`plan --batch`, 4 microbatches or one per 32,768 samples, --iterations 1)",
              ["samples", "file MiB", "setup_ms", "wall s", "peak RSS MiB"], rows)

        rows = []
        for n in ([] if not want("budget") else [256] if quick else [256, 4096]):
            s = setup_file(folder, n)
            wall, rss, out = run(tool, ["plan", "--model", MODEL, "--setup", s, "--dataset", DATASET, "--budget-ms", "50",
                                        "--format", "json"])
            j = json.loads(out)
            rows.append([f"{n:,}", f"{j['search_ms']:.0f}", f"{j['setup_ms']:.0f}", f"{wall:.2f}", f"{rss:.0f}"])
        table("The search's deadline (`plan --budget-ms 50`)", ["microbatches", "search_ms", "setup_ms", "wall s", "peak RSS MiB"],
              rows)


if __name__ == "__main__":
    main()
