"""Training a configuration end to end: the run directory, its lock, Lightning's ``fit`` and
the outputs written after it (``ema.safetensors``, samples, ``metrics.json``).

``run_training(cfg)`` is what ``bayesgen train`` runs inside Hydra's job; Python users call it
with a configuration from :func:`bayesgen.training.build.compose_config`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from bayesgen.training.build import resolve_device

# what a start that failed before training leaves in a new run directory (nothing of value)
_START_FILES = {"config.yaml", ".hydra", "train.log", ".bayesgen.lock", "logs", "tensorboard"}


def run_training(cfg, run_dir: Path | None = None, callbacks: list | None = None) -> Path:
    """Train, then write ``ema.safetensors``, samples and ``metrics.json`` (test bpd).

    A run directory that already holds a checkpoint (``checkpoints/last.ckpt``, the
    ``hpc_ckpt_<n>.ckpt`` Lightning saves when Slurm signals a preemption, or a periodic
    ``step<n>.ckpt``) resumes from the newest one that loads, so a requeued job continues where
    it stopped; a run already at ``trainer.max_steps`` only writes the outputs it lacks. One
    process trains in a directory at a time (`RunLock`). With several processes, the outputs
    after training are written by rank zero alone."""
    from bayesgen.training.lock import RunLock, is_primary_process

    resume = Path(cfg.from_ckpt) if cfg.get("from_ckpt") else None
    run_dir = _run_dir(cfg, run_dir, resume)
    fresh = _is_new(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[bool] = []  # set when Lightning's fit begins
    try:
        lock = RunLock(run_dir, say=_say).acquire()
        previous = os.environ.get("BAYESGEN_RUN_DIR")
        try:
            return _train_in(cfg, run_dir, resume, callbacks, started)
        finally:
            lock.release()
            # set for Lightning's child processes only while this run trains: a later run in
            # this process (notebook, tests) or a torchrun it starts must not inherit it
            if previous is None:
                os.environ.pop("BAYESGEN_RUN_DIR", None)
            else:
                os.environ["BAYESGEN_RUN_DIR"] = previous
    except BaseException:
        if fresh and not started and is_primary_process():
            _remove_failed_start(run_dir)
        raise


class _MarkStarted(Callback):
    """Records that training began: the data were found, set up and validated."""

    def __init__(self, started: list[bool]):
        self.started = started

    def on_train_start(self, trainer, pl_module) -> None:
        self.started.append(True)


def _is_new(run_dir: Path) -> bool:
    """Whether ``run_dir`` is missing or holds only what Hydra writes when a job starts."""
    return not run_dir.exists() or {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}


def _remove_failed_start(run_dir: Path) -> None:
    """Remove a new run directory whose run never started (bad data, busy lock, …), and
    ``runs/<name>/`` when it is left empty, so that failed starts leave no folder behind."""
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= _START_FILES:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()  # only when empty
    except OSError:
        pass


def _train_in(cfg, run_dir: Path, resume: Path | None, callbacks: list | None,
              started: list[bool]) -> Path:
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
    if cfg.get("init_from") and resume is None:  # fine-tuning: weights only, step 0
        from bayesgen.training.build import load_weights

        load_weights(task, cfg.init_from)
        _say(f"starting from the weights of {cfg.init_from}")
    task.skip_nonfinite = int(cfg.trainer.get("skip_nonfinite", 0) or 0)
    last = run_dir / "checkpoints" / "last.ckpt"
    stop = GracefulStop(last, say=_say_now)
    trainer = build_trainer(cfg, run_dir, callbacks=[ExactResume(), stop, SaveLastCheckpoint(last),
                                                     _MarkStarted(started), *(callbacks or [])])
    _say(f"training {cfg.name}: {sum(p.numel() for p in task.parameters()):,} parameters, "
         f"{cfg.trainer.max_steps} steps -> {run_dir}")
    if (warning := compile_warning(cfg, trainer.strategy.root_device)) is not None:
        _say(warning)
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
    except RuntimeError as e:  # torch.distributed's errors are RuntimeErrors
        if trainer.world_size > 1 and (lost := rank_lost(e, trainer, run_dir)) is not None:
            raise lost from None
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


class RankLostError(ValueError):
    """Another process of a distributed run died or stopped answering."""


# what gloo and NCCL say when the process at the other end of a collective is gone or silent
_PEER_LOST = ("closed by peer", "reset by peer", "broken pipe", "timed out", "timeout",
              "connection refused", "nccl communicator was aborted")


def rank_lost(e: BaseException, trainer, run_dir: Path) -> RankLostError | None:
    """The one-line error for a collective that failed because another rank died (its socket
    closed) or hung (the process group's timeout): which rank (the other one, with two), at
    which step, and how to resume; None for any other error."""
    text = str(e).strip()
    if not any(p in text.lower() for p in _PEER_LOST):
        return None
    rank, world = trainer.global_rank, trainer.world_size
    who = f"rank {1 - rank} of 2" if world == 2 else f"another rank of {world}"
    reason = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
    reason = reason.split("] ", 1)[-1].split(". This is typically")[0]
    return RankLostError(f"{who} died or stopped answering ({reason}): rank {rank} stops at "
                         f"step {trainer.global_step}; the newest checkpoint is kept; resume "
                         f"with: bayesgen train from_ckpt={run_dir}")


def compile_warning(cfg, device) -> str | None:
    """The warning for ``compile=true`` on a CPU, where compiling takes minutes."""
    import torch

    if cfg.get("compile") and torch.device(device).type == "cpu":
        return ("warning: compile=true on a CPU: torch.compile takes minutes before the first "
                "step (set compile=false for short CPU runs)")
    return None


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
    _write_outputs(cfg, task, build_datamodule(cfg), run_dir, step, None, resolve_device())
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
                               repeats=cfg.evaluate.get("repeats", 1), seed=cfg.seed,
                               keep_per_example=True)
    per_example = metrics.pop("per_example_bpd")
    metrics |= {"split": split, "steps": steps, "train_seconds": train_seconds}
    sample_kwargs = OmegaConf.to_container(cfg.method.get("sample_kwargs", {}) or {})
    n_samples = cfg.sample.n or dm.info.default_sample_count()
    paths = write_samples(task.method, dm.info, run_dir, n=n_samples,
                          sample_kwargs=sample_kwargs,
                          model_kwargs=sample_labels(task, n_samples),
                          frames=cfg.sample.frames, animation=cfg.sample.animation,
                          seed=cfg.seed)
    summary, lines = _train_summary(cfg, dm, paths["tensor"], metrics, per_example)
    from bayesgen.metrics.summary import sampler_of

    sampling = {"sampler": sampler_of(task.method, sample_kwargs), "sample_kwargs": sample_kwargs}
    write_json(metrics | sampling | summary, run_dir / "metrics.json")
    trained = f", trained {train_seconds:.0f} s" if train_seconds is not None else ""
    _say(f"{likelihood_line(metrics, dm.info, split, task.method)} ({metrics['n_examples']} "
         f"examples{trained})")
    for line in lines:
        _say(line)
    _say("wrote:")
    for name in ("checkpoints/last.ckpt", "ema.safetensors", "metrics.json", "config.yaml"):
        _say(f"  {run_dir / name}")
    for path in paths.values():
        _say(f"  {path}")


def is_continuous(info, method=None) -> bool:
    """Whether the ELBO bounds a density, not the probability of discrete values: continuous
    data (no grey levels, no categories), or a continuous-data BFN; its negative log can be
    below zero."""
    return (info.num_bins is None and not info.num_classes) or (
        getattr(method, "kind", None) == "continuous")


def likelihood_line(metrics: dict, info, split: str, method=None) -> str:
    """The evaluation in words: bits/dim of discrete data; nats/dim of a continuous density,
    said to be one (it may be negative)."""
    nats, nats_se = metrics["nats_per_dim"], metrics["nats_per_dim_se"]
    if is_continuous(info, method):
        return (f"{split}: {nats:.4f} ± {nats_se:.4f} nats/dim (negative log-density of "
                "continuous data; it can be negative)")
    line = (f"{split}: {metrics['bpd']:.4f} ± {metrics['bpd_se']:.4f} bits/dim | "
            f"{nats:.4f} ± {nats_se:.4f} nats/dim")
    if "bpd_marginal" in metrics:  # a class-conditional model (evaluate_bpd)
        line += (f" of p(x|y); of p(x) ≤ {metrics['bpd_marginal']:.4f} bits/dim "
                 f"(+ log2({metrics['num_labels']})/D, a uniform label prior)")
    return line


def _train_summary(cfg, dm, samples_path: Path, metrics: dict,
                   per_example=None) -> tuple[dict, list[str]]:
    """With ``evaluate.quality`` / ``evaluate.baselines``: the samples' quality score and the
    trivial baselines (for ``metrics.json``) and the lines that compare them."""
    if not (cfg.evaluate.get("quality") or cfg.evaluate.get("baselines")):
        return {}, []
    import torch

    from bayesgen.metrics.summary import train_summary

    return train_summary(cfg, dm, torch.load(samples_path), metrics, _say, per_example)


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


def _say(msg: str) -> None:
    print(msg, flush=True)


def _say_now(msg: str) -> None:
    """From a signal handler: an unbuffered write (a buffered print could be re-entered)."""
    try:
        os.write(sys.stdout.fileno(), (msg + "\n").encode())
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output)
        print(msg)

