"""One batched encoder pass over all modalities vs one pass per modality (SAM-LoRA's forward).

    python benchmarks/encoder_batching.py --backbone sam_vit_b --img-size 256 --batch 2
    python benchmarks/encoder_batching.py --backbone sam_vit_b --img-size 256 --batch 1 --train

Both variants compute the same features (checked); prints the median time of each (interleaved,
after one warm-up) and their ratio. ``--train``: forward + backward into the LoRA (a training
step's encoder part) instead of an ``inference_mode`` forward.
"""
from __future__ import annotations

import argparse
import statistics
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
    p.add_argument("--train", action="store_true", help="forward + backward (training) instead of inference")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mods = args.modalities.split(",")
    m = SamLoRA(25, mods, backbone=args.backbone, img_size=args.img_size).train(args.train)
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

    def run(fn) -> list[torch.Tensor]:
        if not args.train:
            with torch.inference_mode():
                return fn()
        out = fn()
        sum(o.square().mean() for o in out).backward()
        m.zero_grad(set_to_none=True)
        return [o.detach() for o in out]

    times: dict[str, list[float]] = {"batched": [], "loop": []}
    outs: dict[str, list[torch.Tensor]] = {}
    for r in range(args.repeats + 1):  # interleaved, alternating which runs first; round 0 is the warm-up
        for name in (("batched", "loop") if r % 2 == 0 else ("loop", "batched")):
            t = time.perf_counter()
            outs[name] = run(batched if name == "batched" else looped)
            if r:
                times[name].append(time.perf_counter() - t)
    tb, tl = statistics.median(times["batched"]), statistics.median(times["loop"])
    fb, fl = outs["batched"], outs["loop"]
    same = all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(fb, fl))
    print(f"{args.backbone} {args.img_size}px, {len(mods)} modalities x batch {args.batch}, {args.threads} threads, "
          f"{'training (fwd + bwd)' if args.train else 'inference'}, median of {args.repeats}")
    print(f"batched: {tb * 1000:.1f} ms   per-modality loop: {tl * 1000:.1f} ms   loop/batched = {tl / tb:.2f}   same features: {same}")


if __name__ == "__main__":
    main()
