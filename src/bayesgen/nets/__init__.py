"""Networks ``net(x, t, class_labels=None) -> tensor``; they know nothing about the methods.

``t`` has shape (B,). ``num_classes > 0`` makes a net class-conditional; label −1 (or
``num_classes``) is the null label for label dropout and classifier-free guidance.
"""

from __future__ import annotations

from torch import nn

from bayesgen.nets.adapters import (
    BinaryImageAdapter,
    ChannelsLastCategorical,
    ClassifierFreeGuidance,
)
from bayesgen.nets.bfn_unet import BFNVDMUNet
from bayesgen.nets.dit import DiT
from bayesgen.nets.embeddings import (
    FourierFeatures,
    LabelEmbedding,
    NyquistEmbedding,
    SinusoidalEmbedding,
)
from bayesgen.nets.mlp import MLP, ToyNet
from bayesgen.nets.songunet import SongUNet
from bayesgen.nets.transformer import Transformer
from bayesgen.nets.unet import ImprovedUNet, VDMUNet

NETS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "toy": ToyNet,
    "vdm_unet": VDMUNet,
    "bfn_vdm_unet": BFNVDMUNet,
    "improved_unet": ImprovedUNet,
    "song_unet": SongUNet,
    "dit": DiT,
    "transformer": Transformer,
}


def build_net(name: str, **kwargs) -> nn.Module:
    """Construct the network registered as ``name`` (see ``NETS``) with ``kwargs``."""
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETS)}")
    return NETS[name](**kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of parameters. To size a big config without allocating its memory, build it
    on the meta device: ``with torch.device("meta"): net = build_net("dit")``."""
    return sum(p.numel() for p in net.parameters())


__all__ = [
    "NETS", "BFNVDMUNet", "BinaryImageAdapter", "ChannelsLastCategorical",
    "ClassifierFreeGuidance", "DiT", "FourierFeatures", "ImprovedUNet", "LabelEmbedding", "MLP",
    "NyquistEmbedding", "SinusoidalEmbedding",
    "SongUNet", "ToyNet", "Transformer", "VDMUNet", "build_net", "count_parameters",
]
