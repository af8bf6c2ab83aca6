"""The UNetFormer decoder (Wang et al., ISPRS J. Photogramm. 2022), as MFNet uses it.

Written from the UNetFormer paper's description (Sec. 3: global-local transformer block,
weighted-sum fusion, feature refinement head) and MFNet's settings (MFNet paper Sec. III-C and its ``UNetFormer_MMSAM.py``: decode_channels 64,
window 8, 8 heads, four 256-channel inputs at strides 4/8/16/32)::

    res4 (1/32) -> 1×1 ConvBN -> GLTB
      -> ×2 up, weighted sum with 1×1 conv(res3), 3×3 ConvBNReLU -> GLTB
      -> ×2 up, weighted sum with 1×1 conv(res2), 3×3 ConvBNReLU -> GLTB
      -> ×2 up, Feature Refinement Head with res1 (1/4)
      -> 3×3 ConvBNReLU -> Dropout2d(0.1) -> 1×1 conv -> bilinear to the input size

Global-local transformer block (GLTB): ``x + GLA(BN(x))`` then ``x + MLP(BN(x))``. Global-local
attention: a local branch (3×3 ConvBN + 1×1 ConvBN) plus a global branch (window multi-head
self-attention with a learned relative-position bias, followed by the cross-shaped context of
average pools along each axis over one window length), then a depth-wise separable window-sized
conv. Borders follow the official ``UNetFormer_MMSAM.py`` of MFNet (sstary/SSRS, folder MFNet)
exactly: maps are reflect-padded up to a multiple of the window; each cross-shaped pool sees one
extra reflected row / column and zero padding of ``window/2 - 1`` counted in the mean; the
window-sized conv sees one reflected row and column, then zero padding of ``(window-1)//2``. Where
a map is too small to reflect (tiny test sizes, on which the official code stops), replicate
padding stands in. ``skips=False`` is MFNet's "without DFM" ablation: one stride-16 input, the
same chain with no skip terms and two ×2 upsamplings (``docs/methods/mfnet.md``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int, k: int = 1, *, relu: bool = False, groups: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect padding as the official code; replicate where the map is too small to reflect."""
    if not any(pad):
        return x
    h, w = x.shape[-2:]
    small = max(pad[0], pad[1]) >= w or max(pad[2], pad[3]) >= h
    return F.pad(x, pad, mode="replicate" if small else "reflect")


class SeparableConvBN(nn.Module):
    """Depth-wise ``k×k`` conv (zero padding ``(k-1)//2``) -> BN -> point-wise 1×1 conv.

    An even ``k`` shrinks the map by one pixel per axis: the caller pads one reflected row and
    column first (``pre_pad``), as the official global-local attention does."""

    def __init__(self, channels: int, k: int, *, pre_pad: bool = False) -> None:
        super().__init__()
        self.pre_pad = pre_pad
        self.depthwise = nn.Conv2d(channels, channels, k, padding=(k - 1) // 2, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.pre_pad:
            x = _pad(x, (0, 1, 0, 1))
        return self.pointwise(self.bn(self.depthwise(x)))[..., :h, :w]


class GlobalLocalAttention(nn.Module):
    """Local convolutions + window self-attention with cross-shaped context (UNetFormer's GLA)."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decode_channels {dim} must be divisible by num_heads {num_heads}")
        if window_size % 2 or window_size < 2:
            raise ValueError(f"window_size must be even (the official pooling pads window/2 - 1), got {window_size}")
        self.num_heads, self.ws = num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.local3 = conv_bn(dim, dim, 3)
        self.local1 = conv_bn(dim, dim, 1)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window_size - 1
        self.register_buffer("rel_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1], persistent=False)
        # count_include_pad (the default): the zero border counts in each mean, as in the official code
        self.pool_h = nn.AvgPool2d((window_size, 1), stride=1, padding=(window_size // 2 - 1, 0))
        self.pool_w = nn.AvgPool2d((1, window_size), stride=1, padding=(0, window_size // 2 - 1))
        self.proj = SeparableConvBN(dim, window_size, pre_pad=True)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).view(b, 3, self.num_heads, c // self.num_heads, h // self.ws, self.ws, w // self.ws, self.ws)
        # -> (3, B·nW, heads, ws·ws, head_dim)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, -1, self.num_heads, self.ws * self.ws, c // self.num_heads)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn + self.rel_bias[self.rel_index].permute(2, 0, 1).unsqueeze(0)
        out = attn.softmax(-1) @ v  # (B·nW, heads, ws·ws, head_dim)
        out = out.view(b, h // self.ws, w // self.ws, self.num_heads, self.ws, self.ws, c // self.num_heads)
        return out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        local = self.local1(x) + self.local3(x)
        xp = _pad(_pad(x, (0, -w % self.ws, 0, 0)), (0, 0, 0, -h % self.ws))
        glob = self._windows(xp)[..., :h, :w]
        # cross-shaped context: one extra reflected row / column, then the zero-padded mean
        glob = self.pool_h(_pad(glob, (0, 0, 0, 1))) + self.pool_w(_pad(glob, (0, 1, 0, 0)))
        return self.proj(glob + local)


class GLTB(nn.Module):
    """Global-local transformer block: ``x + GLA(BN(x))``, then ``x + MLP(BN(x))`` (MLP ×4, ReLU6)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim * mlp_ratio, 1), nn.ReLU6(), nn.Conv2d(dim * mlp_ratio, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedSum(nn.Module):
    """Upsample ×2 (or to the skip's size), ``w1·conv1×1(skip) + w2·x`` with ReLU-normalised weights, ConvBNReLU."""

    def __init__(self, skip_channels: int | None, dim: int) -> None:
        super().__init__()
        self.skip = nn.Conv2d(skip_channels, dim, 1, bias=False) if skip_channels else None
        self.weights = nn.Parameter(torch.ones(2)) if skip_channels else None
        self.post = conv_bn(dim, dim, 3, relu=True)

    def fuse(self, x: torch.Tensor, skip: torch.Tensor | None, upsample: bool = True) -> torch.Tensor:
        if upsample:
            size = skip.shape[-2:] if skip is not None else (2 * x.shape[-2], 2 * x.shape[-1])
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is None or self.skip is None or self.weights is None:
            return x
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-8)
        return w[0] * self.skip(skip) + w[1] * x

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        return self.post(self.fuse(x, skip))


