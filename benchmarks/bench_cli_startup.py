"""How fast the command line answers: CPU and wall seconds of ``bayesgen --help``, a
command's ``--help`` and ``bayesgen train``'s configuration errors, each in a fresh
interpreter, for this checkout and (``--before SRC``) another source tree, interleaved so that
a load change on a shared machine hits both alike. One JSON line per command and tree.

    python benchmarks/bench_cli_startup.py --repeats 3
    python benchmarks/bench_cli_startup.py --before /path/to/an/older/checkout/src
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import record

COMMANDS = (["--help"], ["sample", "--help"], ["train", "experiment=nope"],
            ["train", "trainer.max_step=20"], ["train", "evaluate.split=train"])
HERE = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, args: list[str]) -> tuple[float, float, int]:
    """(user + system CPU seconds, wall seconds, exit status) of ``python -m bayesgen.cli``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bayesgen.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree (its src/) to compare")
    a = parser.parse_args()
    trees = {"this checkout": HERE, **({"before": a.before} if a.before else {})}
    for args in COMMANDS:
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in trees}
        for _ in range(a.repeats):
            for name, src in trees.items():
                runs[name].append(one_run(src, args))
        for name, rows in runs.items():
            record("cli_startup", cli="bayesgen " + " ".join(args), tree=name,
                   cpu_s_min=round(min(r[0] for r in rows), 3),
                   wall_s_min=round(min(r[1] for r in rows), 3),
                   exit_status=rows[0][2], repeats=a.repeats)


if __name__ == "__main__":
    main()
