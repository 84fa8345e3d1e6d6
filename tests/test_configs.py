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

# The parameter counts of the references' networks (built from their code and configs):
# BSI's DenoisingVDMUNet (config/task/model/bsi/unet.yaml), BFN's UNetVDM with its Fourier input
# and output adapters (3 outputs continuous, 6 discretized), BFN's MNIST UNetModel with its
# input adapter, BFN's text8 GPT with its TextInputAdapter, BSI's DiT-L/2 and DiT-L/4, EDM's
# DDPM++ with its 9 augmentation labels (EDM: "55.73M").
BSI_VDM_UNET, BFN_UNET_3, BFN_UNET_6 = 28_093_059, 30_722_188, 30_722_584
BFN_MNIST_UNET, BFN_TEXT8_GPT = 24_808_961, 170_175_003
DIT_L2, DIT_L4, DDPMPP = 478_645_260, 478_940_208, 55_733_891
PUBLISHED = {
    "cifar10-vdm": BSI_VDM_UNET,
    "cifar10-vdm-baseline": BSI_VDM_UNET,
    "cifar10-bfn-continuous-16": BFN_UNET_3,
    "cifar10-bfn-continuous-256": BFN_UNET_3,
    "cifar10-bfn-discretized-16": BFN_UNET_6,
    "cifar10-bfn-discretized-256": BFN_UNET_6,
    "mnist-bfn": BFN_MNIST_UNET,
    "text8-bfn": BFN_TEXT8_GPT,
    "imagenet32-dit": DIT_L2,
    "imagenet64-dit": DIT_L4,           # DiT-L/4: the DiT-L/2 body, bigger patches
    "imagenet32-dit-bfn": DIT_L2,
    "imagenet64-dit-bfn": DIT_L4,
    "imagenet32-dit-vdm": DIT_L2,
    "imagenet64-dit-vdm": DIT_L4,
    "cifar10-if-prp": DDPMPP,
    "cifar10-if-prr2": DDPMPP,
    "cifar10-if-prr1536": DDPMPP,
    "afhqv2-if-prp": DDPMPP,
    "afhqv2-if-prr2": DDPMPP,
    "afhqv2-if-prr1536": DDPMPP,
}
TOLERANCE = 1e-3  # within 0.1% of the reference (all of these match exactly today)


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


def _compose(experiment: str):
    from bayesgen.training.build import compose_config

    return compose_config([f"experiment={experiment}"])


@pytest.mark.parametrize(("experiment", "split"), [
    ("cifar10-bfn-continuous-16", "bfn"), ("cifar10-bfn-continuous-256", "bfn"),
    ("cifar10-bfn-discretized-16", "bfn"), ("cifar10-bfn-discretized-256", "bfn"),
    ("mnist-bfn", "bfn"), ("cifar10-vdm", "bsi"), ("cifar10-vdm-baseline", "bsi")])
def test_reference_splits(experiment, split):
    assert _compose(experiment).data.reference_split == split


@pytest.mark.parametrize(("bsi", "vdm"), [("cifar10-vdm", "cifar10-vdm-baseline"),
                                          ("imagenet32-dit", "imagenet32-dit-vdm"),
                                          ("imagenet64-dit", "imagenet64-dit-vdm")])
def test_vdm_baselines_differ_from_bsi_in_the_method_alone(bsi, vdm):
    a, b = _compose(bsi), _compose(vdm)
    for key in a:
        if key not in ("method", "name"):
            assert a[key] == b[key], (vdm, key)
    assert b.method._target_ == "bayesgen.methods.vdm.VDM" and b.method.discretization == "auto"


def test_text8_windows_and_decay_groups():
    cfg = _compose("text8-bfn")
    assert cfg.data.train_stride == 1 and cfg.optim.no_decay_on_norms_and_biases


@pytest.mark.parametrize("experiment", ["cifar10-if-prp", "cifar10-if-prr2", "afhqv2-if-prr1536"])
def test_if_image_configs_augment_and_ema_as_edm(experiment):
    cfg = _compose(experiment)
    assert cfg.augment.p == 0.12 and cfg.augment.xflip == 1e8 and cfg.net.augment_dim == 9
    assert cfg.ema.halflife_images == 500_000 and cfg.ema.rampup_ratio == 0.05


TOY_IF = [e for e in EXPERIMENTS if "-if-" in e and not e.startswith(("cifar10", "afhqv2"))
          and not e.endswith("-fast")]


@pytest.mark.parametrize("experiment", TOY_IF)
def test_toy_if_reference_settings_and_fast_twin(experiment):
    """<toy>-if-*: toy_train.py's settings; <toy>-if-*-fast: bayesgen's CPU settings."""
    ref, fast = _compose(experiment), _compose(f"{experiment}-fast")
    assert (ref.optim.lr, ref.data.batch_size, ref.optim.warmup_steps) == (1e-5, 8192, 1221)
    assert ref.trainer.max_steps * 8192 >= 7000e6 > (ref.trainer.max_steps - 1) * 8192
    assert (fast.optim.lr, fast.data.batch_size, fast.trainer.max_steps) == (1e-3, 512, 50_000)
    assert fast.name == f"{experiment}-fast" and fast.data.name == ref.data.name
    assert fast.method.get("dims_to_keep") == ref.method.get("dims_to_keep")