class FeatureRefinementHead(WeightedSum):
    """Weighted sum with the 1/4 skip, then spatial and channel attention paths, a projection and a shortcut."""

    def __init__(self, skip_channels: int | None, dim: int, reduction: int = 16) -> None:
        super().__init__(skip_channels, dim)
        self.spatial = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Sigmoid())
        hidden = max(1, dim // reduction)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU6(), nn.Conv2d(hidden, dim, 1, bias=False), nn.Sigmoid()
        )
        self.shortcut = conv_bn(dim, dim, 1)
        self.proj = SeparableConvBN(dim, 3)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, upsample: bool = True) -> torch.Tensor:
        x = self.post(self.fuse(x, skip, upsample))
        out = self.spatial(x) * x + self.channel(x) * x
        return self.act(self.proj(out) + self.shortcut(x))


class UNetFormerDecoder(nn.Module):
    """UNetFormer decoder over a 4-level pyramid (strides 4, 8, 16, 32), or one map (``skips=False``).

    Args:
        num_classes: K.
        encoder_channels: channels of the four inputs, finest first (MFNet: 256 each).
        decode_channels: width of the decoder (64).
        window_size: of the window attention (8).
        num_heads: attention heads (8).
        dropout: Dropout2d before the classifier (0.1).
        skips: ``False``: a single input map (MFNet without DFM, ``encoder_channels[-2]`` channels).

    ``forward(features, size)`` returns logits ``(B, K, *size)``.
    """

    def __init__(
        self,
        num_classes: int,
        encoder_channels: Sequence[int] = (256, 256, 256, 256),
        *,
        decode_channels: int = 64,
        window_size: int = 8,
        num_heads: int = 8,
        dropout: float = 0.1,
        skips: bool = True,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 4:
            raise ValueError(f"encoder_channels must list 4 levels (strides 4, 8, 16, 32), got {list(encoder_channels)}")
        c1, c2, c3, c4 = encoder_channels
        d = decode_channels
        self.skips = skips
        self.pre_conv = conv_bn(c4 if skips else c3, d, 1)
        self.b4 = GLTB(d, num_heads, window_size)
        self.p3 = WeightedSum(c3 if skips else None, d)
        self.b3 = GLTB(d, num_heads, window_size)
        self.p2 = WeightedSum(c2 if skips else None, d)
        self.b2 = GLTB(d, num_heads, window_size)
        self.p1 = FeatureRefinementHead(c1 if skips else None, d)
        self.seg_head = nn.Sequential(conv_bn(d, d, 3, relu=True), nn.Dropout2d(dropout), nn.Conv2d(d, num_classes, 1, bias=False))

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        if self.skips:
            res1, res2, res3, res4 = features
            x = self.b4(self.pre_conv(res4))
            x = self.b3(self.p3(x, res3))
            x = self.b2(self.p2(x, res2))
            x = self.p1(x, res1)
        else:
            (x,) = features  # stride 16 -> two ×2 upsamplings reach stride 4
            x = self.b4(self.pre_conv(x))
            x = self.b3(self.p3(x))
            x = self.b2(self.p2(x))
            x = self.p1(x, upsample=False)
        return F.interpolate(self.seg_head(x), size=tuple(size), mode="bilinear", align_corners=False)
