"""Joint transforms: one random geometry applied to every modality and the label.

A sample is ``{"modalities": {name: FloatTensor 3xHxW}, "label": LongTensor HxW, ...}``;
other keys pass through untouched. Datasets call transforms on images in [0, 1] (before
per-modality normalisation, see :mod:`mmsam.data.modalities`), so image padding with 0 is
black as in DELIVER's reference pipeline. Randomness comes from torch's global RNG, which
DataLoader workers seed from the main process (``seed_everything(workers=True)``).
Images resize bilinearly (antialiased when shrinking); labels use ``nearest-exact``, whose
pixel-centre convention matches bilinear's, so image and label stay aligned.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mmsam.errors import ConfigError

Sample = dict[str, Any]
Size = Union[int, Sequence[int]]
IGNORE_INDEX = 255


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        out = (size, size)
    else:
        out = tuple(int(s) for s in size)  # type: ignore[assignment]
    if len(out) != 2 or min(out) <= 0:
        raise ConfigError(f"size must be a positive int or (height, width), got {size!r}")
    return out  # type: ignore[return-value]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a CxHxW float image to ``size`` (antialiased when shrinking); a
    ``tv_tensors.Image`` stays one."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    # antialias only when shrinking: v2's default antialias=True also smooths an enlarged axis
    out = TF.resize(tv_tensors.Image(image.float()), list(size),
                    interpolation=InterpolationMode.BILINEAR, antialias=shrink)
    out = out.to(image.dtype)
    return out if isinstance(image, tv_tensors.Image) else out.as_subclass(torch.Tensor)


def resize_nearest(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest (pixel-centre exact) resize of an HxW or CxHxW tensor of any dtype; a
    ``tv_tensors.Mask`` stays one."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    # NEAREST_EXACT, not v2's mask default NEAREST (which samples half a pixel off bilinear's grid)
    out = TF.resize(tv_tensors.Mask(tensor), list(size), interpolation=InterpolationMode.NEAREST_EXACT)
    return out if isinstance(tensor, tv_tensors.Mask) else out.as_subclass(torch.Tensor)


def _crop_pad(x: tv_tensors.TVTensor, size: tuple[int, int], top: int, left: int,
              fill: float) -> tv_tensors.TVTensor:
    """The ``size`` window at (top, left); where it leaves ``x`` it is padded bottom/right with ``fill``."""
    (th, tw), (h, w) = size, x.shape[-2:]
    x = TF.crop(x, top, left, min(th, h - top), min(tw, w - left))  # v2's crop would pad with 0
    ph, pw = th - x.shape[-2], tw - x.shape[-1]
    if ph > 0 or pw > 0:
        x = TF.pad(x, [0, 0, pw, ph], fill=fill)
    return x


def _map(sample: Sample, image_fn: Callable, label_fn: Callable) -> Sample:
    """Apply ``image_fn`` to every modality (as ``tv_tensors.Image``) and ``label_fn`` to the label
    (as ``tv_tensors.Mask``); the results are plain tensors again."""
    out = dict(sample)
    out["modalities"] = {k: image_fn(tv_tensors.Image(v)).as_subclass(torch.Tensor)
                         for k, v in sample["modalities"].items()}
    if sample.get("label") is not None:
        out["label"] = label_fn(tv_tensors.Mask(sample["label"])).as_subclass(torch.Tensor)
    return out


def _hw(sample: Sample) -> tuple[int, int]:
    mods = sample["modalities"]
    if mods:
        return tuple(next(iter(mods.values())).shape[-2:])  # type: ignore[return-value]
    return tuple(sample["label"].shape[-2:])  # type: ignore[return-value]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class JointResize:
    """Resize every modality (bilinear) and the label (nearest) to ``size``."""

    def __init__(self, size: Size) -> None:
        self.size = _pair(size)

    def __call__(self, sample: Sample) -> Sample:
        return _map(sample, lambda x: resize_image(x, self.size),
                    lambda y: resize_nearest(y, self.size))

    def __repr__(self) -> str:
        return f"JointResize({self.size})"


class _JointRandomFlip:
    """Flip every modality and the label (``_flip``) with probability ``p``."""

    _flip = staticmethod(TF.horizontal_flip)
    what = "flip probability"

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{self.what} must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand(()).item() >= self.p:
            return sample
        return _map(sample, self._flip, self._flip)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class JointRandomHorizontalFlip(_JointRandomFlip):
    """Flip every modality and the label left-right with probability ``p``."""


class JointRandomVerticalFlip(_JointRandomFlip):
    """Flip every modality and the label top-bottom with probability ``p`` (MFNet's vertical flip)."""

    _flip = staticmethod(TF.vertical_flip)
    what = "vertical flip probability"


class JointRandomCrop:
    """A random ``size`` window at native resolution (no rescale), e.g. MFNet's 256 x 256
    patches of a large tile; images smaller than ``size`` are padded at the bottom/right with
    ``image_fill`` (images) and 255 (label)."""

    def __init__(self, size: Size, image_fill: float = 0.0,
                 label_fill: int = IGNORE_INDEX) -> None:
        self.size = _pair(size)
        self.image_fill = image_fill
        self.label_fill = label_fill

    def __call__(self, sample: Sample) -> Sample:
        h, w = _hw(sample)
        top = int(torch.randint(0, max(h - self.size[0], 0) + 1, ()).item())
        left = int(torch.randint(0, max(w - self.size[1], 0) + 1, ()).item())
        return _map(sample, lambda x: _crop_pad(x, self.size, top, left, self.image_fill),
                    lambda y: _crop_pad(y, self.size, top, left, self.label_fill))

    def __repr__(self) -> str:
        return f"JointRandomCrop(size={self.size})"


class JointRandomResizedCrop:
    """Random rescale then random crop to ``size`` (DELIVER/CMNeXt recipe).

    A factor ``r ~ U(scale)`` is drawn; the image is resized (aspect kept) so that its short
    side becomes ``r * min(size)`` (relative to the crop size, as CMNeXt's
    RandomResizedCrop does). A random ``size`` window is then cut; where the image is
    smaller it is padded at the bottom/right with ``image_fill`` (images) and 255 (label).
    """

    def __init__(self, size: Size, scale: Sequence[float] = (0.5, 2.0),
                 image_fill: float = 0.0, label_fill: int = IGNORE_INDEX) -> None:
        self.size = _pair(size)
        lo, hi = (float(s) for s in scale)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale must satisfy 0 < min <= max, got {tuple(scale)}")
        self.scale = (lo, hi)
        self.image_fill = image_fill
        self.label_fill = label_fill

    def _params(self, h: int, w: int) -> tuple[tuple[int, int], int, int]:
        lo, hi = self.scale
        r = lo + (hi - lo) * torch.rand(()).item()
        factor = r * min(self.size) / min(h, w)
        new = (max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5)))
        top = int(torch.randint(0, max(new[0] - self.size[0], 0) + 1, ()).item())
        left = int(torch.randint(0, max(new[1] - self.size[1], 0) + 1, ()).item())
        return new, top, left

    def __call__(self, sample: Sample) -> Sample:
        h, w = _hw(sample)
        new, top, left = self._params(h, w)
        return _map(
            sample,
            lambda x: _crop_pad(resize_image(x, new), self.size, top, left, self.image_fill),
            lambda y: _crop_pad(resize_nearest(y, new), self.size, top, left, self.label_fill),
        )

    def __repr__(self) -> str:
        return f"JointRandomResizedCrop(size={self.size}, scale={self.scale})"


def train_transform(size: Size, scale: Optional[Sequence[float]] = (0.5, 2.0),
                    flip_p: float = 0.5, vflip_p: float = 0.0) -> Compose:
    """The training pipeline.

    With ``scale``: random horizontal (and, if ``vflip_p`` > 0, vertical) flip, then random
    resized crop to ``size``. With ``scale=None``: a plain random ``size`` crop at native
    resolution, then the flips (MFNet's patch + flip / mirror recipe).
    """
    flips: list[Callable[[Sample], Sample]] = [JointRandomHorizontalFlip(flip_p)]
    if vflip_p != 0:  # no extra random draw when off (same streams as before)
        flips.append(JointRandomVerticalFlip(vflip_p))
    if scale is None:
        return Compose([JointRandomCrop(size), *flips])
    return Compose([*flips, JointRandomResizedCrop(size, scale)])


def eval_transform(size: Optional[Size]) -> Compose:
    """The evaluation pipeline: resize to ``size`` (labels nearest); None keeps native size."""
    return Compose([] if size is None else [JointResize(size)])
