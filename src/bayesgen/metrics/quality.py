"""An offline sample-quality score: a small classifier's Fréchet distance and confident share.

FID needs Inception weights that many machines cannot download. For the image data sets that
ship with scikit-learn or lie on disk (8×8 digits, MNIST, binarized MNIST, Fashion-MNIST) a
small CNN trained once on the training split stands in for Inception:

* **classifier FD** = ‖μ_s − μ_r‖² + tr(Σ_s + Σ_r − 2·(Σ_s Σ_r)^{1/2}), the FID formula (Heusel
  et al. 2017) on the classifier's penultimate features of the samples (s) and of the whole
  training split (r);
* **confident share** = the fraction of samples whose largest class probability is ≥ 0.9.

The real data's own score — ``real_baseline(n)``: n held-out test images against the same
training statistics — is the row a model aims for. The FD of n points is biased upward by the
noise of their covariance (more so for small n), so only scores at equal n are comparable.

Samples and images are compared as the data set stores them: mapped to [0, 1] like the
pictures of ``bayesgen.viz`` and rounded to the data's grey levels when it has them (17 for the
digits, 256 for MNIST, 2 for binarized MNIST). The classifier and the training statistics are
cached under ``$BAYESGEN_CACHE_DIR`` (default ``~/.cache/bayesgen``) in
``quality/<data>-<sha256 of the training data and the recipe>-v<RECIPE_VERSION>/``, so a
changed data set or recipe trains a new classifier.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayesgen.metrics.fid import frechet_distance

CACHE_ENV_VAR = "BAYESGEN_CACHE_DIR"
CONFIDENCE = 0.9
RECIPE_VERSION = 1  # bump when the network or the training code changes (the key changes)


@dataclass(frozen=True)
class Recipe:
    """A classifier and how it is trained (Adam, cross-entropy, fixed seed)."""

    channels: tuple[int, ...]   # one 3×3 conv + ReLU per entry
    pool: tuple[bool, ...]      # 2×2 max-pool after that conv
    feature_dim: int            # width of the penultimate layer (the FD features)
    epochs: int
    batch_size: int
    lr: float
    dropout: float = 0.25
    mixup: float = 0.0          # α of mixup's Beta(α, α) (Zhang et al. 2018); 0: off


_MNIST = Recipe(channels=(32, 64), pool=(True, True), feature_dim=128, epochs=2, batch_size=128,
                lr=2e-3, mixup=0.05)
RECIPES: dict[str, Recipe] = {
    "digits": Recipe(channels=(16, 32), pool=(False, True), feature_dim=64, epochs=30,
                     batch_size=64, lr=2e-3, mixup=0.05),
    "mnist": _MNIST,
    "binarized_mnist": _MNIST,
    "fashion_mnist": _MNIST,
}


class SmallCNN(nn.Module):
    """conv-ReLU(-pool) blocks → flatten → dropout → linear-ReLU (the features) → logits."""

    def __init__(self, in_channels: int, size: int, recipe: Recipe, num_labels: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for out, pool in zip(recipe.channels, recipe.pool, strict=True):
            layers += [nn.Conv2d(ch, out, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            ch = out
        self.conv = nn.Sequential(*layers)
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(recipe.dropout),
                                      nn.Linear(ch * size * size, recipe.feature_dim), nn.ReLU())
        self.head = nn.Linear(recipe.feature_dim, num_labels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(penultimate features, logits) of images in [0, 1]."""
        f = self.features(self.conv(x))
        return f, self.head(f)


def cache_dir() -> Path:
    """``$BAYESGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesgen``, else ``~/.cache/bayesgen``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bayesgen"


def to_unit(x: Tensor, info) -> Tensor:
    """Data or samples → float32 images in [0, 1] on the data's grey levels (if it has them)."""
    from bayesgen.viz import to_unit_images

    u = to_unit_images(x, getattr(info, "num_classes", None))
    levels = getattr(info, "num_bins", None) or getattr(info, "num_classes", None)
    if levels:
        u = torch.round(u * (levels - 1)) / (levels - 1)
    return u.float()


