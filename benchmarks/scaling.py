"""Training-step time and peak memory of every method vs the number of modalities and the image size.

    python benchmarks/scaling.py [--tiny] [--sizes 128,256,512] [--modalities 1,2,3,4,5] [--repeats 3]
        [--json out.json] [--png docs/img/scaling.png]

Each point (method, M modalities, image size) runs in a fresh process (``multiprocessing`` spawn):
build, one warm-up step, the median of ``--repeats`` steps (``zero_grad; forward; CE (+ the
method's own losses); backward; AdamW``), and Δpeak = the process's peak resident memory minus its
resident memory before the first step. Modality sweep at the smallest size; size sweep at M = 2.
``--tiny`` uses the test backbones (``sam_vit_tiny`` for the SAM-v1 methods, ``sam2_hiera_micro``
for the SAM 2 ones), the only ones a 2-core CPU sweeps in minutes; without it: SAM ViT-B and
Hiera-T. ``--png`` needs matplotlib (not a dependency of mmsam).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import torch

from speed_vs_official import rss_kib  # VmRSS / VmHWM in KiB (this folder is on sys.path when run as a script)

NAMES = ["rgb", "depth", "event", "lidar", "aolp"]  # names mmsam.data.modalities knows
METHODS = {  # method -> (SAM family, extra kwargs)
    "sam_lora": ("sam", {}),
    "mfnet": ("sam", {}),
    "conv_lora_sam": ("sam", {}),
    "mlesam": ("sam2", {}),
    "memorysam": ("sam2", {}),
}


def point(conn: Any, spec: dict) -> None:
    import torch.nn.functional as F

    from speed_vs_official import build_method

    try:
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        family, extra = METHODS[spec["method"]]
        model = build_method(spec["method"], num_classes=6, modalities=NAMES[: spec["m"]], backbone=spec[family],
                              img_size=spec["size"], **extra).train()
        g = torch.Generator().manual_seed(0)
        s = spec["size"]
        batch = {"modalities": {n: torch.randn(1, 3, s, s, generator=g) for n in NAMES[: spec["m"]]},
                 "label": torch.randint(0, 6, (1, s, s), generator=g)}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            loss = sum((v for v in (out.get("losses") or {}).values()), start=torch.zeros(()))
            if spec["method"] != "conv_lora_sam":  # its own losses score the logits
                loss = loss + F.cross_entropy(out["logits"], batch["label"])
            loss.backward()
            opt.step()

        rss0 = rss_kib("VmRSS")
        step()
        times = []
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        conn.send({"step_s": statistics.median(times), "dpeak_mib": (rss_kib("VmHWM") - rss0) / 1024})
    except Exception as e:  # a method that does not take this setting: reported, the sweep goes on
        conn.send({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"})


def measure(spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=point, args=(b, spec), daemon=True)
    p.start()
    out = a.recv()
    p.join()
    return out


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (sweep, key) in enumerate((("modalities", "m"), ("size", "size"))):
        for method in METHODS:
            pts = sorted((r[key], r) for r in results if r["sweep"] == sweep and r["method"] == method and "error" not in r)
            if not pts:
                continue
            xs = [x for x, _ in pts]
            axes[0, col].plot(xs, [r["step_s"] for _, r in pts], marker="o", label=method)
            axes[1, col].plot(xs, [r["dpeak_mib"] for _, r in pts], marker="o", label=method)
        axes[0, col].set_ylabel("step (s)")
        axes[1, col].set_ylabel("Δpeak RSS (MiB)")
        for row in (0, 1):
            axes[row, col].set_xlabel("modalities (M)" if key == "m" else "image size (px)")
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("mmsam training step vs modalities (left) and image size (right), CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--modalities", default="1,2,3,4,5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--json")
    ap.add_argument("--png")
    args = ap.parse_args()
    if args.png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--png needs matplotlib (pip install matplotlib); leave --png out for the table alone")
    backbones = {"sam": "sam_vit_tiny", "sam2": "sam2_hiera_micro"} if args.tiny else {"sam": "sam_vit_b", "sam2": "sam2_hiera_t"}
    sizes = [int(x) for x in args.sizes.split(",")]
    ms = [int(x) for x in args.modalities.split(",")]
    common = {**backbones, "repeats": args.repeats, "threads": args.threads}
    runs = [("modalities", meth, m, sizes[0]) for meth in args.methods.split(",") for m in ms]
    runs += [("size", meth, 2, s) for meth in args.methods.split(",") for s in sizes]
    print(f"backbones {backbones}, {args.threads} threads, median of {args.repeats} after 1 warm-up, load {os.getloadavg()[0]:.2f}")
    print("| sweep | method | M | size | step (s) | Δpeak (MiB) |")
    print("|---|---|---|---|---|---|")
    results = []
    for sweep, meth, m, s in runs:
        r = {"sweep": sweep, "method": meth, "m": m, "size": s, **measure({**common, "method": meth, "m": m, "size": s})}
        results.append(r)
        cell = r["error"] if "error" in r else f"{r['step_s']:.3f} | {r['dpeak_mib']:.0f}"
        print(f"| {sweep} | {meth} | {m} | {s} | {cell} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backbones": backbones, "results": results}, f, indent=1)
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
