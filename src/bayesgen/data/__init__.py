"""Data sets and Lightning data modules: toys, digits, MNIST, CIFAR-10, ImageNet32/64, text8.

`build_datasets(name, root=None, **options) -> (train, val, test, info)`; `DataModule` wraps
the same registry (`DATASETS`) for Lightning. See `info.py` for where files are looked for.
"""

from bayesgen.data.datamodule import DATASETS, DataModule, build_datasets, dataset_options
from bayesgen.data.info import DatasetInfo, DatasetNotFoundError
from bayesgen.data.prepare import prepare_image_zip, prepare_imagenet
from bayesgen.data.text import ALPHABET, decode_text, encode_text

__all__ = [
    "ALPHABET",
    "DATASETS",
    "DataModule",
    "DatasetInfo",
    "DatasetNotFoundError",
    "build_datasets",
    "dataset_options",
    "decode_text",
    "encode_text",
    "prepare_image_zip",
    "prepare_imagenet",
]
