"""``bayesgen prepare``: data set conversion (EDM's ZIP of PNGs, downsampled ImageNet HDF5)."""

from __future__ import annotations

from pathlib import Path

from bayesgen.cli.options import FLOAT, INT, PATH, POSITIVE_INT, Command, Option, UsageError, choice


def require_exists(path: str, option: str) -> None:
    if not Path(path).exists():
        raise UsageError(f"{option}={path} does not exist")


def run_images(opts: dict) -> int:
    from bayesgen.data import prepare_image_zip

    require_exists(opts["source"], "source")
    out = prepare_image_zip(opts["source"], opts["dest"], resolution=opts["resolution"],
                            max_images=opts["max_images"], split=opts["split"])
    print(f"wrote {out}")
    return 0


def run_imagenet(opts: dict) -> int:
    from bayesgen.data import prepare_imagenet

    require_exists(opts["source"], "source")
    out = prepare_imagenet(opts["source"], opts["dest"], opts["resolution"],
                           val_fraction=opts["val_fraction"], seed=opts["seed"])
    print(f"wrote {out}")
    return 0


IMAGES = Command(
    "images", "image folder/ZIP/TAR or CIFAR-10 archive -> EDM ZIP of PNGs", run_images,
    description="Convert images to an uncompressed ZIP of PNGs with dataset.json (labels), the "
    "EDM/StyleGAN format that data=image_zip reads.",
    options=[
        Option("source", PATH, help="FOLDER, ZIP, TAR or cifar-10-python.tar.gz", required=True),
        Option("dest", PATH, help="the ZIP to write (OUT.zip)", required=True),
        Option("resolution", POSITIVE_INT, help="resize (centre crop) to this size; default: "
               "keep"),
        Option("max_images", POSITIVE_INT, help="convert at most N images"),
        Option("split", choice("train", "test"), "train", "split of a CIFAR-10 archive"),
    ])
IMAGENET = Command(
    "imagenet", "official downsampled ImageNet npz batches -> one HDF5 file", run_imagenet,
    description="Convert the official downsampled ImageNet npz batches (Imagenet32/64 "
    "train and val zips, unzipped into one folder) into one HDF5 file with train/val/test "
    "splits, which data=imagenet32 / data=imagenet64 read.",
    options=[
        Option("source", PATH, help="folder of the npz batches", required=True),
        Option("dest", PATH, help="the HDF5 file to write (OUT.h5)", required=True),
        Option("resolution", POSITIVE_INT, help="32 or 64", required=True),
        Option("val_fraction", FLOAT, 0.01, "share of the official train set held out as val"),
        Option("seed", INT, 0, "seed of the held-out split"),
    ])
COMMANDS = [Command("prepare", "data set conversion: images -> EDM ZIP, ImageNet -> HDF5",
                    subcommands={"images": IMAGES, "imagenet": IMAGENET})]
