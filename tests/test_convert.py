"""bayesgen convert: the authors' checkpoints → save_pretrained folders, checked against the
outputs the reference code computed (fixtures in tests/data/convert/, see its README.md)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

import bayesgen
from bayesgen.conversion import ConversionError, build, convert, load_converted, network_of

DATA = Path(__file__).parent / "data" / "convert"

# tiny versions of the reference networks: the experiment's network with these overrides
TINY = {
    "bfn_mnist_unet_tiny": ("mnist-bfn", [
        "net.net.model_channels=32", "net.net.channel_mult=[1,1]", "net.net.num_res_blocks=1",
        "net.net.attention_resolutions=[2]", "net.net.dropout=0.0"]),
    "bfn_vdm_unet_tiny_discretized": ("cifar10-bfn-discretized-256", [
        "net.width=16", "net.n_blocks=2", "net.num_heads=2", "+net.groups=4",
        "net.attention_everywhere=true", "net.dropout=0.0"]),
    "bfn_vdm_unet_tiny_continuous": ("cifar10-bfn-continuous-256", [
        "net.width=16", "net.n_blocks=2", "net.num_heads=2", "+net.groups=4",
        "net.attention_everywhere=true", "net.dropout=0.0"]),
    "bfn_transformer_tiny": ("text8-bfn", [
        "net.n_layer=2", "net.n_head=4", "net.n_embd=32", "data.seq_len=16"]),
}


def fixture(name: str, tmp_path: Path) -> Path:
    """The reference's saved state dict (gzip'ed in the repository) unpacked into tmp_path."""
    out = tmp_path / f"{name}.pt"
    with gzip.open(DATA / f"{name}.pt.gz") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def net_output(method, name: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The converted network's output in the layout the fixture stores."""
    if name.startswith("bfn_mnist"):  # θ₁ → the adapter's two logits; compare the log-odds
        theta = torch.stack([1 - x, x], dim=-1)
        logits = method.model(theta, t)
        return logits[..., 1] - logits[..., 0]
    return network_of(method)[1](x, t)


@pytest.mark.parametrize("name", list(TINY))
def test_bfn_official_reproduces_reference_outputs(name, tmp_path):
    experiment, overrides = TINY[name]
    state = torch.load(fixture(name, tmp_path), weights_only=True)
    _, _, method = load_converted(state, "bfn-official", experiment, overrides)
    io = torch.load(DATA / f"{name}_io.pt", weights_only=True)
    with torch.no_grad():
        out = net_output(method, name, io["x"], io["t"])
    assert out.shape == io["out"].shape
    assert relative_error(out, io["out"]) < 1e-5


def test_convert_writes_a_folder_that_loads(tmp_path):
    name = "bfn_transformer_tiny"
    experiment, overrides = TINY[name]
    folder = bayesgen.convert(fixture(name, tmp_path), tmp_path / "model",
                              format="bfn-official", experiment=experiment, overrides=overrides)
    run = bayesgen.load(folder)
    io = torch.load(DATA / f"{name}_io.pt", weights_only=True)
    with torch.no_grad():
        out = network_of(run.method)[1](io["x"], io["t"])
    assert relative_error(out, io["out"]) < 1e-5
    assert "bayesgen convert" in (folder / "config.json").read_text()


def test_mismatch_is_one_line_naming_key_and_experiment(tmp_path):
    state = torch.load(fixture("bfn_transformer_tiny", tmp_path), weights_only=True)
    with pytest.raises(ConversionError) as e:  # the text8 file onto the MNIST network
        load_converted(state, "bfn-official", *TINY["bfn_mnist_unet_tiny"])
    assert "\n" not in str(e.value) and "experiment=text8-bfn" in str(e.value)
    state.pop("net.lm_head.bias")
    with pytest.raises(ConversionError, match=r"no weights for head\.bias") as e:
        load_converted(state, "bfn-official", *TINY["bfn_transformer_tiny"])
    state["net.lm_head.bias"] = torch.zeros(28)
    with pytest.raises(ConversionError, match=r"head\.bias has shape \(28,\)"):
        load_converted(state, "bfn-official", *TINY["bfn_transformer_tiny"])
    state["net.lm_head.bias"], state["net.extra.weight"] = torch.zeros(27), torch.zeros(1)
    with pytest.raises(ConversionError, match=r"unexpected key net\.extra\.weight"):
        load_converted(state, "bfn-official", *TINY["bfn_transformer_tiny"])


