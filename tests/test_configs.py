"""Every experiment file composes and builds on the meta device without its data files, and the
published architectures have the parameter counts of their specs."""

import json
from pathlib import Path

import pytest
import torch

import bayesgen
from bayesgen.cli import main
from bayesgen.data import build_datasets
from bayesgen.data.info import DatasetNotFoundError

EXPERIMENTS = sorted(p.stem for p in
                     (Path(bayesgen.__file__).parent / "conf" / "experiment").glob("*.yaml"))

# Parameter counts the specs state (spec/bsi.md, spec/bfn.md, spec/inflationary.md)
VDM_UNET, DIT_L, TEXT_TRANSFORMER, DDPMPP, MNIST_UNET = 28e6, 479e6, 170e6, 55.7e6, 25e6
PUBLISHED = {
    "cifar10-vdm": VDM_UNET,
    "cifar10-vdm-baseline": VDM_UNET,
    "cifar10-bfn-continuous-16": VDM_UNET,
    "cifar10-bfn-continuous-256": VDM_UNET,
    "cifar10-bfn-discretized-16": VDM_UNET,
    "cifar10-bfn-discretized-256": VDM_UNET,
    "imagenet32-dit": DIT_L,
    "imagenet64-dit": DIT_L,           # DiT-L/4: the DiT-L/2 body, bigger patches
    "imagenet32-dit-bfn": DIT_L,
    "imagenet64-dit-bfn": DIT_L,
    "imagenet32-dit-vdm": DIT_L,
    "imagenet64-dit-vdm": DIT_L,
    "text8-bfn": TEXT_TRANSFORMER,
    "cifar10-if-prp": DDPMPP,
    "cifar10-if-prr2": DDPMPP,
    "cifar10-if-prr1536": DDPMPP,
    "afhqv2-if-prp": DDPMPP,
    "mnist-bfn": MNIST_UNET,
}
TOLERANCE = 0.025  # the specs round to 2–3 significant digits


@pytest.fixture(autouse=True)
def no_data_files(tmp_path, monkeypatch):
    """Run where no data set is: an empty data directory and working directory."""
    monkeypatch.setenv("BAYESGEN_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)


def info(experiment: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["info", f"experiment={experiment}"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_published_configurations_exist():
    assert set(PUBLISHED) <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_on_meta_device(experiment, capsys):
    out = info(experiment, capsys)
    assert out["parameters"] > 0
    if experiment in PUBLISHED:
        expected = PUBLISHED[experiment]
        assert abs(out["parameters"] - expected) <= TOLERANCE * expected, out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_file_says_what_it_is(experiment):
    path = Path(bayesgen.__file__).parent / "conf" / "experiment" / f"{experiment}.yaml"
    lines = [line for line in path.read_text().splitlines() if line != "# @package _global_"]
    assert lines[0].startswith("# ") and len(lines[0]) > 20, f"{path} starts without a comment"


def test_dit_variants(capsys):
    l2, l4 = info("imagenet32-dit", capsys), info("imagenet64-dit", capsys)
    assert l2["data_shape"] == [3, 32, 32] and l4["data_shape"] == [3, 64, 64]
    # only the patch embedding and the head grow with the patch: 4× the pixels per token
    assert 0 < l4["parameters"] - l2["parameters"] < 1e6


def test_meta_build_allocates_nothing():
    from bayesgen.training.build import build_datamodule, build_method, compose_config

    cfg = compose_config(["experiment=imagenet32-dit"])
    with torch.device("meta"):
        method = build_method(cfg, build_datamodule(cfg))
    assert all(p.is_meta for p in method.parameters())


def test_image_zip_sized_without_its_files(tmp_path):
    """data_shape states the size before the ZIP exists; reading the data still needs it."""
    from bayesgen.data import DataModule

    dm = DataModule("image_zip", root=tmp_path / "missing.zip", data_shape=[3, 32, 32],
                    num_labels=10)
    assert dm.info.data_shape == (3, 32, 32) and dm.info.num_labels == 10
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        dm.setup("fit")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_datasets("image_zip", root=tmp_path / "missing.zip")
