"""nnaisense/bayesian-flow-networks state dicts → bayesgen's BFN networks.

The official checkpoints (``mnist_ema.pt``, ``cifar10_{16d,256d,256c}_ema.pt``,
``text8_ema.pt``) are the ``state_dict()`` of the official ``BFN`` module: the network's
weights under ``net.``. Each official network has a bayesgen counterpart that computes the
same function once these differences are applied (each is a named function below):

``UNetModel`` (MNIST) → ``ImprovedUNet`` inside ``BinaryImageAdapter``
    - ``linear_as_pointwise_conv``: the input projection and the output adapter are Linear
      layers on channels-last pixels; bayesgen uses 1×1 convolutions.
    - ``conv1d_as_conv2d``: attention's q/k/v and output maps are 1-D convolutions over the
      flattened pixels; bayesgen's are 1×1 2-D convolutions.
    - ``qkv_heads_to_qkv_major``: improved-diffusion splits q/k/v *inside* each head (rows
      ordered head, {q,k,v}, channel); bayesgen's rows are {q,k,v}, head, channel.
    - conventions held by the configuration (checked by ``check_config``): the input is
      2·P(class 0) − 1 (``input_class: 0``), time enters as the extra channel 2t − 1
      (``time_channel``) and as the embedding of 4000·t (``time_scale: 4000``), whose
      [cos, sin] order both codes share.

``UNetVDM`` (CIFAR-10) → ``BFNVDMUNet``
    - ``fourier_channels_to_channel_major``: the official Fourier features are ordered
      ({sin, cos}, frequency, colour); bayesgen's (colour, {sin, cos}, frequency), so the input
      columns of the first convolution are permuted.
    - ``output_rows_to_parameter_major``: the output adapter's rows are (colour, parameter)
      for the discretized model's (mean, log-std); bayesgen reads (parameter, colour).
    - ``linear_as_pointwise_conv`` for the output adapter.
    - configuration: time embedded as 1000·(t + 0.001) (``time_offset``, ``time_scale``).

Both image nets: the input adapter's buffer of Fourier *position* features is dropped
(``UNUSED_POSITION_FEATURES``: the official configs do not feed them to the network).

``GPT`` with ``TextInputAdapter`` (text8) → ``Transformer``
    - names only; the fixed positions ``pe_encode`` are a buffer of the official file, which
      bayesgen recomputes (``bfn_position_encoding``): ``check_positions`` compares them.
    - configuration: tokens Linear(2θ − 1), time Linear(2t − 1) (``time_embedding: linear``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from bayesgen.conversion import ConversionError


def read(path: Path) -> dict[str, Tensor]:
    """The official ``BFN.state_dict()`` (tensors only: ``weights_only=True``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - one line for the user
        raise ConversionError(f"{path} is not a torch state dict readable with "
                              f"weights_only=True ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"{path} holds no state dict of tensors")
    return state


# ---- the conventions ------------------------------------------------------------------------
def linear_as_pointwise_conv(w: Tensor, net: nn.Module) -> Tensor:
    """A per-pixel Linear (out, in) as a 1×1 convolution (out, in, 1, 1); biases unchanged."""
    return w[..., None, None] if w.ndim == 2 else w


def conv1d_as_conv2d(w: Tensor, net: nn.Module) -> Tensor:
    """A 1-D convolution over flattened pixels (out, in, 1) as a 1×1 2-D one."""
    return w[..., None] if w.ndim == 3 else w


def qkv_heads_to_qkv_major(w: Tensor, net: nn.Module) -> Tensor:
    """Rows (head, {q,k,v}, d) → ({q,k,v}, head, d), for the weight and the bias."""
    heads = _attention_heads(net)
    rows = w.shape[0]
    if rows % (3 * heads):
        raise ConversionError(f"q/k/v rows {rows} are not divisible by 3·{heads} heads")
    d = rows // (3 * heads)
    w = w.reshape(heads, 3, d, *w.shape[1:]).transpose(0, 1).reshape(rows, *w.shape[1:])
    return conv1d_as_conv2d(w, net)


def fourier_channels_to_channel_major(w: Tensor, net: nn.Module) -> Tensor:
    """First-conv input columns [x (C), features ({sin,cos}, F, C)] → [x, features (C, {sin,
    cos}, F)]: the column bayesgen reads as (c, s, f) is the official (s, f, c)."""
    n_freq = len(net.fourier.exponents)
    channels = w.shape[1] // (1 + 2 * n_freq)
    if channels * (1 + 2 * n_freq) != w.shape[1]:
        return w  # a wrong shape: check_fits names it
    official = torch.arange(2 * n_freq * channels).reshape(2, n_freq, channels)
    order = official.permute(2, 0, 1).reshape(-1) + channels
    return torch.cat([w[:, :channels], w[:, order]], dim=1)


def output_rows_to_parameter_major(w: Tensor, net: nn.Module) -> Tensor:
    """Output-adapter rows (colour, parameter) → (parameter, colour); then a 1×1 conv."""
    channels = net.head.in_channels - net.width
    rows = w.shape[0]
    if rows % channels:
        return linear_as_pointwise_conv(w, net)  # a wrong shape: check_fits names it
    w = w.reshape(channels, rows // channels, *w.shape[1:]).transpose(0, 1).reshape(
        rows, *w.shape[1:])
    return linear_as_pointwise_conv(w, net)


def _attention_heads(net: nn.Module) -> int:
    return next(m.num_heads for m in net.modules() if type(m).__name__ == "AttentionBlock")


def _same(w: Tensor, net: nn.Module) -> Tensor:
    return w


Rule = tuple[str, str, Callable[[Tensor, nn.Module], Tensor]]

_IMPROVED_BLOCK = [  # inside input_blocks.i.j / middle_block.j / output_blocks.i.j
    (r"in_layers\.0\.", "norm1.", _same), (r"in_layers\.2\.", "conv1.", _same),
    (r"emb_layers\.1\.", "emb.", _same), (r"out_layers\.0\.", "norm2.", _same),
    (r"out_layers\.3\.", "conv2.", _same), (r"skip_connection\.", "skip.", _same),
    (r"qkv\.", "qkv.", qkv_heads_to_qkv_major), (r"proj_out\.", "proj.", conv1d_as_conv2d),
    (r"norm\.", "norm.", _same), (r"op\.", "", _same), (r"conv\.", "conv.", _same),
]
UNET_MNIST: list[Rule] = [
    (r"input_projection\.", "project.", linear_as_pointwise_conv),
    (r"time_embed\.0\.", "time_emb.1.", _same), (r"time_embed\.2\.", "time_emb.3.", _same),
    (r"input_blocks\.0\.0\.", "down.0.0.", _same),
    *[(rf"input_blocks\.(\d+)\.(\d+)\.{a}", rf"down.\1.\2.{b}", f) for a, b, f in _IMPROVED_BLOCK],
    *[(rf"middle_block\.(\d+)\.{a}", rf"middle.\1.{b}", f) for a, b, f in _IMPROVED_BLOCK],
    *[(rf"output_blocks\.(\d+)\.(\d+)\.{a}", rf"up.\1.\2.{b}", f) for a, b, f in _IMPROVED_BLOCK],
    (r"out\.(0|2)\.", r"out.\1.", _same),
    (r"output_adapter\.output_projection\.", "head.", linear_as_pointwise_conv),
]

_VDM_RES = [(r"net1\.0\.", "norm1."), (r"net1\.2\.", "conv1."), (r"cond_proj\.", "cond."),
            (r"net2\.0\.", "norm2."), (r"net2\.3\.", "conv2."), (r"skip_conv\.", "skip.")]
_VDM_ATTN = [(r"layers\.0\.", "norm."), (r"layers\.1\.", "qkv."), (r"layers\.3\.", "proj.")]
UNET_VDM: list[Rule] = [
    (r"embed_conditioning\.(0|2)\.", r"time_map.\1.", _same),
    (r"conv_in\.weight", "encode.weight", fourier_channels_to_channel_major),
    (r"conv_in\.bias", "encode.bias", _same),
    *[(rf"(down|up)_blocks\.(\d+)\.resnet_block\.{a}", rf"\1.\2.0.{b}", _same)
      for a, b in _VDM_RES],
    *[(rf"(down|up)_blocks\.(\d+)\.attention_block\.{a}", rf"\1.\2.1.{b}", _same)
      for a, b in _VDM_ATTN],
    *[(rf"mid_resnet_block_{i}\.{a}", f"middle.{2 * i - 2}.{b}", _same)
      for i in (1, 2) for a, b in _VDM_RES],
    *[(rf"mid_attn_block\.{a}", f"middle.1.{b}", _same) for a, b in _VDM_ATTN],
    (r"conv_out\.(0|2)\.", r"out.\1.", _same),
    (r"output_adapter\.output_projection\.", "head.", output_rows_to_parameter_major),
]

GPT: list[Rule] = [
    (r"input_adapter\.inp_embedding\.", "embed.", _same),
    (r"input_adapter\.t_embedding\.", "time_emb.", _same),
    (r"transformer\.h\.(\d+)\.(ln_1|ln_2)\.", r"blocks.\1.\2.", _same),
    (r"transformer\.h\.(\d+)\.attn\.c_attn\.", r"blocks.\1.attn.qkv.", _same),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.", r"blocks.\1.attn.proj.", _same),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.0.", _same),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.2.", _same),
    (r"transformer\.ln_f\.", "ln_f.", _same), (r"lm_head\.", "head.", _same),
]

# The image input adapter stores fixed Fourier position features as a buffer even when the
# official configs leave them out of the input (add_pos_feats: False); with them in, the input
# projection or the first conv would have more input columns, which check_fits refuses.
UNUSED_POSITION_FEATURES = "input_adapter.pos_feats"

RULES = {"ImprovedUNet": UNET_MNIST, "BFNVDMUNet": UNET_VDM, "Transformer": GPT}


def check_positions(pos: Tensor, net: nn.Module) -> None:
    """The official text positions (a buffer in the file) must equal bayesgen's."""
    from bayesgen.nets.transformer import bfn_position_encoding

    ours = bfn_position_encoding(*pos.shape)
    if tuple(pos.shape) != (net.seq_len, ours.shape[1]) or not torch.allclose(
            pos.float(), ours, atol=1e-3):
        raise ConversionError("input_adapter.pos_embedding is not the fixed pe_encode of "
                              f"shape ({net.seq_len}, {ours.shape[1]}); learned positions "
                              "have no bayesgen counterpart")


def check_config(net: nn.Module) -> None:
    """The conventions that the experiment's configuration (not the weights) carries."""
    name = type(net).__name__
    want = {"ImprovedUNet": {"time_channel": True},
            "Transformer": {"linear_time": True, "skip": True}}.get(name, {})
    if name == "ImprovedUNet" and (net.project is None or net.head is None):
        raise ConversionError("the official MNIST net projects its input and has a skip "
                              "head: set net.net.project_input=true net.net.skip=true")
    if name == "ImprovedUNet" and net.time_emb[0].scale != 4000:
        raise ConversionError("the official MNIST net embeds 4000·t: set net.net.time_scale=4000")
    if name == "BFNVDMUNet" and (net.time_offset, net.time_scale) != (1e-3, 1000.0):
        raise ConversionError("the official CIFAR-10 net embeds 1000·(t + 0.001): keep "
                              "net.time_offset=0.001 net.time_scale=1000")
    for attr, value in want.items():
        if getattr(net, attr) != value:
            raise ConversionError(f"the official network needs {attr}={value}")


def to_bayesgen(state: Mapping[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """The official weights renamed and rearranged into ``net``'s state dict."""
    name = type(net).__name__
    if name not in RULES:
        raise ConversionError(f"format bfn-official converts onto ImprovedUNet, BFNVDMUNet or "
                              f"Transformer, not {name}")
    check_config(net)
    rules = [(re.compile(a), b, f) for a, b, f in RULES[name]]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not key.startswith("net."):
            raise ConversionError(f"unexpected key {key} (the official BFN keeps its "
                                  "network under net.)")
        key = key.removeprefix("net.")
        if name == "Transformer" and key == "input_adapter.pos_embedding":
            check_positions(value, net)
            continue
        if key == UNUSED_POSITION_FEATURES:
            continue
        for pattern, repl, fix in rules:
            m = pattern.match(key)
            if m:
                new = pattern.sub(repl, key, count=1)
                out[new] = fix(value, net)
                break
        else:
            raise ConversionError(f"unexpected key net.{key} {tuple(value.shape)}")
    return out


def guess_experiment(state: Mapping[str, Tensor]) -> str | None:
    """The bayesgen experiment whose network the official weights fit."""
    keys = {k.removeprefix("module.").removeprefix("net.") for k in state}
    if "input_blocks.0.0.weight" in keys:
        return "mnist-bfn"
    if "lm_head.weight" in keys:
        return "text8-bfn"
    head = state.get("net.output_adapter.output_projection.weight")
    if "conv_in.weight" in keys and head is not None:
        return ("cifar10-bfn-discretized-256 (or -16)" if head.shape[0] == 6 else
                "cifar10-bfn-continuous-256")
    return None
