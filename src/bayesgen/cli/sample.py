"""``bayesgen sample``: draw samples from a trained run (pictures, animation, raw tensor)."""

from __future__ import annotations

import inspect
from pathlib import Path

from bayesgen.cli.options import (
    DEVICE,
    FLOAT,
    INT,
    PATH,
    POSITIVE_INT,
    Command,
    Option,
    UsageError,
    choice,
    text,
)

CKPT = Option("ckpt", PATH, help="run directory or .ckpt file", required=True)
SAMPLER = [
    Option("k", POSITIVE_INT, help="sampling steps (BSI, VDM); default: the run's sample_kwargs"),
    Option("n_steps", POSITIVE_INT, help="sampling steps (BFN); default: the run's"),
    Option("schedule", choice("linear", "cosine", "edm", "edm7"), help="BSI's step schedule"),
]
# Hook for conditioning (inpaint=IMAGE mask=MASK, progress=…): append Options here and turn
# them into keyword arguments of the method's sample in `extra_sample_kwargs`.
EXTRA_OPTIONS: list[Option] = []


def accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a parameter ``name``."""
    return name in inspect.signature(fn).parameters


def sampler_kwargs(cfg, method, opts: dict) -> dict:
    """The run's ``sample_kwargs`` with the sampler options given on the command line."""
    kwargs = dict(cfg.method.get("sample_kwargs", {}) or {})
    for key in ("k", "n_steps", "schedule"):
        if opts.get(key) is not None:
            if not accepts(method.sample, key):
                raise UsageError(f"{key}= does not apply to method {cfg.method.name}")
            kwargs[key] = opts[key]
    return kwargs


def extra_sample_kwargs(opts: dict, task) -> dict:
    """Keyword arguments of ``EXTRA_OPTIONS`` for the method's ``sample`` (none yet)."""
    return {}


def set_guidance(task, scale: float) -> None:
    """Classifier-free guidance of weight ``scale`` for a class-conditional model."""
    if not task.num_labels:
        raise UsageError("guidance= needs a class-conditional model (conditional.enabled=true)")
    from bayesgen.nets import ClassifierFreeGuidance

    model = task.method.model
    if isinstance(model, ClassifierFreeGuidance):
        model.guidance_scale = scale
    else:
        task.method.model = ClassifierFreeGuidance(model, scale)


def fmt(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


def run(opts: dict) -> int:
    from bayesgen.training.build import build_datamodule, load_checkpoint, resolve_device
    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.outputs import sample_labels, write_samples

    cfg, task, path = load_checkpoint(opts["ckpt"])
    task.to(resolve_device(opts["device"]))
    sample_kwargs = sampler_kwargs(cfg, task.method, opts)
    sample_kwargs |= extra_sample_kwargs(opts, task)
    if opts["guidance"] is not None:
        set_guidance(task, opts["guidance"])
    n = opts["n"]
    labels = sample_labels(task, n, opts["label"])  # label= without classes is refused here
    out = Path(opts["out"] or run_dir_of(path) / "samples")
    paths = write_samples(task.method, build_datamodule(cfg).info, out, n=n,
                          sample_kwargs=sample_kwargs, model_kwargs=labels,
                          frames=opts["frames"], animation=opts["animation"], seed=opts["seed"])
    nfe = getattr(task.method, "last_nfe", None)
    print(f"drew {n} samples ({fmt(sample_kwargs)})"
          + (f"; {nfe} network evaluations" if nfe is not None else ""))
    for p in paths.values():
        print(f"wrote {p}")
    if "text" in paths:
        print(paths["text"].read_text()[:1000])
    return 0


COMMANDS = [Command(
    "sample", "draw samples: PNG grid or scatter, animation, tensor", run,
    description="Draw samples; writes samples.png (image grid or 2-D/3-D scatter), sampling.gif "
    "(or .webp), samples.pt (the raw tensor) and samples.txt for text.",
    options=[
        CKPT,
        Option("n", POSITIVE_INT, 64, "number of samples"),
        *SAMPLER,
        Option("seed", INT, 0, "random seed"),
        Option("label", INT, help="class of every sample (class-conditional models); default: "
               "one class per grid row"),
        Option("guidance", FLOAT, help="classifier-free guidance weight (conditional models)"),
        Option("frames", POSITIVE_INT, 20, "frames of the sampling animation"),
        Option("animation", choice("gif", "webp", "none"), "gif", "animation format"),
        Option("out", text("DIR"), help="output folder (default RUN/samples)"),
        Option("device", DEVICE, help="device (default: cuda when there is one)"),
        *EXTRA_OPTIONS,
    ])]
