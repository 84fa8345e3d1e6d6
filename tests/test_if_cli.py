"""Inflationary Flows end to end through the command line: a tiny toy run (train, evaluate,
sample) and the reference-script equivalents (encode, simulate, roundtrip-mse, coverage,
residuals), plus a tiny 8x8 image run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bayesgen.cli import main

TINY_TOY = ["experiment=circles-if-prp-fast", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
            "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
            "checkpoint.every_n_train_steps=3", "optim.warmup_steps=2", "sample.n=16",
            "sample.frames=3", "evaluate.max_batches=1", "data.batch_size=128",
            "data.eval_batch_size=128", "data.n_train=1024", "+data.n_val=128",
            "+data.n_test=256", "trainer.log_every_n_steps=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("if_toy")
    assert main(["train", *TINY_TOY, f"run_dir={run}"]) == 0
    return run


def test_train_evaluate_sample(toy_run, tmp_path, capsys):
    for name in ("checkpoints/last.ckpt", "ema.safetensors", "metrics.json", "samples.png",
                 "sampling.gif", "samples.pt"):
        assert (toy_run / name).is_file(), name
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert metrics["steps"] == 6 and np.isfinite(metrics["bpd"])
    assert torch.load(toy_run / "samples.pt").shape == (16, 2)
    out = tmp_path / "eval.json"
    assert main(["evaluate", f"ckpt={toy_run}", "max_batches=1", f"out={out}"]) == 0
    assert np.isfinite(json.loads(out.read_text())["bpd"])
    assert main(["sample", f"ckpt={toy_run}", "n=9", f"out={tmp_path}/s"]) == 0
    assert (tmp_path / "s/samples.png").is_file() and (tmp_path / "s/sampling.gif").is_file()
    assert torch.load(tmp_path / "s/samples.pt").shape == (9, 2)


def test_checkpoint_restores_the_pca(toy_run):
    from bayesgen.training.build import load_checkpoint

    _, task, path = load_checkpoint(toy_run)
    state = torch.load(path, weights_only=False)["state_dict"]
    for key in ("schedule.lam", "schedule.W", "schedule.g", "schedule.mean"):
        assert torch.equal(task.method.state_dict()[key], state[f"method.{key}"]), key


def test_encode(toy_run, tmp_path, capsys):
    out = tmp_path / "z.npz"
    assert main(["encode", f"ckpt={toy_run}", "n=50", "steps=21", "batch_size=32",
                 f"out={out}"]) == 0
    z = np.load(out)
    assert z["z"].shape == (50, 2) and z["labels"].shape == (50,)
    assert int(z["nfe"]) == 2 * 20          # Euler, 21 grid points, two batches
    assert "40 network evaluations" in capsys.readouterr().out


def test_simulate_all(toy_run, tmp_path, capsys):
    assert main(["simulate", f"ckpt={toy_run}", "n=40", "solver=heun", "steps=21",
                 "save_every=5", f"out={tmp_path}"]) == 0
    params = json.loads((tmp_path / "circles_PRP_net_sim_params.json").read_text())
    assert params["schedule"] == "PRP" and params["solver"] == "heun"
    assert params["grid"]["points"] == 21 and params["n"] == 40 and params["split"] == "test"
    for sim in ("melt", "roundtrip", "gen"):
        assert params["results"][sim]["nfe"] == 40      # Heun: 2 per step, 20 steps
        res = np.load(tmp_path / f"circles_PRP_net_{sim}_results.npz")
        assert res["times"].shape == (5,)               # times 0, 5, 10, 15, 20
        for key in ("xs", "xs_es", "tilde_xs", "tilde_xs_es", "dxs_dt", "dxs_dt_es",
                    "net_outs", "net_outs_es", "unscaled_scores", "unscaled_scores_es"):
            assert res[key].shape == (5, 40, 2), (sim, key)
    melt = np.load(tmp_path / "circles_PRP_net_melt_results.npz")
    rdtrp = np.load(tmp_path / "circles_PRP_net_roundtrip_results.npz")
    assert melt["times"][0] == 0 and rdtrp["times"][0] == pytest.approx(7.01)
    np.testing.assert_allclose(rdtrp["xs_es"][0], melt["xs_es"][-1])
    assert params["results"]["roundtrip"]["relative_error_mean"] < 0.05
    for name in ("latents.png", "roundtrip.png", "gen.png", "melt.gif", "gen.gif"):
        assert (tmp_path / f"circles_PRP_net_{name}").is_file(), name
    assert "40 network evaluations" in capsys.readouterr().out


def test_simulate_discrete_score(tmp_path):
    """No network: the exact denoiser of the batch; the roundtrip comes back."""
    assert main(["simulate", "score=discrete", "data=circles", "n=200", "steps=101",
                 "dtype=float64", "pictures=false", f"out={tmp_path}"]) == 0
    params = json.loads((tmp_path / "circles_PRP_discrete_sim_params.json").read_text())
    assert params["score"] == "discrete" and params["checkpoint"] is None
    assert params["results"]["roundtrip"]["relative_error_mean"] < 0.02
    gen = np.load(tmp_path / "circles_PRP_discrete_gen_results.npz")
    assert gen["tilde_xs"].shape == (11, 200, 2) and gen["xs_es"].dtype == np.float64
    assert main(["simulate", "score=discrete", "data=s_curve", "dims_to_keep=1", "n=100",
                 "sim=gen", "eps=0.01", "solver=heun", "steps=41",
                 f"out={tmp_path}"]) == 0
    prr = json.loads((tmp_path / "s_curve_PRRto1D_discrete_sim_params.json").read_text())
    assert prr["schedule_params"]["g"] == [1.0, -0.5, -0.5]
    z = np.load(tmp_path / "s_curve_PRRto1D_discrete_gen_results.npz")["xs_es"][0]
    assert z[:, 1:].std() < 0.2 < z[:, 0].std()             # eps = 0.01 for compressed dims


def test_roundtrip_mse_coverage_residuals(toy_run, tmp_path):
    assert main(["roundtrip-mse", f"ckpt={toy_run}", "n=64", "batch_size=32",
                 "solver=adaptive", "rtol=1e-4", "atol=1e-4", f"out={tmp_path}"]) == 0
    rt = json.loads((tmp_path / "circles_PRP_roundtrip_mse.json").read_text())
    assert rt["total_samples"] == 64 and rt["nfe_total"] > 0 and rt["split"] == "train"
    assert rt["result"]["relative_error_mean"] < 0.05

    assert main(["coverage", f"ckpt={toy_run}", "n_test=400", "n_boundary=60", "steps=31",
                 "radii=1,2,3", f"out={tmp_path}"]) == 0
    cov = np.load(tmp_path / "circles_PRP_coverage.npz")
    np.testing.assert_allclose(cov["fraction_latent"], cov["expected"], atol=0.1)
    assert int(cov["nfe_decode"]) == 30 and cov["points_data"].shape == (400 + 180, 2)
    ref = json.loads((tmp_path / "circles_PRP_400lssamples_coverages.json").read_text())
    assert set(ref) == {"init_ls", "ds", "ls_end_rdtrp", "expected"}

    assert main(["residuals", "extract", f"ckpt={toy_run}", "n=100", "n_time_pts=7",
                 f"out={tmp_path}"]) == 0
    ex = np.load(tmp_path / "circles_PRP_net_outputs_residuals.npz")
    assert ex["net_outputs"].shape == (100, 7, 2) and ex["times"].shape == (7,)
    assert main(["residuals", "calc", f"res={tmp_path}/circles_PRP_net_outputs_residuals.npz"]) == 0
    acs = np.load(tmp_path / "circles_PRP_autocorrelations.npz")
    assert acs["net_residual_acs"].shape == (7, 2, 2)
    np.testing.assert_allclose(np.diagonal(acs["net_residual_acs"][0]), 1.0, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["simulate", "score=discrete"], "data="),
    (["simulate", "score=net", "data=circles"], "score=discrete only"),
    (["simulate", "ckpt=x", "solver=rk4"], "choose one of"),
    (["encode"], "ckpt"),
    (["coverage", "ckpt=/does/not/exist"], "not found"),
    (["residuals"], "subcommand"),
    (["residuals", "calc", "res=/does/not/exist"], "does not exist"),
])
def test_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:") and message in err and len(err.splitlines()) == 1


def test_help(capsys):
    assert main(["simulate", "--help"]) == 0
    assert "sim=melt|roundtrip|gen|all" in capsys.readouterr().out


def test_tiny_image_run(tmp_path):
    """8x8 RGB images in an EDM ZIP: train a few steps, simulate (Heun on the image grid),
    roundtrip MSE on the 0–255 scale."""
    from bayesgen.data import prepare_image_zip

    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / f"{i}.png")
    data = prepare_image_zip(src, tmp_path / "tiny.zip")
    run = tmp_path / "run"
    assert main(["train", "experiment=cifar10-if-prp", f"data.root={data}", "data.val_size=8",
                 "data.data_shape=[3,8,8]",
                 "data.batch_size=8", "data.eval_batch_size=8", "data.num_workers=0",
                 "net.model_channels=16", "net.channel_mult=[1,1]", "net.num_blocks=1",
                 "net.attn_resolutions=[4]", "net.dropout=0", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                 "checkpoint.every_n_train_steps=2", "optim.warmup_steps=1", "sample.n=4",
                 "sample.frames=2", "method.sample_kwargs.n_steps=3", "evaluate.max_batches=1",
                 f"run_dir={run}"]) == 0
    assert torch.load(run / "samples.pt").shape == (4, 3, 8, 8)
    assert main(["simulate", f"ckpt={run}", "n=6", "steps=5", f"out={tmp_path}/sim"]) == 0
    params = json.loads((tmp_path / "sim/tiny_PRP_net_sim_params.json").read_text())
    assert params["solver"] == "heun" and params["results"]["gen"]["nfe"] == 8
    assert params["grid"]["start"] == pytest.approx(0.01)            # the reference's ε
    assert "mse_0_255" in params["results"]["roundtrip"]
    assert np.load(tmp_path / "sim/tiny_PRP_net_gen_results.npz")["tilde_xs"].shape[1:] == (
        6, 3, 8, 8)
    assert (tmp_path / "sim/tiny_PRP_net_gen.png").is_file()
    assert main(["roundtrip-mse", f"ckpt={run}", "n=12", "batch_size=6", "steps=5",
                 f"out={tmp_path}"]) == 0
    rt = json.loads((tmp_path / "tiny_PRP_roundtrip_mse.json").read_text())
    assert rt["result"]["mse_0_255"] >= 0 and rt["nfe_total"] == 2 * 2 * 8
