"""The ``bayesgen`` command line: train, evaluate, sample, info (and the data/metric tools).

Every command takes ``key=value`` arguments; ``bayesgen train`` takes Hydra overrides.
Errors the user can fix are printed as one line (``bayesgen: error: ...``), exit status 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: bayesgen COMMAND [key=value ...]

commands:
  train     [overrides]                     train (Hydra overrides, e.g. experiment=digits-bsi)
  evaluate  ckpt=RUN [k=inf|N] [n_steps=N] [samples=N] [repeats=N] [split=test] [max_batches=N]
                                            bits/dim with its standard error -> JSON
  sample    ckpt=RUN [n=64] [k=N] [n_steps=N] [out=DIR] [seed=0] [label=C] [guidance=W]
                                            samples: PNG grid / scatter, animation, tensor
  info      [overrides]                     parameter count of a configuration (meta device)
  compare   preset=digits|mnist [methods=…]   train several methods alike -> report.md/.html
  prepare   images|imagenet source=… dest=…  data set conversion (EDM ZIP of PNGs, ImageNet HDF5)
  fid       ref|gen|calc …                   FID statistics, sample folders, FID
  encode    ckpt=RUN …                        Inflationary Flows: data -> latents (.npz)
  simulate  sim=melt|roundtrip|gen|all …      IF pfODE trajectories (.npz + params JSON)
  roundtrip-mse, coverage, residuals extract|calc
                                            IF roundtrip MSE, toy coverage, residual correlations

Run `bayesgen COMMAND --help` for the command's options."""


class UsageError(ValueError):
    """Bad command-line arguments."""


