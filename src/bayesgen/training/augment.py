"""EDM's non-leaking image augmentation with augmentation labels (Karras et al. 2022, §5 and
App. F.2, after Karras et al. 2020, "Training GANs with limited data").

Each enabled transformation is applied to an image with probability ``p`` × its multiplier;
the network is told what was done through the augmentation labels (and sees zero labels when
sampling), so it learns the augmented distribution without generating augmented images.
EDM's CIFAR-10 setting, which Inflationary Flows' ``train.py`` uses: p = 0.12, xflip 1e8 (every
image is eligible, then flipped with probability 1/2), yflip, scale, rotate_frac, aniso and
translate_frac 1 — 9 labels. Only this geometric part of EDM's pipeline is implemented (no
integer rotations/translations, no colour transformations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The symlet-6 low-pass filter (12 taps, sum √2): the anti-aliasing filter of the 2× up- and
# downsampling around the geometric transformation.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
        -0.048311742585633, 0.4910559419267466, 0.787641141030194, 0.3379294217276218,
        -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Batched 3×3 matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from (N,) entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [torch.stack(r, -1) for r in ((a, b, tx), (c, d, ty), (zero, zero, one))]
    return torch.stack(rows, -2)


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    z = torch.zeros_like(sx)
    return _affine(sx, z, z, sy, z, z)


def _rotate(theta: Tensor) -> Tensor:
    z = torch.zeros_like(theta)
    return _affine(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), z, z)


def _translate(tx: Tensor, ty: Tensor) -> Tensor:
    o, z = torch.ones_like(tx), torch.zeros_like(tx)
    return _affine(o, z, z, o, tx, ty)


def _const(n: int, value: float, like: Tensor) -> Tensor:
    return torch.full((n,), float(value), dtype=like.dtype, device=like.device)


class AugmentPipe(nn.Module):
    """``pipe(images) -> (augmented images, labels)`` for images (N, C, H, W).

    Labels (N, ``label_dim``), in this order for the enabled transformations: x-flip (0/1),
    y-flip (0/1), log2-scale / ``scale_std``·… (the normal draw w), rotation (cos θ − 1, sin θ),
    anisotropic scaling (w·cos r, w·sin r), translation (two normal draws); zeros where a
    transformation was not applied.
    """

    def __init__(self, p: float = 0.12, xflip: float = 0.0, yflip: float = 0.0,
                 scale: float = 0.0, rotate_frac: float = 0.0, aniso: float = 0.0,
                 translate_frac: float = 0.0, scale_std: float = 0.2,
                 rotate_frac_max: float = 1.0, aniso_std: float = 0.2,
                 aniso_rotate_prob: float = 0.5, translate_frac_std: float = 0.125):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"augment.p must lie in [0, 1], got {p}")
        self.p = float(p)
        self.xflip, self.yflip = float(xflip), float(yflip)
        self.scale, self.rotate_frac = float(scale), float(rotate_frac)
        self.aniso, self.translate_frac = float(aniso), float(translate_frac)
        self.scale_std, self.rotate_frac_max = scale_std, rotate_frac_max
        self.aniso_std, self.aniso_rotate_prob = aniso_std, aniso_rotate_prob
        self.translate_frac_std = translate_frac_std

    @property
    def label_dim(self) -> int:
        """Number of augmentation labels (the network's ``augment_dim``)."""
        sizes = ((self.xflip, 1), (self.yflip, 1), (self.scale, 1), (self.rotate_frac, 2),
                 (self.aniso, 2), (self.translate_frac, 2))
        return sum(n for mult, n in sizes if mult > 0)

    def _applied(self, mult: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
        return torch.rand(shape, device=like.device) < mult * self.p

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe needs images (N, C, H, W), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        dev = images.device
        labels: list[Tensor] = [images.new_zeros(n, 0)]
        for mult, dim in ((self.xflip, 3), (self.yflip, 2)):
            if mult > 0:
                flip = torch.randint(2, (n, 1, 1, 1), device=dev)
                flip = torch.where(self._applied(mult, (n, 1, 1, 1), images), flip, 0)
                images = torch.where(flip == 1, images.flip(dim), images)
                labels.append(flip)

        # inverse geometric transformation (output pixel -> input pixel), centred coordinates
        g = torch.eye(3, dtype=torch.float32, device=dev).expand(n, 3, 3)
        f32 = torch.zeros(n, device=dev)
        if self.scale > 0:
            z = torch.where(self._applied(self.scale, (n,), f32), torch.randn(n, device=dev), 0.0)
            s = torch.exp2(z * self.scale_std)
            g = g @ _scale(1 / s, 1 / s)
            labels.append(z)
        if self.rotate_frac > 0:
            theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_frac_max
            theta = torch.where(self._applied(self.rotate_frac, (n,), f32), theta, 0.0)
            g = g @ _rotate(theta)
            labels += [theta.cos() - 1, theta.sin()]
        if self.aniso > 0:
            z = torch.randn(n, device=dev)
            r = (torch.rand(n, device=dev) * 2 - 1) * math.pi
            z = torch.where(self._applied(self.aniso, (n,), f32), z, 0.0)
            r = torch.where(torch.rand(n, device=dev) < self.aniso_rotate_prob, r, 0.0)
            s = torch.exp2(z * self.aniso_std)
            g = g @ _rotate(-r) @ _scale(1 / s, s) @ _rotate(r)
            labels += [z * r.cos(), z * r.sin()]
        if self.translate_frac > 0:
            z = torch.randn(2, n, device=dev)
            z = torch.where(self._applied(self.translate_frac, (1, n), f32), z, 0.0)
            g = g @ _translate(-z[0] * w * self.translate_frac_std,
                               -z[1] * h * self.translate_frac_std)
            labels += [z[0], z[1]]
        if self.scale > 0 or self.rotate_frac > 0 or self.aniso > 0 or self.translate_frac > 0:
            images = self._transform(images, g)
        return images, torch.cat([x.float().reshape(n, -1) for x in labels], dim=1)

    @staticmethod
    def _transform(images: Tensor, g: Tensor) -> Tensor:
        """Resample every image at g·(output pixel): reflect-pad as far as the transformed
        corners reach, upsample 2× (symlet-6), bilinear grid sampling, downsample 2×, crop."""
        n, c, h, w = images.shape
        dev, dtype = images.device, images.dtype
        taps, pad = len(SYM6), len(SYM6) // 4
        cx, cy = (w - 1) / 2, (h - 1) / 2
        corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1.0] * 4], device=dev)
        xy = (g @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)  # (2, N·4)
        margin = torch.cat([-xy, xy]).amax(dim=1)  # how far left, up, right, down they reach
        margin = margin + torch.tensor([2 * pad - cx, 2 * pad - cy] * 2, device=dev)
        margin = margin.clamp_min(0).minimum(torch.tensor([w - 1, h - 1] * 2, device=dev))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        one = _const(n, 1.0, g)
        g = _translate(one * (mx0 - mx1) / 2, one * (my0 - my1) / 2) @ g

        # upsample 2x: interleave zeros, then filter with the reversed taps (separably)
        kernel = torch.tensor(SYM6, dtype=dtype, device=dev)
        up = kernel.flip(0).view(1, 1, 1, taps).repeat(c, 1, 1, 1)
        hh, ww = images.shape[2:]
        images = torch.stack([images, torch.zeros_like(images)], 4).reshape(n, c, hh, 2 * ww)
        images = F.conv2d(images[..., :-1], up, groups=c, padding=(0, (taps + 1) // 2))
        images = torch.stack([images, torch.zeros_like(images)], 3).reshape(n, c, 2 * hh, -1)
        images = F.conv2d(images[:, :, :-1], up.transpose(2, 3), groups=c,
                          padding=((taps + 1) // 2, 0))
        g = _scale(2 * one, 2 * one) @ g @ _scale(one / 2, one / 2)
        g = _translate(-one / 2, -one / 2) @ g @ _translate(one / 2, one / 2)

        # sample on the output grid (normalised coordinates)
        out_h, out_w = (h + 2 * pad) * 2, (w + 2 * pad) * 2
        g = (_scale(2 / images.shape[3] * one, 2 / images.shape[2] * one) @ g
             @ _scale(out_w / 2 * one, out_h / 2 * one))
        grid = F.affine_grid(g[:, :2, :].to(dtype), [n, c, out_h, out_w], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)

        # downsample 2x with the taps and crop the padding
        down = kernel.view(1, 1, 1, taps).repeat(c, 1, 1, 1)
        images = F.conv2d(images, down, groups=c, stride=(1, 2),
                          padding=(0, (taps - 1) // 2))[..., pad:-pad]
        images = F.conv2d(images, down.transpose(2, 3), groups=c, stride=(2, 1),
                          padding=((taps - 1) // 2, 0))[:, :, pad:-pad]
        return images
