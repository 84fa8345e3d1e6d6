"""``logs/metrics.csv`` kept across resumes: appended, never rewritten from scratch.

Lightning's `CSVLogger` deletes an existing ``metrics.csv`` when a run resumes and holds rows in
memory for 100 steps. `AppendingCSVLogger` appends each row as it is logged (so every row before
a checkpoint is on disk when the checkpoint is), widens the header when new columns appear by
rewriting the file atomically, and refuses NaN or infinity. `trim_metrics` makes a resumed run
continue the file exactly: rows logged after the checkpoint it resumes from (the kill came
later; they will be logged again) move to ``metrics_superseded.csv`` next to it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch import Tensor

from bayesgen.training.checkpoint import NonFiniteError, OutputWriteError, write_text


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def trim_metrics(path: str | os.PathLike, step: int,
                 say: Callable[[str], None] = print) -> int:
    """Move the rows of ``path`` with ``step >= step`` to ``metrics_superseded.csv`` (appended);
    returns how many moved."""
    path = Path(path)
    if not path.is_file():
        return 0
    fields, rows = _read(path)
    keep, moved = [], []
    for r in rows:
        (moved if r.get("step") and int(float(r["step"])) >= step else keep).append(r)
    if not moved:
        return 0
    old = path.with_name("metrics_superseded.csv")
    if old.is_file():
        old_fields, old_rows = _read(old)
        fields_all = old_fields + [f for f in fields if f not in old_fields]
        write_text(old, _csv_text(fields_all, old_rows + moved))
    else:
        write_text(old, _csv_text(fields, moved))
    write_text(path, _csv_text(fields, keep))
    say(f"{path}: {len(moved)} row(s) logged after step {step} moved to {old.name} "
        "(they are logged again as the run continues)")
    return len(moved)


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing file instead of deleting it."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            self.metrics_keys = _read(Path(self.metrics_file_path))[0]

    def _check_log_dir_exists(self) -> None:
        """Lightning's version deletes ``metrics.csv``; here it is continued."""

    def log_hparams(self, params: dict[str, Any]) -> None:
        try:
            super().log_hparams(params)
        except OSError as e:
            raise OutputWriteError(f"could not write {self.log_dir}/hparams.yaml: "
                                   f"{e.strerror or e}") from None

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics_dict.items():
            v = value.item() if isinstance(value, Tensor) else value
            if isinstance(v, float) and not math.isfinite(v):
                raise NonFiniteError(f"non-finite {key} ({v}) at step {step}; refusing to log it")
        super().log_metrics(metrics_dict, step)
        self.save()

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new = sorted(set().union(*self.metrics) - set(self.metrics_keys))
        try:
            if new or not path.is_file():
                fields = sorted(set(self.metrics_keys) | set(new))
                rows = _read(path)[1] if path.is_file() else []
                write_text(path, _csv_text(fields, rows + self.metrics))
                self.metrics_keys = fields
            else:
                with open(path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.metrics_keys,
                                   lineterminator="\n").writerows(self.metrics)
                    f.flush()
        except OSError as e:
            raise OutputWriteError(f"could not append to {path}: {e.strerror or e}") from None
        self.metrics = []


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` with `AppendingExperimentWriter`: one row written per logging step."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("flush_logs_every_n_steps", 1)
        super().__init__(*args, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
