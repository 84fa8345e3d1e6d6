"""BFN end to end through the command line: one tiny run per data kind (continuous,
discretized, discrete images, discrete text) and a class-conditional one, each followed by
`bayesgen evaluate` and `bayesgen sample`."""

import json

import pytest
import torch

from bayesgen.cli import main
from bayesgen.data.images import BinarizedMNISTData
from bayesgen.data.text import TinyShakespeareData

# a few steps, one validation and one evaluation batch, four samples of a few steps
TINY = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "checkpoint.every_n_train_steps=3", "optim.warmup_steps=1", "ema.warmup_steps=1",
        "evaluate.max_batches=1", "sample.n=4", "sample.frames=3",
        "method.sample_kwargs.n_steps=4", "trainer.log_every_n_steps=1"]
TINY_UNET = ["net.net.model_channels=32", "net.net.channel_mult=[1,2]",
             "net.net.num_res_blocks=1", "data.batch_size=8", "data.eval_batch_size=16",
             "data.num_workers=0", "data.download=false"]


def _has_mnist() -> bool:
    return BinarizedMNISTData(download=False)._find() is not None


def _has_shakespeare() -> bool:
    try:
        TinyShakespeareData(download=False)._locate()
    except Exception:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _has_mnist(), reason="MNIST not in ../shared/data/mnist")
needs_text = pytest.mark.skipif(not _has_shakespeare(),
                                reason="tinyshakespeare.txt not in ../shared/data/text")


def train_evaluate_sample(tmp_path, train_args, n_steps, sample_args=(), capsys=None):
    """Train, evaluate with the n-step loss, sample; returns (metrics, evaluation, samples)."""
    run = tmp_path / "run"
    assert main(["train", *train_args, *TINY, f"run_dir={run}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["n_examples"] > 0
    out = tmp_path / "eval.json"
    assert main(["evaluate", f"ckpt={run}", f"n_steps={n_steps}", "max_batches=1",
                 "repeats=2", f"out={out}"]) == 0
    evaluation = json.loads(out.read_text())
    assert evaluation["eval_kwargs"]["n_steps"] == n_steps and evaluation["repeats"] == 2
    # nll = l_recon + l_transmit, reported in nats/dim like BFN's official test script
    total = evaluation["l_recon_nats_per_dim"] + evaluation["l_transmit_nats_per_dim"]
    assert total == pytest.approx(evaluation["nats_per_dim"], rel=1e-6, abs=1e-9)
    assert evaluation["nats_per_dim_se"] > 0
    assert main(["sample", f"ckpt={run}", "n=3", "n_steps=5", f"out={tmp_path}/s",
                 *sample_args]) == 0
    samples = torch.load(tmp_path / "s/samples.pt")
    return metrics, evaluation, samples


def test_continuous_digits(tmp_path, capsys):
    _, ev, x = train_evaluate_sample(
        tmp_path, ["data=digits", "method=bfn_continuous", "net.hidden=32", "net.depth=1"], 10)
    assert x.shape == (3, 1, 8, 8) and x.abs().max() <= 1
    assert (tmp_path / "s/sampling.gif").is_file()
    capsys.readouterr()
    assert main(["evaluate", f"ckpt={tmp_path / 'run'}", "receiver=joint"]) != 0
    assert "discrete BFN only" in capsys.readouterr().err
    assert main(["evaluate", f"ckpt={tmp_path / 'run'}", "receiver=both"]) != 0
    assert "choose one of per_coordinate, joint" in capsys.readouterr().err


def test_discretized_digits_17_bins(tmp_path):
    _, ev, x = train_evaluate_sample(
        tmp_path, ["data=digits", "method=bfn_discretized", "net=vdm_unet", "net.width=32",
                   "net.n_blocks=1", "net.out_channels=2", "data.batch_size=16",
                   "data.eval_batch_size=32"], 10)
    centres = 2 * (torch.arange(17) + 0.5) / 17 - 1  # samples are bin centres of the 17 bins
    assert torch.isclose(x.reshape(-1, 1), centres.to(x.dtype)).any(1).all()
    assert 0 < ev["bpd"] < 10


@needs_mnist
def test_discrete_binarized_mnist_official_config(tmp_path):
    """experiment=mnist-bfn at toy size; evaluated with the paper's 784-step loss."""
    _, ev, x = train_evaluate_sample(tmp_path, ["experiment=mnist-bfn", *TINY_UNET], 784)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.int64
    assert set(x.unique().tolist()) <= {0, 1}
    assert ev["nats_per_example"] == pytest.approx(ev["nats_per_dim"] * 784)
    assert 0 < ev["bpd"] < 12  # an untrained net: about K·β(1)/4 nats per pixel
    assert ev["receiver"] == "per_coordinate"  # the config's default: what 77.87 used
    out = tmp_path / "joint.json"
    assert main(["evaluate", f"ckpt={tmp_path / 'run'}", "n_steps=784", "max_batches=1",
                 "receiver=joint", f"out={out}"]) == 0
    joint = json.loads(out.read_text())
    assert joint["receiver"] == "joint" and joint["l_recon_nats_per_dim"] > 0
    assert joint["l_transmit_nats_per_dim"] != pytest.approx(ev["l_transmit_nats_per_dim"])


@needs_mnist
def test_minimal_binarised_gif_of_p_on(tmp_path):
    """The minimal example's run: soft targets, class-conditional, P(pixel on) frames."""
    run = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith(("sample.frames", "method.sample_kwargs"))]
    assert main(["train", "experiment=mnist-bfn-minimal-binarised", *TINY_UNET, *tiny,
                 "sample.frames=20", "method.sample_kwargs.n_steps=30", f"run_dir={run}"]) == 0
    probs = torch.load(run / "samples.pt")
    assert probs.shape == (4, 1, 28, 28, 2) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(()))
    from PIL import Image

    with Image.open(run / "sampling.gif") as gif:
        assert gif.n_frames == 20
    assert main(["sample", f"ckpt={run}", "n=2", "n_steps=5", "label=3", "guidance=1",
                 f"out={tmp_path}/s"]) == 0
    assert torch.load(tmp_path / "s/samples.pt").shape == (2, 1, 28, 28, 2)


@needs_text
def test_discrete_text(tmp_path, capsys):
    _, ev, x = train_evaluate_sample(
        tmp_path, ["data=tinyshakespeare", "data.seq_len=32", "data.batch_size=16",
                   "data.eval_batch_size=16", "data.download=false", "method=bfn_discrete",
                   "method.beta_1=0.5625", "net=transformer", "net.n_layer=1", "net.n_embd=32",
                   "net.n_head=2"], 20)
    assert x.shape == (3, 32) and x.dtype == torch.int64
    lines = (tmp_path / "s/samples.txt").read_text()[:-1].split("\n\n")
    assert len(lines) == 3 and all(len(s) == 32 for s in lines)
    assert set("".join(lines)) <= set(" abcdefghijklmnopqrstuvwxyz")
    assert lines[0] in capsys.readouterr().out  # decoded text is printed too


def test_conditional_with_guidance(tmp_path):
    """Label dropout in training, classifier-free guidance and a fixed label at sampling."""
    _, _, x = train_evaluate_sample(
        tmp_path, ["data=digits", "method=bfn_continuous", "net.hidden=32", "net.depth=1",
                   "conditional.enabled=true", "conditional.label_dropout=0.1"], 10,
        sample_args=["guidance=2", "label=3"])
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
