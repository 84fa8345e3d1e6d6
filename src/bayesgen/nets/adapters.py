"""Wrappers that change what a network sees: categorical inputs for image nets, and
classifier-free guidance. Each wrapper is itself a ``net(x, t, class_labels=None)``."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class ChannelsLastCategorical(nn.Module):
    """Serve per-pixel class probabilities θ (B, C, *spatial, K) to a channels-first net.

    The net sees the C·K channels 2θ − 1 (B, C·K, *spatial), so build it with
    ``in_channels = out_channels = C·K``; its output is read back as logits (B, C, *spatial, K).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        k = x.shape[-1]
        out = self.net(rearrange(2 * x - 1, "b c ... k -> b (c k) ..."), t, **kwargs)
        return rearrange(out, "b (c k) ... -> b c ... k", k=k)


class BinaryImageAdapter(nn.Module):
    """Two-class θ (B, C, *spatial, 2) → the single channel 2θ_c − 1 per input channel, c =
    ``input_class``; build the net with ``in_channels = out_channels = C``. BFN's official
    binarized-MNIST code feeds class 0's probability (``input_class=0``, i.e. 1 − 2θ₁).

    The net's output l is the log-odds of class 1; it returns the logits [−l/2, l/2] along a
    new last axis, so that softmax gives p(class 1) = sigmoid(l).
    """

    def __init__(self, net: nn.Module, input_class: int = 1):
        super().__init__()
        if input_class not in (0, 1):
            raise ValueError(f"input_class must be 0 or 1, got {input_class}")
        self.net, self.input_class = net, input_class

    def forward(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        if x.shape[-1] != 2:
            raise ValueError(f"BinaryImageAdapter needs K = 2 classes on the last axis, got "
                             f"{x.shape[-1]}; use ChannelsLastCategorical for K > 2")
        half = self.net(2 * x[..., self.input_class] - 1, t, **kwargs) / 2
        return torch.stack([-half, half], dim=-1)


class ClassifierFreeGuidance(nn.Module):
    """(1 + w)·net(x, t, y) − w·net(x, t, ∅), both halves in one batched call.

    With ``guidance_scale`` w = 0 or no labels it is a single plain call. The null label ∅ is
    −1 (see ``LabelEmbedding``). Other keyword arguments are passed to both halves unchanged,
    so they must not be per-example tensors.
    """

    def __init__(self, net: nn.Module, guidance_scale: float = 0.0):
        super().__init__()
        self.net, self.guidance_scale = net, guidance_scale

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None,
                **kwargs) -> Tensor:
        w = self.guidance_scale
        if w == 0 or class_labels is None:
            return self.net(x, t, class_labels=class_labels, **kwargs)
        labels = torch.cat([class_labels, torch.full_like(class_labels, -1)])
        cond, uncond = self.net(torch.cat([x, x]), torch.cat([t, t]), class_labels=labels,
                                **kwargs).chunk(2)
        return (1 + w) * cond - w * uncond
