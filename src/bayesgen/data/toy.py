"""Toy data of the Inflationary Flows reference, and scikit-learn's 8×8 digits.

Toys (dannyfa/Inflationary_Flows, arXiv 2407.08843): circles (make_circles, factor 0.5, noise
0.08), moons (noise 0.08), sine2 (x ~ U(−1, 1), y = sin(4πx)/4 + N(0, 0.15²)), s_curve (noise
0.2, 3-D), swirl (swiss roll, noise 1.25, 3-D). Each column is z-scored with the mean and std
of a separate fit sample of `fit_size` points (70,000, the size of the reference's PCA fit), so
every split uses the same affine map. alt_s_curve / alt_swirl keep the raw x and z columns and
replace the middle one by 0.5·N(0, 1), unscaled, as the reference does ("datasets scaled
differently"). With `embed_dim` the points are mapped into that many dimensions by a fixed
random matrix with orthonormal columns (`toy_projection`).

Every split is drawn with its own fixed seed derived from `seed`, so the data are the same in
every run. Labels: circles (0 outer, 1 inner) and moons (which moon); −1 for the others.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets as skd
from torch.utils.data import TensorDataset

from bayesgen.data.info import DatasetInfo, DataSource, split_indices

TOYS = ("circles", "moons", "sine2", "s_curve", "swirl", "alt_s_curve", "alt_swirl")
_LABELLED = ("circles", "moons")
_FIT, _TRAIN, _VAL, _TEST, _EMBED = range(5)


def _seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def sample_toy(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` raw (unscaled) points of toy `name` and their labels (−1 where none), float64."""
    rs = np.random.RandomState(seed)
    y = np.full(n, -1)
    if name == "circles":
        x, y = skd.make_circles(n_samples=n, factor=0.5, noise=0.08, random_state=rs)
    elif name == "moons":
        x, y = skd.make_moons(n_samples=n, noise=0.08, random_state=rs)
    elif name == "sine2":
        u = rs.uniform(-1.0, 1.0, n)
        x = np.stack([u, np.sin(4 * np.pi * u) / 4 + rs.normal(0.0, 0.15, n)], axis=1)
    elif name in ("s_curve", "alt_s_curve"):
        x, _ = skd.make_s_curve(n_samples=n, noise=0.2, random_state=rs)
    elif name in ("swirl", "alt_swirl"):
        x, _ = skd.make_swiss_roll(n_samples=n, noise=1.25, random_state=rs)
    else:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {TOYS}")
    if name.startswith("alt_"):
        x[:, 1] = 0.5 * rs.standard_normal(n)
    return x, np.asarray(y, dtype=np.int64)


def toy_projection(dim: int, embed_dim: int, seed: int = 0) -> np.ndarray:
    """A fixed random (embed_dim, dim) matrix with orthonormal columns (QR of a Gaussian)."""
    if embed_dim < dim:
        raise ValueError(f"embed_dim={embed_dim} must be at least the data dimension {dim}")
    q, r = np.linalg.qr(np.random.RandomState(seed).standard_normal((embed_dim, dim)))
    return q * np.sign(np.diag(r))


class ToyData(DataSource):
    def __init__(
        self,
        name: str,
        root=None,
        n_train: int = 20_000,
        n_val: int = 2_000,
        n_test: int = 2_000,
        seed: int = 0,
        embed_dim: int | None = None,
        fit_size: int = 70_000,
    ):
        if name not in TOYS:
            raise ValueError(f"unknown toy data set {name!r}; choose one of {TOYS}")
        self.name, self.sizes, self.seed = name, (n_train, n_val, n_test), seed
        self.embed_dim, self.fit_size = embed_dim, fit_size
        dim = 3 if name in ("s_curve", "swirl", "alt_s_curve", "alt_swirl") else 2
        self.projection = None
        if embed_dim:
            self.projection = toy_projection(dim, embed_dim, _seed(seed, _EMBED))
        self.info = DatasetInfo(
            name=name,
            data_shape=(embed_dim or dim,),
            kind="flat",
            num_labels=2 if name in _LABELLED else 0,
        )

    def load(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        mean, std = 0.0, 1.0
        if not self.name.startswith("alt_"):
            fit, _ = sample_toy(self.name, self.fit_size, _seed(self.seed, _FIT))
            mean, std = fit.mean(axis=0), fit.std(axis=0)
        splits = []
        for n, stream in zip(self.sizes, (_TRAIN, _VAL, _TEST), strict=True):
            x, y = sample_toy(self.name, n, _seed(self.seed, stream))
            x = (x - mean) / std
            if self.projection is not None:
                x = x @ self.projection.T
            splits.append(TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y)))
        return tuple(splits)


class DigitsData(DataSource):
    """scikit-learn's 1,797 handwritten digits as (1, 8, 8) images in [−1, 1], labelled 0–9.

    The pixels have 17 grey levels (0..16), mapped to v/8 − 1: the 17-point grid on [−1, 1]
    with both ends included (`info.num_bins` = 17). Treating them as 8-bit data is a modeling
    choice, not a property of the data. Fixed-seed split, by default 1437/180/180 (80/10/10).
    """

    def __init__(self, root=None, val_size: int = 180, test_size: int = 180, split_seed: int = 0):
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed
        self.info = DatasetInfo(
            name="digits", data_shape=(1, 8, 8), kind="image", num_labels=10, num_bins=17
        )

    def load(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        digits = skd.load_digits()
        x = torch.from_numpy(digits.images).float().unsqueeze(1) / 8 - 1
        y = torch.from_numpy(digits.target).long()
        val, test, train = split_indices(len(x), [self.val_size, self.test_size], self.split_seed)
        return tuple(TensorDataset(x[i], y[i]) for i in (train, val, test))
