"""``bayesgen sample``: draw samples from a trained run (pictures, animation, raw tensor)."""

from __future__ import annotations

import inspect
from pathlib import Path

from bayesgen.cli.options import (
    BOOL,
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

CKPT = Option("ckpt", PATH, help="run directory or .ckpt file", required=True, exists=True)
SAMPLER = [
    Option("k", POSITIVE_INT, help="sampling steps (BSI, VDM); default: the run's sample_kwargs"),
    Option("n_steps", POSITIVE_INT, help="sampling steps (BFN); default: the run's"),
    Option("schedule", choice("linear", "cosine", "edm", "edm7"), help="BSI's step schedule"),
    Option("sampler", choice("ancestral", "ode1", "ode2", "sde2", "euler", "heun", "adaptive"),
           help="ancestral (the papers'), ode1/ode2/sde2 (fast solvers: one network call a "
           "step) for BSI, BFN, VDM; euler/heun/adaptive for Inflationary Flows; default: the "
           "run's"),
]
# Conditioning by inference (methods' observed=/mask=) and the progress bar.
EXTRA_OPTIONS: list[Option] = [
    Option("inpaint", PATH, help="picture of known values (with mask=): the rest is sampled "
           "by inference (BSI, BFN)"),
    Option("mask", PATH, help="picture, white (≥ 128) where inpaint= is known"),
    Option("prefix", text("TEXT"), help="text every sample starts with (discrete BFN on text)"),
    Option("conditioning", choice("tweedie", "replace"), "tweedie",
           "with inpaint=/prefix=: tweedie (the conditional, about 2 network calls a step) or "
           "replace (1 call a step, biased)"),
    Option("progress", BOOL, True, "progress bar on stderr"),
]


def accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a parameter ``name``."""
    return name in inspect.signature(fn).parameters


def sampler_kwargs(cfg, method, opts: dict) -> dict:
    """The run's ``sample_kwargs`` with the sampler options given on the command line."""
    kwargs = dict(cfg.method.get("sample_kwargs", {}) or {})
    for key in ("k", "n_steps", "schedule", "sampler"):
        if opts.get(key) is not None:
            if not accepts(method.sample, key):
                raise UsageError(f"{key}= does not apply to method {cfg.method.name}")
            kwargs[key] = opts[key]
    return kwargs


def extra_sample_kwargs(opts: dict, task, info) -> dict:
    """``observed``/``mask``/``inpaint`` for the method's ``sample`` from ``inpaint=`` and
    ``mask=`` (pictures) or ``prefix=`` (text); {} without them."""
    pictures = [k for k in ("inpaint", "mask") if opts.get(k)]
    if len(pictures) == 1:
        raise UsageError("inpaint= and mask= go together: the picture of known values and the "
                         "mask, white where they are known")
    if not pictures and not opts.get("prefix"):
        return {}
    if pictures and opts.get("prefix"):
        raise UsageError("give inpaint=/mask= (pictures) or prefix= (text), not both")
    if not accepts(task.method.sample, "observed"):
        raise UsageError(f"{'inpaint=' if pictures else 'prefix='} needs a method that "
                         f"conditions by inference (BSI or BFN), not {type(task.method).__name__}")
    from bayesgen.run import load_inpainting, text_prefix

    try:
        observed, mask = (load_inpainting(opts["inpaint"], opts["mask"], info) if pictures
                          else text_prefix(opts["prefix"], info))
    except ValueError as e:
        raise UsageError(str(e)) from None
    device = next(task.method.parameters()).device
    return {"observed": observed[None].to(device), "mask": mask[None].to(device),
            "inpaint": opts["conditioning"]}


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
    from bayesgen.run import progress_callback, sampler_steps
    from bayesgen.training.build import build_datamodule, load_checkpoint, resolve_device
    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.outputs import sample_labels, write_samples

    cfg, task, path = load_checkpoint(opts["ckpt"])
    task.to(resolve_device(opts["device"]))
    info = build_datamodule(cfg).info
    sample_kwargs = sampler_kwargs(cfg, task.method, opts)
    condition = extra_sample_kwargs(opts, task, info)
    if opts["guidance"] is not None:
        set_guidance(task, opts["guidance"])
    n = opts["n"] or info.default_sample_count()
    labels = sample_labels(task, n, opts["label"])  # label= without classes is refused here
    out = Path(opts["out"] or run_dir_of(path) / "samples")
    steps = sampler_steps(task.method, **sample_kwargs)
    with progress_callback(steps, f"sampling {n}", disable=not opts["progress"]) as tick:
        paths = write_samples(task.method, info, out, n=n,
                              sample_kwargs=sample_kwargs | condition | {"callback": tick},
                              model_kwargs=labels, frames=opts["frames"],
                              animation=opts["animation"], seed=opts["seed"])
    if condition:
        what = f"prefix {opts['prefix']!r}" if opts.get("prefix") else opts["inpaint"]
        print(f"conditioned on {what} ({condition['inpaint']}; "
              f"{int(condition['mask'].sum())} known values)")
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
        Option("n", POSITIVE_INT, help="number of samples (default 64; 2-D/3-D points 2000)"),
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
