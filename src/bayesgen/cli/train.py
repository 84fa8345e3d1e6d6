"""``bayesgen train`` and ``bayesgen info``: Hydra overrides, not ``key=value`` options of a
spec; their help lists the configuration groups and choices found in ``bayesgen/conf``."""

from __future__ import annotations

import json
from importlib.resources import files

from bayesgen.cli.options import Command

GROUPS = ("data", "method", "net", "trainer", "experiment")


def choices(group: str) -> list[str]:
    """The configurations of a group (``conf/<group>/*.yaml``), sorted."""
    folder = files("bayesgen.conf").joinpath(group)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _groups() -> str:
    lines = []
    for group in GROUPS:
        names = choices(group)
        shown = names if len(names) <= 12 else [*names[:12], f"… ({len(names)} in all)"]
        lines.append(f"  {group}=  {', '.join(shown)}")
    return "\n".join(lines)


def run_train(args: list[str]) -> int:
    from bayesgen.training.launch import train_with_hydra

    return train_with_hydra(list(args))


def run_info(args: list[str]) -> int:
    """The parameter count of a configuration, built on the meta device (no memory)."""
    import torch

    from bayesgen.training.build import build_datamodule, build_method
    from bayesgen.training.validate import compose_checked, validate_config

    cfg = compose_checked(args)
    validate_config(cfg, args)
    if cfg.method.get("data") == "auto":  # statistics fitted to data (IF's PCA) are buffers,
        cfg.method.data = None            # not parameters: placeholders size the same net
    dm = build_datamodule(cfg)
    with torch.device("meta"):
        method = build_method(cfg, dm)
    n = sum(p.numel() for p in method.parameters())
    print(json.dumps({"name": cfg.name, "net": cfg.net._target_, "method": cfg.method._target_,
                      "data_shape": list(dm.info.data_shape), "parameters": n,
                      "parameters_millions": round(n / 1e6, 2)}))
    return 0


def _train_description() -> str:
    return f"""Train with Hydra overrides: bayesgen train experiment={_example()} \
trainer.max_steps=2000
Configuration groups and their choices (bayesgen/conf):
{_groups()}
Any key of the composed config can be set (optim.lr=1e-3, net.hidden=512, seed=1,
compile=true, …); `bayesgen train --cfg job` prints it. Resume an interrupted run with
`bayesgen train from_ckpt=runs/<name>/<timestamp>` (further overrides apply to its saved
config); run_dir=DIR sets the run directory. Hydra's own flags work: --cfg job|hydra|all,
--resolve, --info, --hydra-help, -m/--multirun (sweeps; Slurm: -m hydra/launcher=slurm …).
Writes runs/<name>/<timestamp>/ (<name>: the experiment's, else <data>-<method>-<net>):
.hydra/, checkpoints/, ema.safetensors, metrics.json, samples.png, sampling.gif, samples.pt,
logs/metrics.csv, tensorboard/, config.yaml."""


def _info_description() -> str:
    return ("Print the parameter count of a configuration as JSON, built on the meta device "
            f"(no memory), e.g. `bayesgen info experiment={_example('cifar10')}`. Takes the "
            f"overrides of `bayesgen train`:\n{_groups()}")


def _example(prefix: str = "digits") -> str:
    """A real experiment name (the first starting with ``prefix``) for the help texts."""
    names = choices("experiment")
    return next((n for n in names if n.startswith(prefix)), names[0])


COMMANDS = [
    Command("train", "train a model (Hydra overrides, e.g. experiment=digits-bsi)", run_train,
            description=_train_description, passthrough=True,
            usage_args="[overrides] [Hydra flags]"),
    Command("info", "parameter count of a configuration (overrides as for train)", run_info,
            description=_info_description, passthrough=True, usage_args="[overrides]"),
]
