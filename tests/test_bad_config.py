"""Bad configurations and command-line options (issue 8, observation 6): every row must end with
exit status 2 and one line on stderr, ``bayesgen: error: …``, that names the setting — for
``train`` before any work starts (the run directory is never created).

Every row of the table is a case. The default run takes the rows marked ``fast`` (the issue's
examples); ``-m faults`` runs the whole table (``make test-faults``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from bayesgen.cli import main

# tiny settings for every method (the rows that must fail never train)
TINY = ["data=digits", "net.hidden=16", "net.depth=1", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "checkpoint.every_n_train_steps=2", "optim.warmup_steps=1", "ema.warmup_steps=1",
        "sample.n=2", "sample.frames=2", "sample.animation=none", "evaluate.max_batches=1",
        "data.eval_batch_size=32"]
TINY_BSI = [*TINY, "method.sample_kwargs.k=2", "method.eval_kwargs.n_measure_samples=1"]
TINY_IF = ["experiment=circles-if-prp", "net.hidden=16", "net.depth=1", "trainer.max_steps=2",
           "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
           "checkpoint.every_n_train_steps=2", "optim.warmup_steps=1", "sample.n=4",
           "sample.frames=2", "sample.animation=none", "evaluate.max_batches=1",
           "data.batch_size=64", "data.eval_batch_size=64", "++data.n_train=256",
           "++data.n_val=64", "++data.n_test=64"]
DISC_256 = "{_target_:bayesgen.methods.bsi.Discretization,min:-1,max:1,k:256}"
GPU = torch.cuda.is_available()
SRUN = shutil.which("srun") is not None


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    needle: str  # what the one-line message must contain (the setting it names)
    fast: bool = False  # in the default run
    skip: str = ""  # reason to skip here
    label: str = ""  # the test id: the bad part of the command

    @property
    def id(self) -> str:
        text = self.label or " ".join(self.args)
        return text.replace("{run}", "RUN").replace("{if_run}", "IFRUN").replace("{tmp}", "TMP")


def train(*overrides: str, needle: str, fast: bool = False, skip: str = "") -> Row:
    return Row(("train", *TINY, *overrides, "run_dir={tmp}/run"), needle, fast, skip,
               "train " + " ".join(overrides))


def cmd(*args: str, needle: str, fast: bool = False, skip: str = "") -> Row:
    label = " ".join(a for a in args if a not in TINY)
    return Row(args, needle, fast, skip, label)


NO_GPU = "a GPU is present" if GPU else ""
ROWS = [
    # ---- types and ranges (train) --------------------------------------------------------------
    train("trainer.max_steps=abc", needle="trainer.max_steps", fast=True),
    train("trainer.max_steps=0", needle="trainer.max_steps", fast=True),
    train("trainer.max_steps=-1", needle="trainer.max_steps"),
    train("trainer.max_steps=2.5", needle="trainer.max_steps"),
    train("optim.lr=0", needle="optim.lr", fast=True),
    train("optim.lr=-1e-3", needle="optim.lr"),
    train("optim.lr=abc", needle="optim.lr"),
    train("optim.lr=inf", needle="optim.lr"),
    train("trainer.val_check_interval=0", needle="trainer.val_check_interval", fast=True),
    train("trainer.val_check_interval=-3", needle="trainer.val_check_interval"),
    train("trainer.val_check_interval=1.5", needle="trainer.val_check_interval"),
    train("sample.n=0", needle="sample.n", fast=True),
    train("sample.n=-4", needle="sample.n"),
    train("sample.frames=0", needle="sample.frames"),
    train("sample.animation=mp4", needle="sample.animation"),
    train("evaluate.max_batches=0", needle="evaluate.max_batches", fast=True),
    train("evaluate.split=train", needle="evaluate.split", fast=True),
    train("evaluate.split=foo", needle="evaluate.split"),
    train("data.eval_batch_size=0", needle="data.eval_batch_size", fast=True),
    train("data.batch_size=0", needle="data.batch_size"),
    train("data.batch_size=abc", needle="data.batch_size"),
    train("data.num_workers=-1", needle="data.num_workers"),
    train("optim.warmup_steps=-10", needle="optim.warmup_steps", fast=True),
    train("ema.warmup_steps=-10", needle="ema.warmup_steps", fast=True),
    train("ema.decay=1.5", needle="ema.decay"),
    train("ema.decay=-0.1", needle="ema.decay"),
    train("ema.power=0", needle="ema.power"),
    train("compile=maybe", needle="compile", fast=True),
    train("ema.enabled=maybe", needle="ema.enabled"),
    train("optim.fused=maybe", needle="optim.fused"),
    train("optim.betas=[0.9,1.5]", needle="optim.betas"),
    train("optim.betas=[0.9]", needle="optim.betas"),
    train("optim.weight_decay=-1", needle="optim.weight_decay"),
    train("optim.lr_schedule=linear", needle="optim.lr_schedule"),
    train("optim.min_lr=-1", needle="optim.min_lr"),
    train("checkpoint.every_n_train_steps=0", needle="checkpoint.every_n_train_steps"),
    train("conditional.label_dropout=1.5", needle="conditional.label_dropout"),
    train("conditional.guidance_scale=-1", needle="conditional.guidance_scale"),
    train("seed=abc", needle="seed"),
    train("seed=-1", needle="seed"),
    train("trainer.precision=17", needle="trainer.precision"),
    train("trainer.devices=0", needle="trainer.devices"),
    train("trainer.gradient_clip_val=-1", needle="trainer.gradient_clip_val"),
    train("trainer.log_every_n_steps=0", needle="trainer.log_every_n_steps"),
    train("+trainer.accumulate_grad_batches=0", needle="trainer.accumulate_grad_batches"),
    train("trainer.limit_val_batches=-1", needle="trainer.limit_val_batches"),
    train("trainer.accelerator=quantum", needle="trainer.accelerator"),
    train("trainer.strategy=ddpx", needle="trainer.strategy"),
    train("trainer.accelerator=gpu", needle="trainer.accelerator", fast=True, skip=NO_GPU),
    # ---- keys that do not exist -----------------------------------------------------------------
    train("trainer.max_step=20", needle="did you mean trainer.max_steps?", fast=True),
    train("+trainer.max_step=20", needle="did you mean trainer.max_steps?", fast=True),
    train("optim.lrr=1", needle="did you mean optim.lr?"),
    train("+optim.lrr=1", needle="did you mean optim.lr?"),
    train("+ema.decayy=0.5", needle="did you mean ema.decay?"),
    train("foo.bar=1", needle="foo.bar"),
    train("data.foo=1", needle="data.foo"),
    train("+data.foo=1", needle="foo"),
    train("+trainer.logger=false", needle="trainer.logger"),
    train("+trainer.max_steps=3", needle="trainer.max_steps"),
    train("data=text", needle="data.root", fast=True),
    train("data=cifar100", needle="data=cifar100 does not exist; choose one of", fast=True),
    train("method=ddpm", needle="method=ddpm"),
    train("net=resnet", needle="net=resnet"),
    train("experiment=nope", needle="experiment=nope"),
    train("trainer.max_steps=[1,2", needle="trainer.max_steps"),
    # ---- data, method and network that do not fit --------------------------------------------
    train("experiment=digits-bsi", "method=bfn_continuous", needle="method.lambda_0",
          fast=True),
    train("data=digits", "method=bfn_discrete", needle="method=bfn_discrete", fast=True),
    train("data=moons", "method=bfn_discretized", needle="data=moons", fast=True),
    train("method=bfn_discretized", "net=mlp", needle="net.out_channels", fast=True),
    train("data=moons", "method=bfn_continuous", needle="method=bfn_continuous"),
    train("data=text8", "method=bsi", needle="data=text8"),
    train("data=binarized_mnist", "method=if", needle="data=binarized_mnist"),
    train("data=text8", "method=bfn_discrete", "net=mlp", needle="MLP"),
    train("data=moons", f"method.discretization={DISC_256}", needle="method.discretization",
          fast=True),
    train(f"method.discretization={DISC_256}", needle="method.discretization"),
    train("data=sine2", "conditional.enabled=true", needle="conditional.enabled"),
    train("data=moons", "method=if", "net=toynet", "+net.out_features=4",
          needle="net.out_features"),
    train("experiment=cifar10-vdm", "net=mlp", needle="net.width"),
    train("method.k=-3", needle="k must be"),
    train("method.lambda_0=0", needle="lambda_0"),
    train("net.hidden=-3", needle="net"),
    train("data=moons", "method=if", "method.dims_to_keep=5", needle="dims_to_keep"),
    train("method.sample_kwargs.n_steps=5", needle="method.sample_kwargs"),
    train("method.sample_kwargs.k=0", needle="method.sample_kwargs.k"),
    train("method.eval_kwargs.n_measure_samples=-1", needle="method.eval_kwargs.n_measure_samples"),
    train("method=if", "data=moons", "net=toynet", "method.eval_kwargs.rtol=0",
          needle="method.eval_kwargs.rtol"),
    # ---- resume ---------------------------------------------------------------------------------
    cmd("train", "from_ckpt={run}", "method=bfn_continuous", needle="method=bfn_continuous",
        fast=True),
    cmd("train", "from_ckpt={run}", "data=moons", needle="data=moons", fast=True),
    cmd("train", "from_ckpt={run}", "net=toynet", needle="net=toynet"),
    cmd("train", "from_ckpt={run}", "experiment=digits-bsi", needle="experiment=digits-bsi"),
    cmd("train", "from_ckpt={run}", "trainer=ddp", needle="trainer=ddp"),
    cmd("train", "from_ckpt={run}", "data.name=moons", needle="data.name"),
    cmd("train", "from_ckpt={run}", "trainer.max_steps=abc", needle="trainer.max_steps"),
    cmd("train", "from_ckpt={run}", "data.batch_size=0", needle="data.batch_size"),
    cmd("train", "from_ckpt={run}", "optim.lrr=1", needle="optim.lrr"),
    cmd("train", "from_ckpt={tmp}/nothing", needle="not found"),
    cmd("train", "-m", "from_ckpt={run}", "trainer.max_steps=abc", "hydra.sweep.dir={tmp}/sw",
        needle="trainer.max_steps"),
    # ---- sweeps and Slurm -----------------------------------------------------------------------
    cmd("train", "-m", "hydra/launcher=slurm", "trainer.max_steps=2", needle="srun", fast=True,
        skip="srun is installed" if SRUN else ""),
    cmd("train", "-m", *TINY, "trainer.max_steps=2,abc", needle="trainer.max_steps"),
    cmd("train", "-m", *TINY, "optim.lr=1e-3,0", needle="optim.lr"),
    # ---- info -----------------------------------------------------------------------------------
    cmd("info", "trainer.max_steps=abc", needle="trainer.max_steps"),
    cmd("info", "data=digits", "method=bfn_discrete", needle="method=bfn_discrete"),
    # ---- evaluate -------------------------------------------------------------------------------
    cmd("evaluate", "ckpt={run}", "max_batches=0", needle="max_batches"),
    cmd("evaluate", "ckpt={run}", "samples=0", needle="samples"),
    cmd("evaluate", "ckpt={run}", "repeats=-1", needle="repeats"),
    cmd("evaluate", "ckpt={run}", "split=train", needle="split"),
    cmd("evaluate", "ckpt={run}", "k=abc", needle="k", fast=True),
    cmd("evaluate", "ckpt={run}", "k=-1", needle="k"),
    cmd("evaluate", "ckpt={run}", "n_steps=5", needle="n_steps"),
    cmd("evaluate", "ckpt={run}", "rtol=1e-3", needle="rtol"),
    cmd("evaluate", "ckpt={run}", "device=cuda", needle="device=cuda", fast=True, skip=NO_GPU),
    cmd("evaluate", "ckpt={run}", "device=tpu9", needle="device=tpu9"),
    cmd("evaluate", "ckpt={run}", "batch_size=0", needle="batch_size"),
    cmd("evaluate", "ckpt={run}", "seed=abc", needle="seed"),
    cmd("evaluate", "ckpt={run}", "colour=red", needle="colour"),
    cmd("evaluate", "ckpt={run}", "k", needle="key=value"),
    cmd("evaluate", needle="ckpt"),
    cmd("evaluate", "ckpt={tmp}/nothing", needle="not found"),
    # ---- sample ---------------------------------------------------------------------------------
    cmd("sample", "ckpt={run}", "n=0", needle="for n", fast=True),
    cmd("sample", "ckpt={run}", "n=-1", needle="for n", fast=True),
    cmd("sample", "ckpt={run}", "n=2.5", needle="for n"),
    cmd("sample", "ckpt={run}", "k=abc", needle="for k", fast=True),
    cmd("sample", "ckpt={run}", "k=0", needle="for k"),
    cmd("sample", "ckpt={run}", "n_steps=3", needle="n_steps"),
    cmd("sample", "ckpt={run}", "label=12", needle="label=12", fast=True),
    cmd("sample", "ckpt={run}", "label=-1", needle="label=-1"),
    cmd("sample", "ckpt={run}", "label=abc", needle="label"),
    cmd("sample", "ckpt={run}", "guidance=abc", needle="guidance"),
    cmd("sample", "ckpt={run}", "guidance=nan", needle="guidance"),
    cmd("sample", "ckpt={run}", "schedule=foo", needle="schedule"),
    cmd("sample", "ckpt={run}", "frames=0", needle="frames"),
    cmd("sample", "ckpt={run}", "animation=mp4", needle="animation"),
    cmd("sample", "ckpt={run}", "seed=1.5", needle="seed"),
    cmd("sample", "ckpt={run}", "device=cuda", needle="device=cuda", fast=True, skip=NO_GPU),
    cmd("sample", "ckpt={run}", "device=foo", needle="device=foo"),
    # ---- fid gen --------------------------------------------------------------------------------
    cmd("fid", "gen", "ckpt={run}", "dest={tmp}/gen", "n=0", needle="for n"),
    cmd("fid", "gen", "ckpt={run}", "dest={tmp}/gen", "batch_size=0", needle="batch_size"),
    cmd("fid", "gen", "ckpt={run}", "dest={tmp}/gen", "k=0", needle="for k"),
    cmd("fid", "gen", "ckpt={run}", "dest={tmp}/gen", "device=cuda", needle="device=cuda",
        skip=NO_GPU),
    cmd("fid", "calc", "images={tmp}/nothing", "ref={tmp}/ref.npz", needle="nothing"),
    # ---- Inflationary Flows commands ------------------------------------------------------------
    cmd("encode", "ckpt={if_run}", "n=0", needle="for n"),
    cmd("encode", "ckpt={if_run}", "solver=rk4", needle="solver"),
    cmd("encode", "ckpt={if_run}", "rtol=0", needle="rtol"),
    cmd("encode", "ckpt={if_run}", "split=foo", needle="split"),
    cmd("encode", "ckpt={if_run}", "dtype=float16", needle="dtype"),
    cmd("encode", "ckpt={if_run}", "device=cuda", needle="device=cuda", skip=NO_GPU),
    cmd("encode", "ckpt={if_run}", "n=100000", needle="n=100000"),
    cmd("encode", "ckpt={run}", needle="Inflationary Flow"),
    cmd("simulate", "ckpt={if_run}", "steps=1", needle="steps"),
    cmd("simulate", "ckpt={if_run}", "eps=-1", needle="eps"),
    cmd("simulate", "ckpt={if_run}", "label=12", needle="label"),
    cmd("simulate", "ckpt={if_run}", "sim=foo", needle="sim"),
    cmd("simulate", "ckpt={if_run}", "rho=2", needle="rho"),
    cmd("simulate", "ckpt={if_run}", "save_every=0", needle="save_every"),
    cmd("simulate", "score=discrete", "data=moons", "dims_to_keep=5", needle="dims_to_keep"),
    cmd("simulate", "score=discrete", "data=nope", needle="nope"),
    cmd("simulate", "score=discrete", needle="data="),
    cmd("simulate", "score=discrete", "data=moons", "t_start=-1", needle="t_start"),
    cmd("simulate", "score=discrete", "data=moons", "inflation_gap=-2",
        "inflation=constant_inflation_gap", needle="inflation_gap"),
    cmd("roundtrip-mse", "ckpt={if_run}", "n=0", needle="for n"),
    cmd("coverage", "ckpt={if_run}", "n_test=0", needle="n_test"),
    cmd("coverage", "ckpt={if_run}", "radii=abc", needle="radii"),
    cmd("coverage", "ckpt={if_run}", "alpha=-1", needle="alpha"),
    cmd("residuals", "extract", "ckpt={if_run}", "n_time_pts=0", needle="n_time_pts"),
    cmd("residuals", "calc", "res={tmp}/nothing", needle="nothing"),
    cmd("residuals", needle="extract"),
]
FAST = [r for r in ROWS if r.fast]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A 2-step class-conditional digits run (10 classes)."""
    run = tmp_path_factory.mktemp("digits")
    assert main(["train", *TINY_BSI, "conditional.enabled=true", f"run_dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def if_run(tmp_path_factory):
    """A 2-step Inflationary Flows run on circles."""
    run = tmp_path_factory.mktemp("if")
    assert main(["train", *TINY_IF, f"run_dir={run}"]) == 0
    return run


def check(row: Row, request, tmp_path, capsys, monkeypatch) -> None:
    if row.skip:
        pytest.skip(row.skip)
    monkeypatch.chdir(tmp_path)  # whatever a command writes by default stays in tmp_path
    text = " ".join(row.args)
    values = {"tmp": str(tmp_path)}
    if "{run}" in text:
        values["run"] = str(request.getfixturevalue("digits_run"))
    if "{if_run}" in text:
        values["if_run"] = str(request.getfixturevalue("if_run"))
    args = [a.format(**values) if "{" in a and "_target_" not in a else a for a in row.args]
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as e:  # a job inside Hydra's multirun exits the process
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:"), err
    assert len(err.splitlines()) == 1, err
    assert row.needle in err, err
    if args[0] == "train" and not any(a.startswith("from_ckpt=") for a in args):
        assert not (tmp_path / "run").exists(), "training started"


@pytest.mark.parametrize("row", FAST, ids=lambda r: r.id)
def test_bad_config(row: Row, request, tmp_path, capsys, monkeypatch, one_thread):
    check(row, request, tmp_path, capsys, monkeypatch)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_config_full_table(row: Row, request, tmp_path, capsys, monkeypatch, one_thread):
    check(row, request, tmp_path, capsys, monkeypatch)


def test_table_size():
    assert len(ROWS) >= 59


def test_exit_status_and_stderr_of_the_real_command(tmp_path):
    """In a process of its own: exit status 2 and nothing on stderr but the one line."""
    proc = subprocess.run([sys.executable, "-m", "bayesgen.cli", "train", "optim.lr=0",
                           f"run_dir={tmp_path}/run"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "bayesgen: error: invalid optim.lr=0: expected a number > 0"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides", [
    ["experiment=digits-bsi"], ["data=moons", "method=bsi"], ["data=moons", "method=if"],
    ["data=digits", "method=bfn_continuous"], ["data=text8", "method=bfn_discrete",
                                              "net=transformer", "net.n_layer=1"],
    ["data=digits", "method=bfn_discretized", "net=vdm_unet", "net.out_channels=2"],
    ["data=moons", "method=bsi", "method.discretization=null"],
    ["data=digits", "method.discretization={_target_:bayesgen.methods.bsi.Discretization,"
                    "min:-1,max:1,k:17}"],
    ["+trainer.max_epochs=3"], ["trainer.val_check_interval=0.5"], ["seed=7", "compile=true"],
])
def test_valid_configurations_pass(overrides, tmp_path, monkeypatch, one_thread):
    """The checks do not reject what works."""
    from bayesgen.training.validate import compose_checked, validate_config

    monkeypatch.setenv("BAYESGEN_DATA_DIR", str(tmp_path))  # text8 needs no files to check
    validate_config(compose_checked(overrides), overrides)
