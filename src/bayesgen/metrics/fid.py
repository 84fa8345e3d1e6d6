"""Fréchet Inception Distance (FID), as in NVlabs/edm `fid.py` (used by the Inflationary Flows
code): 2048-d pool features of the TF Inception-v3 (2015-12-05), their mean μ and covariance Σ
accumulated in float64 (Σ with denominator n − 1), and

    FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2}).

Reference statistics are `.npz` files with keys `mu` (F,) and `sigma` (F, F), the format of
EDM's `fid-refs/*.npz`, so those files can be used as they are.

Images everywhere are uint8 (N, C, H, W) or float in [−1, 1] (turned into pixels exactly as
EDM saves a PNG, see `to_uint8`); one-channel images are repeated to three. The Inception
network resizes to 299×299 itself. The feature extractor is torch-fidelity's port of the TF
graph (TF1-compatible bilinear resize), loaded offline from its weights file; any callable
`uint8 (N, 3, H, W) -> (N, F)` can stand in for it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from PIL import Image
from rich.progress import track
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from bayesgen.data.images import ImageFiles, list_images

Images = str | os.PathLike | Tensor | Dataset | Iterable
FeatureExtractor = Callable[[Tensor], Tensor]

# torch-fidelity's conversion of the TF Inception-v3 graph (2015-12-05). pytorch-fid's conversion
# (pt_inception-2015-12-05-6726825d.pth, same hash in its name) is looked for too.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)
WEIGHTS_ENV_VAR = "BAYESGEN_INCEPTION_WEIGHTS"


# --------------------------------------------------------------------------- pixels
def pixel_values(x: Tensor) -> Tensor:
    """Integer pixel values in [0, 255] as float64: uint8 as is; float x in [−1, 1] exactly as
    EDM writes a PNG, clip(floor(127.5·x + 128), 0, 255) — i.e. (x + 1)·127.5 rounded half up
    and clipped to [0, 255]. For x = p/127.5 − 1 this gives back p."""
    if x.dtype == torch.uint8:
        return x.double()
    return torch.floor(x.double() * 127.5 + 128).clamp(0, 255)


def to_uint8(x: Tensor) -> Tensor:
    """uint8 images from uint8 or float in [−1, 1] (see `pixel_values`)."""
    return x if x.dtype == torch.uint8 else pixel_values(x).to(torch.uint8)


def _rgb_uint8(x: Tensor) -> Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images (N, 1 or 3, H, W), got shape {tuple(x.shape)}; "
            "put the channels second (N, C, H, W)"
        )
    x = to_uint8(x)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


# --------------------------------------------------------------------------- Inception features
def find_inception_weights(weights_path: str | os.PathLike | None = None,
                           download: bool = True) -> Path:
    """The Inception-v3 weights file: `weights_path`, else `$BAYESGEN_INCEPTION_WEIGHTS`, else
    torch.hub's checkpoint folder (under either file name); downloaded there when missing and
    `download` is true. Raises FileNotFoundError saying what to download and where to put it."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights {path} do not exist; download {INCEPTION_URL} and pass its "
                "path as weights= (command line) or feature_extractor_weights_path= (Python)"
            )
        return path
    if os.environ.get(WEIGHTS_ENV_VAR):
        return find_inception_weights(os.environ[WEIGHTS_ENV_VAR])
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (hub / name).is_file():
            return hub / name
    message = (
        f"FID needs the Inception-v3 weights {INCEPTION_FILES[0]} (torch-fidelity). Download "
        f"{INCEPTION_URL} and either pass its path as weights=... (command line) or "
        f"feature_extractor_weights_path=... (Python), set {WEIGHTS_ENV_VAR}=<path>, or put it "
        f"in {hub}/"
    )
    if not download:
        raise FileNotFoundError(message)
    try:
        hub.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(hub / INCEPTION_FILES[0]))
    except Exception as e:
        raise FileNotFoundError(f"{message}; downloading failed: {e!r}") from e
    return hub / INCEPTION_FILES[0]


