"""Inflationary Flows' EDM-style ``network-snapshot-*.pkl`` → bayesgen's InflationaryFlow.

The snapshot is ``dict(ema=IFsPreCond(...), loss_fn=..., augment_pipe=..., dataset_kwargs=...)``
pickled with EDM's ``persistence`` (the classes' source code inside); it is read with
:mod:`bayesgen.conversion.safe_pickle`, which executes nothing. ``IFsPreCond`` holds the
network (``model``: EDM's ``SongUNet``, DDPM++) and the data statistics that bayesgen keeps as
buffers of the method's ``schedule``:

- ``data_eigs`` (λ) → ``schedule.lam``, ``W`` (eigenvectors as columns) → ``schedule.W``,
  ``g`` → ``schedule.g`` (all float64 in bayesgen; the reference keeps ``W`` in float32).

The network's differences (each a named step below):

- ``ordered_blocks``: EDM names its blocks by resolution in two ``ModuleDict`` s
  (``enc['32x32_block0']``, ``dec['16x16_up']``, …); bayesgen's ``enc``/``dec`` are lists in
  the same construction order. The first encoder conv is ``encode``; the decoder's
  ``aux_norm``/``aux_conv`` are ``out.0``/``out.2``.
- ``qkv_channel_major``: EDM's attention reads its q/k/v rows as (head, channel, {q,k,v});
  bayesgen's as ({q,k,v}, head, channel).
- ``resample_filter``: the DDPM++ [1, 1] filter buffers are dropped (bayesgen's 2×2 average /
  nearest resampling is that filter; any other filter is refused).
- time embedding: EDM's ``PositionalEmbedding(endpoint=True)`` with the sin/cos swap, which
  bayesgen's ``SongUNet(time_embedding="edm")`` computes (``overrides`` sets it).
- the preconditioning (c_in, c_out, c_skip, c_noise = 999·t, space IS/ES) is bayesgen's
  ``preconditioning="ifs"``; ``rho``, ``gamma0`` and ``space`` are checked against the
  experiment.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bayesgen.conversion import ConversionError
from bayesgen.conversion.safe_pickle import Record, load, module_state


def overrides(state: Mapping[str, Tensor], net_target: str) -> list[str]:
    """EDM's time embedding (bayesgen's SongUNet default is DDPM's)."""
    return ["net.time_embedding=edm"] if net_target.endswith(".SongUNet") else []


class Snapshot(dict):
    """The network's state dict (keys ``model.…``) plus ``meta``: the precond's attributes."""

    meta: dict


