#!/usr/bin/python3
"""A hostile user's sweep of the `pipeweaver` command line: every input class the tool reads.

Generates inputs from the shipped workloads (schema mutations of every key of every file kind,
corrupted text and bytes, special files, extreme values, mutated plans in JSON and binary form,
out-of-range options) and runs the tool on each, one process per input, with a timeout. Meant for
a build under AddressSanitizer + UndefinedBehaviorSanitizer (the `asan` preset's tool), where a
memory error or undefined behaviour ends the process with a report.

The promise checked on every input:
  * exit status 0 (accepted) or 2 (refused): never 1 (internal error), never a signal;
  * no sanitizer report;
  * peak resident memory of the process at most --mem-gib (2 GiB);
  * a refusal is one line on stderr, printable ASCII, naming the file it blames (its base name)
    and where in it (a JSON path "/..." or "line N"), or the option it blames;
  * an accepted input prints no negative or non-finite number in its JSON output.
An input that runs past --timeout is reported apart (slow), not as a failure of the above.

Usage: cli_sweep.py --cli build/asan/examples/pipeweaver --workloads examples/workloads
                    [--out DIR] [--jobs N] [--timeout S] [--mem-gib G] [--quick]
Exit status 0 when every input kept the promise, 1 otherwise; the failures are listed with the
input kept under --out for reproduction.
"""

import argparse
import concurrent.futures
import copy
import json
import resource
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Values every leaf of a JSON file is replaced with, in turn: wrong types, zero, negatives,
# fractions, the int32 and int64 edges, numbers past the limits, 1e999 (out of double's range,
# written as text), a denormal-small value.
LEAF_VALUES = [None, "x", True, [], {}, -1, 0, 3, 3.5, 400000000, 2147483648,
               9223372036854775807, 18446744073709551616, 1e10, 1e-30, "1e999", "-1e999"]
QUICK_LEAF_VALUES = [None, "x", -1, 0, 3.5, 2147483648, 1e10, "1e999"]


class Case:
    """One input: what it is, the argument list (paths already in place), the file it mutates."""

    def __init__(self, kind, name, argv, blamed=None, option=None):
        self.kind = kind          # input class, for the table
        self.name = name          # what was done
        self.argv = argv
        self.blamed = blamed      # base name of the mutated file, which a refusal must name
        self.option = option      # the option a refusal must name, for option cases


def dump(value, path):
    """Writes JSON, turning the string sentinels "1e999"/"-1e999" into bare numeric text."""
    text = json.dumps(value, indent=1)
    text = text.replace('"1e999"', '1e999').replace('"-1e999"', '-1e999')
    with open(path, "w") as f:
        f.write(text)


