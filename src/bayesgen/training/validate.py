"""A configuration checked before any work starts.

``SCHEMA`` states the type and range of every setting bayesgen reads itself (the Hydra groups
``optim``, ``ema``, ``checkpoint``, ``conditional``, ``sample``, ``evaluate``, the data loader
sizes and the Lightning ``trainer`` values that the engine depends on). ``validate_config``
checks a composed (or resumed) configuration against it, rejects keys that nothing reads with a
"did you mean", and checks that data, method and network fit together: a discrete method on
continuous data, a BSI discretization that is not the data's, a network whose output is not
what the method needs (found by one forward pass on the meta device, which costs no memory).
Every problem is one ``ConfigError`` (a ``ValueError``) that names the setting and the fix.

Why not Hydra structured configs: the ``trainer`` group is passed through to
``lightning.Trainer`` (any of its arguments may be added), a resumed run's configuration comes
from its checkpoint rather than from Hydra's composition, and ranges need checks of their own.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from bayesgen.names import name_problem
from bayesgen.training.compose import METHOD_EXTRA_KEYS, ConfigError, compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("data", "method", "net", "trainer", "experiment")
# groups whose every key bayesgen reads: a key in none of SCHEMA and config.yaml is a typo
CLOSED_GROUPS = ("optim", "ema", "checkpoint", "conditional", "sample", "evaluate")
# Trainer arguments that bayesgen sets itself (build_trainer)
ENGINE_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_model_summary")
PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed", "transformer-engine", "transformer-engine-float16")


@dataclass(frozen=True)
class Key:
    """A setting's type (``int``, ``float``, ``bool``, ``str``; None: any) and allowed values:
    inclusive ``min``/``max``, exclusive ``above``/``below``, ``choices``; ``null`` only when
    ``optional``. ``check`` returns a problem for what the rest cannot say, or None."""

    type: type | None
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple = ()
    optional: bool = False
    check: Callable[[Any], str | None] | None = None
    hint: str = ""

    def expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = {int: "an integer", float: "a number", bool: "true or false",
                    str: "a string", None: "a value"}[self.type]
            bounds = [f"{op} {_number(v)}" for op, v in (
                ("≥", self.min), (">", self.above), ("≤", self.max), ("<", self.below))
                if v is not None]
            text += " " + " and ".join(bounds) if bounds else ""
        return text + (" or null" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None."""
        if value is None:
            return None if self.optional else f"expected {self.expected()}"
        if self.choices:
            return None if str(value) in map(str, self.choices) else f"expected {self.expected()}"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not {int: isinstance(value, int) and number, float: number and math.isfinite(value),
                bool: isinstance(value, bool), str: isinstance(value, str),
                None: True}[self.type]:
            return f"expected {self.expected()}"
        if number and ((self.min is not None and value < self.min)
                       or (self.max is not None and value > self.max)
                       or (self.above is not None and value <= self.above)
                       or (self.below is not None and value >= self.below)):
            return f"expected {self.expected()}"
        return self.check(value) if self.check else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _fraction_or_count(value: Any) -> str | None:
    """Lightning's convention: an int counts batches/steps, a float is a fraction (≤ 1)."""
    if isinstance(value, float) and value > 1:
        return "a float is a fraction of an epoch (≤ 1); give an integer for a number of steps"
    return None


