"""What every speed benchmark shares: the record it prints (one JSON line per measurement, with
the machine, date, torch version, threads and command) and a timer that interleaves the
variants it compares, so that a load change on a shared machine hits them alike."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch


def machine() -> str:
    """CPU model and core count, plus the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = f"{cpu} ({os.cpu_count()} cores)"
    if torch.cuda.is_available():
        name += f", {torch.cuda.get_device_name()}"
    return name


def record(benchmark: str, **fields) -> dict:
    """Print one JSON line: the measurement and where, when and how it was taken."""
    line = {
        "benchmark": benchmark,
        **fields,
        "machine": machine(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "command": shlex.join(["python", *sys.argv]),
    }
    print(json.dumps(line), flush=True)
    return line


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                     device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Median seconds per call of each function, calls interleaved round by round: ``wall``
    (wall clock) and ``cpu`` (CPU time of this process). On a CPU shared with other jobs the
    CPU time is the steadier measure of the work itself (exact with one torch thread)."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])}
            for name in fns}


def setup(threads: int | None, seed: int = 0) -> torch.device:
    """Fix the thread count (default: leave torch's) and the seed; the device to run on."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