def leaves(value, pointer=""):
    """Every (JSON pointer, parent, key) of a document, containers included."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = pointer + "/" + k
            out.append((p, value, k))
            out.extend(leaves(v, p))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            p = pointer + "/" + str(i)
            out.append((p, value, i))
            out.extend(leaves(v, p))
    return out


def shape(pointer):
    """A pointer with array indices above 1 folded, so that long arrays give few distinct shapes."""
    return re.sub(r"/([2-9]|[1-9][0-9]+)(?=/|$)", "/N", pointer)


def mutate_document(doc, values, max_shapes=None):
    """Yields (description, mutated document) for every leaf shape x value, and key deletions."""
    seen = set()
    for pointer, _, _ in leaves(doc):
        s = shape(pointer)
        if s in seen:
            continue
        seen.add(s)
        if max_shapes is not None and len(seen) > max_shapes:
            break
        for v in values + ["<delete>"]:
            d = copy.deepcopy(doc)
            parent, key = None, None
            for p, par, k in leaves(d):
                if p == pointer:
                    parent, key = par, k
                    break
            if v == "<delete>":
                del parent[key]  # a dict's key or a list's index alike
            else:
                parent[key] = copy.deepcopy(v)
            yield f"{pointer} = {json.dumps(v) if v != '<delete>' else 'deleted'}", d
    d = copy.deepcopy(doc)
    if isinstance(d, dict):
        d["unexpected_key"] = 1
        yield "unknown top-level key", d
        d = copy.deepcopy(doc)
        d["\x1b[31mred\x1b[0m"] = 1
        yield "key with terminal escape bytes", d


def text_mutations(path):
    """Corrupted text of a valid file: truncations, stray bytes, invalid UTF-8, a BOM, nesting."""
    with open(path, "rb") as f:
        data = f.read()
    yield "empty file", b""
    yield "truncated to half", data[: len(data) // 2]
    yield "truncated by one byte", data[:-2]
    yield "trailing garbage", data + b"}]x"
    yield "NUL byte inside", data[:10] + b"\x00" + data[10:]
    yield "invalid UTF-8 in a string", data.replace(b'"', b'"\xff\xfe', 3)
    yield "UTF-8 BOM", b"\xef\xbb\xbf" + data
    yield "nested 100,000 deep", b"[" * 100000 + b"]" * 100000
    yield "duplicate document", data + data
    yield "escape bytes in a string", data.replace(b'"', b'"\x1b[2J\x07', 3)


def special_paths(scratch):
    """Inputs that are not regular small files."""
    big = os.path.join(scratch, "big.json")
    with open(big, "wb") as f:  # 70 MB: past the 64 MiB cap on any input file
        f.truncate(70 * 1024 * 1024)
    yield "/dev/zero", "/dev/zero"
    yield "/dev/null", "/dev/null"
    yield "a directory", scratch
    yield "missing file", os.path.join(scratch, "does-not-exist.json")
    yield "70 MB of NUL bytes", big


def binary_mutations(data, count):
    """A binary plan with bytes overwritten: each of `count` evenly spaced offsets, set to 0xff
    x 4 (a negative or huge 32-bit field), 0x00 x 4 and 0x7f x 8."""
    n = len(data)
    step = max(1, n // count)
    for off in range(0, n, step):
        for fill in (b"\xff" * 4, b"\x00" * 4, b"\x7f" * 8, b"\x80" + b"\x00" * 7):
            d = bytearray(data)
            d[off:off + len(fill)] = fill[: max(0, n - off)]
            yield f"bytes at {off} = {fill[:1].hex()}x{len(fill)}", bytes(d)
    yield "truncated to 16 bytes", data[:16]
    yield "doubled", data + data


def run_case(cli, case, timeout, mem_limit):
    """Runs one case; returns (case, status, detail, seconds, peak MiB)."""
    t0 = time.monotonic()
    try:
        p = subprocess.Popen([cli] + case.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    except OSError as e:
        return case, "FAIL", f"could not start: {e}", 0.0, 0.0
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return case, "slow", f"still running after {timeout} s", time.monotonic() - t0, 0.0
    seconds = time.monotonic() - t0
    # p.communicate reaped the child: its peak RSS is the peak over this process's children,
    # and main() runs each case in a fresh worker process.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    rc = p.returncode
    text = err.decode("utf-8", errors="replace")
    if "Sanitizer" in text or "runtime error:" in text:
        first = next((l for l in text.splitlines() if "Sanitizer" in l or "runtime error:" in l), "")
        return case, "FAIL", f"sanitizer report: {first[:200]}", seconds, peak_mib
    if peak_mib > mem_limit * 1024:
        return case, "FAIL", f"peak memory {peak_mib:.0f} MiB", seconds, peak_mib
    if rc not in (0, 2):
        return case, "FAIL", f"exit status {rc}: {text.strip()[:200]}", seconds, peak_mib
    if rc == 2:
        problem = check_refusal(case, err)
        if problem:
            return case, "FAIL", problem, seconds, peak_mib
        return case, "refused", text.strip(), seconds, peak_mib
    problem = check_numbers(out)
    if problem:
        return case, "FAIL", problem, seconds, peak_mib
    return case, "accepted", "", seconds, peak_mib


def check_refusal(case, err):
    """A refusal is one printable line that names the blamed file and a place in it."""
    try:
        text = err.decode("utf-8")
    except UnicodeDecodeError:
        return "refusal is not valid UTF-8"
    lines = text.rstrip("\n").split("\n")
    if len(lines) != 1 or not lines[0]:
        return f"refusal is {len(lines)} lines: {text[:200]!r}"
    line = lines[0]
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in line):
        return f"refusal echoes control bytes: {line[:200]!r}"
    if case.option is not None:
        if case.option not in line:
            return f"refusal does not name {case.option}: {line[:200]}"
        return None
    if case.blamed is not None:
        # A check across files (a dataset's item larger than the setup's microbatch budget) may
        # blame the other file it reads, at a place in it: that is as actionable.
        named = [os.path.basename(a) for a in case.argv if "/" in a and os.path.basename(a) in line]
        if case.blamed in line:
            named = [case.blamed]
        if not named:
            return f"refusal does not name {case.blamed}: {line[:200]}"
        if not any(re.search(PLACE, line.split(n, 1)[1]) for n in named):
            return f"refusal names no place in {named[0]}: {line[:200]}"
    return None


# Where in a file: a JSON path, a text position, or the plan's or model's own coordinates; or a
# problem of the whole file (its size, its kind, its absence).
PLACE = (r"(^|[\s:(])/|line [0-9]|\b(microbatch|rank|stage|module|chunk|partition|case|layer)s?\b"
         r"|the file holds|is a directory|not a regular file|cannot open|no such file|empty")


def check_numbers(out):
    """An accepted input's JSON output has no negative and no non-finite number."""
    text = out.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text, parse_constant=lambda c: float("nan"))
    except ValueError:
        return None  # table output or several documents: nothing to check
    bad = []

    def walk(v, p):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                bad.append(f"{p} = {v}")
            elif v < 0 and not p.endswith(("error", "_change", "_delta", "difference")):
                bad.append(f"{p} = {v}")
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, p + "/" + k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, p + "/" + str(i))

    walk(doc, "")
    return f"accepted with numbers out of range: {', '.join(bad[:3])}" if bad else None


