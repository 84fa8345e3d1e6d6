"""Convert the authors' checkpoints into bayesgen ``save_pretrained`` folders.

``convert(source, out, format, experiment)`` reads a checkpoint of one of the reference
codes, maps its weights onto the network that ``experiment=`` builds (applying every layout
and convention difference explicitly, see the format modules), checks that every key and
shape fits, and writes ``out`` with :func:`bayesgen.run.save_pretrained`. The folder then works
with ``bayesgen.load``, ``bayesgen evaluate ckpt=``, ``bayesgen sample ckpt=`` and
``bayesgen train init_from=``.

Formats (each a module with ``read(path) -> state dict``, ``to_bayesgen(state, net) ->
state dict of net`` and ``guess_experiment(state) -> str``):

- ``bfn-official``: nnaisense/bayesian-flow-networks ``*_ema.pt`` (``torch.load`` with
  ``weights_only=True``), :mod:`bayesgen.conversion.bfn_official`.
- ``bsi-lightning``: martenlienen/bsi ``.ckpt`` files (``weights_only=True``; their
  hyperparameters read as inert data), :mod:`bayesgen.conversion.bsi_lightning`.
- ``if-edm``: Inflationary Flows' EDM-style ``network-snapshot-*.pkl``, read by a restricted
  unpickler that executes nothing, :mod:`bayesgen.conversion.if_edm` (which also supplies the
  method's PCA statistics, ``method_state``). A format's ``overrides(state, net_target)`` names the
  network options its files need (EDM's time embedding, BSI's DiT embeddings).

Nothing here imports :mod:`bayesgen.cli`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

from omegaconf import open_dict
from torch import Tensor, nn

FORMATS = {"bfn-official": "bayesgen.conversion.bfn_official",
           "bsi-lightning": "bayesgen.conversion.bsi_lightning",
           "if-edm": "bayesgen.conversion.if_edm"}


class ConversionError(ValueError):
    """A file that cannot be converted; the one-line message names the first mismatch."""


def format_module(fmt: str):
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[fmt])


def check_fits(mapped: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str,
               hint: str) -> None:
    """Refuse, in one line, the first missing key, extra key or wrong shape."""
    for key, value in expected.items():
        if key not in mapped:
            raise ConversionError(f"{source}: no weights for {key} {tuple(value.shape)}{hint}")
    for key, value in mapped.items():
        if key not in expected:
            raise ConversionError(f"{source}: unexpected key {key} {tuple(value.shape)}{hint}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{source}: {key} has shape {tuple(value.shape)}, the "
                                  f"network expects {tuple(expected[key].shape)}{hint}")


def build(experiment: str, overrides: Sequence[str] = (), needed=None):
    """(config, data info, method) of ``experiment=`` with Hydra ``overrides``, and the
    overrides ``needed(cfg)`` names for that configuration (a format's network options)."""
    from bayesgen.run import data_info_from_config
    from bayesgen.training.build import build_method
    from bayesgen.training.validate import compose_checked

    cfg = compose_checked([f"experiment={experiment}", *overrides])
    extra = needed(cfg) if needed else []
    if extra:
        cfg = compose_checked([f"experiment={experiment}", *extra, *overrides])
    info = data_info_from_config(cfg)
    if cfg.method.get("data") == "auto":  # statistics fitted to data come from the checkpoint
        with open_dict(cfg):
            cfg.method.data = None
    return cfg, info, build_method(cfg, SimpleNamespace(info=info))


def network_of(method: nn.Module) -> tuple[str, nn.Module]:
    """(state-dict prefix, module) of the method's network, inside BFN's binary adapter too."""
    prefix, net = "model.", method.model
    while type(net).__name__ in ("BinaryImageAdapter", "ChannelsLastCategorical"):
        prefix, net = prefix + "net.", net.net
    return prefix, net


def load_converted(state: Mapping[str, Tensor], fmt: str, experiment: str,
                   overrides: Sequence[str] = (), source: str = "the checkpoint"):
    """(config, info, method) of ``experiment`` carrying the reference weights ``state``."""
    module = format_module(fmt)
    needed = getattr(module, "overrides", None)
    cfg, info, method = build(experiment, overrides,
                              needed and (lambda cfg: needed(state, cfg.net._target_)))
    prefix, net = network_of(method)
    guess = module.guess_experiment(state)
    hint = (f"; this file looks like experiment={guess}" if guess and guess != experiment
            else f" (format={fmt} experiment={experiment})")
    own = {k: v for k, v in method.state_dict().items() if not k.startswith(prefix)}
    try:
        mapped = module.to_bayesgen(state, net)
        extra = module.method_state(state, method) if hasattr(module, "method_state") else {}
    except ConversionError as e:
        raise ConversionError(f"{source}: {e}{hint}") from None
    check_fits(mapped, net.state_dict(), source, hint)
    check_fits(extra, {k: v for k, v in own.items() if k in extra}, source, hint)
    full = own | {k: v.to(own[k].dtype) for k, v in extra.items()}
    full |= {prefix + k: v.float() for k, v in mapped.items()}
    method.load_state_dict(full)
    return cfg, info, method.eval()


def convert(source: str | Path, out: str | Path, format: str, experiment: str,
            overrides: Sequence[str] = ()) -> Path:
    """Convert the checkpoint ``source`` of the reference code ``format`` into a
    ``save_pretrained`` folder ``out`` for ``experiment=`` (plus Hydra ``overrides``)."""
    from bayesgen.run import save_pretrained

    source = Path(source)
    if not source.is_file():
        raise ConversionError(f"{source} is not a file")
    state = format_module(format).read(source)
    cfg, info, method = load_converted(state, format, experiment, overrides, str(source))
    command = (f"bayesgen convert {source} out={out} format={format} experiment={experiment}"
               + "".join(f" {o}" for o in overrides))
    return save_pretrained(method, out, cfg, info, command=command)
