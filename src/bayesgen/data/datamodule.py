"""The registry of data sets, `build_datasets`, and the Lightning `DataModule`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from bayesgen.data.images import (
    BinarizedMNISTData,
    CIFAR10Data,
    FashionMNISTData,
    ImageFolderData,
    ImageNetData,
    MNISTData,
)
from bayesgen.data.info import DatasetInfo, DataSource
from bayesgen.data.sampler import ResumableRandomSampler
from bayesgen.data.text import Text8Data, TextFileData, TinyShakespeareData
from bayesgen.data.toy import TOYS, DigitsData, ToyData

DATASETS: dict[str, Callable[..., DataSource]] = {
    **{name: partial(ToyData, name) for name in TOYS},
    "digits": DigitsData,
    "mnist": MNISTData,
    "binarized_mnist": BinarizedMNISTData,
    "fashion_mnist": FashionMNISTData,
    "cifar10": CIFAR10Data,
    "image_folder": ImageFolderData,
    "image_zip": ImageFolderData,
    "imagenet32": partial(ImageNetData, 32),
    "imagenet64": partial(ImageNetData, 64),
    "text8": Text8Data,
    "tinyshakespeare": TinyShakespeareData,
    "text": TextFileData,
}


def dataset_options(name: str) -> dict[str, object]:
    """The options of data set `name` and their defaults (`root` excluded)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    params = inspect.signature(DATASETS[name]).parameters
    return {k: p.default for k, p in params.items() if k != "root"}


def make_source(name: str, root=None, **options) -> DataSource:
    """The `DataSource` of data set `name`, options checked; reads no data."""
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for data set {name!r}; valid options: "
            + ", ".join(f"{k}={v!r}" for k, v in valid.items())
        )
    return DATASETS[name](root=root, **options)


def build_datasets(
    name: str, root=None, **options
) -> tuple[Dataset, Dataset, Dataset, DatasetInfo]:
    """(train, val, test, info) of data set `name`; items are `(x, y)` (see CONTRIBUTING.md)."""
    source = make_source(name, root, **options)
    return (*source.load(), source.info)


class DataModule(L.LightningDataModule):
    """Loaders of a registered data set; `.info` is known right after construction.

    Training batches are shuffled and the last incomplete one is dropped; validation and test
    batches (`eval_batch_size`, default `batch_size`) keep their order and every item. In a
    distributed run each rank trains on its own shard of every epoch's order (the sampler
    below, with the rank); each rank evaluates
    its own share of the validation/test set with no example repeated (Lightning's
    DistributedSampler would pad with repeats), so the bits/dim averaged over ranks weighted by
    example counts (``sync_dist`` in the task) is the exact mean over the split.

    The training order is a `ResumableRandomSampler` seeded from
    ``torch.initial_seed()`` at construction (``seed_everything`` sets it); the module's
    ``state_dict`` (saved in checkpoints) records its seed, epoch and the batches trained in that
    epoch, so a resumed run (on each rank) sees the rest of the epoch in the same order.
    """

    def __init__(
        self,
        name: str,
        root=None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        **options,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.source = make_source(name, root, **options)
        self.info = self.source.info
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train = self.val = self.test = None
        self.shuffle_seed = torch.initial_seed() % 2**63
        self.train_sampler: ResumableRandomSampler | None = None
        self._resume: dict | None = None

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self.train, self.val, self.test = self.source.load()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if not train and distributed:
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        if train:  # sharded by rank here (the trainer's use_distributed_sampler is off)
            rank, world = ((self.trainer.global_rank, self.trainer.world_size) if distributed
                           else (0, 1))
            sampler = self.train_sampler = ResumableRandomSampler(len(dataset), self.shuffle_seed,
                                                                  rank, world)
            if self._resume is not None:
                sampler.resume(self._resume["epoch"], self._resume["batches"] * self.batch_size)
                self._resume = None
        # the loader's own generator seeds its workers: starting an iterator then draws
        # nothing from the global RNG, whose stream a resumed run must continue exactly
        generator = torch.Generator().manual_seed(self.shuffle_seed + (1 if train else 2))
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            generator=generator,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def state_dict(self) -> dict[str, int]:
        """Where training is in the data: the shuffling seed, the epoch and the batches of it
        whose optimizer step is done (checkpoints are written between steps)."""
        if self.train_sampler is None:
            return {"seed": self.shuffle_seed}
        epoch, done = self.train_sampler.epoch_in_progress, 0
        if self.trainer is not None:
            done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.completed)
        if done >= len(self.train_sampler) // self.batch_size:  # the epoch is complete
            epoch, done = epoch + 1, 0
        return {"seed": self.shuffle_seed, "epoch": epoch, "batches": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.shuffle_seed = int(state.get("seed", self.shuffle_seed))
        if "epoch" in state:
            self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, train=True)

    def val_dataloader(self) -> DataLoader:
        if len(self.val) == 0:
            raise ValueError(f"data {self.hparams.name} has no validation examples (its "
                             "data.val_size is 0 for this data set); set data.val_size=N > 0")
        return self._loader(self.val, train=False)

    def test_dataloader(self) -> DataLoader:
        if len(self.test) == 0:  # an image folder or ZIP without test_path
            raise ValueError(f"data {self.hparams.name} has no test examples (an image folder "
                             "or ZIP without data.test_path); evaluate the validation split "
                             "(evaluate.split=val when training, split=val for bayesgen "
                             "evaluate) or set data.test_path=<a ZIP or folder of test images>")
        return self._loader(self.test, train=False)
