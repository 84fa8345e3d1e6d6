"""``bayesgen train``'s engine: Hydra's own entry point around :func:`run_training`.

Every training run goes through ``hydra.main``, so that Hydra's flags (``--cfg``, ``-m``,
``--info``), output directories and ``.hydra/`` records behave as Hydra documents them;
``from_ckpt=`` makes the checkpoint's saved configuration the primary config.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def one_line(e: BaseException) -> str:
    """The innermost useful message of an exception, on one line."""
    while e.__cause__ is not None and type(e).__name__ in ("InstantiationException",):
        e = e.__cause__
    msg = str(e).strip().splitlines()
    text = " ".join(line.strip() for line in msg if line.strip() and not
                    line.startswith(("full_key", "object_type", "    ")))
    return text or type(e).__name__


def hold_requeue_signal() -> None:
    """In a Slurm job, block SIGUSR1 (Slurm's warning before the time limit or a preemption,
    Lightning's requeue signal) until training starts: its default action ends the process, so a
    warning during the imports and data setup killed the job without a checkpoint or a requeue.
    `GracefulStop` unblocks it once Lightning's handler is in place, which then receives it."""
    import signal

    if os.environ.get("SLURM_JOB_ID") and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def train_with_hydra(args: list[str]) -> int:
    """Every training run goes through Hydra's own entry point, so that Hydra's flags, output
    directories and ``.hydra/`` records behave as Hydra documents them. The configuration (each
    swept one too) is checked before anything starts. With ``from_ckpt=`` the checkpoint's
    configuration is the primary config that the overrides apply to; a single run then continues
    in the checkpoint's run directory (unless ``run_dir=`` says otherwise), a sweep's jobs each
    in their own."""
    import hydra
    from hydra.core.config_store import ConfigStore

    from bayesgen.training.validate import (
        check_hydra_overrides,
        check_launcher,
        check_resume_overrides,
        command_line_targets,
        compose_checked,
        sweep_configs,
        validate_config,
    )

    multirun = any(a in ("-m", "--multirun") for a in args)
    shows_only = any(a in ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help")
                     for a in args)
    overrides = [a for a in args if "=" in a and not a.startswith("-")
                 and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    check_hydra_overrides([a for a in args if "=" in a and not a.startswith("-")])
    config_name = "config"
    run_dir = _override_value(args, "run_dir")
    if run_dir and multirun:
        raise ValueError("run_dir= names one directory, but a sweep (-m) writes one per job: "
                         "set hydra.sweep.dir= instead")
    if run_dir and _override_value(args, "hydra.run.dir") is None:
        args.append(f"hydra.run.dir={_quote(run_dir)}")
    resume = _override_value(args, "from_ckpt")
    if resume:
        if multirun and "," in resume:
            raise ValueError("from_ckpt= takes one checkpoint (a sweep over checkpoints with "
                             "different configs is not supported); run one sweep per checkpoint")
        from bayesgen.training.checkpoint import run_dir_of

        check_resume_overrides([a for a in overrides if not a.startswith("from_ckpt=")])
        path, saved = _resume_config(resume, command_line_targets(overrides))
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

    @hydra.main(config_path="../conf", config_name=config_name, version_base=None)
    def train_job(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        hold_requeue_signal()
        sys.argv = argv  # Lightning's processes for devices > 1 re-run the original command
        if resume:  # the saved configuration with this job's overrides
            try:
                validate_config(cfg, overrides)
            except ValueError as e:
                if multirun:  # one line and exit status 2, not Hydra's banner and traceback
                    print(f"bayesgen: error: {one_line(e)}", file=sys.stderr)
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
            from bayesgen.training.fit import run_training

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


def _resume_config(resume: str, allow_targets: list[str] = ()):
    """(checkpoint, configuration) to resume from: the newest checkpoint of a run directory
    that loads (reporting any that does not), or the given file; the configuration is the
    checkpoint's, with ``from_ckpt`` set and Hydra's settings of ``conf/config.yaml`` — the
    primary config of a resumed run; ``allow_targets`` (the command line's) trusts more
    ``_target_``s than bayesgen's own."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    from bayesgen.training.build import find_checkpoint
    from bayesgen.training.checkpoint import (
        checkpoint_config,
        newest_intact_checkpoint,
        read_checkpoint,
    )

    path = Path(resume)
    from bayesgen.training.fit import _say

    if path.is_dir() and (found := newest_intact_checkpoint(path, say=_say)) is not None:
        path, ckpt = found
    else:
        path = find_checkpoint(path, option="from_ckpt")
        ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path, allow_targets)
    del ckpt
    cfg.from_ckpt = str(path)
    root = OmegaConf.create(files("bayesgen.conf").joinpath("config.yaml").read_text())
    cfg.hydra = root.get("hydra", {})
    return path, cfg

