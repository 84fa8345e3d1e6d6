"""benchmarks/gpu_suite.sh: its arguments (fast) and its CPU dry run (slow: a few minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_help_and_bad_arguments():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    help_ = run("--help")
    assert help_.returncode == 0 and "--dry-run" in help_.stdout and "8 minutes" in help_.stdout
    bad = run("--fast")
    assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr


@pytest.mark.slow
def test_dry_run_measures_every_section_on_the_cpu(tmp_path):
    out = run("--dry-run", env={"PYTHON": sys.executable, "OUT": str(tmp_path)}, timeout=1200)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines == [json.loads(line) for line in (tmp_path / "gpu_suite.jsonl").open()]
    sections = {r["section"]: r for r in lines if r["benchmark"] == "gpu_suite"}
    names = ("overhead", "overhead_image", "sampling_toy", "training_vdm", "training_dit",
             "mnist_budget")
    assert set(names) <= set(sections)
    for name in names:
        assert sections[name]["rc"] == 0, (name, (tmp_path / f"{name}.log").read_text()[-2000:])
    by_kind: dict[str, list[dict]] = {}
    for r in lines:
        by_kind.setdefault(r["benchmark"], []).append(r)
    assert {r["method"] for r in by_kind["method_overhead"]} >= {"bsi", "vdm", "if"}
    assert {r["method"] for r in by_kind["sampling_throughput"]} >= {"bsi", "vdm"}
    assert {r["config"] for r in by_kind["training_throughput"]} == {"cifar10-vdm",
                                                                     "imagenet32-dit"}
    assert all(r["device"] == "cpu" for r in by_kind["training_throughput"])
    assert len(by_kind["bfn_binarized_mnist"]) == 1
