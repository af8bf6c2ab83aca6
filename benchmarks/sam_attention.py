"""SAM ViT image encoder, forward + backward, with the official attention vs SDPA, interleaved.

    python benchmarks/sam_attention.py                                   # the demos' tiny ViT, 128 px, 32 images
    python benchmarks/sam_attention.py --backbone sam_vit_b --img-size 256 --batch 2

Prints the median seconds of each variant and the ratio SDPA / official (random weights, fp32).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmsam.backbones import create_backbone
from mmsam.backbones.sam_attention import set_sam_attention


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="sam_vit_tiny")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="images per pass (the SAM-LoRA demo: 8 x 4 modalities)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    encoder = create_backbone(a.backbone, img_size=a.img_size).image_encoder
    x = torch.randn(a.batch, 3, a.img_size, a.img_size, requires_grad=True)
    times: dict[str, list[float]] = {"official": [], "sdpa": []}
    for r in range(a.repeats + 1):  # round 0 warms up
        for impl in ("official", "sdpa") if r % 2 == 0 else ("sdpa", "official"):
            set_sam_attention(encoder, impl)
            t = time.perf_counter()
            encoder(x).pow(2).mean().backward()
            if r:
                times[impl].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.backbone} {a.img_size} px, batch {a.batch}, {a.threads} threads: "
          f"official {med['official']:.3f} s, sdpa {med['sdpa']:.3f} s, sdpa / official {med['sdpa'] / med['official']:.2f}")


if __name__ == "__main__":
    main()
