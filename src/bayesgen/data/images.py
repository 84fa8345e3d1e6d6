"""Image data sets: MNIST (continuous and binarized), Fashion-MNIST, CIFAR-10, StyleGAN-style
image folders / ZIPs, and ImageNet32/64 in HDF5.

Items are `(x, y)`: `x` float32 (C, H, W) in [−1, 1] (binarized MNIST: int64 in {0, 1}), `y`
the int64 label. 8-bit pixels p map to p/127.5 − 1 (256 levels including ±1, the grid of BSI's
discretization). With `num_bins=K` they map instead to the centre of their bin as the official
BFN code does: idx = clamp(floor((x/2 + ½)·K), 0, K − 1), x = 2(idx + ½)/K − 1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST

from bayesgen.data.info import (
    DatasetInfo,
    DatasetNotFoundError,
    DataSource,
    download_dir,
    download_or_explain,
    fetch,
    md5_of_file,
    reference_split,
    search_dirs,
    split_indices,
)
from bayesgen.extras import require

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def scale_pixels(pixels: torch.Tensor, num_bins: int | None = None) -> torch.Tensor:
    """uint8 pixels -> float32 in [−1, 1]; with `num_bins`, the centre of the pixel's bin."""
    if num_bins is None:
        return pixels.float() / 127.5 - 1
    idx = (pixels.long() * num_bins // 255).clamp(max=num_bins - 1)  # floor((x/2 + ½)·K)
    return (2 * (idx.float() + 0.5) / num_bins - 1).float()


class ImageTensors(Dataset):
    """uint8 images (N, C, H, W) held in memory, scaled on access; optional horizontal flips."""

    def __init__(self, images, labels, num_bins: int | None = None, hflip: bool = False):
        self.images, self.labels = torch.as_tensor(images), torch.as_tensor(labels).long()
        self.num_bins, self.hflip = num_bins, hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = scale_pixels(self.images[i], self.num_bins)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


class BinarizedImages(ImageTensors):
    """Dynamic binarization: each access draws x ~ Bernoulli(p/255) afresh, int64 in {0, 1}.

    `soft=True` returns the probabilities p/255 themselves (float32 in [0, 1]), the
    "binarised" mode of the minimal BFN MNIST example; `as_float=True` returns the binary
    pixels as float32 in {−1, 1}, for the methods of continuous data (2 grey levels).
    """

    def __init__(self, images, labels, soft: bool = False, as_float: bool = False):
        super().__init__(images, labels)
        self.soft, self.as_float = soft, as_float

    def __getitem__(self, i):
        p = self.images[i].float() / 255
        if self.soft:
            return p, self.labels[i]
        x = torch.bernoulli(p)
        return (2 * x - 1 if self.as_float else x.long()), self.labels[i]


# --------------------------------------------------------------------------- MNIST (idx files)
def read_idx(raw: bytes) -> np.ndarray:
    """Parse an (uncompressed) idx file of unsigned bytes."""
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError("not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MNISTData(DataSource):
    """MNIST (1, 28, 28) in [−1, 1], labels 0–9; train 55k / val 5k (fixed seed) / test 10k.

    Reads the four idx files (gzipped or not) from the first folder that has them (see
    `bayesgen.data.info`), checks their md5 (of the gzip file or of its content), and
    downloads them with torchvision's mirrors when missing and `download=True`.
    """

    name, folder = "mnist", "mnist"
    mirrors = MNIST.mirrors
    # file: (md5 of the official .gz, md5 of the uncompressed file or None)
    files = {
        "train-images-idx3-ubyte": (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte": (
            "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte": (
            "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte": (
            "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    }  # fmt: skip
    extra_dirs: tuple[str, ...] = ()

    def __init__(
        self,
        root=None,
        val_size: int = 5000,
        split_seed: int = 0,
        num_bins: int | None = None,
        download: bool = True,
    ):
        self.root, self.val_size, self.split_seed = root, val_size, split_seed
        self.num_bins, self.download = num_bins, download
        self.info = DatasetInfo(
            name=self.name,
            data_shape=(1, 28, 28),
            kind="image",
            num_labels=10,
            num_bins=num_bins or 256,
        )

    def _dirs(self) -> list[Path]:
        dirs = search_dirs(self.folder, self.root)
        return dirs + [Path(d) for d in self.extra_dirs if self.root is None]

    def _find(self) -> dict[str, Path] | None:
        for d in self._dirs():
            found = {}
            for base in self.files:
                path = next((p for p in (d / f"{base}.gz", d / base) if p.is_file()), None)
                if path is not None:
                    found[base] = path
            if len(found) == len(self.files):
                return found
        return None

    def _locate(self) -> dict[str, Path]:
        found = self._find()
        if found is not None:
            return found
        dest = download_dir(self.folder, self.root)
        names = ", ".join(f"{base}.gz" for base in self.files)
        message = (
            f"{self.name}: files not found in {', '.join(map(str, self._dirs()))}. "
            f"Put {names} (the official idx files, gzipped or not) in {dest} "
            f"(or pass root=..., or set BAYESGEN_DATA_DIR to a folder holding '{self.folder}/')"
        )
        download_or_explain(message, self.download, lambda: [
            fetch([m + f"{base}.gz" for m in self.mirrors], dest, f"{base}.gz", gz_md5)
            for base, (gz_md5, _) in self.files.items()])
        found = self._find()
        if found is None:
            raise DatasetNotFoundError(f"{message}; the download left no files in {dest}.")
        return found

    def _read(self, path: Path) -> np.ndarray:
        data = path.read_bytes()
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        gz_md5, raw_md5 = self.files[path.name.removesuffix(".gz")]
        ok = hashlib.md5(data).hexdigest() == gz_md5
        ok = ok or (raw_md5 is not None and hashlib.md5(raw).hexdigest() == raw_md5)
        if not ok and raw_md5 is None:  # no published checksum of the content: check its shape
            ok = raw[:3] == b"\x00\x00\x08" and len(raw) in (60_008, 10_008, 47_040_016, 7_840_016)
        if not ok:
            raise DatasetNotFoundError(
                f"{path} fails its md5 check; delete it and put the official file there."
            )
        return read_idx(raw)

    def prepare(self) -> None:
        self._locate()

    def _arrays(self):
        paths = self._locate()
        train_x, train_y, test_x, test_y = (self._read(paths[base]) for base in self.files)
        train_x, test_x = (torch.from_numpy(a.copy()).unsqueeze(1) for a in (train_x, test_x))
        train_y, test_y = (torch.from_numpy(a.astype(np.int64)) for a in (train_y, test_y))
        return train_x, train_y, test_x, test_y

    def load(self):
        train_x, train_y, test_x, test_y = self._arrays()
        val, train = split_indices(len(train_x), [self.val_size], self.split_seed)
        return (
            ImageTensors(train_x[train], train_y[train], self.num_bins),
            ImageTensors(train_x[val], train_y[val], self.num_bins),
            ImageTensors(test_x, test_y, self.num_bins),
        )


class FashionMNISTData(MNISTData):
    """Fashion-MNIST like `MNISTData`; also read from /usr/share/datasets/fashion-mnist (Debian)."""

    name, folder = "fashion_mnist", "fashion-mnist"
    mirrors = FashionMNIST.mirrors
    files = {base.removesuffix(".gz"): (md5, None) for base, md5 in FashionMNIST.resources}
    extra_dirs = ("/usr/share/datasets/fashion-mnist",)


class BinarizedMNISTData(MNISTData):
    """Dynamically binarized MNIST (BFN): pixels ~ Bernoulli(p/255) afresh at every access,
    int64 in {0, 1}; split 99%/1% of train (59,400/600) + the 10k test images.
    `soft=True` gives the probabilities p/255 as float32 instead; `as_float=True` the same
    binary pixels as float32 in {−1, 1} with 2 grey levels (`info.num_bins` = 2), so that BSI
    and other methods of continuous data model exactly the data discrete BFN models.
    `reference_split="bfn"` holds out the very 600 images BFN's official code does, else
    `val_size` at `split_seed`.
    """

    name = "binarized_mnist"

    def __init__(
        self,
        root=None,
        val_size: int = 600,
        split_seed: int = 0,
        soft: bool = False,
        download: bool = True,
        reference_split: str | None = None,
        as_float: bool = False,
    ):
        super().__init__(root, val_size, split_seed, None, download)
        if soft and as_float:
            raise ValueError("binarized_mnist: choose soft=true or as_float=true, not both")
        self.soft, self.reference_split, self.as_float = soft, reference_split, as_float
        self.info = DatasetInfo(
            name=self.name, data_shape=(1, 28, 28), kind="image", num_labels=10,
            num_classes=None if as_float else 2, num_bins=2 if as_float else None,
        )

    def load(self):
        train_x, train_y, test_x, test_y = self._arrays()
        val, train = (reference_split(len(train_x), self.reference_split)
                      if self.reference_split else
                      split_indices(len(train_x), [self.val_size], self.split_seed))
        return (
            BinarizedImages(train_x[train], train_y[train], self.soft, self.as_float),
            BinarizedImages(train_x[val], train_y[val], self.soft, self.as_float),
            BinarizedImages(test_x, test_y, self.soft, self.as_float),
        )


# --------------------------------------------------------------------------- CIFAR-10
CIFAR10_URL = CIFAR10.url
CIFAR10_TGZ = CIFAR10.filename  # cifar-10-python.tar.gz
CIFAR10_TGZ_MD5 = CIFAR10.tgz_md5
CIFAR10_BATCHES = dict(CIFAR10.train_list + CIFAR10.test_list)  # name: md5
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, numpy arrays) and nothing
    else: a pickle naming any other global is refused rather than run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch may not name {module}.{name}")
        return super().find_class(module, name)


def _unpickle_batch(f) -> tuple[np.ndarray, np.ndarray]:
    d = _BatchUnpickler(f, encoding="bytes").load()
    data = d[b"data"] if b"data" in d else d["data"]
    labels = d[b"labels"] if b"labels" in d else d["labels"]
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)


def _verify_cifar10(path: Path, names: list[str]) -> None:
    """The md5 of the official archive (or of each extracted batch), checked before anything
    in it is unpickled."""
    files = [(path / n, CIFAR10_BATCHES[n]) for n in names] if path.is_dir() else \
        [(path, CIFAR10_TGZ_MD5)]
    for file, expected in files:
        got = md5_of_file(file)
        if got != expected:
            raise DatasetNotFoundError(
                f"{file} is not the official CIFAR-10 python file (md5 {got}, expected "
                f"{expected}); bayesgen reads only the official {CIFAR10_TGZ} from {CIFAR10_URL}")


def read_cifar10(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of the CIFAR-10 python version, from the
    `cifar-10-python.tar.gz` archive or the extracted `cifar-10-batches-py` folder, after
    checking its md5 (the batches are pickles: only the official files are read)."""
    names = [n for n in CIFAR10_BATCHES if (n == "test_batch") == (split == "test")]
    parts = {}
    path = Path(path)
    if path.is_dir() and not all((path / n).is_file() for n in names):
        raise DatasetNotFoundError(f"{path} lacks the CIFAR-10 batches {names}")
    _verify_cifar10(path, names)
    try:
        if path.is_dir():
            for n in names:
                with open(path / n, "rb") as f:
                    parts[n] = _unpickle_batch(f)
        else:
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    n = PurePosixPath(member.name).name
                    if n in names:
                        parts[n] = _unpickle_batch(tar.extractfile(member))
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, tarfile.TarError) as e:
        raise DatasetNotFoundError(f"{path}: unreadable CIFAR-10 batch ({e})") from None
    missing = [n for n in names if n not in parts]
    if missing:
        raise DatasetNotFoundError(f"{path} lacks the CIFAR-10 batches {missing}")
    x, y = zip(*(parts[n] for n in names), strict=True)
    return np.concatenate(x), np.concatenate(y)


class CIFAR10Data(DataSource):
    """CIFAR-10 (3, 32, 32) in [−1, 1] (or bin centres with `num_bins`, e.g. 16), labels 0–9;
    train 45k / val 5k (fixed seed) / test 10k; `hflip` flips training images at random.
    `reference_split`: the very split of a reference's code, "bfn" (train 49,500 / val 500) or
    "bsi" (45,000 / 5,000), instead of `val_size` at `split_seed`."""

    folder = "cifar10"

    def __init__(
        self,
        root=None,
        val_size: int = 5000,
        split_seed: int = 0,
        num_bins: int | None = None,
        hflip: bool = False,
        download: bool = True,
        reference_split: str | None = None,
    ):
        self.root, self.val_size, self.split_seed = root, val_size, split_seed
        self.num_bins, self.hflip, self.download = num_bins, hflip, download
        self.reference_split = reference_split
        self.info = DatasetInfo(
            name="cifar10", data_shape=(3, 32, 32), kind="image", num_labels=10,
            num_bins=num_bins or 256,
        )  # fmt: skip

    def _locate(self) -> Path:
        for d in search_dirs(self.folder, self.root):
            batches = d / CIFAR10.base_folder
            if all((batches / n).is_file() for n in CIFAR10_BATCHES):
                for n, md5 in CIFAR10_BATCHES.items():
                    if md5_of_file(batches / n) != md5:
                        raise DatasetNotFoundError(f"{batches / n} fails its md5 check.")
                return batches
            if (d / CIFAR10_TGZ).is_file():
                if md5_of_file(d / CIFAR10_TGZ) != CIFAR10_TGZ_MD5:
                    raise DatasetNotFoundError(
                        f"{d / CIFAR10_TGZ} fails its md5 check (expected {CIFAR10_TGZ_MD5}); "
                        f"delete it and download it again from {CIFAR10_URL}."
                    )
                return d / CIFAR10_TGZ
        dest = download_dir(self.folder, self.root)
        dirs = ", ".join(map(str, search_dirs(self.folder, self.root)))
        message = (
            f"cifar10: not found in {dirs}. Put {CIFAR10_TGZ} (the python version, "
            f"{CIFAR10_URL}) or its extracted {CIFAR10.base_folder}/ in {dest} "
            "(or pass root=..., or set BAYESGEN_DATA_DIR to a folder holding 'cifar10/')"
        )
        return download_or_explain(message, self.download, lambda: fetch(
            [CIFAR10_URL], dest, CIFAR10_TGZ, CIFAR10_TGZ_MD5))

    def prepare(self) -> None:
        self._locate()

    def load(self):
        path = self._locate()
        (train_x, train_y), (test_x, test_y) = (read_cifar10(path, s) for s in ("train", "test"))
        val, train = (reference_split(len(train_x), self.reference_split)
                      if self.reference_split else
                      split_indices(len(train_x), [self.val_size], self.split_seed))
        return (
            ImageTensors(train_x[train], train_y[train], self.num_bins, self.hflip),
            ImageTensors(train_x[val], train_y[val], self.num_bins),
            ImageTensors(test_x, test_y, self.num_bins),
        )


# --------------------------------------------------------------------------- image folders / ZIPs
def class_labels(names: list[str]) -> list[int]:
    """Labels from the images' parent folders (sorted folder names -> 0, 1, ...), or all −1
    when the images share a single folder."""
    parents = [str(PurePosixPath(n).parent) for n in names]
    classes = sorted(set(parents))
    if len(classes) < 2:
        return [-1] * len(names)
    index = {c: i for i, c in enumerate(classes)}
    return [index[p] for p in parents]


def list_images(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """Sorted image names inside a folder or ZIP and their labels: from `dataset.json`
    (StyleGAN format, `{"labels": [[name, label], ...]}` or `null`) when present, else from
    class subfolders (`class_labels`)."""
    path = Path(path)
    if path.is_dir():
        all_names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        meta = (path / "dataset.json").read_text() if (path / "dataset.json").is_file() else None
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            all_names = z.namelist()
            meta = z.read("dataset.json").decode() if "dataset.json" in all_names else None
    else:
        raise DatasetNotFoundError(f"{path} is neither a folder nor a ZIP file of images")
    names = sorted(n for n in all_names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DatasetNotFoundError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if meta is None:
        return names, class_labels(names)
    labels = json.loads(meta).get("labels")
    if labels is None:
        return names, [-1] * len(names)
    by_name = {n: int(label) for n, label in labels}
    return names, [by_name.get(n, -1) for n in names]


def _read_member(path: Path, name: str) -> bytes:
    if path.is_dir():
        return (path / name).read_bytes()
    with zipfile.ZipFile(path) as z:
        return z.read(name)


class ImageFiles(Dataset):
    """Images in a folder or an (uncompressed) ZIP, decoded on access."""

    def __init__(self, path, names, labels, mode="RGB", num_bins=None, hflip=False):
        self.path, self.names = Path(path), list(names)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.mode, self.num_bins, self.hflip = mode, num_bins, hflip
        self._zip, self._pid = None, None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_pid": None}

    def _bytes(self, name: str) -> bytes:
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        if self._zip is None or self._pid != os.getpid():  # one handle per worker process
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(name)

    def pixels(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 (C, H, W)."""
        image = Image.open(io.BytesIO(self._bytes(self.names[i]))).convert(self.mode)
        array = np.asarray(image)
        return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())

    def __getitem__(self, i):
        x = scale_pixels(self.pixels(i), self.num_bins)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


class ImageFolderData(DataSource):
    """A StyleGAN-style data set: a ZIP (uncompressed PNGs + `dataset.json`, as written by
    `prepare_image_zip`) or a folder of images, given as `root`. All images must have one size.

    Validation: `val_size` images held out with a fixed seed (default 2%, at most 1000, at
    least 1).
    Test: the images at `test_path` (another folder or ZIP), else an empty set.
    `data_shape` (C, H, W), with `num_labels`, states the size up front: then `info` is known
    while `root` does not exist yet (e.g. `bayesgen info` on another machine); the files are
    checked against it when they are read.
    """

    def __init__(
        self,
        root=None,
        val_size: int | None = None,
        test_path: str | None = None,
        split_seed: int = 0,
        num_bins: int | None = None,
        hflip: bool = False,
        data_shape: tuple[int, int, int] | None = None,
        num_labels: int = 0,
    ):
        if root is None:
            raise ValueError("image_folder needs root=<a folder of images or a dataset .zip>")
        self.root, self.test_path, self.split_seed = Path(root), test_path, split_seed
        self.num_bins, self.hflip, self._val_size = num_bins, hflip, val_size
        self.names = None
        if data_shape is not None and not self.root.exists():
            self.info = self._info(tuple(data_shape), num_labels)
            return
        self._scan(data_shape)

    def _info(self, data_shape: tuple[int, ...], num_labels: int) -> DatasetInfo:
        self.mode = "L" if data_shape[0] == 1 else "RGB"
        return DatasetInfo(name=self.root.stem, data_shape=data_shape, kind="image",
                           num_labels=num_labels, num_bins=self.num_bins or 256)

    def _scan(self, data_shape: tuple[int, ...] | None = None) -> None:
        """List the images and read the first one's size; check it against ``data_shape``."""
        if not self.root.exists():
            raise DatasetNotFoundError(
                f"{self.root} does not exist; make it with `bayesgen prepare images source=<a "
                f"folder, tar, ZIP or the CIFAR-10 tarball> dest={self.root}` or point root at a "
                "folder of images"
            )
        self.names, self.labels = list_images(self.root)
        n = len(self.names)
        # 2% (at most 1000), and at least one image where there are two
        self.val_size = (min(1000, max(n // 50, int(n >= 2))) if self._val_size is None
                         else self._val_size)
        with Image.open(io.BytesIO(_read_member(self.root, self.names[0]))) as image:
            channels = 1 if image.mode in ("1", "L", "I;16") else 3
            found = (channels, image.size[1], image.size[0])
        if data_shape is not None and tuple(data_shape) != found:
            raise ValueError(f"{self.root} holds images of shape {found}, but the config says "
                             f"data_shape={list(data_shape)}; fix data.data_shape")
        self.info = self._info(found, max(self.labels) + 1)

    def prepare(self) -> None:
        if self.names is None:
            self._scan(self.info.data_shape)

    def load(self):
        self.prepare()
        val, train = split_indices(len(self.names), [self.val_size], self.split_seed)
        names, labels = np.array(self.names, dtype=object), torch.as_tensor(self.labels)

        def subset(idx, hflip=False):
            return ImageFiles(
                self.root, names[idx.numpy()], labels[idx], self.mode, self.num_bins, hflip
            )

        test_names, test_labels = list_images(self.test_path) if self.test_path else ([], [])
        test_root = self.test_path or self.root
        test = ImageFiles(test_root, test_names, test_labels, self.mode, self.num_bins)
        return subset(train, self.hflip), subset(val), test


# --------------------------------------------------------------------------- ImageNet32/64 (HDF5)
class H5Images(Dataset):
    """One split (`train`, `val` or `test`) of an HDF5 file written by `prepare_imagenet`:
    `<split>/images` uint8 (N, 3, r, r) and `<split>/labels` int64, read lazily."""

    def __init__(self, path, split: str, num_bins: int | None = None, hflip: bool = False):
        h5py = require("h5py", "hdf5", "ImageNet's HDF5 file")

        self.path, self.split, self.num_bins, self.hflip = Path(path), split, num_bins, hflip
        with h5py.File(self.path, "r") as f:
            self.length = len(f[split]["labels"])
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, i):
        h5py = require("h5py", "hdf5", "ImageNet's HDF5 file")

        if self._file is None or self._pid != os.getpid():  # one handle per worker process
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        group = self._file[self.split]
        x = scale_pixels(torch.from_numpy(group["images"][i]), self.num_bins)
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, torch.tensor(int(group["labels"][i]))


class ImageNetData(DataSource):
    """Downsampled ImageNet (3, r, r), r = 32 or 64, from `imagenet{r}.h5` (made once by
    `prepare_imagenet` from the official npz batches): train (99% of the official train set),
    val (the held-out 1%), test (the official 50k validation images); 1000 labels."""

    def __init__(
        self,
        resolution: int,
        root=None,
        num_bins: int | None = None,
        hflip: bool = False,
    ):
        self.resolution, self.root, self.num_bins, self.hflip = resolution, root, num_bins, hflip
        self.folder, self.filename = f"imagenet{resolution}", f"imagenet{resolution}.h5"
        self.info = DatasetInfo(
            name=self.folder, data_shape=(3, resolution, resolution), kind="image",
            num_labels=1000, num_bins=num_bins or 256,
        )  # fmt: skip

    def _locate(self) -> Path:
        for d in search_dirs(self.folder, self.root):
            if (d / self.filename).is_file():
                return d / self.filename
        r = self.resolution
        raise DatasetNotFoundError(
            f"{self.folder}: {self.filename} not found in "
            f"{', '.join(map(str, search_dirs(self.folder, self.root)))}. ImageNet cannot be "
            f"downloaded automatically: download Imagenet{r}_train_npz.zip and "
            f"Imagenet{r}_val_npz.zip from https://image-net.org/download-images.php, unzip "
            "them into one folder SRC and run: bayesgen prepare imagenet source=SRC "
            f"dest={download_dir(self.folder, self.root) / self.filename} resolution={r}"
        )

    def prepare(self) -> None:
        self._locate()

    def load(self):
        path = self._locate()
        return (
            H5Images(path, "train", self.num_bins, self.hflip),
            H5Images(path, "val", self.num_bins),
            H5Images(path, "test", self.num_bins),
        )
