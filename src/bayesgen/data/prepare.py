"""One-time conversions of downloaded data into the formats the loaders read.

- `prepare_image_zip`: the StyleGAN / EDM data set format (an uncompressed ZIP of uncompressed
  PNGs `00000/img00000000.png`, ... plus `dataset.json` with the labels), from a folder or ZIP
  of images, a tar of images (e.g. `test/<class>/NNNN.jpg`), or the CIFAR-10 python tar.gz.
- `prepare_imagenet`: the official downsampled ImageNet npz batches -> one HDF5 file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress, track

from bayesgen.data.images import IMAGE_EXTENSIONS, class_labels, list_images, read_cifar10


def _image_source(source: Path, split: str) -> tuple[int, list[int], Iterator[Image.Image]]:
    """(number of images, labels, images) of a folder, ZIP, tar of images or CIFAR tarball."""
    if source.is_dir() or zipfile.is_zipfile(source):
        names, labels = list_images(source)

        def images():
            with contextlib.ExitStack() as stack:
                zf = None if source.is_dir() else stack.enter_context(zipfile.ZipFile(source))
                for n in names:
                    data = (source / n).read_bytes() if zf is None else zf.read(n)
                    yield Image.open(io.BytesIO(data))

        return len(names), labels, images()
    if tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = [m.name for m in tar.getmembers() if m.isfile()]
        if any(n.endswith("cifar-10-batches-py/data_batch_1") for n in members):
            x, y = read_cifar10(source, split)
            return len(x), y.tolist(), (Image.fromarray(a.transpose(1, 2, 0)) for a in x)
        names = sorted(n for n in members if n.lower().endswith(IMAGE_EXTENSIONS))

        def images():
            with tarfile.open(source) as tar:
                by_name = {m.name: m for m in tar.getmembers()}
                for n in names:
                    yield Image.open(io.BytesIO(tar.extractfile(by_name[n]).read()))

        return len(names), class_labels(names), images()
    raise ValueError(f"{source}: expected a folder, a ZIP or a tar of images, or a CIFAR tarball")


def prepare_image_zip(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    resolution: int | tuple[int, int] | None = None,
    max_images: int | None = None,
    split: str = "train",
    progress: bool = True,
) -> Path:
    """Write `dest` (.zip) in the StyleGAN / EDM format from `source`.

    `source`: a folder or ZIP of images (labels from its `dataset.json`, else from class
    subfolders, sorted by name), a tar of images such as `test/<class>/NNNN.jpg` (labels from
    the folders), or `cifar-10-python.tar.gz` (its `split`, "train" or "test"). `resolution`
    (int or (width, height)) resizes every image with Lanczos filtering; otherwise all images
    must already have one size. `max_images` keeps the first images in name order. Greyscale
    images stay one channel, anything else becomes RGB.
    """
    source, dest = Path(source), Path(dest)
    count, labels, images = _image_source(source, split)
    count = min(count, max_images) if max_images is not None else count
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    entries, shape = [], None
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        steps = zip(range(count), images, strict=False)
        for i, image in track(steps, total=count, description="images", disable=not progress):
            image = image.convert("L" if image.mode in ("1", "L") else "RGB")
            if resolution is not None and image.size != resolution:
                image = image.resize(resolution, Image.Resampling.LANCZOS)
            if shape is None:
                shape = (image.mode, image.size)
            elif (image.mode, image.size) != shape:
                tmp.unlink()
                raise ValueError(
                    f"image {i} is {image.mode} {image.size}, the first was {shape[0]} "
                    f"{shape[1]}; pass resolution= to resize them all"
                )
            name = f"{i:08d}"[:5] + f"/img{i:08d}.png"
            buffer = io.BytesIO()
            image.save(buffer, format="png", compress_level=0, optimize=False)
            zf.writestr(name, buffer.getvalue())
            entries.append([name, int(labels[i])])
        has_labels = all(label >= 0 for _, label in entries)
        zf.writestr("dataset.json", json.dumps({"labels": entries if has_labels else None}))
    tmp.replace(dest)
    return dest


def _batch_number(path: Path) -> int:
    return int(re.search(r"(\d+)(\.npz)?$", path.name).group(1))


def prepare_imagenet(
    src_dir: str | os.PathLike,
    dest_h5: str | os.PathLike,
    resolution: int,
    val_fraction: float = 0.01,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Convert the official downsampled ImageNet (Imagenet32/64 npz) into one HDF5 file.

    `src_dir` holds `train_data_batch_1` ... `train_data_batch_10` and `val_data` (with or
    without `.npz`), each with `data` (N, 3·r·r) uint8 in channel-first order and `labels`
    1..1000. Writes `train`, `val` (a fixed-seed `val_fraction` of the training images) and
    `test` (the official validation images) groups, each with `images` uint8 (N, 3, r, r) and
    `labels` int64 0..999, read by `build_datasets("imagenet32")`.
    """
    from bayesgen.extras import require

    h5py = require("h5py", "hdf5", "bayesgen prepare imagenet")
    src_dir, dest_h5 = Path(src_dir), Path(dest_h5)
    train_files = sorted(src_dir.glob("train_data_batch_*"), key=_batch_number)
    test_files = sorted(src_dir.glob("val_data*"))
    if not train_files or not test_files:
        raise FileNotFoundError(
            f"{src_dir} needs train_data_batch_1..10 and val_data (the unzipped official "
            f"Imagenet{resolution}_train_npz.zip and Imagenet{resolution}_val_npz.zip)"
        )

    def count(path: Path) -> int:
        with np.load(path) as batch:
            return len(batch["labels"])

    n_train, n_test = sum(map(count, train_files)), sum(map(count, test_files))
    held_out = np.zeros(n_train, dtype=bool)
    rng = np.random.default_rng(seed)
    held_out[rng.choice(n_train, round(n_train * val_fraction), replace=False)] = True
    sizes = {"train": n_train - held_out.sum(), "val": held_out.sum(), "test": n_test}

    dest_h5.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_h5.with_name(dest_h5.name + ".tmp")
    r = resolution
    with h5py.File(tmp, "w") as f, Progress(disable=not progress) as bar:
        f.attrs["resolution"] = r
        for split, n in sizes.items():
            f.create_dataset(f"{split}/images", (n, 3, r, r), dtype=np.uint8)
            f.create_dataset(f"{split}/labels", (n,), dtype=np.int64)
        task = bar.add_task(f"ImageNet{r} -> {dest_h5.name}", total=n_train + n_test)
        offsets, start = dict.fromkeys(sizes, 0), 0
        batches = [(p, "train") for p in train_files] + [(p, "test") for p in test_files]
        for path, kind in batches:
            with np.load(path) as batch:
                data, labels = batch["data"], np.asarray(batch["labels"], dtype=np.int64) - 1
            if data.shape[1] != 3 * r * r:
                raise ValueError(f"{path}: rows of {data.shape[1]} values, not 3·{r}·{r}")
            images = data.reshape(-1, 3, r, r)
            if kind == "train":
                mask = held_out[start : start + len(images)]
                start += len(images)
                parts = {"train": ~mask, "val": mask}
            else:
                parts = {"test": np.ones(len(images), dtype=bool)}
            for split, keep in parts.items():
                lo, hi = offsets[split], offsets[split] + int(keep.sum())
                f[f"{split}/images"][lo:hi] = images[keep]
                f[f"{split}/labels"][lo:hi] = labels[keep]
                offsets[split] = hi
            bar.advance(task, len(images))
    tmp.replace(dest_h5)
    return dest_h5