def dataset_checksum(ds: Dataset) -> str:
    """sha256 of what a data set holds: its uint8 images (MNIST-like), its tensors
    (TensorDataset), or else every item drawn under a fixed seed; plus its class and options."""
    h = hashlib.sha256(type(ds).__name__.encode())
    for name in ("num_bins", "soft", "hflip"):
        h.update(f"{name}={getattr(ds, name, None)}".encode())
    if hasattr(ds, "images"):
        tensors = [torch.as_tensor(ds.images), torch.as_tensor(ds.labels)]
    elif isinstance(ds, TensorDataset):
        tensors = list(ds.tensors)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            tensors = [torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))])]
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class QualityScorer:
    """A trained classifier plus the training split's feature statistics (μ_r, Σ_r)."""

    def __init__(self, info, net: SmallCNN, mu: np.ndarray, sigma: np.ndarray,
                 meta: dict, test: Dataset | None = None):
        self.info, self.net = info, net.eval()
        self.mu, self.sigma, self.meta, self.test = mu, sigma, meta, test

    @classmethod
    def for_data(cls, train: Dataset, test: Dataset, info, cache: str | Path | None = None,
                 say: Callable[[str], None] = print) -> QualityScorer:
        """The scorer of a data set: loaded from the cache, or trained (seconds for the digits,
        a few CPU minutes for MNIST) and cached."""
        if info.name not in RECIPES:
            raise ValueError(f"no sample-quality classifier for data set {info.name!r}; "
                             f"quality=true supports {', '.join(RECIPES)}")
        recipe = RECIPES[info.name]
        recipe_json = json.dumps(asdict(recipe), sort_keys=True).encode()
        digest = hashlib.sha256(dataset_checksum(train).encode() + recipe_json).hexdigest()
        key = f"{info.name}-{digest[:16]}-v{RECIPE_VERSION}"
        folder = Path(cache) if cache is not None else cache_dir()
        path = folder / "quality" / key
        if (path / "meta.json").is_file():
            return cls._load(path, info, recipe, test)
        say(f"training the {info.name} quality classifier once (cached in {path})")
        net, meta = _train(train, test, info, recipe)
        mu, sigma = _statistics(net, _unit_loader(train, info, recipe.batch_size))
        meta |= {"key": key, "recipe": asdict(recipe), "n_train": len(train)}
        say(f"  test accuracy {meta['test_accuracy']:.4f}, trained {meta['train_seconds']:.0f} s")
        _save(path, net, mu, sigma, meta, say)
        return cls(info, net, mu, sigma, meta, test)

    @classmethod
    def _load(cls, path: Path, info, recipe: Recipe, test) -> QualityScorer:
        meta = json.loads((path / "meta.json").read_text())
        net = SmallCNN(info.data_shape[0], info.data_shape[-1], recipe)
        net.load_state_dict(load_file(str(path / "classifier.safetensors")))
        with np.load(path / "train_features.npz") as stats:
            mu, sigma = stats["mu"], stats["sigma"]
        return cls(info, net, mu, sigma, meta | {"cached": str(path)}, test)

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """(features (n, F), class probabilities (n, 10)) of unit images (n, C, H, W)."""
        feats, probs = [], []
        for chunk in images.split(batch_size):
            f, logits = self.net(chunk.float())
            feats.append(f.double())
            probs.append(logits.double().softmax(-1))
        return torch.cat(feats), torch.cat(probs)

    def score(self, samples: Tensor, info=None) -> dict:
        """Classifier FD against the training features and the confident share of samples
        in the form of the data they model (``info``, default the classifier's): [−1, 1]
        floats, class indices or probabilities."""
        if samples.shape[0] < 2:
            raise ValueError("the quality score needs at least 2 samples")
        return self.score_unit(to_unit(samples.detach().cpu(), info or self.info))

    def score_unit(self, images: Tensor) -> dict:
        """The score of images already in [0, 1] on the data's grey levels."""
        f, p = self.features(images)
        conf = p.max(-1).values
        mu = f.mean(0).numpy()
        sigma = np.atleast_2d(np.cov(f.numpy(), rowvar=False))
        with warnings.catch_warnings():  # features that are 0 for every image: singular Σ
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            fd = frechet_distance(mu, sigma, self.mu, self.sigma)
        return {"fd": fd,
                "confident_share": (conf >= CONFIDENCE).double().mean().item(),
                "mean_confidence": conf.mean().item(), "n": len(images)}

    def real_baseline(self, n: int | None = None) -> dict:
        """The score of the first ``n`` (default all) test images: what a perfect model gets
        at the same n. Binarized images are drawn with a fixed seed."""
        if self.test is None:
            raise ValueError("this scorer was built without a test split")
        n = len(self.test) if n is None else min(int(n), len(self.test))
        with torch.random.fork_rng():
            torch.manual_seed(0)
            x = torch.stack([torch.as_tensor(self.test[i][0]) for i in range(n)])
        return self.score_unit(to_unit(x, self.info)) | {"split": "test"}


# --------------------------------------------------------------------------- training
def _unit_loader(ds: Dataset, info, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> DataLoader:
    def collate(items):
        x = torch.stack([torch.as_tensor(i[0]) for i in items])
        return to_unit(x, info), torch.as_tensor([int(i[1]) for i in items])

    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=generator)


def _train(train: Dataset, test: Dataset, info, recipe: Recipe) -> tuple[SmallCNN, dict]:
    """Adam on cross-entropy for ``recipe.epochs`` epochs, fixed seed; test accuracy."""
    start = time.time()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallCNN(info.data_shape[0], info.data_shape[-1], recipe)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        loader = _unit_loader(train, info, recipe.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
        steps = recipe.epochs * len(loader)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps)
        net.train()
        for _ in range(recipe.epochs):
            for x, y in loader:
                loss = _loss(net, x, y, recipe.mixup)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in _unit_loader(test, info, 500):
                correct += (net(x)[1].argmax(-1) == y).sum().item()
                total += len(y)
    return net, {"test_accuracy": correct / max(total, 1), "train_seconds": time.time() - start,
                 "epochs": recipe.epochs, "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def _loss(net: SmallCNN, x: Tensor, y: Tensor, mixup: float) -> Tensor:
    """Cross-entropy; with mixup, of the blend λ·x + (1 − λ)·x[perm] against the blended
    labels, λ ~ Beta(α, α), which tempers the confidence on images between classes."""
    if not mixup:
        return F.cross_entropy(net(x)[1], y)
    lam = float(np.random.default_rng(torch.randint(2**31, ()).item()).beta(mixup, mixup))
    perm = torch.randperm(len(x))
    logits = net(lam * x + (1 - lam) * x[perm])[1]
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


@torch.no_grad()
def _statistics(net: SmallCNN, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (denominator n − 1) of the features, in float64."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # binarized images are drawn afresh at every access
        f = torch.cat([net(x)[0].double() for x, _ in loader]).numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def _save(path: Path, net: SmallCNN, mu: np.ndarray, sigma: np.ndarray, meta: dict,
          say: Callable[[str], None]) -> None:
    """Write the cache entry atomically (a temporary folder renamed into place); an unwritable
    cache folder only costs retraining next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(tmp / "classifier.safetensors"))
        np.savez(tmp / "train_features.npz", mu=mu, sigma=sigma)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, path)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        say(f"  could not cache the classifier in {path} ({e}); set {CACHE_ENV_VAR} to a "
            "writable folder to keep it")