def test_full_size_wrong_shape_names_the_fitting_experiment(tmp_path):
    state = torch.load(fixture("bfn_vdm_unet_tiny_discretized", tmp_path), weights_only=True)
    with pytest.raises(ConversionError, match="experiment=cifar10-bfn-discretized-256"):
        load_converted(state, "bfn-official", "cifar10-bfn-continuous-256")


def test_cli_convert_then_sample(tmp_path, capsys):
    from bayesgen.cli import main

    src = fixture("bfn_transformer_tiny", tmp_path)
    experiment, overrides = TINY["bfn_transformer_tiny"]
    out = tmp_path / "text8"
    assert main(["convert", str(src), f"out={out}", "format=bfn-official",
                 f"experiment={experiment}", *overrides]) == 0
    assert (out / "model.safetensors").is_file()
    assert main(["sample", f"ckpt={out}", "n=2", "n_steps=3", f"out={tmp_path / 's.txt'}"]) == 0
    assert main(["convert", str(src), f"out={tmp_path / 'x'}", "format=bfn-official",
                 "experiment=mnist-bfn"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("bayesgen: error")]
    assert len(err) == 1 and "experiment=text8-bfn" in err[0]


# ---- if-edm: Inflationary Flows' EDM-style pickles ---------------------------------------------
IF_TINY = ("cifar10-if-prp", ["data.data_shape=[3,4,4]", "net.model_channels=8",
                              "net.channel_mult=[1,1]", "net.num_blocks=1",
                              "net.attn_resolutions=[2]", "net.dropout=0.0"])


def if_fixture(tmp_path: Path) -> Path:
    out = tmp_path / "network-snapshot-000000.pkl"
    with gzip.open(DATA / "if_songunet_tiny.pkl.gz") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def test_if_edm_reproduces_reference_denoiser(tmp_path):
    """The reference IFsPreCond(x in ES, t) returns D(x, t) in image space."""
    from bayesgen.conversion.if_edm import read

    _, _, method = load_converted(read(if_fixture(tmp_path)), "if-edm", *IF_TINY)
    io = torch.load(DATA / "if_songunet_tiny_io.pt", weights_only=True)
    with torch.no_grad():
        d = method.schedule.rotate_to_is(method.denoise_es(io["x"].flatten(1), io["t"]))
    assert relative_error(d, io["out"]) < 1e-5


def test_if_edm_convert_writes_a_loadable_folder(tmp_path):
    folder = convert(if_fixture(tmp_path), tmp_path / "if", "if-edm", *IF_TINY)
    run = bayesgen.load(folder)
    assert run.method.schedule.W.shape == (48, 48)
    assert run.sample(2, n_steps=2, solver="euler").shape == (2, 3, 4, 4)


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    bad = tmp_path / "network-snapshot-000001.pkl"
    bad.write_bytes(pickle.dumps({"ema": _Hostile(marker)}))
    with pytest.raises(ConversionError) as e:
        convert(bad, tmp_path / "out", "if-edm", *IF_TINY)
    assert "refused to load" in str(e.value) and "system" in str(e.value)
    assert "\n" not in str(e.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_if_edm_wrong_hyperparameter_is_named(tmp_path):
    from bayesgen.conversion.if_edm import read

    experiment, overrides = IF_TINY
    with pytest.raises(ConversionError, match=r"rho=2.0, the experiment method.rho=1.0"):
        load_converted(read(if_fixture(tmp_path)), "if-edm", experiment,
                       [*overrides, "method.rho=1.0"])


# ---- bsi-lightning: the BSI repository's Lightning checkpoints --------------------------------
BSI_TINY = ("cifar10-vdm", ["net.width=32", "net.n_blocks=1", "net.num_heads=2",
                            "net.fourier_exponents=[6,7]", "net.time_size=8"])


def bsi_fixture(tmp_path: Path) -> Path:
    out = tmp_path / "last.ckpt"
    with gzip.open(DATA / "bsi_vdm_unet_tiny.ckpt.gz") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def test_bsi_lightning_reproduces_reference_ema_network(tmp_path):
    """The fixture's online weights are zero and its EMA weights random: the EMA ones count."""
    from bayesgen.conversion.bsi_lightning import read

    state = read(bsi_fixture(tmp_path))  # DictConfig / SeedSequence hyperparameters as data
    assert state.meta["ema"] and state.meta["config"]["task"]["name"] == "bsi"
    _, _, method = load_converted(state, "bsi-lightning", *BSI_TINY)
    io = torch.load(DATA / "bsi_vdm_unet_tiny_io.pt", weights_only=True)
    with torch.no_grad():
        out = network_of(method)[1](io["x"], io["t"])
    assert relative_error(out, io["out"]) < 1e-5


def test_bsi_lightning_wrong_network_names_experiment(tmp_path):
    from bayesgen.conversion.bsi_lightning import read

    state = read(bsi_fixture(tmp_path))
    with pytest.raises(ConversionError, match="no weights for .*experiment=cifar10-vdm"):
        load_converted(state, "bsi-lightning", "cifar10-vdm")  # full size: wrong shapes


def test_hostile_lightning_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Hostile(marker)}, bad)
    with pytest.raises(ConversionError, match="refused to load .*system"):
        convert(bad, tmp_path / "out", "bsi-lightning", *BSI_TINY)
    assert not marker.exists()


