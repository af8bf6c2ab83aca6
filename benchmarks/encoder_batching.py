"""One batched encoder pass over all modalities vs one pass per modality (SAM-LoRA's forward).

    python benchmarks/encoder_batching.py --backbone sam_vit_b --img-size 256 --batch 2

Both variants compute the same features (checked); prints the time of each and their ratio.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmsam.adapters import modality_layout
from mmsam.methods import SamLoRA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="sam_vit_b")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--modalities", default="rgb,depth,event,lidar")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mods = args.modalities.split(",")
    m = SamLoRA(25, mods, backbone=args.backbone, img_size=args.img_size).eval()
    x = {k: torch.randn(args.batch, 3, args.img_size, args.img_size) for k in mods}
    enc = m.backbone

    def batched() -> list[torch.Tensor]:
        with modality_layout(mods):
            return enc(torch.cat([x[k] for k in mods]))

    def looped() -> list[torch.Tensor]:
        outs = []
        for k in mods:
            with modality_layout([k]):
                outs.append(enc(x[k]))
        return [torch.cat(level) for level in zip(*outs)]

    def timed(fn) -> tuple[float, list[torch.Tensor]]:
        with torch.inference_mode():
            out = fn()  # warm-up
            t = time.perf_counter()
            for _ in range(args.repeats):
                out = fn()
        return (time.perf_counter() - t) / args.repeats, out

    tb, fb = timed(batched)
    tl, fl = timed(looped)
    same = all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(fb, fl))
    print(f"{args.backbone} {args.img_size}px, {len(mods)} modalities x batch {args.batch}, {args.threads} threads")
    print(f"batched: {tb * 1000:.1f} ms   per-modality loop: {tl * 1000:.1f} ms   loop/batched = {tl / tb:.2f}   same features: {same}")


if __name__ == "__main__":
    main()
