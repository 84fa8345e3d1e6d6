"""What a data set is (`DatasetInfo`), where its files live, and how a missing file is reported.

Every data set is a `DataSource`: constructed from its options without reading data, it knows
its `info` at once, `prepare()` fetches its files when they are missing (Lightning calls it on
one process), and `load()` returns the train, validation and test `Dataset`s.

Where files are looked for (first hit wins), for a data set whose folder is called `<name>`:

1. the explicit `root` (only that folder);
2. `$BAYESGEN_DATA_DIR/<name>`;
3. `../shared/data/<name>` beside the current directory or beside the repository, if it exists;
4. `./data/<name>`.

Downloads go to the explicit `root`, else `$BAYESGEN_DATA_DIR/<name>`, else `./data/<name>` —
never into a `shared/data` folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset
from torchvision.datasets.utils import download_url

ENV_VAR = "BAYESGEN_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set before seeing it.

    `num_classes`: number of values of discrete data (2 binarized MNIST, 27 text8); None for
    continuous data. `num_labels`: number of class labels `y` (0 when the items have none).
    `num_bins`: number of grey levels of discretized data (256 for 8-bit images), else None.
    `decode`: turns a tensor of data into readable form (text: indices -> str).
    """

    name: str
    data_shape: tuple[int, ...]
    kind: Literal["flat", "image", "text"]
    num_classes: int | None = None
    num_labels: int = 0
    num_bins: int | None = None
    decode: Callable | None = None

    @property
    def is_points(self) -> bool:
        """2-D or 3-D points (the toys), pictured as scatter plots."""
        return self.kind == "flat" and len(self.data_shape) == 1 and self.data_shape[0] in (2, 3)

    def default_sample_count(self) -> int:
        """Samples drawn when none is asked for: a scatter plot needs thousands of points to
        show a shape (2000, as Inflationary Flows' simulations draw); a grid shows 64."""
        return 2000 if self.is_points else 64


class DatasetNotFoundError(RuntimeError):
    """The files of a data set are missing or corrupt and cannot be downloaded here."""


class DataSource:
    """A data set with its options fixed; reading data waits for `load()`."""

    info: DatasetInfo

    def prepare(self) -> None:
        """Fetch missing files (downloads); a no-op for generated data."""

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError


def _shared_dirs(name: str = "") -> list[Path]:
    bases = (Path.cwd().parent, _REPO_ROOT.parent)
    return [base / "shared" / "data" / name for base in bases]


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders that may hold data set `name`'s files, in the order they are tried."""
    if root is not None:
        return [Path(root)]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]) / name)
    dirs += [d for d in _shared_dirs(name) if d.is_dir()]
    dirs.append(Path("data") / name)
    unique = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def download_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder that downloads of data set `name` go to."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]) / name
    return Path("data") / name


def fetch(urls: Sequence[str], folder: Path, filename: str, md5: str | None) -> Path:
    """Download `filename` from the first of `urls` that works into `folder` (checked by md5).

    Raises the last download error; never writes into a `shared/data` folder.
    """
    for shared in _shared_dirs():
        if shared.is_dir() and folder.resolve().is_relative_to(shared.resolve()):
            raise PermissionError(f"refusing to download into the shared data folder {shared}")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    for url in urls:
        try:
            download_url(url, folder, filename=filename, md5=md5)
        except Exception as e:  # any network or checksum failure: try the next mirror
            error = e
            continue
        path = folder / filename
        if path.is_file() and (md5 is None or md5_of_file(path) == md5):
            return path
        error = RuntimeError(f"download from {url} produced no valid {filename}")
    if created and not any(folder.iterdir()):
        folder.rmdir()
    raise error if error is not None else RuntimeError("no URL to download from")


def download_or_explain(message: str, download: bool, fetch_files: Callable[[], object]):
    """Run ``fetch_files()`` (a download) and return its result, or raise one
    `DatasetNotFoundError`: ``message`` (which says where to put the files) and why."""
    if not download:
        raise DatasetNotFoundError(message + "; download=False.")
    try:
        return fetch_files()
    except Exception as e:
        raise DatasetNotFoundError(f"{message}; downloading failed: {e!r}") from e


def md5_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# (fractions [train, val], generator seed) of the references' torch random_split of a training
# set: BFN's official data.py (CIFAR-10, MNIST: [1 − 0.01, 0.01]) and BSI's CIFAR-10 data module
REFERENCE_SPLITS = {"bfn": ((1.0 - 0.01, 0.01), 2147483647),
                    "bsi": ((0.9, 0.1), 11812925458092569678)}


def reference_split(n: int, reference: str) -> list[torch.Tensor]:
    """(val, train) indices, sorted, exactly as a reference splits a training set of n items:
    ``torch.utils.data.random_split(range(n), fractions, generator seeded s)`` (train first)
    with the fractions and seed of ``REFERENCE_SPLITS``. "bfn": CIFAR-10 49,500 / 500, MNIST
    59,400 / 600; "bsi": CIFAR-10 45,000 / 5,000."""
    from torch.utils.data import random_split

    if reference not in REFERENCE_SPLITS:
        raise ValueError(f"reference_split must be one of {sorted(REFERENCE_SPLITS)} or null, "
                         f"got {reference!r}")
    fractions, seed = REFERENCE_SPLITS[reference]
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(range(n), list(fractions), generator=generator)
    return [torch.tensor(sorted(val.indices)), torch.tensor(sorted(train.indices))]


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """A fixed-seed random partition of range(n): the first parts have `sizes`, the last the rest.

    Each part is sorted, so the items keep their original order.
    """
    if sum(sizes) >= n:
        raise ValueError(f"split sizes {list(sizes)} leave nothing of {n} items for training")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(perm[start : start + size].sort().values)
        start += size
    return [*parts, perm[start:].sort().values]