def parse_args(args: list[str], allowed: dict[str, Callable], required=()) -> dict:
    """``key=value`` arguments converted by ``allowed[key]``; unknown keys are an error."""
    out = {}
    for arg in args:
        if "=" not in arg:
            raise UsageError(f"expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        if key not in allowed:
            raise UsageError(f"unknown option {key!r}; valid options: {', '.join(allowed)}")
        try:
            out[key] = allowed[key](value)
        except ValueError as e:
            raise UsageError(f"invalid value {value!r} for {key}: {e}") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise UsageError(f"missing required option {missing[0]}=...")
    return out


def _int_or_inf(value: str) -> int | None:
    if value.lower() in ("inf", "none", "null", "0"):
        return None
    n = int(value)
    if n < 0:
        raise ValueError("must be positive")
    return n


def _finite_float(value: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def _positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError("must be a positive integer")
    return n


# ---- train ----------------------------------------------------------------------------------
def cmd_train(args: list[str]) -> int:
    """bayesgen train [overrides] [Hydra flags]

Train with Hydra overrides, e.g. `bayesgen train experiment=digits-bsi trainer.max_steps=2000`.
Groups: data=, method=, net=, trainer=, experiment=. Resume an interrupted run with
`bayesgen train from_ckpt=runs/<name>/<timestamp>` (further overrides apply to its saved config).
Hydra's own flags work: --cfg job|hydra|all (print the composed config), --resolve, --info,
-m/--multirun (sweeps, Slurm: -m hydra/launcher=slurm ...), hydra.run.dir=, hydra.job.chdir=.
Writes runs/<name>/<timestamp>/ (a sweep: runs/<name>/<timestamp>/<job number>/): .hydra/,
checkpoints/, ema.safetensors, metrics.json, samples.png, sampling.gif, samples.pt,
logs/metrics.csv, tensorboard/, config.yaml."""
    return _hydra_train(list(args))


def _hydra_train(args: list[str]) -> int:
    """Every training run goes through Hydra's own entry point, so that Hydra's flags, output
    directories and ``.hydra/`` records behave as Hydra documents them. The configuration (each
    swept one too) is checked before anything starts. With ``from_ckpt=`` the checkpoint's
    configuration is the primary config that the overrides apply to; a single run then continues
    in the checkpoint's run directory (unless ``run_dir=`` says otherwise), a sweep's jobs each
    in their own."""
    import hydra
    from hydra.core.config_store import ConfigStore

    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.validate import (
        check_launcher,
        check_resume_overrides,
        compose_checked,
        sweep_configs,
        validate_config,
    )

    multirun = any(a in ("-m", "--multirun") for a in args)
    shows_only = any(a in ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help")
                     for a in args)
    overrides = [a for a in args if "=" in a and not a.startswith("-")
                 and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    config_name = "config"
    run_dir = _override_value(args, "run_dir")
    if run_dir and multirun:
        raise UsageError("run_dir= names one directory, but a sweep (-m) writes one per job: "
                         "set hydra.sweep.dir= instead")
    if run_dir and _override_value(args, "hydra.run.dir") is None:
        args.append(f"hydra.run.dir={_quote(run_dir)}")
    resume = _override_value(args, "from_ckpt")
    if resume:
        if multirun and "," in resume:
            raise UsageError("from_ckpt= takes one checkpoint (a sweep over checkpoints with "
                             "different configs is not supported); run one sweep per checkpoint")
        check_resume_overrides([a for a in overrides if not a.startswith("from_ckpt=")])
        path, saved = _resume_config(resume)
        ConfigStore.instance().store(name="bayesgen_resume", node=saved)
        config_name = "bayesgen_resume"
        args = [a for a in args if not a.startswith("from_ckpt=")]
        if not multirun and _override_value(args, "hydra.run.dir") is None:
            args += [f"hydra.run.dir={_quote(run_dir_of(path))}",  # keep the first .hydra/
                     f"hydra.output_subdir=.hydra/resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"]
    elif not shows_only:  # the composition's errors with "did you mean", every swept value
        elsewhere = check_launcher(args) if multirun else False
        for swept in sweep_configs(overrides) if multirun else [overrides]:
            validate_config(compose_checked(swept), swept, here=not elsewhere)

    @hydra.main(config_path="conf", config_name=config_name, version_base=None)
    def train_job(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        sys.argv = argv  # Lightning's processes for devices > 1 re-run the original command
        if resume:  # the saved configuration with this job's overrides
            try:
                validate_config(cfg, overrides)
            except ValueError as e:
                if multirun:  # one line and exit status 2, not Hydra's banner and traceback
                    print(f"bayesgen: error: {_one_line(e)}", file=sys.stderr)
                    raise SystemExit(2) from None
                failed.append(e)  # raised below, past Hydra's "Error executing job" banner
                return
        hydra_cfg = HydraConfig.get()
        out = Path(hydra_cfg.runtime.output_dir)
        if not (multirun or hydra_cfg.job.chdir) and out.is_relative_to(Path.cwd()):
            out = out.relative_to(Path.cwd())  # runs/<name>/<timestamp>, as the user wrote it
        if os.environ.get("LOCAL_RANK", "0") != "0" and "BAYESGEN_RUN_DIR" in os.environ:
            out = Path(os.environ["BAYESGEN_RUN_DIR"])  # a process Lightning started: rank 0's
        with open_dict(cfg):
            cfg.run_dir = str(out)
        try:
            run_training(cfg, run_dir=out)
        except Exception as e:
            if multirun:
                raise
            failed.append(e)  # raised below, past Hydra's "Error executing job" banner

    failed: list[Exception] = []
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [argv[0], *args]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach main(), which prints one line
    try:
        train_job()
        if failed:
            raise failed[0]
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return 0


def _override_value(args: list[str], key: str) -> str | None:
    """The value of override ``key=`` (also ``+key=``/``++key=``) among ``args``, else None."""
    for arg in args:
        name, sep, value = arg.lstrip("+").partition("=")
        if sep and name == key:
            return value
    return None


def _quote(path) -> str:
    """A path as a quoted Hydra override value (paths may hold '=', ',' or spaces)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resume_config(resume: str):
    """(checkpoint, configuration) to resume from: the newest checkpoint of a run directory
    that loads (reporting any that does not), or the given file; the configuration is the
    checkpoint's, with ``from_ckpt`` set and Hydra's settings of ``conf/config.yaml`` — the
    primary config of a resumed run."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    from bayesgen.training.build import find_checkpoint
    from bayesgen.training.checkpoint import (
        checkpoint_config,
        newest_intact_checkpoint,
        read_checkpoint,
    )

    path = Path(resume)
    if path.is_dir() and (found := newest_intact_checkpoint(path, say=_say)) is not None:
        path, ckpt = found
    else:
        path = find_checkpoint(path)
        ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    del ckpt
    cfg.from_ckpt = str(path)
    root = OmegaConf.create(files("bayesgen.conf").joinpath("config.yaml").read_text())
    cfg.hydra = root.get("hydra", {})
    return path, cfg


def run_training(cfg, run_dir: Path | None = None, callbacks: list | None = None) -> Path:
    """Train, then write ``ema.safetensors``, samples and ``metrics.json`` (test bpd).

    A run directory that already holds a checkpoint (``checkpoints/last.ckpt``, the
    ``hpc_ckpt_<n>.ckpt`` Lightning saves when Slurm signals a preemption, or a periodic
    ``step<n>.ckpt``) resumes from the newest one that loads, so a requeued job continues where
    it stopped; a run already at ``trainer.max_steps`` only writes the outputs it lacks. One
    process trains in a directory at a time (`RunLock`). With several processes, the outputs
    after training are written by rank zero alone."""
    from bayesgen.training.lock import RunLock

    resume = Path(cfg.from_ckpt) if cfg.get("from_ckpt") else None
    run_dir = _run_dir(cfg, run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, say=_say).acquire()
    try:
        return _train_in(cfg, run_dir, resume, callbacks)
    finally:
        lock.release()


def _train_in(cfg, run_dir: Path, resume: Path | None, callbacks: list | None) -> Path:
    import warnings

    import lightning as L
    from omegaconf import OmegaConf

    from bayesgen.training.build import build_datamodule, build_task, build_trainer, is_sharded
    from bayesgen.training.build import load_checkpoint as load_task
    from bayesgen.training.callbacks import ExactResume, GracefulStop, SaveLastCheckpoint
    from bayesgen.training.checkpoint import (
        NonFiniteError,
        newest_intact_checkpoint,
        read_checkpoint,
        remove_stale_temps,
        write_text,
    )
    from bayesgen.training.lock import is_primary_process
    from bayesgen.training.metrics_csv import trim_metrics

    if is_primary_process():
        removed = remove_stale_temps(run_dir, run_dir / "checkpoints", run_dir / "logs",
                                     run_dir / "samples")
        if removed:
            _say(f"removed {len(removed)} partial file(s) of an interrupted write: "
                 + ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else ""))
    step = 0
    if resume is None and (found := newest_intact_checkpoint(run_dir, say=_say)) is not None:
        resume, ckpt = found
        step = int(ckpt.get("global_step", 0))
        del ckpt, found
    elif resume is not None:
        step = int(read_checkpoint(resume).get("global_step", 0))
    if resume is not None:
        _say(f"resuming from {resume} (step {step})")
    os.environ["BAYESGEN_RUN_DIR"] = str(run_dir.resolve())  # for Lightning's child processes
    max_steps = cfg.trainer.max_steps
    if resume is not None and max_steps is not None and 0 <= max_steps <= step:
        return _finished_run(cfg, run_dir, resume, step) if is_primary_process() else run_dir
    if is_primary_process():
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        trim_metrics(run_dir / "logs" / "metrics.csv", step, say=_say)  # rows to be logged again
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")  # it is

    dm = build_datamodule(cfg)
    task = build_task(cfg, dm)
    task.skip_nonfinite = int(cfg.trainer.get("skip_nonfinite", 0) or 0)
    last = run_dir / "checkpoints" / "last.ckpt"
    stop = GracefulStop(last, say=_say_now)
    trainer = build_trainer(cfg, run_dir, callbacks=[ExactResume(), stop, SaveLastCheckpoint(last),
                                                     *(callbacks or [])])
    _say(f"training {cfg.name}: {sum(p.numel() for p in task.parameters()):,} parameters, "
         f"{cfg.trainer.max_steps} steps -> {run_dir}")
    start = time.time()
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except SystemExit:  # Lightning exits after a KeyboardInterrupt (GracefulStop's included)
        if trainer.interrupted:
            if stop.stopped_at is not None:
                where = f"stopped after step {stop.stopped_at}, saved in {last}"
            else:
                where = (f"stopped at once during step {trainer.global_step + 1}; the newest "
                         "checkpoint is kept")
            _say(f"interrupted: {where}; resume with: bayesgen train from_ckpt={run_dir}")
            raise SystemExit(128 + (stop.requested or 2)) from None
        raise
    except NonFiniteError as e:
        saved = getattr(trainer.checkpoint_callback, "_last_global_step_saved", 0)
        kept = (f"{last} keeps step {saved}, the last finite state" if saved else
                "no checkpoint was written yet")
        raise NonFiniteError(f"{e}; {kept}; lower optim.lr, or set trainer.skip_nonfinite=N "
                             "to skip up to N such batches") from None
    if not trainer.is_global_zero:
        return run_dir
    train_time = time.time() - start
    if is_sharded(trainer.strategy):  # the full weights, gathered into last.ckpt at the end
        task = load_task(last)[1]
    _write_outputs(cfg, task, dm, run_dir, trainer.global_step, round(train_time, 1),
                   trainer.strategy.root_device)
    return run_dir


def _finished_run(cfg, run_dir: Path, resume: Path, step: int) -> Path:
    """A run already at ``max_steps``: nothing to do if its outputs are complete
    (``metrics.json``, written last, of this step); else they are written from the checkpoint's
    EMA weights exactly as at the end of training."""
    from bayesgen.training.build import build_datamodule, load_checkpoint

    metrics = run_dir / "metrics.json"
    try:
        done = json.loads(metrics.read_text()).get("steps") == step
    except (OSError, ValueError, AttributeError):
        done = False
    if done and (run_dir / "ema.safetensors").is_file():
        _say(f"{run_dir} is finished (step {step}, trainer.max_steps={cfg.trainer.max_steps}) "
             "and its outputs are written; nothing to do (raise trainer.max_steps to train on)")
        return run_dir
    _say(f"training finished at step {step}; writing the outputs from the EMA weights of "
         f"{resume}")
    task = load_checkpoint(resume)[1]
    _write_outputs(cfg, task, build_datamodule(cfg), run_dir, step, None, _device(None))
    return run_dir


def _write_outputs(cfg, task, dm, run_dir: Path, steps: int, train_seconds: float | None,
                   device) -> None:
    """``ema.safetensors``, the samples, then ``metrics.json`` — each written atomically,
    ``metrics.json`` last so that its presence means the outputs are complete. Evaluation and
    sampling are seeded, so they give the same numbers whenever they run."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save

    from bayesgen.training.checkpoint import check_finite, write_bytes
    from bayesgen.training.outputs import evaluate_bpd, sample_labels, write_json, write_samples

    task.to(device).eval()  # Lightning moves the model to the CPU after fit
    dm.trainer = None  # rank zero alone evaluates every example
    weights = {k: v.contiguous() for k, v in task.method.state_dict().items()}
    check_finite(weights, run_dir / "ema.safetensors")
    write_bytes(run_dir / "ema.safetensors", save(weights))
    torch.manual_seed(cfg.seed)
    split = cfg.evaluate.split
    dm.setup("test" if split == "test" else "fit")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    with torch.no_grad():
        metrics = evaluate_bpd(task, loader, task.eval_kwargs, max_batches=cfg.evaluate.max_batches,
                               seed=cfg.seed)
    metrics |= {"split": split, "steps": steps, "train_seconds": train_seconds}
    sample_kwargs = OmegaConf.to_container(cfg.method.get("sample_kwargs", {}) or {})
    paths = write_samples(task.method, dm.info, run_dir, n=cfg.sample.n,
                          sample_kwargs=sample_kwargs,
                          model_kwargs=sample_labels(task, cfg.sample.n),
                          frames=cfg.sample.frames, animation=cfg.sample.animation,
                          seed=cfg.seed)
    summary, lines = _train_summary(cfg, dm, paths["tensor"], metrics)
    write_json(metrics | summary, run_dir / "metrics.json")
    trained = f", trained {train_seconds:.0f} s" if train_seconds is not None else ""
    _say(f"{split} bpd: {metrics['bpd']:.4f} ± {metrics['bpd_se']:.4f} "
         f"({metrics['n_examples']} examples{trained})")
    for line in lines:
        _say(line)
    _say("wrote:")
    for name in ("checkpoints/last.ckpt", "ema.safetensors", "metrics.json", "config.yaml"):
        _say(f"  {run_dir / name}")
    for path in paths.values():
        _say(f"  {path}")


def _train_summary(cfg, dm, samples_path: Path, metrics: dict) -> tuple[dict, list[str]]:
    """With ``evaluate.quality`` / ``evaluate.baselines``: the samples' quality score and the
    trivial baselines (for ``metrics.json``) and the lines that compare them."""
    if not (cfg.evaluate.get("quality") or cfg.evaluate.get("baselines")):
        return {}, []
    import torch

    from bayesgen.compare import train_summary

    return train_summary(cfg, dm, torch.load(samples_path), metrics, _say)


def _run_dir(cfg, run_dir: Path | None, resume: Path | None) -> Path:
    """``run_dir=``, else the directory given (Hydra's job directory), else the directory of
    the resumed checkpoint, else ``runs/<name>/<timestamp>``: the processes that Lightning
    starts for ``trainer.devices`` > 1 re-run the command and take the first process's
    directory."""
    from bayesgen.training.checkpoint import run_dir_of

    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    if run_dir is not None:
        return Path(run_dir)
    if resume is not None:
        return run_dir_of(resume)
    if os.environ.get("LOCAL_RANK", "0") != "0" and "BAYESGEN_RUN_DIR" in os.environ:
        return Path(os.environ["BAYESGEN_RUN_DIR"])
    return Path("runs") / cfg.name / time.strftime("%Y-%m-%d_%H-%M-%S")


# ---- evaluate / sample ------------------------------------------------------------------
def _method_arg(fn, name: str) -> bool:
    import inspect

    return name in inspect.signature(fn).parameters


def cmd_evaluate(args: list[str]) -> int:
    """bayesgen evaluate ckpt=RUN_DIR_OR_CKPT [options]

Bits/dim on the test (or val) split with its standard error, written to JSON.
  k=inf|N        BSI, VDM: infinite-step ELBO (default) or the N-step ELBO
  n_steps=N|inf  BFN: N-step loss or continuous time (inf)
  samples=N      Monte-Carlo samples of the measurement / diffusion loss (BSI, BFN, VDM)
  rtol=, atol=, n_probes=N, solver=   IF: ODE tolerances, Hutchinson probes, solver
  receiver=per_coordinate|joint  discrete BFN n-step loss: the official code's receiver or
                 the paper's Eq. 190 (default: the config's method.per_coordinate_receiver)
  repeats=N      estimates averaged per example (default 1)
  quality=true   also the offline sample-quality score: classifier FD and confident share of
                 quality_n=N fresh samples (default: the test split's size, at most 1000)
                 beside the real test images' (digits, mnist, binarized_mnist, fashion_mnist)
  split=test|val, max_batches=N, batch_size=N, seed=0, device=cpu|cuda, out=FILE.json"""
    import torch

    from bayesgen.training.build import build_datamodule, load_checkpoint
    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.outputs import evaluate_bpd, write_json

    opts = parse_args(args, {"ckpt": str, "k": _int_or_inf, "n_steps": _int_or_inf,
                             "samples": _positive_int, "repeats": _positive_int,
                             "split": str, "max_batches": _positive_int,
                             "batch_size": _positive_int, "out": str, "seed": int,
                             "device": str, "rtol": float, "atol": float,
                             "n_probes": _positive_int, "solver": str, "receiver": str,
                             "quality": _bool, "quality_n": _positive_int}, required=["ckpt"])
    if opts.get("split", "test") not in ("test", "val"):
        raise UsageError("split must be 'test' or 'val'")
    if opts.get("receiver", "joint") not in ("per_coordinate", "joint"):
        raise UsageError("receiver must be 'per_coordinate' or 'joint'")
    cfg, task, path = load_checkpoint(opts["ckpt"])
    task.to(_device(opts.get("device")))
    if "receiver" in opts:
        if getattr(task.method, "kind", None) != "discrete":
            raise UsageError(f"receiver= applies to discrete BFN only, not {cfg.method._target_}")
        task.method.per_coordinate_receiver = opts["receiver"] == "per_coordinate"
    elbo = task.method.elbo
    eval_kwargs = dict(task.eval_kwargs)
    for key, targets in (("k", ["k"]), ("n_steps", ["n_steps"]),
                         ("samples", ["n_measure_samples", "n_samples"]), ("rtol", ["rtol"]),
                         ("atol", ["atol"]), ("n_probes", ["n_probes"]), ("solver", ["solver"])):
        if key in opts:
            target = next((t for t in targets if _method_arg(elbo, t)), None)
            if target is None:
                raise UsageError(f"{key}= does not apply to method {cfg.method.name}")
            eval_kwargs[target] = opts[key]
    if "batch_size" in opts:
        cfg.data.eval_batch_size = opts["batch_size"]
    dm = build_datamodule(cfg)
    split = opts.get("split", "test")
    dm.setup("test" if split == "test" else "fit")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    with torch.no_grad():
        m = evaluate_bpd(task, loader, eval_kwargs, repeats=opts.get("repeats", 1),
                         max_batches=opts.get("max_batches"), seed=opts.get("seed", 0))
    m |= {"split": split, "checkpoint": str(path)}
    if getattr(task.method, "kind", None) == "discrete" and eval_kwargs.get("n_steps"):
        m["receiver"] = "per_coordinate" if task.method.per_coordinate_receiver else "joint"
        eval_kwargs["receiver"] = m["receiver"]
    if opts.get("quality"):
        m["quality"] = _evaluate_quality(cfg, task, opts)
    out = Path(opts.get("out", run_dir_of(path) / f"evaluate_{split}.json"))
    write_json(m, out)
    print(f"{split}: {m['bpd']:.4f} ± {m['bpd_se']:.4f} bits/dim | "
          f"{m['nats_per_dim']:.4f} ± {m['nats_per_dim_se']:.4f} nats/dim | "
          f"{m['nats_per_example']:.2f} nats/example "
          f"({m['n_examples']} examples × {m['repeats']} repeats, {_fmt(eval_kwargs)})")
    for term in getattr(type(task.method), "elbo_terms", ()):
        print(f"  {term}: {m[f'{term}_nats_per_dim']:.4f} ± {m[f'{term}_nats_per_dim_se']:.4f} "
              "nats/dim")
    if "quality" in m:
        _print_quality(m["quality"])
    print(f"wrote {out}")
    return 0


def _evaluate_quality(cfg, task, opts: dict) -> dict:
    """``quality=true``: the offline classifier score of fresh samples (bayesgen.compare)."""
    from bayesgen.compare import evaluate_quality

    return evaluate_quality(cfg, task, opts.get("quality_n"), opts.get("seed", 0))


def _print_quality(q: dict) -> None:
    s, r = q["quality"], q["real_test"]
    print(f"quality ({s['n']} samples, {_fmt(q['sample_kwargs'])}; classifier "
          f"{q['classifier']['key']}): classifier FD {s['fd']:.2f} (real test images: "
          f"{r['fd']:.2f}) | confident {100 * s['confident_share']:.1f}% (real: "
          f"{100 * r['confident_share']:.1f}%) | {q['samples_per_second']:.1f} samples/s")


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def cmd_sample(args: list[str]) -> int:
    """bayesgen sample ckpt=RUN_DIR_OR_CKPT [options]

Draw samples; writes samples.png (image grid or 2-D/3-D scatter), sampling.gif (or .webp),
samples.pt (the raw tensor) and samples.txt for text.
  n=64, k=N (BSI and VDM steps), n_steps=N (BFN steps), schedule=linear|cosine|edm|edm7 (BSI),
  seed=0, label=C (class-conditional), guidance=W (classifier-free guidance),
  frames=20, animation=gif|webp|none, out=DIR, device=cpu|cuda"""
    from bayesgen.training.build import load_checkpoint
    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.outputs import sample_labels, write_samples

    opts = parse_args(args, {"ckpt": str, "n": _positive_int, "k": _positive_int,
                             "n_steps": _positive_int, "out": str, "seed": int, "label": int,
                             "guidance": _finite_float, "schedule": str, "frames": _positive_int,
                             "animation": str, "device": str}, required=["ckpt"])
    if opts.get("animation", "gif") not in ("gif", "webp", "none"):
        raise UsageError("animation must be gif, webp or none")
    cfg, task, path = load_checkpoint(opts["ckpt"])
    task.to(_device(opts.get("device")))
    sample_kwargs = dict(cfg.method.get("sample_kwargs", {}) or {})
    for key in ("k", "n_steps", "schedule"):
        if key in opts:
            if not _method_arg(task.method.sample, key):
                raise UsageError(f"{key}= does not apply to method {cfg.method.name}")
            sample_kwargs[key] = opts[key]
    if "guidance" in opts:
        _set_guidance(task, opts["guidance"])
    if "label" in opts:
        _check_label(task, opts["label"])
    n = opts.get("n", 64)
    dm_info = _data_info(cfg)
    out = Path(opts.get("out", run_dir_of(path) / "samples"))
    paths = write_samples(task.method, dm_info, out, n=n, sample_kwargs=sample_kwargs,
                          model_kwargs=sample_labels(task, n, opts.get("label")),
                          frames=opts.get("frames", 20), animation=opts.get("animation", "gif"),
                          seed=opts.get("seed", 0))
    nfe = getattr(task.method, "last_nfe", None)
    print(f"drew {n} samples ({_fmt(sample_kwargs)})"
          + (f"; {nfe} network evaluations" if nfe is not None else ""))
    for p in paths.values():
        print(f"wrote {p}")
    if "text" in paths:
        print(paths["text"].read_text()[:1000])
    return 0


def _check_label(task, label: int) -> None:
    if not task.num_labels:
        raise UsageError("label= needs a class-conditional model (conditional.enabled=true)")
    if not 0 <= label < task.num_labels:
        raise UsageError(f"label={label} is not a class of this model; it has {task.num_labels} "
                         f"classes: label=0 … {task.num_labels - 1}")


def _set_guidance(task, scale: float) -> None:
    if not task.num_labels:
        raise UsageError("guidance= needs a class-conditional model (conditional.enabled=true)")
    from bayesgen.nets import ClassifierFreeGuidance

    model = task.method.model
    if isinstance(model, ClassifierFreeGuidance):
        model.guidance_scale = scale
    else:
        task.method.model = ClassifierFreeGuidance(model, scale)


def _data_info(cfg):
    from bayesgen.training.build import build_datamodule

    return build_datamodule(cfg).info


def _device(name: str | None):
    """The device named by ``device=`` (checked to exist here), else cuda when there is one."""
    import torch

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name} is not a device; use device=cpu or device=cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name} but this machine has no CUDA GPU "
                         "(torch.cuda.is_available() is False); use device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA "
                         "GPU(s); use device=cuda:0")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device={name} is not supported here; use device=cpu or device=cuda")
    return device


def _fmt(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


# ---- info ---------------------------------------------------------------------------------
def cmd_info(args: list[str]) -> int:
    """bayesgen info [overrides]

Print the parameter count of a configuration as JSON, built on the meta device (no memory),
e.g. `bayesgen info experiment=cifar10-bsi`."""
    import torch

    from bayesgen.training.build import build_datamodule, build_method
    from bayesgen.training.validate import compose_checked, validate_config

    cfg = compose_checked(args)
    validate_config(cfg, args)
    if cfg.method.get("data") == "auto":  # statistics fitted to data (IF's PCA) are buffers,
        cfg.method.data = None            # not parameters: placeholders size the same net
    dm = build_datamodule(cfg)
    info = dm.info
    with torch.device("meta"):
        method = build_method(cfg, dm)
    n = sum(p.numel() for p in method.parameters())
    print(json.dumps({"name": cfg.name, "net": cfg.net._target_, "method": cfg.method._target_,
                      "data_shape": list(info.data_shape), "parameters": n,
                      "parameters_millions": round(n / 1e6, 2)}))
    return 0


# ---- prepare / fid ------------------------------------------------------------------------
def _subcommand(args: list[str], choices: tuple[str, ...], command: str) -> tuple[str, list[str]]:
    if not args or args[0] not in choices:
        raise UsageError(f"bayesgen {command} needs a subcommand: {' | '.join(choices)}")
    return args[0], args[1:]


def cmd_prepare(args: list[str]) -> int:
    """bayesgen prepare images|imagenet key=value ...

  images    source=FOLDER|ZIP|TAR|cifar-10-python.tar.gz dest=OUT.zip [resolution=32]
            [max_images=N] [split=train|test]
            -> uncompressed ZIP of PNGs + dataset.json (labels), the EDM/StyleGAN format
  imagenet  source=DIR_OF_NPZ_BATCHES dest=OUT.h5 resolution=32|64 [val_fraction=0.01]
            -> one HDF5 file (train/val/test) from the official downsampled ImageNet npz"""
    from bayesgen.data import prepare_image_zip, prepare_imagenet

    sub, rest = _subcommand(args, ("images", "imagenet"), "prepare")
    if sub == "images":
        o = parse_args(rest, {"source": str, "dest": str, "resolution": _positive_int,
                              "max_images": _positive_int, "split": str},
                       required=["source", "dest"])
        _require_exists(o["source"])
        out = prepare_image_zip(o["source"], o["dest"], resolution=o.get("resolution"),
                                max_images=o.get("max_images"), split=o.get("split", "train"))
    else:
        o = parse_args(rest, {"source": str, "dest": str, "resolution": _positive_int,
                              "val_fraction": float, "seed": int},
                       required=["source", "dest", "resolution"])
        _require_exists(o["source"])
        out = prepare_imagenet(o["source"], o["dest"], o["resolution"],
                               val_fraction=o.get("val_fraction", 0.01), seed=o.get("seed", 0))
    print(f"wrote {out}")
    return 0


def cmd_fid(args: list[str]) -> int:
    """bayesgen fid ref|gen|calc key=value ...

  ref   data=ZIP|FOLDER dest=REF.npz [weights=INCEPTION.pth] [batch_size=64]
        -> Inception pool-feature statistics (mu, sigma; float64) of a data set
  gen   ckpt=RUN dest=DIR [n=50000] [batch_size=500] [seed=0] [k=N] [n_steps=N]
        -> n generated PNGs, 1000 per subfolder
  calc  images=DIR|ZIP ref=REF.npz [weights=INCEPTION.pth] [num=N] [batch_size=64]
        -> the FID, printed and written to JSON
weights= is the offline Inception file (pt_inception-2015-12-05-6726825d.pth); or set
$BAYESGEN_INCEPTION_WEIGHTS."""
    from bayesgen.metrics import fid

    sub, rest = _subcommand(args, ("ref", "gen", "calc"), "fid")
    if sub == "ref":
        o = parse_args(rest, {"data": str, "dest": str, "weights": str,
                              "batch_size": _positive_int, "device": str},
                       required=["data", "dest"])
        _require_exists(o["data"])
        fid.fid_ref(o["data"], o["dest"], feature_extractor_weights_path=o.get("weights"),
                    batch_size=o.get("batch_size", 64), device=_device(o.get("device")))
        print(f"wrote {o['dest']}")
    elif sub == "calc":
        o = parse_args(rest, {"images": str, "ref": str, "weights": str, "num": _positive_int,
                              "batch_size": _positive_int, "device": str, "out": str},
                       required=["images", "ref"])
        _require_exists(o["images"])
        _require_exists(o["ref"])
        value = fid.fid_calc(o["images"], o["ref"], feature_extractor_weights_path=o.get("weights"),
                             num_images=o.get("num"), batch_size=o.get("batch_size", 64),
                             device=_device(o.get("device")))
        print(f"FID: {value:.4f}")
        if "out" in o:
            from bayesgen.training.outputs import write_json
            write_json({"fid": value, "images": o["images"], "ref": o["ref"]}, o["out"])
    else:
        _fid_gen(rest)
    return 0


def _fid_gen(rest: list[str]) -> None:
    import torch
    from rich.progress import track

    from bayesgen.metrics.fid import save_image_folder
    from bayesgen.training.build import load_checkpoint
    from bayesgen.training.outputs import sample_labels

    o = parse_args(rest, {"ckpt": str, "dest": str, "n": _positive_int,
                          "batch_size": _positive_int, "seed": int, "k": _positive_int,
                          "n_steps": _positive_int, "device": str}, required=["ckpt", "dest"])
    cfg, task, _ = load_checkpoint(o["ckpt"])
    task.to(_device(o.get("device")))
    kwargs = dict(cfg.method.get("sample_kwargs", {}) or {})
    kwargs |= {k: o[k] for k in ("k", "n_steps") if k in o}
    n, bs = o.get("n", 50_000), o.get("batch_size", 500)
    for start in track(range(0, n, bs), description="generating"):
        m = min(bs, n - start)
        gen = torch.Generator(device=task.device).manual_seed(o.get("seed", 0) + start)
        x = task.method.sample(m, generator=gen, **kwargs, **sample_labels(task, m))
        save_image_folder(x.float().cpu().clamp(-1, 1), o["dest"], start_index=start)
    print(f"wrote {n} images to {o['dest']}")


def _require_exists(path: str) -> None:
    if not Path(path).exists():
        raise UsageError(f"{path} does not exist")


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "info": cmd_info,
    "prepare": cmd_prepare, "fid": cmd_fid,
}


def _inflationary_commands() -> dict[str, Callable[[list[str]], int]]:
    from bayesgen.cli_inflationary import COMMANDS as IF_COMMANDS

    return IF_COMMANDS


def _compare_commands() -> dict[str, Callable[[list[str]], int]]:
    from bayesgen.compare import COMMANDS as COMPARE_COMMANDS

    return COMPARE_COMMANDS


def _say(msg: str) -> None:
    print(msg, flush=True)


def _say_now(msg: str) -> None:
    """From a signal handler: an unbuffered write (a buffered print could be re-entered)."""
    try:
        os.write(sys.stdout.fileno(), (msg + "\n").encode())
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output)
        print(msg)


def _one_line(e: BaseException) -> str:
    """The innermost useful message of an exception, on one line."""
    while e.__cause__ is not None and type(e).__name__ in ("InstantiationException",):
        e = e.__cause__
    msg = str(e).strip().splitlines()
    text = " ".join(line.strip() for line in msg if line.strip() and not
                    line.startswith(("full_key", "object_type", "    ")))
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    commands = COMMANDS | _inflationary_commands() | _compare_commands()
    if command not in commands:
        print(f"bayesgen: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in args):
        print(commands[command].__doc__ or USAGE)
        return 0
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _quiet_lightning()
    try:
        return commands[command](args)
    except KeyboardInterrupt:
        print("bayesgen: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - turned into one line for the user
        if os.environ.get("BAYESGEN_DEBUG"):
            raise
        if not _is_user_error(e):
            raise
        print(f"bayesgen: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _quiet_lightning() -> None:
    """Keep Lightning's advertising and known-harmless warnings off the user's terminal."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LeafSpec.*", ".*smaller than the logging interval.*",
                    ".*`weights_only` was not set.*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=message)


def _is_user_error(e: BaseException) -> bool:
    from hydra.errors import HydraException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import OmegaConfBaseException

    from bayesgen.extras import MissingDependency

    user = (ValueError, FileNotFoundError, HydraException, OmegaConfBaseException, KeyError,
            MisconfigurationException, MissingDependency)
    try:
        from bayesgen.data import DatasetNotFoundError
        user += (DatasetNotFoundError,)
    except ImportError:
        pass
    while e is not None:
        if isinstance(e, user):
            return True
        e = e.__cause__
    return False


if __name__ == "__main__":
    sys.exit(main())
