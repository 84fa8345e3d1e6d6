"""martenlienen/bsi Lightning checkpoints → bayesgen's BSI / BFN / VDM (``VDMUNet``, ``DiT``).

A ``.ckpt`` of the BSI repository's ``train.py`` holds the task's ``state_dict`` (the online
network under ``model.``, the EMA copy under ``ema_model.ema_model.``, which is what this
converter takes when present), the composed configuration as plain containers (``config``,
from the repository's ``ConfigInCheckpoint``), and Lightning's ``hyper_parameters``.

Reading: ``torch.load(weights_only=True)`` first. The repository's ``save_hyperparameters()``
stores omegaconf ``DictConfig`` objects and a numpy ``SeedSequence``, which ``weights_only``
refuses; such a file is then read by the same zip reader with bayesgen's restricted unpickler
(:mod:`bayesgen.conversion.safe_pickle`) in place of torch's: tensors and plain containers as
usual, the classes of ``omegaconf``, ``numpy.random`` and Lightning turned into inert
records, every other global refused. Nothing of the file is executed either way.

Network (``bsi/models/vdm_unet.py`` ``DenoisingVDMUNet`` → ``VDMUNet``), named steps:

- ``fourier_channels_frequency_major``: BSI's Fourier features are ordered (colour,
  frequency, {sin, cos}); bayesgen's (colour, {sin, cos}, frequency): the first conv's input
  columns are permuted.
- names: ``pos_map.1/3`` → ``time_map.0/2``; residual blocks' ``project_onto_scale_shift``,
  ``layers.0`` (GroupNorm), ``layers.2`` and the last conv ``layers.5|6`` → ``scale_shift``,
  ``norm``, ``conv1``, ``conv2``; the middle attention's ``Residual(Norm, Attention2D)`` →
  ``middle.1.norm/qkv/out``. BSI's Nyquist time embedding (interleaved sin/cos) and its
  (q, k, v)-major attention rows are bayesgen's already.
- ``downsampling_attention`` blocks have no bayesgen counterpart and are refused.

Network (``bsi/models/dit.py`` ``DenoisingDiT`` → ``DiT``), named steps:

- ``overrides``: ``net.embeddings=bsi``. bayesgen's DiT by default embeds time and patch
  positions sinusoidally and uses LayerNorm eps 1e-6; BSI's uses Nyquist embeddings (time at
  rate 1000, positions at the image size) and eps 1e-5, which ``DiT(embeddings="bsi")``
  computes.
- ``patch_fourier_columns``: the patch embedding's columns are (pixel of the patch, channel);
  each pixel's Fourier channels are reordered as for the U-Net.
- names: ``to_qkv``/``to_out`` → ``qkv``/``proj``, ``mlp.0/2`` → ``mlp.1/3`` (bayesgen's MLP
  starts with its dropout), ``adaLN_modulation`` → ``modulation``, ``patch_decoder`` →
  ``head``. The six modulation chunks (shift, scale, gate twice) are in the same order.
"""

from __future__ import annotations

import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bayesgen.conversion import ConversionError, safe_pickle

HYPERPARAMETER_MODULES = ("omegaconf.", "numpy.random.", "lightning.", "pytorch_lightning.")
EMA_PREFIX, ONLINE_PREFIX = "ema_model.ema_model.", "model."


class _HyperparameterUnpickler(safe_pickle.SafeUnpickler):
    """safe_pickle's unpickler that also reads Lightning's hyperparameters as inert data."""

    def find_class(self, module: str, name: str):
        if module.startswith(HYPERPARAMETER_MODULES):
            return safe_pickle._record_class(f"{module}.{name}")
        return super().find_class(module, name)


_pickle_module = types.SimpleNamespace(Unpickler=_HyperparameterUnpickler,
                                       load=pickle.load, __name__="bayesgen_safe_pickle")


class Checkpoint(dict):
    """The network's state dict plus ``meta``: the checkpoint's plain ``config``."""

    meta: dict