def _devices(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and (value == 0 or value < -1):
        return "expected a number of devices ≥ 1 (-1: all), 'auto' or a list of device ids"
    return None


def _strategy(value: Any) -> str | None:
    if isinstance(value, DictConfig | dict):  # a _target_ node (trainer=ddp, trainer=fsdp)
        return None
    from lightning.pytorch.strategies import StrategyRegistry

    if str(value) not in ("auto", *StrategyRegistry.available_strategies()):
        return "expected auto, a Lightning strategy name (ddp, ddp_spawn, fsdp, …) or a node"
    return None


def _betas(value: Any) -> str | None:
    if not (isinstance(value, list | tuple | ListConfig) and len(value) == 2 and all(
            isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1
            for b in value)):
        return "expected two numbers in [0, 1), e.g. [0.9,0.99]"
    return None


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", re.ASCII)


def _target_names(value: Any) -> str | None:
    if not isinstance(value, list | ListConfig) or not all(
            isinstance(v, str) and _DOTTED.fullmatch(v) for v in value):
        return "expected a list of module.Class paths, e.g. [mypackage.nets.MyNet]"
    return None


SCHEMA: dict[str, Key] = {
    "seed": Key(int, min=0, max=2**32 - 1),
    "compile": Key(bool),
    "name": Key(str),
    "allow_targets": Key(None, check=_target_names),
    "run_dir": Key(str, optional=True),
    "from_ckpt": Key(str, optional=True),
    "optim.lr": Key(float, above=0),
    "optim.betas": Key(None, check=_betas),
    "optim.weight_decay": Key(float, min=0),
    "optim.no_decay_on_norms_and_biases": Key(bool),
    "optim.fused": Key(bool),
    "optim.warmup_steps": Key(int, min=0),
    "optim.lr_schedule": Key(str, choices=("constant", "cosine")),
    "optim.min_lr": Key(float, min=0),
    "ema.enabled": Key(bool),
    "ema.decay": Key(float, min=0, max=1),
    "ema.warmup_steps": Key(int, min=0),
    "ema.power": Key(float, above=0),
    "checkpoint.every_n_train_steps": Key(int, min=1),
    "conditional.enabled": Key(bool),
    "conditional.label_dropout": Key(float, min=0, below=1),
    "conditional.guidance_scale": Key(float, min=0),
    "sample.n": Key(int, min=1, optional=True),
    "sample.frames": Key(int, min=1),
    "sample.animation": Key(str, choices=("gif", "webp", "none")),
    "evaluate.split": Key(str, choices=("test", "val"),
                          hint="the training split is not evaluated"),
    "evaluate.max_batches": Key(int, min=1, optional=True, hint="null evaluates every batch"),
    "evaluate.repeats": Key(int, min=1),
    "evaluate.quality": Key(bool),
    "evaluate.baselines": Key(bool),
    "data.name": Key(str),
    "data.batch_size": Key(int, min=1),
    "data.eval_batch_size": Key(int, min=1, optional=True),
    "data.num_workers": Key(int, min=0),
    "trainer.max_steps": Key(int, min=1, hint="the number of optimizer steps"),
    "trainer.val_check_interval": Key(float, above=0, check=_fraction_or_count),
    "trainer.check_val_every_n_epoch": Key(int, min=1, optional=True),
    "trainer.limit_val_batches": Key(float, min=0, check=_fraction_or_count),
    "trainer.log_every_n_steps": Key(int, min=1),
    "trainer.skip_nonfinite": Key(int, min=0, hint="batches with a NaN/inf loss to skip"),
    "trainer.num_sanity_val_steps": Key(int, min=-1),
    "trainer.accumulate_grad_batches": Key(int, min=1),
    "trainer.gradient_clip_val": Key(float, min=0, optional=True),
    "trainer.num_nodes": Key(int, min=1),
    "trainer.devices": Key(None, check=_devices),
    "trainer.strategy": Key(None, check=_strategy),
    "trainer.precision": Key(None, choices=PRECISIONS),
    "trainer.accelerator": Key(str, choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu")),
}

# values of method.eval_kwargs / method.sample_kwargs (arguments of elbo / sample)
CALL_ARGUMENTS = {
    **{name: Key(int, min=1, optional=True) for name in (
        "k", "n_steps", "n_samples", "n_recon_samples", "n_measure_samples", "n_probes")},
    "rtol": Key(float, above=0), "atol": Key(float, above=0),
}

METHOD_KINDS = {
    "bayesgen.methods.bsi.BSI": "bsi",
    "bayesgen.methods.bfn.BFN.continuous": "bfn_continuous",
    "bayesgen.methods.bfn.BFN.discretized": "bfn_discretized",
    "bayesgen.methods.bfn.BFN.discrete": "bfn_discrete",
    "bayesgen.methods.inflationary.InflationaryFlow.from_data": "if",
    "bayesgen.methods.vdm.VDM": "vdm",
}


# ---- composition ------------------------------------------------------------------------------
def compose_checked(overrides: list[str]) -> DictConfig:
    """``compose_config`` whose failures are one ``ConfigError``: a group option that does not
    exist lists the ones that do; a key that does not exist gets a "did you mean"."""
    from hydra.errors import (
        ConfigCompositionException,
        HydraException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    _check_group_names(overrides)
    _check_override_keys(overrides)
    try:
        cfg = compose_config(overrides, hydra=True)
    except OverrideParseException:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for override in overrides:
            try:
                parser.parse_overrides([override])
            except OverrideParseException as e:
                raise ConfigError(f"cannot parse {_show(override)}: {_first_line(e)} (Hydra's "
                                  "override syntax: quote values with special characters)"
                                  ) from None
        raise ConfigError("cannot parse the overrides (Hydra's override syntax: quote values "
                          "with special characters)") from None
    except MissingConfigException as e:
        found = re.search(r"Could not find '([\w-]+)/([^'/]+)'", str(e))
        if found is None or found[1] not in GROUPS:
            raise ConfigError(f"cannot compose the configuration: {_first_line(e)}") from None
        group, option = found[1], found[2]
        raise ConfigError(f"{group}={option} does not exist; choose one of: "
                          f"{', '.join(group_options(group))}") from None
    except ConfigCompositionException as e:
        found = re.search(r"Could not override '([^']+)'", str(e))
        if found is not None:
            key = found[1]
            value = next((o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")), "…")
            raise ConfigError(_unknown_key(key, _known_keys(overrides), value)) from None
        found = re.search(r"An item is already at '([^']+)'", str(e))
        if found is not None:
            raise ConfigError(f"+{found[1]}=… adds a key, but {found[1]} exists already; set it "
                              f"without the +: {found[1]}=…") from None
        raise ConfigError(f"cannot compose the configuration: {_first_line(e)}") from None
    except (HydraException, OmegaConfBaseException, ValueError, AssertionError, TypeError) as e:
        # (Hydra checks some of its inputs with assert, and trips on values of odd types)
        raise ConfigError(f"cannot compose the configuration: {_first_line(e)}") from None
    with open_dict(cfg):
        hydra_node = cfg.pop("hydra", None)
    if hydra_node is not None:  # Hydra instantiates its launcher, sweeper and callbacks
        check_config_targets(OmegaConf.create({"hydra": hydra_node}), overrides)
    return cfg


def _check_group_names(overrides: list[str]) -> None:
    """A group option (``experiment=``, ``data=``, …) names a file of ``conf/<group>/``: it
    must be a name, not a path (``experiment=../../x`` would read a file elsewhere)."""
    for override in overrides:
        key, sep, value = override.partition("=")
        group = key.lstrip("+~").split("@", 1)[0]
        if not sep or group not in GROUPS or value in ("", "null"):
            continue
        options = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else (
            value.split(","))
        for option in options:
            if problem := name_problem(option.strip(), f"{group}="):
                raise ConfigError(problem)
            if option.strip() not in group_options(group):  # e.g. +trainer=[0.9,0.99]: Hydra
                # would read 0.9 as a float and fail with a TypeError of its own
                raise ConfigError(f"{group}={option.strip()} does not exist; choose one of: "
                                  f"{', '.join(group_options(group))}")


def _check_override_keys(overrides: list[str]) -> None:
    """Every override names a key: ``+=x`` or ``~=x`` has none (Hydra would fail on an assert
    of its own)."""
    for override in overrides:
        key, sep, _ = override.partition("=")
        if (sep or override.startswith("~")) and not key.lstrip("+~").split("@", 1)[0]:
            raise ConfigError(f"cannot parse {_show(override)}: an override is key=value, and "
                              "this one has no key")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _known_keys(overrides: list[str]) -> list[str]:
    """Every dotted key of the configuration that the group selections among ``overrides``
    compose, plus the arguments of lightning.Trainer under ``trainer.``."""
    groups = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
    try:
        cfg = OmegaConf.to_container(compose_config(groups), resolve=False)
    except Exception:  # noqa: BLE001 - a bad group option: suggest from the defaults
        cfg = OmegaConf.to_container(compose_config([]), resolve=False)
    return sorted(set(_flatten(cfg)) | {f"trainer.{k}" for k in _trainer_arguments()})


def _flatten(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    keys = [prefix] if prefix else []
    for key, value in node.items():
        keys += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _unknown_key(key: str, known: list[str], value: str = "…") -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if match:
        return f"unknown config key {key}; did you mean {match[0]}?"
    if key.startswith("trainer.") and key.split(".", 1)[1] in _trainer_arguments():
        return f"{key} is not set in the configuration; add it with +{key}={value}"
    group = key.split(".", 1)[0]
    near = [k for k in known if k.startswith(group + ".") and k.count(".") == 1]
    listing = f"; keys of {group}: {', '.join(near)}" if near and len(near) <= 20 else ""
    return f"unknown config key {key}{listing}"


def _trainer_arguments() -> list[str]:
    """The arguments of ``lightning.Trainer``, read from its source without importing
    Lightning (which imports torch), so that a misspelt key answers at once."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("lightning")  # finds the package, does not run it
    source = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py" if spec else None
    if source is not None and source.is_file():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "Trainer":
                init = next((f for f in node.body if isinstance(f, ast.FunctionDef)
                             and f.name == "__init__"), None)
                if init is not None:
                    a = init.args
                    return [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]
                            if x.arg != "self"]
    import lightning as L

    return [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]


# ---- resume, launcher -------------------------------------------------------------------------
def check_resume_overrides(overrides: list[str]) -> None:
    """With ``from_ckpt=`` the checkpoint's saved configuration is continued: its data, method,
    network and composition cannot change (its weights belong to them)."""
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.split("/", 1)[0] in GROUPS or key in ("data.name", "method._target_",
                                                       "net._target_"):
            fix = (" (set trainer values instead, e.g. trainer.strategy=ddp)"
                   if key == "trainer" else "")
            raise ConfigError(f"{arg} cannot change on resume: from_ckpt= continues the saved "
                              f"run with its own {key.split('.')[0].split('/')[0]} settings; drop "
                              f"{arg}{fix} or start a new run without from_ckpt=")


def check_hydra_overrides(args: list[str]) -> None:
    """Overrides of Hydra's own node (``hydra.callbacks``, ``hydra.launcher``, …) that name a
    ``_target_`` are held to the allow-list too: Hydra would instantiate them before the job.
    A ``name=`` given with ``from_ckpt=`` (validated only inside the job) is checked here."""
    trusted: set[str] | None = None  # computed when needed: it imports bayesgen's classes
    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "name" and "${" not in value and (problem := name_problem(value, "name=")):
            raise ConfigError(problem)
        if not key.startswith(("hydra.", "hydra/")) or "_target_" not in arg:
            continue
        if trusted is None:
            from bayesgen.training.targets import trusted_targets

            trusted = HYDRA_TARGETS | trusted_targets() | set(command_line_targets(args))
        for target in re.findall(r"_target_\s*[:=]\s*['\"]?([^,}'\"\s]*)", arg):
            if target not in trusted:
                raise ConfigError(f"{_show(arg)}: {target!r} is not a launcher, sweeper or "
                                  "class of bayesgen's, so Hydra will not call it; add "
                                  "allow_targets="
                                  f"[{target}] on the command line if you trust it")


def check_launcher(overrides: list[str]) -> bool:
    """Whether the jobs run elsewhere: ``hydra/launcher=slurm``, which needs the submitit
    launcher plugin and Slurm's ``srun`` (checked)."""
    launcher = next((o.split("=", 1)[1] for o in overrides
                     if o.split("=", 1)[0] == "hydra/launcher"), None)
    if launcher not in ("slurm", "submitit_slurm"):
        return False
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        raise ConfigError(f"hydra/launcher={launcher} needs the hydra-submitit-launcher package: "
                          "pip install 'bayesgen[slurm]'") from None
    if shutil.which("srun") is None:
        raise ConfigError(f"hydra/launcher={launcher} needs Slurm, but srun is not on this "
                          "machine's PATH; run on a Slurm login node, or drop "
                          "hydra/launcher= to train here")
    return True


def sweep_configs(overrides: list[str]) -> list[list[str]]:
    """For ``-m`` sweeps: the non-sweep overrides, once with each value of each swept key (so
    that every value is checked without composing the whole product)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    plain = [o.input_line for o in parsed
             if not o.is_sweep_override() and not o.is_hydra_override()]
    runs = [plain]
    for o in parsed:
        if o.is_sweep_override() and not o.is_hydra_override():
            runs += [[*plain, f"{o.get_key_element()}={v}"] for v in o.sweep_string_iterator()]
    return runs


# ---- names and targets -------------------------------------------------------------------------
# what Hydra itself instantiates from its own node (hydra.launcher, hydra.sweeper)
HYDRA_TARGETS = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
})


def command_line_targets(overrides: list[str]) -> list[str]:
    """The ``_target_``s that ``allow_targets=[a.B,c.D]`` on the command line trusts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found: list[str] = []
    for override in overrides:
        if override.lstrip("+").partition("=")[0] != "allow_targets":
            continue
        try:
            value = OverridesParser.create().parse_overrides([override])[0].value()
        except Exception:  # noqa: BLE001 - a bad spelling is reported by compose_checked
            continue
        values = value if isinstance(value, list) else [value]
        found += [v for v in values if isinstance(v, str)]
    return found


def check_config_targets(cfg: DictConfig, overrides: list[str] = ()) -> None:
    """Every ``_target_`` of ``cfg`` (any node: method, net, data, trainer, augment, Hydra's)
    is bayesgen's own (`trusted_targets`) or trusted by ``allow_targets=`` on the command line,
    refused before anything is imported or called. ``allow_targets`` set in a file (an
    experiment, a checkpoint) trusts nothing: a file cannot vouch for itself."""
    from bayesgen.training.targets import find_targets, trusted_targets

    given = command_line_targets(list(overrides))
    in_cfg = cfg.get("allow_targets") if "allow_targets" in cfg else None
    if isinstance(in_cfg, ListConfig | list) and (extra := [
            t for t in OmegaConf.to_container(in_cfg, resolve=False) if t not in given]):
        raise ConfigError(f"allow_targets lists {extra[0]!r}, but not on this command line: a "
                          "configuration file cannot trust its own targets; give "
                          f"allow_targets=[{','.join(map(str, extra))}] on the command line")
    trusted: set[str] | None = None  # computed when needed: it imports bayesgen's classes
    tree = OmegaConf.to_container(cfg, resolve=False)
    for where, target in find_targets(tree):
        if where.startswith("hydra.") and target in HYDRA_TARGETS:
            continue
        if trusted is None:
            trusted = trusted_targets() | set(given)
        if not (isinstance(target, str) and target in trusted):
            raise ConfigError(
                f"{where}={target!r} is not one of bayesgen's methods, networks, data modules "
                "or strategies, so it is not imported or called; to use your own class, add "
                "allow_targets=[<its module.Class>] on the command line (or set "
                "BAYESGEN_TRUSTED_TARGETS), or build it with the Python API")


def _check_resolves(cfg: DictConfig) -> None:
    """Every ``${…}`` interpolation resolves (an unset ``${oc.env:…}``, a cycle, a key that
    does not exist): one line naming the key, not a failure in the middle of a run."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - resolvers may raise anything
        key = getattr(e, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"the configuration does not resolve: {where}{_first_line(e)}; "
                          "fix or quote the ${…} interpolation") from None


def _check_names(cfg: DictConfig) -> None:
    """``name`` becomes ``runs/<name>/``: a name, not a path."""
    if "name" in cfg and (problem := name_problem(cfg.name, "name=")):
        raise ConfigError(problem)


# ---- the configuration ------------------------------------------------------------------------
def validate_config(cfg: DictConfig, overrides: list[str] = (), here: bool = True) -> None:
    """Raise one ConfigError for the first problem of ``cfg`` (see the module docstring);
    ``overrides`` (the command line) only make the messages more precise. ``here=False``
    (a job launched elsewhere, e.g. from a Slurm login node) skips the GPU checks."""
    _check_resolves(cfg)
    _check_names(cfg)
    _check_keys(cfg)
    for group in ("data", "method", "net"):
        node = cfg.get(group)
        for key in node if isinstance(node, DictConfig) else ():
            if OmegaConf.is_missing(node, key):
                raise ConfigError(f"{group}.{key} must be given for {group}="
                                  f"{node.get('name', node.get('_target_'))}: add "
                                  f"{group}.{key}=…")
    for path, key in SCHEMA.items():
        group, _, name = path.rpartition(".")
        node = OmegaConf.select(cfg, group) if group else cfg
        if not isinstance(node, DictConfig) or name not in node:
            continue
        value = OmegaConf.select(cfg, path, throw_on_missing=True)
        problem = key.problem(value)
        if problem:
            hint = f" ({key.hint})" if key.hint else ""
            raise ConfigError(f"invalid {path}={_show(value)}: {problem}{hint}")
    check_config_targets(cfg, overrides)  # values above are read, nothing imported or called
    if here:
        _check_accelerator(cfg)
        _check_world_size(cfg)
    _check_test_split(cfg)
    _check_data(cfg, overrides)
    _check_options(cfg, "method", overrides)
    _check_options(cfg, "net", overrides)
    _check_combination(cfg, overrides)


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value, resolve=True)).replace(" ", "")
    text = str(value)
    return text if text.isprintable() else ascii(text)  # one line, whatever the user typed


def _check_keys(cfg: DictConfig) -> None:
    base = OmegaConf.load(CONF / "config.yaml")
    known_root = (set(base) - {"defaults"}) | set(GROUPS) - {"experiment"} | {"hydra"}
    known_root |= {k.split(".")[0] for k in SCHEMA}
    for key in cfg:
        if key not in known_root:
            raise ConfigError(_unknown_key(str(key), sorted(known_root)))
    for group in CLOSED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        known = {f"{group}.{k}" for k in base.get(group) or {}}
        known |= {k for k in SCHEMA if k.startswith(group + ".")}
        for key in node:
            if f"{group}.{key}" not in known:
                raise ConfigError(_unknown_key(f"{group}.{key}", sorted(known)))
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig):
        default = OmegaConf.load(CONF / "trainer" / "default.yaml")
        allowed = set(_trainer_arguments()) | set(default)
        for key in trainer:
            if key in ENGINE_TRAINER_KEYS:
                raise ConfigError(f"trainer.{key} is set by bayesgen itself; remove it")
            if key not in allowed:
                raise ConfigError(_unknown_key(
                    f"trainer.{key}", sorted(f"trainer.{k}" for k in allowed)))


def _check_accelerator(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer")
    if not isinstance(trainer, DictConfig):
        return
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False); use trainer.accelerator=auto "
                          "or cpu")
    devices = trainer.get("devices", 1)
    if (isinstance(devices, int) and not isinstance(devices, bool)
            and devices > torch.cuda.device_count()):
        raise ConfigError(f"trainer.devices={devices} but this machine has "
                          f"{torch.cuda.device_count()} CUDA GPU(s); lower trainer.devices")


def _launched_processes() -> tuple[int, int] | None:
    """(WORLD_SIZE, LOCAL_WORLD_SIZE) when an external launcher (torchrun, torch.distributed.run)
    started this process as one of several, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        return None
    return (world, local) if world > 1 else None


def _device_count(trainer: DictConfig) -> int | None:
    """How many devices per node ``trainer.devices`` asks for; None when Lightning decides."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    if isinstance(devices, (list, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "cpu":
        return 1
    import torch

    if not torch.cuda.is_available():
        return 1  # Lightning's "auto" and -1 on a CPU: one process
    return torch.cuda.device_count()


def _check_world_size(cfg: DictConfig) -> None:
    """A launcher such as ``torchrun --nproc-per-node N`` starts N processes; unless
    ``trainer.devices`` × ``trainer.num_nodes`` equals their number, Lightning would run N
    independent single-process trainings writing one run directory. Refuse that."""
    launched, trainer = _launched_processes(), cfg.get("trainer")
    if launched is None or not isinstance(trainer, DictConfig):
        return
    world, local = launched
    devices, nodes = _device_count(trainer), trainer.get("num_nodes", 1)
    if devices is None or not isinstance(nodes, int) or devices * nodes == world:
        return
    fix = f"trainer.devices={local}" + (f" trainer.num_nodes={world // local}"
                                        if world != local and world % local == 0 else "")
    raise ConfigError(f"this process is one of WORLD_SIZE={world} started by a launcher "
                      f"(torchrun?), but trainer.devices={trainer.get('devices')} × "
                      f"trainer.num_nodes={nodes} = {devices * nodes} process(es): each would "
                      f"train on its own into the same run directory; add {fix}")


def _check_test_split(cfg: DictConfig) -> None:
    """An image folder or ZIP without ``data.test_path`` has no test split, so the evaluation
    at the end of training (``evaluate.split=test``) would have nothing to evaluate."""
    data, evaluate = cfg.get("data"), cfg.get("evaluate")
    if not isinstance(data, DictConfig) or not isinstance(evaluate, DictConfig):
        return
    if (data.get("name") in ("image_zip", "image_folder") and data.get("test_path") is None
            and evaluate.get("split", "test") == "test"):
        raise ConfigError(f"data={data.get('name')} has no test split without data.test_path, "
                          "so the evaluation at the end of training would find no examples; "
                          "add evaluate.split=val, or data.test_path=<a ZIP or folder of test "
                          "images>")


def _locate(target: str) -> Any | None:
    """The callable a ``_target_`` names; only bayesgen's own are imported here."""
    if not isinstance(target, str) or not target.startswith("bayesgen."):
        return None
    from hydra.utils import get_method

    try:
        return get_method(target)
    except Exception:  # noqa: BLE001 - the builder reports it
        return None


def _parameters(fn: Any) -> tuple[set[str], bool]:
    """(named parameters, takes **kwargs) of a callable; a classmethod that forwards **kwargs
    (``InflationaryFlow.from_data``) also takes its class's constructor arguments."""
    params = inspect.signature(fn).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    owner = getattr(fn, "__self__", None)
    if var_kw and inspect.isclass(owner):
        more, var_kw = _parameters(owner)
        names |= more
    return names, var_kw


def _check_data(cfg: DictConfig, overrides: list[str]) -> None:
    """``data.name`` is a registered data set and every other key of ``data`` is an argument of
    the ``DataModule`` or an option of that data set (an experiment's options may belong to
    another data set than a ``data=`` chosen with it)."""
    node = cfg.get("data")
    if not isinstance(node, DictConfig) or _locate(node.get("_target_")) is None:
        return  # only bayesgen's own DataModule is checked here
    from bayesgen.data.datamodule import DATASETS, DataModule, dataset_options

    if _locate(node.get("_target_")) is not DataModule:
        return
    name = node.get("name")
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(f"invalid data.name={_show(name)}: not a data set; choose one of: "
                          f"{', '.join(sorted(DATASETS))}")
    own = _parameters(DataModule)[0] | {"_target_", "_partial_", "_convert_", "_recursive_"}
    allowed = set(dataset_options(name))
    bad = [str(k) for k in node if k not in own and k not in allowed]
    if bad:
        raise ConfigError(_foreign_options("data", bad, f"data set {name}", allowed,
                                           overrides))


def _check_options(cfg: DictConfig, group: str, overrides: list[str]) -> None:
    """Every key of ``method``/``net`` (and of a nested ``net.net``) is an argument of its
    ``_target_``; ``method.eval_kwargs``/``sample_kwargs`` are arguments of elbo/sample."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        return
    nodes = [(group, node)]
    inner = node.get("net") if group == "net" else None
    if isinstance(inner, DictConfig) and "_target_" in inner:
        nodes.append((f"{group}.net", inner))
    for path, sub in nodes:
        fn = _locate(sub.get("_target_"))
        if fn is None:
            continue
        names, var_kw = _parameters(fn)
        skip = {"_target_", "_partial_", "_convert_", "_recursive_"} | (
            set(METHOD_EXTRA_KEYS) if group == "method" else set())
        bad = [k for k in sub if k not in skip and k not in names]
        if bad and not var_kw:
            raise ConfigError(_foreign_options(path, bad, sub._target_, names, overrides))
        if group == "method":
            owner = getattr(fn, "__self__", fn)
            for extra, attr in (("eval_kwargs", "elbo"), ("sample_kwargs", "sample")):
                method_fn = getattr(owner, attr, None)
                kwargs = sub.get(extra)
                if method_fn is None or not isinstance(kwargs, DictConfig):
                    continue
                allowed = _parameters(method_fn)[0] - {"self"}
                bad = [k for k in kwargs if k not in allowed]
                if bad:
                    raise ConfigError(_foreign_options(f"method.{extra}", bad,
                                                       f"{owner.__name__}.{attr}", allowed,
                                                       overrides))
                if extra == "sample_kwargs" and "sampler" in kwargs:
                    _check_sampler(kwargs["sampler"], owner)
                for name, key in CALL_ARGUMENTS.items():
                    if name in kwargs and (problem := key.problem(kwargs[name])):
                        raise ConfigError(f"invalid method.{extra}.{name}="
                                          f"{_show(kwargs[name])}: {problem}")


def _check_sampler(value, owner) -> None:
    """``method.sample_kwargs.sampler`` names one of the method's samplers."""
    from bayesgen.methods.solvers import SAMPLERS

    choices = ("euler", "heun", "adaptive") if owner.__name__ == "InflationaryFlow" else SAMPLERS
    if value is None and owner.__name__ == "InflationaryFlow":
        return
    if value not in choices:
        raise ConfigError(f"invalid method.sample_kwargs.sampler={_show(value)}: "
                          f"{owner.__name__} samples with one of {', '.join(choices)}")


def _foreign_options(path: str, bad: list[str], target: str, allowed: set[str],
                     overrides: list[str]) -> str:
    group = path.split(".")[0]
    keys = ", ".join(f"{path}.{_show(k)}" for k in bad)
    chosen = next((o for o in overrides if o.split("=", 1)[0] == group), None)
    experiment = next((o for o in overrides if o.split("=", 1)[0] == "experiment"), None)
    if chosen and experiment:
        other = "data set" if group == "data" else group
        return (f"{experiment} sets {keys} for another {other}, which {chosen} ({target}) does "
                f"not take; drop {chosen} or choose an experiment made for it")
    match = difflib.get_close_matches(bad[0], sorted(allowed), n=1, cutoff=0.75)
    fix = (f"did you mean {path}.{match[0]}?" if match else
           f"its options: {', '.join(sorted(allowed - {'model', 'data_shape'}))}")
    return f"{keys}: not an option of {target}; {fix}"


# ---- data, method and network together ---------------------------------------------------------
def _check_combination(cfg: DictConfig, overrides: list[str]) -> None:
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from bayesgen.training.build import build_method

    nodes = [cfg.get(g) for g in ("data", "method", "net")]
    if not all(isinstance(n, DictConfig) for n in nodes) or any(
            _locate(n.get("_target_")) is None for n in nodes):
        return  # only bayesgen's own data, methods and networks are built to be checked
    kind = METHOD_KINDS.get(cfg.method.get("_target_"))
    try:
        dm = instantiate(cfg.data, _convert_="all")
    except (ValueError, TypeError, AssertionError, OSError, InstantiationException) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        raise ConfigError(f"data={cfg.data.get('name')} cannot be set up from this "
                          f"configuration: {_show(_first_line(cause))}") from None
    info = dm.info
    data = f"data={cfg.data.get('name', info.name)}"
    method = f"method={kind}"
    discrete = info.num_classes is not None
    if kind == "bfn_discrete" and not discrete:
        raise ConfigError(f"{method} models discrete data (classes), but {data} is continuous; "
                          "use method=bsi, vdm, bfn_continuous or bfn_discretized, or discrete "
                          "data (text8, tinyshakespeare, binarized_mnist)")
    if kind is not None and kind != "bfn_discrete" and discrete:
        raise ConfigError(f"{method} models continuous data, but {data} is discrete "
                          f"({info.num_classes} classes); use method=bfn_discrete")
    if kind in ("bfn_continuous", "bfn_discretized") and info.kind == "flat":
        raise ConfigError(f"{method} needs data in [-1, 1], but {data} is z-scored toy data "
                          "(unbounded); use method=bsi, method=vdm or method=if")
    if kind == "bfn_discretized" and cfg.method.get("num_bins") == "auto" and not info.num_bins:
        raise ConfigError(f"method.num_bins=auto but {data} has no bins; set method.num_bins")
    if kind in ("bsi", "vdm"):
        _check_discretization(cfg.method.get("discretization"), info, data)
    if cfg.conditional.get("enabled") and not info.num_labels:
        raise ConfigError(f"conditional.enabled=true but {data} has no class labels; set "
                          "conditional.enabled=false")
    if kind is None:
        return
    meta_cfg = copy.deepcopy(cfg)
    with open_dict(meta_cfg):
        if meta_cfg.method.get("data") == "auto":  # IF's PCA: placeholders of the same shapes
            meta_cfg.method.data = None
    try:
        with torch.device("meta"):
            built = build_method(meta_cfg, dm)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, AssertionError, InstantiationException) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        raise ConfigError(f"{method} with net {cfg.net.get('_target_')} cannot be built from "
                          f"this configuration: {_first_line(cause)}") from None
    _check_net_output(built, kind, info, cfg, method)


def _check_discretization(value: Any, info, data: str) -> None:
    if value in (None, "auto"):
        return
    if not isinstance(value, DictConfig):
        raise ConfigError(f"invalid method.discretization={value}: expected auto, null or "
                          "{_target_:bayesgen.methods.bsi.Discretization,min:-1,max:1,k:K}")
    if not info.num_bins:
        raise ConfigError(f"method.discretization is set, but {data} is not discretized; set "
                          "method.discretization=null (or auto)")
    k, lo, hi = value.get("k"), value.get("min"), value.get("max")
    if (k, lo, hi) != (info.num_bins, -1, 1):
        raise ConfigError(f"method.discretization has {k} bins on [{lo}, {hi}], but {data} has "
                          f"{info.num_bins} levels on [-1, 1]; set method.discretization=auto")


def _check_net_output(method, kind: str, info, cfg: DictConfig, method_arg: str) -> None:
    """One forward pass of the network on the meta device: its output must have the shape the
    method reads."""
    import torch

    shape = tuple(info.data_shape)
    k = getattr(method, "num_classes", 0)
    x_in = (2, *shape, k) if kind == "bfn_discrete" else (2, *shape)
    want = {"bfn_discrete": x_in, "bfn_discretized": (2, 2 * shape[0], *shape[1:])}.get(
        kind, (2, *shape))
    net = method.model
    kwargs = {}
    if cfg.conditional.get("enabled"):
        kwargs["class_labels"] = torch.zeros(2, dtype=torch.long, device="meta")
    name = type(net).__name__
    inner = getattr(net, "net", None)
    inner = inner if isinstance(inner, torch.nn.Module) else net
    params = inspect.signature(type(inner)).parameters
    try:
        with torch.no_grad():
            out = net(torch.zeros(x_in, device="meta"), torch.zeros(2, device="meta"), **kwargs)
    except NotImplementedError:  # an operation without a meta kernel: nothing to learn here
        return
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        if not re.search(r"shape|size|dim", str(e)):
            return
        got = f"fails on that input ({_first_line(e)})"
    else:
        if not torch.is_tensor(out) or tuple(out.shape) == want:
            return
        got = f"returns {_batch_shape(out.shape)}"
    what = {"bfn_discretized": " (a mean and a log-std per channel)",
            "bfn_discrete": " (logits of the classes)"}.get(kind, "")
    fix = _net_fix(kind, shape, k, params, name)
    raise ConfigError(f"{method_arg} needs a network that maps {_batch_shape(x_in)} to "
                      f"{_batch_shape(want)}{what} for {info.name} data of shape {shape}, but net "
                      f"{name} {got}; {fix}")


def _net_fix(kind: str, shape: tuple[int, ...], k: int, params, name: str) -> str:
    if kind == "bfn_discretized":
        if "out_channels" in params:
            return f"set net.out_channels={2 * shape[0]}"
        if "out_features" in params and len(shape) == 1:
            return f"set net.out_features={2 * shape[0]}"
        return (f"{name} cannot double the channels: use a net with out_channels (e.g. "
                f"net=vdm_unet net.out_channels={2 * shape[0]})")
    if kind == "bfn_discrete":
        if "vocab_size" in params:
            return f"set net.vocab_size={k}"
        return ("use a network for class probabilities (net=transformer for text, "
                "net=binary_unet for binary images)")
    if "out_channels" in params:
        return "set net.out_channels=null (the data's channels)"
    if "out_features" in params:
        return "set net.out_features=null"
    return "choose a network whose output has the data's shape"


def _batch_shape(shape) -> str:
    return "(B, " + ", ".join(map(str, tuple(shape)[1:])) + ")"


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
