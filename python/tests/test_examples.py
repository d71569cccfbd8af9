"""The quick start of docs/python.md and of the README and the newcomer's script run as written; the stubs list
exactly the module's public names."""
import ast
import os
import pathlib
import re
import subprocess
import sys

import pipeweaver as pw

HERE = pathlib.Path(__file__).resolve().parent
ROOT = pathlib.Path(os.environ.get("PIPEWEAVER_SOURCE_DIR", HERE.parents[1]))


def run(script, cwd):
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def test_quick_start_in_the_docs_is_the_file_the_suite_runs():
    doc = (ROOT / "docs" / "python.md").read_text()
    block = re.search(r"## Quick start.*?```python\n(.*?)```", doc, re.S).group(1)
    assert block == (HERE / "quickstart.py").read_text()


def test_quick_start_in_the_readme_is_the_file_the_suite_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert block == (HERE / "quickstart.py").read_text()


def test_quick_start_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    out = run(HERE / "quickstart.py", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(r"\S+: [0-9.]+ ms \(lower bound [0-9.]+ ms\)", lines[0])
    assert [l.split(":")[0] for l in lines[1:]] == [f"rank {r}" for r in range(4)]
    assert (tmp_path / "step0.trace.json").stat().st_size > 0


def test_newcomer_script_prints_every_rank_program():
    script = ROOT / "examples" / "torch" / "plan_vlm_s.py"
    assert len(script.read_text().splitlines()) <= 25
    out = run(script, ROOT)
    assert out.returncode == 0, out.stderr
    ranks = [l for l in out.stdout.splitlines() if re.fullmatch(r"rank \d+:", l)]
    assert ranks == [f"rank {r}:" for r in range(4)]
    assert "Forward(" in out.stdout and "Backward(" in out.stdout and "Send(" in out.stdout


def test_stubs_name_exactly_the_module_public_names():
    from pipeweaver import _pipeweaver as m

    tree = ast.parse((HERE.parents[0] / "pipeweaver" / "_pipeweaver.pyi").read_text())
    stub = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stub.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stub.add(node.target.id)
        elif isinstance(node, ast.Assign):
            stub.update(t.id for t in node.targets)
    helpers = {"PathLike", "Action", "_CostMethods", "CostModel", "AnyCost"}  # typing helpers only
    public = {n for n in dir(m) if not n.startswith("_")} | {"__version__"}
    assert stub - helpers == public
    # Every bound class's public attributes are in its stub.
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in public and isinstance(getattr(m, node.name), type):
            names = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)} | {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id == "_CostMethods":
                    names |= {"latency", "activation_bytes", "output_bytes", "transfer_time"}
            cls = getattr(m, node.name)
            if issubclass(cls, BaseException):
                continue
            actual = {n for n in dir(cls) if not n.startswith("_")}
            assert actual == names - {"__init__", "__len__"}, node.name