def read(path: Path) -> Checkpoint:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:  # the hyperparameters hold omegaconf / numpy objects: read them as data
            ckpt = torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=_pickle_module)
        except Exception as e:  # noqa: BLE001 - one line for the user
            raise ConversionError(f"{path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{path} is not a torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConversionError(f"{path} has no state_dict: not a Lightning checkpoint")
    state = ckpt["state_dict"]
    prefix = EMA_PREFIX if any(k.startswith(EMA_PREFIX) for k in state) else ONLINE_PREFIX
    out = Checkpoint({k.removeprefix(prefix).replace("_orig_mod.", ""): v
                      for k, v in state.items()
                      if k.startswith(prefix) and isinstance(v, Tensor)})
    if not out:
        raise ConversionError(f"{path} has no weights under {EMA_PREFIX} or {ONLINE_PREFIX}")
    out.meta = {"config": ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {},
                "ema": prefix == EMA_PREFIX}
    return out


# ---- the network ------------------------------------------------------------------------------
def fourier_channels_frequency_major(w: Tensor, net: nn.Module) -> Tensor:
    """First-conv input columns [x (C), features (C, F, {sin,cos})] → [x, (C, {sin,cos}, F)]."""
    n_freq = len(net.fourier.exponents)
    channels = w.shape[1] // (1 + 2 * n_freq)
    if channels * (1 + 2 * n_freq) != w.shape[1]:
        return w  # a wrong shape: check_fits names it
    theirs = torch.arange(2 * n_freq * channels).reshape(channels, n_freq, 2)
    order = theirs.permute(0, 2, 1).reshape(-1) + channels
    return torch.cat([w[:, :channels], w[:, order]], dim=1)


_RES = [(r"project_onto_scale_shift\.", "scale_shift."), (r"layers\.0\.", "norm."),
        (r"layers\.2\.", "conv1."), (r"layers\.[56]\.", "conv2."), (r"skip\.", "skip.")]
RULES = [
    (r"pos_map\.1\.", "time_map.0."), (r"pos_map\.3\.", "time_map.2."),
    (r"encode\.bias", "encode.bias"), (r"decode\.", "decode."),
    *[(rf"u_net\.downsampling_blocks\.(\d+)\.0\.{a}", rf"down.\1.{b}") for a, b in _RES],
    *[(rf"u_net\.upsampling_blocks\.(\d+)\.0\.{a}", rf"up.\1.{b}") for a, b in _RES],
    *[(rf"u_net\.center_block\.([02])\.{a}", rf"middle.\1.{b}") for a, b in _RES],
    (r"u_net\.center_block\.1\.fn\.0\.", "middle.1.norm."),
    (r"u_net\.center_block\.1\.fn\.1\.to_qkv\.", "middle.1.qkv."),
    (r"u_net\.center_block\.1\.fn\.1\.to_out\.", "middle.1.out."),
]


DIT_RULES = [
    (r"dit\.patch_encoder\.", "patch_embed."),
    (r"dit\.blocks\.(\d+)\.attn\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"dit\.blocks\.(\d+)\.attn\.to_out\.", r"blocks.\1.attn.proj."),
    (r"dit\.blocks\.(\d+)\.mlp\.0\.", r"blocks.\1.mlp.1."),
    (r"dit\.blocks\.(\d+)\.mlp\.2\.", r"blocks.\1.mlp.3."),
    (r"dit\.blocks\.(\d+)\.adaLN_modulation\.(0|2)\.", r"blocks.\1.modulation.\2."),
    (r"dit\.patch_decoder\.(0|1)\.", r"head.\1."),
]


def overrides(state: Mapping[str, Tensor], net_target: str) -> list[str]:
    """BSI's DiT needs bayesgen's DiT with BSI's embeddings."""
    dit = any(k.startswith("dit.") for k in state) and net_target.endswith(".DiT")
    return ["net.embeddings=bsi"] if dit else []


def patch_fourier_columns(w: Tensor, net: nn.Module) -> Tensor:
    """Patch-embedding columns (pixel of the patch, channel): each pixel's Fourier channels
    reordered as in ``fourier_channels_frequency_major``."""
    pixels = net.patch_size**2
    cols = w.shape[1] // pixels
    if cols * pixels != w.shape[1]:
        return w  # a wrong shape: check_fits names it
    per_pixel = w.reshape(w.shape[0] * pixels, cols)
    return fourier_channels_frequency_major(per_pixel, net).reshape(w.shape)


FIRST = {"VDMUNet": ("encode.weight", "encode.weight", fourier_channels_frequency_major),
         "DiT": ("dit.patch_encoder.weight", "patch_embed.weight", patch_fourier_columns)}


def to_bayesgen(state: Mapping[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    name = type(net).__name__
    if name not in FIRST:
        raise ConversionError(f"format bsi-lightning converts onto VDMUNet (net=vdm_unet) or "
                              f"DiT (net=dit), not {name}")
    if name == "DiT" and type(net.time_emb).__name__ != "NyquistEmbedding":
        raise ConversionError("BSI's DiT needs net.embeddings=bsi")
    first, first_ours, fix_first = FIRST[name]
    rules = [(re.compile(a), b) for a, b in (DIT_RULES if name == "DiT" else RULES)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if "res_attention" in key:
            raise ConversionError(f"{key}: downsampling_attention has no bayesgen counterpart")
        if key == first:
            out[first_ours] = fix_first(value, net)
            continue
        for pattern, repl in rules:
            if pattern.match(key):
                out[pattern.sub(repl, key, count=1)] = value
                break
        else:
            raise ConversionError(f"unexpected key {key} {tuple(value.shape)}")
    return out


def guess_experiment(state: Mapping[str, Tensor]) -> str | None:
    cfg = getattr(state, "meta", {}).get("config") or {}
    task = (cfg.get("task") or {}).get("name")
    model = ((cfg.get("task") or {}).get("model") or {}).get("name")
    data = (cfg.get("data") or {}).get("name")
    if model == "unet" and data == "cifar10":
        return {"bsi": "cifar10-vdm", "vdm": "cifar10-vdm-baseline"}.get(task)
    if model and model.lower().startswith("dit") and data and task:
        return f"{data}-dit" + ("" if task == "bsi" else f"-{task}")
    return None
