"""Runs as objects (bayesgen.load, save_pretrained, from_pretrained), what the loggers show,
checkpoint retention, and Hydra's conventions for `bayesgen train`."""

import json
import os

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import bayesgen
from bayesgen.cli import main
from bayesgen.run import LoadError

TINY = ["data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "checkpoint.every_n_train_steps=2", "optim.warmup_steps=2", "ema.warmup_steps=2",
        "sample.n=4", "sample.frames=2", "sample.animation=none", "method.sample_kwargs.k=3",
        "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1",
        "trainer.log_every_n_steps=2", "log_samples.n=4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "checkpoint.keep_last=1", "checkpoint.save_top_k=1",
                 "logger=[csv,tensorboard]", f"hydra.run.dir={run}"]) == 0
    return run


def _samples(run, seed=0):
    return run.sample(4, generator=torch.Generator().manual_seed(seed))


def test_train_load_sample_save_pretrained_from_pretrained(run_dir, tmp_path, monkeypatch):
    # no data module, no data set: the data info comes from the configuration
    from bayesgen.data import datamodule, toy

    def refuse(*args, **kwargs):
        raise AssertionError("loading a run must not build a data module or read data")

    monkeypatch.setattr(datamodule.DataModule, "__init__", refuse)
    monkeypatch.setattr(toy.DigitsData, "load", refuse)

    run = bayesgen.load(run_dir)
    assert type(run.method) is bayesgen.BSI and not run.method.training
    assert run.info.data_shape == (1, 8, 8) and run.info.num_bins == 17
    assert run.config.net.hidden == 32 and run.metrics["steps"] == 6
    x = _samples(run)
    assert x.shape == (4, 1, 8, 8)
    assert torch.equal(x, _samples(run)) and not torch.equal(x, _samples(run, seed=1))
    bpd = run.elbo(x.clamp(-1, 1))[1]
    assert bpd.shape == (4,) and torch.isfinite(bpd).all()

    # the checkpoint holds the same EMA weights as ema.safetensors
    ckpt_run = bayesgen.load(run_dir / "checkpoints" / "last.ckpt")
    assert torch.equal(_samples(ckpt_run), x)

    out = run.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: bayesgen\n")
    assert "Bayesian Sample Inference" in card and "bits/dim" in card
    assert "bayesgen train data=digits net.hidden=32" in card  # from .hydra/overrides.yaml
    config = json.loads((out / "config.json").read_text())
    assert config["data_info"]["data_shape"] == [1, 8, 8] and config["metrics"]["steps"] == 6

    again = bayesgen.from_pretrained(out)
    assert type(again.method) is bayesgen.BSI
    assert torch.equal(_samples(again), x)  # same samples for the same generator
    assert torch.equal(_samples(bayesgen.load(out)), x)
    as_double = bayesgen.from_pretrained(out, dtype=torch.float64)
    assert as_double.sample(2).dtype == torch.float64