def test_init_from_starts_training_from_converted_weights(tmp_path):
    """``bayesgen train ... init_from=FOLDER``: the task starts from the folder's weights."""
    from bayesgen.training.build import ConfigError, build_datamodule, build_task, load_weights

    experiment, overrides = TINY["bfn_transformer_tiny"]
    folder = convert(fixture("bfn_transformer_tiny", tmp_path), tmp_path / "m", "bfn-official",
                     experiment, overrides)
    cfg, _, _ = build(experiment, overrides)
    task = build_task(cfg, build_datamodule(cfg))
    load_weights(task, folder)
    want = bayesgen.load(folder).method.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in task.method.state_dict().items())
    cfg, _, _ = build(experiment, [*overrides, "net.n_layer=1"])
    with pytest.raises(ConfigError, match="does not fit"):
        load_weights(build_task(cfg, build_datamodule(cfg)), folder)


@pytest.mark.parametrize("name", list(TINY))
def test_bfn_official_loss_equals_reference_loss(name, tmp_path, monkeypatch):
    """The continuous-time loss on a fixed batch at fixed t with the reference's Gaussian draws
    (nats per dimension, the mean the official BFN.forward returns)."""
    import dataclasses
    from types import SimpleNamespace

    import bayesgen.methods.bfn as bfn_module
    from bayesgen.training.build import build_method

    experiment, overrides = TINY[name]
    state = torch.load(fixture(name, tmp_path), weights_only=True)
    cfg, info, method = load_converted(state, "bfn-official", experiment, overrides)
    io = torch.load(DATA / f"{name}_io.pt", weights_only=True)
    x = io["loss_x"]  # the tiny nets run at the fixture's size, not the data set's
    small = build_method(cfg, SimpleNamespace(info=dataclasses.replace(
        info, data_shape=tuple(x.shape[1:]))))
    small.load_state_dict(method.state_dict())
    small.eval()

    def reference_noise(like, generator):
        assert like.shape == io["loss_noise"].shape
        return io["loss_noise"].to(like.dtype)

    monkeypatch.setattr(bfn_module, "_randn_like", reference_noise)
    # the image losses weigh the output error by −ln σ1·σ1^(−2t) (~1e5 at t = 0.7): float32
    # rounding of the two networks then differs by ~3e-4 relative, so they compare in float64
    dtype, ref, tol = ((torch.float64, io["loss64"], 1e-6) if "loss64" in io else
                       (torch.float32, io["loss"], 1e-5))
    small.to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    with torch.no_grad():
        loss = small.continuous_loss(x, io["t"].to(dtype)).mean() / small.data_dim
    assert abs(loss.item() - ref.item()) <= tol * abs(ref.item())


def test_bsi_lightning_dit_reproduces_reference(tmp_path):
    from bayesgen.conversion.bsi_lightning import read

    src = tmp_path / "dit.ckpt"
    with gzip.open(DATA / "bsi_dit_tiny.ckpt.gz") as f, open(src, "wb") as dst:
        shutil.copyfileobj(f, dst)
    state = read(src)
    overrides = ["+net.input_size=4", "net.hidden_size=32", "net.depth=2", "net.num_heads=4",
                 "net.fourier_exponents=[6,7]"]
    _, _, method = load_converted(state, "bsi-lightning", "imagenet32-dit", overrides)
    io = torch.load(DATA / "bsi_dit_tiny_io.pt", weights_only=True)
    with torch.no_grad():
        out = network_of(method)[1](io["x"], io["t"])
    assert relative_error(out, io["out"]) < 1e-5
    with pytest.raises(ConversionError, match="experiment=imagenet32-dit"):  # not the U-Net
        load_converted(state, "bsi-lightning", *BSI_TINY)