class Sweep:
    def __init__(self, args):
        self.a = args
        self.cli = os.path.abspath(args.cli)
        self.w = os.path.abspath(args.workloads)
        self.out = os.path.abspath(args.out)
        self.cases = []
        self.values = QUICK_LEAF_VALUES if args.quick else LEAF_VALUES
        self.n = 0

    def file(self, base, suffix=".json"):
        self.n += 1
        return os.path.join(self.out, f"{self.n:05d}-{base}{suffix}")

    def model(self, name="tiny-vlm"):
        return os.path.join(self.w, "models", name + ".json")

    def setup(self, name="cpu-pp4"):
        return os.path.join(self.w, "setups", name + ".json")

    def dataset(self, name="vlm-captions"):
        return os.path.join(self.w, "datasets", name + ".json")

    # The command that reads each file kind, given that file.
    def argv_for(self, kind, path, extra=()):
        m, s, d = self.model(), self.setup(), self.dataset()
        fmt = ["--format", "json"]
        if kind == "model":
            return ["inspect", "--model", path, "--setup", s] + fmt
        if kind == "setup":
            return ["sample", "--model", m, "--dataset", d, "--setup", path, "--seed", "1",
                    "--steps", "1"] + fmt
        if kind == "dataset":
            return ["sample", "--model", m, "--dataset", path, "--setup", s, "--seed", "1",
                    "--steps", "1"] + fmt
        if kind == "batch":
            return ["plan", "--model", m, "--setup", s, "--batch", path, "--iterations", "2",
                    "--threads", "1"] + fmt
        if kind == "suite":
            return ["suite", "--suite", path, "--steps", "1", "--seeds", "1", "--iterations", "1",
                    "--threads", "1"] + fmt
        if kind in ("plan_json", "plan_binary"):
            return ["emulate", "--plan", path, "--model", m, "--setup", s] + fmt
        raise ValueError(kind)

    def add_json_kind(self, kind, base_doc, base_name, max_shapes=None):
        for what, doc in mutate_document(base_doc, self.values, max_shapes):
            p = self.file(base_name)
            dump(doc, p)
            self.cases.append(Case(kind, what, self.argv_for(kind, p), os.path.basename(p)))
        src = self.file(base_name)
        dump(base_doc, src)
        for what, data in text_mutations(src):
            p = self.file(base_name)
            with open(p, "wb") as f:
                f.write(data)
            self.cases.append(Case(kind, what, self.argv_for(kind, p), os.path.basename(p)))
        scratch = os.path.join(self.out, "special")
        os.makedirs(scratch, exist_ok=True)
        for what, p in special_paths(scratch):
            self.cases.append(Case(kind, what, self.argv_for(kind, p), os.path.basename(p)))

    def base_plan(self):
        """A small valid plan of tiny-vlm in both forms, planned by the tool itself."""
        batch = self.file("batch")
        dump(self.base_batch(), batch)
        pj, pb = self.file("plan"), self.file("plan", ".bin")
        for p in (pj, pb):
            r = subprocess.run([self.cli, "plan", "--model", self.model(), "--setup", self.setup(),
                                "--batch", batch, "--iterations", "3", "--threads", "1", "--out", p],
                               capture_output=True)
            if r.returncode != 0:
                sys.exit(f"cli_sweep: cannot make the base plan: {r.stderr.decode(errors='replace')}")
        with open(pj) as f:
            doc = json.load(f)
        with open(pb, "rb") as f:
            data = f.read()
        return doc, data

    @staticmethod
    def base_batch():
        return {"microbatches": [
            [{"text": 120, "image": [256]}, {"text": 40}],
            [{"text": 200, "image": [64, 64]}],
            [{"text": 90, "image": [256, 144]}],
            [{"text": 180}]]}

    def base_suite(self):
        return {"name": "sweep", "cases": [
            {"name": "tiny", "model": self.model(), "dataset": self.dataset(),
             "setup": self.setup()}]}

    def options(self):
        """Out-of-range values of every numeric option, on fast commands."""
        m, s, d = self.model(), self.setup(), self.dataset()
        sample = ["sample", "--model", m, "--dataset", d, "--setup", s]
        plan = ["plan", "--model", m, "--setup", s, "--dataset", d, "--seed", "1", "--step", "0",
                "--threads", "1"]
        opts = [(sample, "--seed", ["--steps", "1"]), (sample, "--steps", ["--seed", "1"]),
                (plan, "--iterations", []), (plan, "--budget-ms", []), (plan, "--threads", ["--iterations", "1"]),
                (plan[:-2] + ["--iterations", "1"], "--step", []),
                (["run", "--backend", "host", "--model", m, "--setup", s, "--dataset", d, "--steps", "1"], "--time-scale", []),
                (["run", "--backend", "host", "--model", m, "--setup", s, "--dataset", d, "--time-scale", "0.001"], "--steps", [])]
        for base, opt, extra in opts:
            for v in ["-1", "0", "1e20", "18446744073709551616", "abc", "", "1.5", "nan", "-0", "0x10"]:
                argv = [a for a in base]
                if opt in argv:  # replace an option base already has
                    i = argv.index(opt)
                    del argv[i:i + 2]
                argv += extra + [opt, v, "--format", "json"]
                self.cases.append(Case("option", f"{argv[0]} {opt} {v!r}", argv, option=opt))

    def extremes(self):
        """Valid but extreme setups and inconsistent ones (tensor parallel not dividing heads,
        many ranks, many microbatches)."""
        with open(self.setup()) as f:
            setup = json.load(f)
        with open(self.setup("h800-tp4-pp4")) as f:
            big = json.load(f)
        variants = [
            ("tensor_parallel 3 with 4 heads", setup, {"tensor_parallel": 3}, "setup"),
            ("128 ranks, vlm-s", big, {"pipeline_stages": 128}, "setup-vlm-s"),
            ("1,024 ranks, vlm-s", big, {"pipeline_stages": 1024}, "setup-vlm-s"),
            ("70,000 microbatches per step", setup, {"microbatches_per_step": 70000}, "setup"),
            ("memory_gib 1e10", setup, {"device": dict(setup["device"], memory_gib=1e10)}, "setup"),
            ("bf16_tflops 1e-9", setup, {"device": dict(setup["device"], bf16_tflops=1e-9)}, "setup"),
            ("microbatch budget of 1 token", setup, {"microbatch": {"module": "llm", "max_tokens": 1}}, "setup"),
        ]
        # Many layers, so that 128 ranks can hold every module: the planner and the host backend
        # at P = 128 (their memory grows with ranks x actions, which must stay bounded).
        with open(self.model("vlm-s")) as f:
            deep = json.load(f)
        for m in deep["modules"]:
            m["layers"] = 256
        deep_model = self.file("model")
        dump(deep, deep_model)
        wide = self.file("setup")
        dump(dict(big, pipeline_stages=128), wide)
        for cmd in (["plan", "--seed", "1", "--step", "0", "--iterations", "1", "--threads", "1"],
                    ["run", "--backend", "host", "--steps", "1", "--time-scale", "0.00001"]):
            argv = cmd[:1] + ["--model", deep_model, "--setup", wide, "--dataset", self.dataset("vlm-web-mix")] + cmd[1:] + ["--format", "json"]
            self.cases.append(Case("extreme", f"128 ranks, 256-layer modules ({cmd[0]})", argv, os.path.basename(wide)))
        many = self.file("setup")
        dump(dict(setup, microbatches_per_step=4096), many)
        argv = ["plan", "--model", self.model(), "--setup", many, "--dataset", self.dataset(), "--seed", "1",
                "--step", "0", "--iterations", "1", "--threads", "1", "--format", "json"]
        self.cases.append(Case("extreme", "4,096 microbatches per step (plan)", argv, os.path.basename(many)))
        for what, base, change, how in variants:
            doc = dict(base, **change)
            p = self.file("setup")
            dump(doc, p)
            if how == "setup-vlm-s":
                argv = ["plan", "--model", self.model("vlm-s"), "--setup", p, "--dataset",
                        self.dataset("vlm-web-mix"), "--seed", "1", "--step", "0", "--iterations", "1",
                        "--threads", "1", "--format", "json"]
                self.cases.append(Case("extreme", what + " (plan)", argv, os.path.basename(p)))
                argv = ["run", "--backend", "host", "--model", self.model("vlm-s"), "--setup", p,
                        "--dataset", self.dataset("vlm-web-mix"), "--steps", "1", "--time-scale", "0.00001",
                        "--format", "json"]
                self.cases.append(Case("extreme", what + " (run --backend host)", argv, os.path.basename(p)))
            else:
                self.cases.append(Case("extreme", what, self.argv_for("setup", p), os.path.basename(p)))

    def plan_extremes(self, plan):
        """Plans that claim far more than they hold: many ranks, huge ids and counts."""
        def add(what, doc):
            p = self.file("plan")
            dump(doc, p)
            self.cases.append(Case("plan_json", what, self.argv_for("plan_json", p), os.path.basename(p)))
        for key in list(plan.keys()):
            v = plan[key]
            if isinstance(v, list) and v:
                d = copy.deepcopy(plan)
                d[key] = [copy.deepcopy(v[0]) for _ in range(6000)]
                add(f"/{key} repeated to 6,000 entries", d)

    def build(self):
        if os.path.exists(self.out):
            shutil.rmtree(self.out)
        os.makedirs(self.out)
        for kind, base in (("model", self.model()), ("setup", self.setup()), ("dataset", self.dataset())):
            with open(base) as f:
                self.add_json_kind(kind, json.load(f), kind)
        self.add_json_kind("batch", self.base_batch(), "batch")
        self.add_json_kind("suite", self.base_suite(), "suite")
        plan_doc, plan_bin = self.base_plan()
        self.add_json_kind("plan_json", plan_doc, "plan", max_shapes=None if not self.a.quick else 40)
        self.plan_extremes(plan_doc)
        for what, data in binary_mutations(plan_bin, 16 if self.a.quick else 64):
            p = self.file("plan", ".bin")
            with open(p, "wb") as f:
                f.write(data)
            self.cases.append(Case("plan_binary", what, self.argv_for("plan_binary", p), os.path.basename(p)))
        self.options()
        self.extremes()