class InceptionFeatures(nn.Module):
    """The FID Inception-v3: images (N, C, H, W), uint8 or float in [−1, 1], -> (N, 2048)
    pool3 features (float32). Resizes to 299×299 like TF1 (torch-fidelity's implementation)."""

    def __init__(self, feature_extractor_weights_path: str | os.PathLike | None = None,
                 download: bool = True):
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise ImportError("InceptionFeatures needs torch-fidelity: "
                              "pip install 'bayesgen[metrics]'") from e

        path = find_inception_weights(feature_extractor_weights_path, download)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        )
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # batch norm statistics stay frozen

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.net(_rgb_uint8(images))[0]


# --------------------------------------------------------------------------- reading images
class _Pixels(Dataset):
    """uint8 (3, H, W) images of a folder or ZIP (RGB; greyscale repeated by PIL)."""

    def __init__(self, path: str | os.PathLike):
        names, labels = list_images(path)
        self.files = ImageFiles(path, names, labels, mode="RGB")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        return self.files.pixels(i)


def _first(item):
    return item[0] if isinstance(item, tuple | list) else item


def _collate_images(items) -> Tensor:
    return torch.stack([torch.as_tensor(_first(item)) for item in items])


def read_images(path: str | os.PathLike) -> Dataset:
    """The images of a folder (searched recursively) or a StyleGAN/EDM ZIP (`dataset.json`),
    in sorted name order, as a Dataset of uint8 (3, H, W) tensors."""
    return _Pixels(path)


def image_batches(images: Images, batch_size: int = 64, num_images: int | None = None,
                  seed: int = 0, num_workers: int = 0) -> tuple[Iterator[Tensor], int | None]:
    """(batches, number of batches or None): uint8 RGB batches (B, 3, H, W) of

    - a folder of images or a StyleGAN/EDM ZIP (path);
    - a tensor (N, C, H, W), uint8 or float in [−1, 1];
    - a Dataset whose items are images or `(image, label)` (e.g. `build_datasets`' splits);
    - any other iterable of batches (tensors or `(images, labels)`), taken as it comes.

    `num_images` picks a random subset of that size (EDM: shuffle with
    `RandomState(seed)`, keep the first `num_images`, sort) and fails if there are fewer.
    """
    if isinstance(images, str | os.PathLike):
        images = _Pixels(images)
    if isinstance(images, Tensor | Dataset):
        n = len(images)
        index = np.arange(n)
        if num_images is not None:
            if n < num_images:
                raise ValueError(f"found {n} images but num_images={num_images}")
            np.random.RandomState(seed % (1 << 31)).shuffle(index)
            index = np.sort(index[:num_images])
        if isinstance(images, Tensor):
            chunks = torch.as_tensor(index).split(batch_size)
            batches = (_rgb_uint8(images[chunk.to(images.device)]) for chunk in chunks)
        else:
            loader = DataLoader(Subset(images, index.tolist()), batch_size=batch_size,
                                num_workers=num_workers, collate_fn=_collate_images)
            batches = (_rgb_uint8(b) for b in loader)
        return batches, (len(index) + batch_size - 1) // batch_size
    if num_images is not None:
        raise ValueError("num_images needs a path, a tensor or a Dataset, not a plain iterable")
    n_batches = len(images) if hasattr(images, "__len__") else None
    return (_rgb_uint8(_first(b)) for b in images), n_batches


# --------------------------------------------------------------------------- statistics
def _device_of(extractor: FeatureExtractor) -> torch.device:
    if isinstance(extractor, nn.Module):
        for p in extractor.parameters():
            return p.device
        for b in extractor.buffers():
            return b.device
    return torch.device("cpu")


