"""``bayesgen convert``: the authors' checkpoints → save_pretrained folders
(``bayesgen.convert``, :mod:`bayesgen.conversion`)."""

from __future__ import annotations

import os

from bayesgen.cli.options import Command, Option, UsageError, choice, parse, text

FORMATS = ("bfn-official", "bsi-lightning", "if-edm")


def run(args: list[str]) -> int:
    sources = [a for a in args if "=" not in a]
    options = [a for a in args if "=" in a and "." not in a.split("=", 1)[0]
               and not a.startswith(("+", "~"))]
    overrides = [a for a in args if a not in options and a not in sources]
    if len(sources) != 1:
        raise UsageError("bayesgen convert takes one SOURCE file, got "
                         f"{len(sources)}: {' '.join(sources) or '(none)'} (see bayesgen "
                         "convert --help)")
    opts = parse(COMMANDS[0], options, "bayesgen convert")
    if not os.path.isfile(sources[0]):
        raise UsageError(f"bayesgen convert: SOURCE {sources[0]} not found")
    from bayesgen.conversion import convert

    out = convert(sources[0], opts["out"], opts["format"], opts["experiment"], overrides)
    print(f"wrote {out}: bayesgen evaluate ckpt={out} · bayesgen sample ckpt={out}")
    return 0


COMMANDS = [Command(
    "convert", "the authors' checkpoints -> save_pretrained (bfn-official|bsi-lightning|if-edm)",
    run, passthrough=True,
    usage_args="SOURCE out=DIR format=FORMAT experiment={name} [overrides]",
    description="Convert a checkpoint written by a reference implementation into a bayesgen "
    "save_pretrained folder (config.json + model.safetensors) for bayesgen.load, bayesgen "
    "evaluate ckpt=, bayesgen sample ckpt=. format=bfn-official: the state dicts of "
    "nnaisense/bayesian-flow-networks (mnist_ema.pt: experiment=mnist-bfn; "
    "cifar10_16d_ema.pt / cifar10_256d_ema.pt: cifar10-bfn-discretized-16 / -256; "
    "cifar10_256c_ema.pt: cifar10-bfn-continuous-256; text8_ema.pt: text8-bfn), read with "
    "weights_only=True. format=bsi-lightning: a .ckpt of martenlienen/bsi (the VDM U-Net of "
    "cifar10-vdm with task bsi or vdm; its EMA weights), read with weights_only=True and its "
    "hyperparameters as inert data. format=if-edm: Inflationary Flows' "
    "network-snapshot-*.pkl, read by an unpickler that executes nothing. A file that does "
    "not fit the experiment's network is "
    "refused with the first missing, extra or misshapen key and the experiment it looks "
    "like. Hydra overrides (net.width=16) change the experiment's network. See "
    "docs/checkpoints.md.",
    options=[
        Option("out", text("DIR"), required=True, help="the folder to write"),
        Option("format", choice(*FORMATS), required=True, help="the reference code that "
               "wrote SOURCE"),
        Option("experiment", text("{name}"), required=True, help="the bayesgen experiment "
               "whose network receives the weights"),
    ])]