def read(path: Path) -> Snapshot:
    try:
        with open(path, "rb") as f:
            data = load(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ConversionError(f"{path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    ema = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(ema, Record):
        raise ConversionError(f"{path} has no 'ema' network: not an EDM network snapshot")
    snap = Snapshot(module_state(ema))
    snap.meta = {k: v for k, v in ema.state.items() if not k.startswith("_")}
    snap.meta["class_name"] = ema.class_name
    model = (ema.state.get("_modules") or {}).get("model")
    snap.meta["model_class"] = getattr(model, "class_name", None)
    return snap


# ---- the network ------------------------------------------------------------------------------
_BLOCK = {"norm0": "norm0", "conv0": "conv0", "affine": "affine", "norm1": "norm1",
          "conv1": "conv1", "skip": "skip", "norm2": "attn.norm", "qkv": "attn.qkv",
          "proj": "attn.proj"}
_NAME = re.compile(r"model\.(enc|dec)\.(\d+x\d+_[a-z_]+\d*)\.(.+)")


def qkv_channel_major(w: Tensor, heads: int) -> Tensor:
    """Rows (head, channel, {q,k,v}) → ({q,k,v}, head, channel)."""
    rows = w.shape[0]
    d = rows // (3 * heads)
    return w.reshape(heads, d, 3, *w.shape[1:]).permute(2, 0, 1, *range(3, w.ndim + 2)).reshape(
        w.shape)


def resample_filter(f: Tensor) -> None:
    """Only the DDPM++ [1, 1] filter has a bayesgen counterpart."""
    box = torch.full((1, 1, 2, 2), 0.25)
    if tuple(f.shape) != (1, 1, 2, 2) or not torch.allclose(f.float(), box):
        raise ConversionError(f"resample filter {tuple(f.shape)} is not DDPM++'s [1, 1] "
                              "(NCSN++ has no bayesgen counterpart)")


def ordered_blocks(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """EDM's resolution-named blocks → bayesgen's enc.i / dec.i / encode / out."""
    out: dict[str, Tensor] = {}
    index: dict[tuple[str, str], int] = {}
    for key, value in state.items():
        m = _NAME.fullmatch(key)
        if not m:
            raise ConversionError(f"unexpected key {key} {tuple(value.shape)}")
        part, block, rest = m.groups()
        if "aux_" in block and not block.endswith(("aux_norm", "aux_conv")):
            raise ConversionError(f"{key}: NCSN++'s skip/residual paths have no bayesgen "
                                  "counterpart (DDPM++ only)")
        if block.endswith("_conv") and part == "enc":
            out[f"encode.{rest}"] = value
            continue
        if block.endswith("aux_norm") or block.endswith("aux_conv"):
            out[f"out.{0 if block.endswith('aux_norm') else 2}.{rest}"] = value
            continue
        i = index.setdefault((part, block), sum(p == part for p, _ in index))
        layer, _, leaf = rest.partition(".")
        if leaf == "resample_filter":
            resample_filter(value)
            continue
        if layer not in _BLOCK:
            raise ConversionError(f"unexpected key {key} {tuple(value.shape)}")
        if layer == "qkv":
            value = qkv_channel_major(value, heads=1)  # DDPM++: one head
        out[f"{part}.{i}.{_BLOCK[layer]}.{leaf}"] = value
    return out


def to_bayesgen(state: Mapping[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    if type(net).__name__ != "SongUNet":
        raise ConversionError(f"format if-edm converts onto SongUNet (net=ddpmpp), not "
                              f"{type(net).__name__}")
    if type(net.time_emb).__name__ != "EDMPositionalEmbedding":
        raise ConversionError("EDM's time embedding needs net.time_embedding=edm")
    meta = getattr(state, "meta", {})
    if meta.get("model_class") not in (None, "SongUNet"):
        raise ConversionError(f"the snapshot's network is {meta['model_class']}; only SongUNet "
                              "(DDPM++) has a bayesgen counterpart")
    mapping = {"model.map_layer0.": "map.0.", "model.map_layer1.": "map.2.",
               "model.map_augment.": "augment_emb."}
    out, blocks = {}, {}
    for key, value in state.items():
        head = next((k for k in mapping if key.startswith(k)), None)
        if head is not None:
            out[mapping[head] + key.removeprefix(head)] = value
        elif key.startswith("model.map_label."):
            raise ConversionError("class-conditional snapshots (map_label) are not converted")
        else:
            blocks[key] = value
    return out | ordered_blocks(blocks)


# ---- the method's statistics ------------------------------------------------------------------
def method_state(state: Mapping[str, Tensor], method: nn.Module) -> dict[str, Tensor]:
    """λ, W and g of the snapshot for the method's ``schedule``; rho, gamma0, space checked."""
    meta = getattr(state, "meta", {})
    missing = [k for k in ("data_eigs", "W", "g") if meta.get(k) is None]
    if missing:
        raise ConversionError(f"the snapshot's {meta.get('class_name')} has no {missing[0]} "
                              "(format if-edm reads IFsPreCond snapshots)")
    sched = method.schedule
    for name, ours in (("rho", sched.rho), ("gamma0", sched.gamma0),
                       ("space", getattr(method, "space", None))):
        theirs = meta.get(name)
        if theirs is not None and ours is not None and (
                theirs != ours if isinstance(theirs, str) else not math.isclose(theirs, ours)):
            raise ConversionError(f"the snapshot has {name}={theirs}, the experiment "
                                  f"method.{name}={ours}")
    out = {"schedule.lam": torch.as_tensor(meta["data_eigs"]).double().flatten(),
           "schedule.W": torch.as_tensor(meta["W"]).double(),
           "schedule.g": torch.as_tensor(meta["g"]).double().flatten()}
    if "schedule.mean" in method.state_dict():
        raise ConversionError("the experiment centres the data (method.centre=true); the "
                              "IFsPreCond snapshot is uncentred")
    return out


def guess_experiment(state: Mapping[str, Tensor]) -> str | None:
    meta = getattr(state, "meta", {})
    if meta.get("model_class") == "SongUNet" and meta.get("img_resolution"):
        r, c = meta["img_resolution"], meta.get("img_channels", 3)
        space = meta.get("space", "IS")
        return (f"cifar10-if-prp (a {c}x{r}x{r} DDPM++ in space {space}; PR-reducing runs: "
                "cifar10-if-prr2 / -prr1536)" if r == 32 else
                f"cifar10-if-prp data.data_shape=[{c},{r},{r}] net.resolution={r}")
    return None