@torch.no_grad()
def feature_statistics(images: Images, extractor: FeatureExtractor, batch_size: int = 64,
                       num_images: int | None = None, seed: int = 0, num_workers: int = 0,
                       device: torch.device | str | None = None, progress: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ (F,) and covariance Σ (F, F) of `extractor`'s features, float64 numpy arrays:
    μ = Σf/n, Σ = (Σ fᵀf − n·μμᵀ)/(n − 1), accumulated in float64 (EDM). `images`: anything
    `image_batches` reads; batches go to `device` (default: the extractor's)."""
    device = torch.device(device) if device is not None else _device_of(extractor)
    batches, n_batches = image_batches(images, batch_size, num_images, seed, num_workers)
    n, s1, s2 = 0, None, None
    for batch in track(batches, total=n_batches, description="Inception features",
                       disable=not progress):
        f = extractor(batch.to(device)).to(torch.float64)
        if s1 is None:
            s1 = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
            s2 = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=f.device)
        n += f.shape[0]
        s1 += f.sum(0)
        s2 += f.T @ f
    if n < 2:
        raise ValueError(f"found {n} images; statistics need at least 2")
    mu = s1 / n
    sigma = (s2 - n * torch.outer(mu, mu)) / (n - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write `mu`, `sigma` to an .npz (EDM's fid-refs format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    return path


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with keys `mu` and `sigma` (EDM's fid-refs files work)."""
    with np.load(path) as ref:
        missing = {"mu", "sigma"} - set(ref.files)
        if missing:
            raise ValueError(f"{path} lacks the keys {sorted(missing)}; expected mu and sigma")
        return ref["mu"].astype(np.float64), ref["sigma"].astype(np.float64)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2}) in float64, the square root by
    `scipy.linalg.sqrtm`. Its imaginary part (numerical noise) is discarded, with a warning
    when it is not tiny; a singular product gets ε·I added to both covariances (pytorch-fid)."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != 2 * mu1.shape:
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs "
            f"{s2.shape}; both sets need features of one dimension F: mu (F,), sigma (F, F)"
        )
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = 1e-6 * np.eye(len(s1))
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max()):
            warnings.warn(f"sqrtm(Σ₁Σ₂) has an imaginary part of {imag:.3g}", stacklevel=2)
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------- fid ref / calc
def _extractor(extractor: FeatureExtractor | None, weights_path, device) -> FeatureExtractor:
    if extractor is not None:
        return extractor
    net = InceptionFeatures(weights_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return net.to(device)


def fid_ref(data: Images, dest: str | os.PathLike, extractor: FeatureExtractor | None = None,
            feature_extractor_weights_path: str | os.PathLike | None = None,
            batch_size: int = 64, num_workers: int = 0, device: str | None = None,
            progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reference statistics of a data set (folder, ZIP, tensor or Dataset; all its images),
    written to `dest` (.npz with `mu`, `sigma`) and returned (EDM `fid.py ref`)."""
    extractor = _extractor(extractor, feature_extractor_weights_path, device)
    mu, sigma = feature_statistics(data, extractor, batch_size, num_workers=num_workers,
                                   progress=progress)
    save_statistics(dest, mu, sigma)
    return mu, sigma


def fid_calc(images: Images, ref: str | os.PathLike | tuple[np.ndarray, np.ndarray],
             extractor: FeatureExtractor | None = None,
             feature_extractor_weights_path: str | os.PathLike | None = None,
             num_images: int | None = None, seed: int = 0, batch_size: int = 64,
             num_workers: int = 0, device: str | None = None, progress: bool = True) -> float:
    """FID of `images` (folder, ZIP, tensor, Dataset or iterable of batches) against `ref`
    (an .npz from `fid_ref` / EDM, or `(mu, sigma)`). `num_images`: use a random subset of
    that size (EDM's `--num`, 50000 for the published numbers); None uses all images."""
    mu_ref, sigma_ref = load_statistics(ref) if isinstance(ref, str | os.PathLike) else ref
    extractor = _extractor(extractor, feature_extractor_weights_path, device)
    mu, sigma = feature_statistics(images, extractor, batch_size, num_images, seed, num_workers,
                                   progress=progress)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


# --------------------------------------------------------------------------- writing images
def save_image_folder(images: Tensor, directory: str | os.PathLike, start_index: int = 0,
                      subdirs: bool = True) -> list[Path]:
    """Write images (N, C, H, W), uint8 or float in [−1, 1], as PNGs `{i:06d}.png` numbered
    from `start_index`; with `subdirs`, image i goes to the folder `{i − i mod 1000:06d}/`
    (EDM / Inflationary Flows `gen_fid_samples --subdirs`). Returns the paths written."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    arrays = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    directory, paths = Path(directory), []
    for i, array in enumerate(arrays, start=start_index):
        folder = directory / f"{i - i % 1000:06d}" if subdirs else directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.png"
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)
        paths.append(path)
    return paths