def test_inflationary_flow_keeps_its_fitted_pca(tmp_path):
    from bayesgen.training.build import build_datamodule, build_method, compose_config

    cfg = compose_config(["experiment=circles-if-prp", "net.hidden=16", "net.depth=1",
                          "++data.n_train=300", "++data.n_val=10", "++data.n_test=10"])
    method = build_method(cfg, build_datamodule(cfg)).eval()
    path = bayesgen.save_pretrained(method, tmp_path / "flow", config=cfg)
    run = bayesgen.from_pretrained(path)
    assert isinstance(run.method, bayesgen.InflationaryFlow)
    for name in ("lam", "W", "g", "mean"):
        got, want = getattr(run.method.schedule, name), getattr(method.schedule, name)
        assert got.dtype == torch.float64 and torch.equal(got, want), name
    kwargs = {"solver": "euler", "n_steps": 4}
    want = method.sample(3, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(run.sample(3, generator=torch.Generator().manual_seed(0), **kwargs), want)
    # float32 weights, the PCA stays float64
    run32 = bayesgen.from_pretrained(path, dtype=torch.bfloat16)
    assert run32.dtype == torch.bfloat16 and run32.method.schedule.W.dtype == torch.float64


def test_loading_refuses_foreign_targets_and_explains_bad_paths(run_dir, tmp_path):
    out = bayesgen.load(run_dir).save_pretrained(tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    config["config"]["net"]["_target_"] = "os.system"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="os.system.*not one of bayesgen's"):
        bayesgen.from_pretrained(out)
    with pytest.raises(LoadError, match="does not exist"):
        bayesgen.load(tmp_path / "nothing")
    with pytest.raises(LoadError, match="no config.yaml"):
        bayesgen.load(tmp_path)
    with pytest.raises(ValueError, match="'net' section"):
        bayesgen.save_pretrained(bayesgen.load(run_dir).method, tmp_path / "x", config={})


def test_hub_ids_go_through_huggingface_hub(run_dir, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    remote = tmp_path / "hub"
    calls = []

    class FakeApi:  # the Hub as a local folder: no network
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            import shutil

            shutil.copytree(folder_path, remote / repo_id)
            return f"commit of {repo_id}"

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        return str(remote / repo_id)

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    run = bayesgen.load(run_dir)
    assert run.push_to_hub("me/tiny-bsi") == "commit of me/tiny-bsi"
    assert calls == [("create_repo", "me/tiny-bsi")]
    again = bayesgen.from_pretrained("me/tiny-bsi")
    assert torch.equal(_samples(again), _samples(run))


def test_checkpoint_retention(run_dir):
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    # keep_last=1: the newest periodic checkpoint; save_top_k=1: the best by val/bpd; last.ckpt
    assert names[1:] == ["last.ckpt", "step0000006.ckpt"], names
    assert names[0].startswith("best-step") and names[0].endswith(".ckpt")
    best = torch.load(run_dir / "checkpoints" / names[0], weights_only=True)
    state = next(v for k, v in best["callbacks"].items() if "val/bpd" in k)
    assert float(state["best_model_score"]) == pytest.approx(float(names[0][-11:-5]), abs=1e-4)


def test_loggers_show_lr_grad_norm_throughput_samples_and_config(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("lr-AdamW/pg1", "train/grad_norm", "train/loss", "val/bpd"):
        assert column in header, column
    assert not any(c.startswith("throughput/") for c in header)  # wall clock: not in the CSV
    hparams = yaml.safe_load((run_dir / "logs" / "hparams.yaml").read_text())
    assert hparams["net.hidden"] == 32 and hparams["optim.warmup_steps"] == 2
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "train/grad_norm" in scalars and "throughput/examples_per_sec" in scalars
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    params = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert params["net.hidden"].number_value == 32
    images = events.Images("val/samples")
    assert [i.step for i in images] == [2, 4, 6] and images[0].width > 8


def test_logger_names():
    from bayesgen.training.monitor import logger_names

    assert logger_names("none") == [] and logger_names(None) == []
    assert logger_names("CSV") == ["csv"]
    assert logger_names(["csv", "tensorboard", "csv"]) == ["csv", "tensorboard"]
    with pytest.raises(ValueError, match="unknown logger 'mlflow'"):
        logger_names(["csv", "mlflow"])


SHORT = [*TINY, "trainer.max_steps=2", "sample.n=2", "log_samples.n=8", "data=moons"]


@pytest.mark.slow  # W&B starts a service process: about 20 s
def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = SHORT
    run = tmp_path / "wandb"
    assert main(["train", *args, "logger=wandb", f"run_dir={run}"]) == 0
    (offline,) = (run / "wandb").glob("offline-run-*")
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert offline.name.endswith(run_id) and (offline / f"run-{run_id}.wandb").is_file()
    assert list((offline / "files" / "media" / "images").rglob("*.png"))  # the scatter


# ---- Hydra ------------------------------------------------------------------------------------
def test_cfg_job_hydra_and_info_print_without_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--cfg", "job", "experiment=digits-bsi"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["name"] == "digits-bsi" and cfg["net"]["hidden"] == 1024
    assert main(["train", "--cfg", "hydra"]) == 0
    assert "runs/${name}/${now:%Y-%m-%d_%H-%M-%S}" in capsys.readouterr().out
    assert main(["train", "--cfg", "job", "--resolve", "-p", "optim"]) == 0
    out = capsys.readouterr().out  # the root config's optimizer (the demo warms up for 200)
    assert "lr: 0.001" in out and "warmup_steps: 1000" in out
    assert main(["train", "--info", "searchpath"]) == 0
    assert "bayesgen.conf" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_hydra_run_dir_chdir_and_no_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    assert main(["train", *SHORT, "hydra.job.chdir=true", "hydra.run.dir=out/${name}",
                 "logger=none"]) == 0
    run = tmp_path / "out" / "moons-bsi-mlp"  # <data>-<method>-<net> without an experiment
    assert os.getcwd() == cwd  # Hydra went back
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "metrics.json",
                 "checkpoints/last.ckpt", "config.yaml", "samples.png"):
        assert (run / name).is_file(), name
    assert OmegaConf.load(run / "config.yaml").run_dir == str(run)
    assert not (run / "logs").exists() and not (run / "tensorboard").exists()  # logger=none


def test_resume_and_sweeps_from_a_checkpoint_use_its_config(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a sweep from a checkpoint: each job starts from its state and config (net.hidden=32,
    # not the default 256) in a directory of its own
    assert main(["train", "-m", f"from_ckpt={run_dir}", "trainer.max_steps=7",
                 "hydra.sweep.dir=sweep"]) == 0
    job = tmp_path / "sweep" / "0"
    cfg = OmegaConf.load(job / "config.yaml")
    assert cfg.net.hidden == 32 and cfg.trainer.max_steps == 7
    assert (job / ".hydra" / "overrides.yaml").is_file()
    assert torch.load(job / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 7
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 6  # left alone
    # a single run resumes in place and keeps the first session's Hydra record
    assert main(["train", f"from_ckpt={run_dir}", "trainer.max_steps=7"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 7
    (resumed,) = (run_dir / ".hydra").glob("resume-*")
    assert yaml.safe_load((resumed / "overrides.yaml").read_text()) == ["trainer.max_steps=7"]
    assert "net.hidden=32" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert not (tmp_path / "runs").exists()


def test_model_card_without_metrics_or_command(tmp_path):
    from bayesgen.run import model_card

    saved = {"method": "BFN", "parameters": 10, "metrics": None, "command": None,
             "data_info": {"name": "text8", "data_shape": [256], "kind": "text",
                           "num_classes": 27, "num_labels": 0, "num_bins": None},
             "config": {"name": "text8-bfn", "method": {"_target_": "bayesgen.methods.bfn.BFN",
                                                       "name": "bfn"},
                        "net": {"_target_": "bayesgen.nets.Transformer"}, "data": {}}}
    card = model_card(saved)
    assert "# text8-bfn" in card and "27 classes" in card
    assert "No metrics were recorded" in card and "Not recorded" in card



def test_missing_optional_dependencies_name_their_extra(monkeypatch):
    import sys

    from bayesgen import viz
    from bayesgen.extras import MissingDependency

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(MissingDependency, match=r"matplotlib: pip install 'bayesgen\[plots\]'"):
        viz.scatter(torch.zeros(3, 2))
    monkeypatch.setitem(sys.modules, "h5py", None)
    from bayesgen.data.images import H5Images

    with pytest.raises(MissingDependency, match=r"bayesgen\[hdf5\]"):
        H5Images("x.h5", "train")


def test_conditional_runs_take_labels(tmp_path):
    from bayesgen.training.build import build_datamodule, build_method, compose_config

    cfg = compose_config(["data=digits", "net.hidden=16", "net.depth=1", "method.k=3",
                          "conditional.enabled=true"])
    method = build_method(cfg, build_datamodule(cfg)).eval()
    run = bayesgen.from_pretrained(bayesgen.save_pretrained(method, tmp_path, config=cfg))
    assert run.num_labels == 10
    sampler = cfg.method.sample_kwargs.sampler  # the run samples as its config says
    want = method.sample(4, k=3, generator=torch.Generator().manual_seed(0),
                         class_labels=torch.full((4,), 3), sampler=sampler)
    got = run.sample(4, k=3, labels=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want)
    default = run.sample(4, k=3, generator=torch.Generator().manual_seed(0))  # classes 0..3
    assert not torch.equal(default, got)