def worker(args):
    cli, case, timeout, mem = args
    return run_case(cli, case, timeout, mem)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", required=True)
    ap.add_argument("--workloads", required=True)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "pipeweaver-cli-sweep"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--mem-gib", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="fewer values per leaf and plan shapes")
    ap.add_argument("--count", action="store_true", help="print how many inputs there are and stop")
    a = ap.parse_args()
    s = Sweep(a)
    s.build()
    if a.count:
        print(len(s.cases))
        return 0
    t0 = time.monotonic()
    results = []
    # One worker process per job, each running one child at a time, so that RUSAGE_CHILDREN's
    # peak is that of the worker's children; a fresh worker per case keeps it per case.
    with concurrent.futures.ProcessPoolExecutor(max_workers=a.jobs, max_tasks_per_child=1) as pool:
        for r in pool.map(worker, [(s.cli, c, a.timeout, a.mem_gib) for c in s.cases]):
            results.append(r)
    elapsed = time.monotonic() - t0
    table = {}
    for case, status, detail, sec, mib in results:
        row = table.setdefault(case.kind, {"refused": 0, "accepted": 0, "slow": 0, "FAIL": 0, "mib": 0.0, "sec": 0.0})
        row[status] += 1
        row["mib"] = max(row["mib"], mib)
        row["sec"] = max(row["sec"], sec)
    print(f"{len(results)} inputs, {elapsed:.0f} s, tool {s.cli}")
    print("| input class | inputs | refused (exit 2, file and place named) | accepted (exit 0) | slow (> timeout) | failures | peak RSS MiB | longest s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = {"refused": 0, "accepted": 0, "slow": 0, "FAIL": 0}
    for kind, row in table.items():
        n = sum(row[k] for k in total)
        for k in total:
            total[k] += row[k]
        print(f"| {kind} | {n} | {row['refused']} | {row['accepted']} | {row['slow']} | {row['FAIL']} | {row['mib']:.0f} | {row['sec']:.1f} |")
    print(f"| **all** | {len(results)} | {total['refused']} | {total['accepted']} | {total['slow']} | {total['FAIL']} | | |")
    failures = [r for r in results if r[1] in ("FAIL", "slow")]
    for case, status, detail, sec, mib in failures:
        print(f"{status}: [{case.kind}] {case.name}: {detail}\n    {os.path.basename(s.cli)} {' '.join(case.argv)}")
    return 1 if any(r[1] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
