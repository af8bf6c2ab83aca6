"""Where a training step's time goes, per method: encoder forward / rest of the forward / backward
through the head / backward through the encoder / optimiser, next to the frozen encoder's no-grad
forward (the floor: the plain frozen backbone, no adapters, ``inference_mode``).

    python benchmarks/step_breakdown.py [--methods sam_lora,mlesam,memorysam,mfnet,conv_lora_sam]
        [--size 256] [--modalities 2] [--repeats 3] [--threads 2] [--profile]

Real backbones with random weights: SAM ViT-B for SAM-LoRA / MFNet / Conv-LoRA-SAM, SAM 2
Hiera-B+ for MLE-SAM / MemorySAM (``--tiny``: the tiny test variants), batch 1, each method in its
own process, median of ``--repeats`` after one warm-up. The split comes from hooks, not from
guesses: forward hooks on the image encoder time its forward; gradient hooks on the outputs of the
encoder and of its blocks fire when the backward first reaches the encoder, which splits the backward into the part
through heads / fusion / losses and the part through the encoder (with the adapters inside).
``--profile`` adds a ``torch.profiler`` table (top operators by self CPU time) of one step.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import torch

NAMES = ["rgb", "depth", "event", "lidar", "thermal"]
FAMILY = {"sam_lora": "sam", "mfnet": "sam", "conv_lora_sam": "sam", "mlesam": "sam2", "memorysam": "sam2"}


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def run(conn: Any, spec: dict) -> None:
    import torch.nn.functional as F

    from speed_vs_official import build_method, rss_kib

    try:
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        name, s, m = spec["method"], spec["size"], spec["modalities"]
        backbone = {"sam": spec["sam"], "sam2": spec["sam2"]}[FAMILY[name]]
        model = build_method(name, num_classes=6, modalities=NAMES[:m], backbone=backbone, img_size=s).train()
        g = torch.Generator().manual_seed(0)
        batch = {"modalities": {n: torch.randn(1, 3, s, s, generator=g) for n in NAMES[:m]},
                 "label": torch.randint(0, 6, (1, s, s), generator=g)}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        encoder = model.backbone.image_encoder
        marks: dict[str, float] = {}

        def pre(*_: Any) -> None:
            marks["enc_in"] = time.perf_counter()

        def grad_hooks(_m: Any, _i: Any, out: Any) -> None:
            for t in _tensors(out):
                if t.requires_grad:  # the first gradient to reach any block's output: the encoder's backward starts
                    t.register_hook(lambda grad: marks.setdefault("enc_grad", time.perf_counter()) and None)

        def post(m: Any, i: Any, out: Any) -> None:
            marks["enc_out"] = time.perf_counter()
            grad_hooks(m, i, out)

        encoder.register_forward_pre_hook(pre)
        encoder.register_forward_hook(post)
        blocks = encoder.blocks if hasattr(encoder, "blocks") else encoder.trunk.blocks
        for blk in blocks:  # methods that read intermediate blocks (MFNet, MLE-SAM) send gradients there first
            blk.register_forward_hook(grad_hooks)

        def step() -> dict[str, float]:
            marks.clear()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            loss = sum((v for v in (out.get("losses") or {}).values()), start=torch.zeros(()))
            if name != "conv_lora_sam":  # its own losses score the logits
                loss = loss + F.cross_entropy(out["logits"], batch["label"])
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            first_grad = marks.get("enc_grad", t2)
            return {"step": t3 - t0, "encoder fwd": marks["enc_out"] - marks["enc_in"],
                    "rest of fwd": (t1 - t0) - (marks["enc_out"] - marks["enc_in"]),
                    "bwd to encoder": first_grad - t1, "bwd through encoder": t2 - first_grad, "optimiser": t3 - t2}

        rss0 = rss_kib("VmRSS")
        step()
        rows = [step() for _ in range(spec["repeats"])]
        result = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result["dpeak_mib"] = (rss_kib("VmHWM") - rss0) / 1024
        x = torch.cat(list(batch["modalities"].values()))
        from mmsam.backbones import create_backbone

        extra = {"with_memory": False} if FAMILY[name] == "sam2" else {}
        plain = create_backbone(backbone, img_size=s, **extra).eval().requires_grad_(False)  # no adapters
        with torch.inference_mode():
            plain(x)
            floor = []
            for _ in range(spec["repeats"]):
                t = time.perf_counter()
                plain(x)
                floor.append(time.perf_counter() - t)
        result["floor"] = statistics.median(floor)
        result["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if spec["profile"]:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        conn.send(result)
    except Exception as e:  # reported, the other methods still run
        conn.send({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(FAMILY))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--modalities", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--tiny", action="store_true", help="the tiny test backbones (sam_vit_tiny, sam2_hiera_micro)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(FAMILY))
    if unknown:
        ap.error(f"--methods: unknown {unknown}; choose from {sorted(FAMILY)}")
    sam, sam2 = ("sam_vit_tiny", "sam2_hiera_micro") if args.tiny else ("sam_vit_b", "sam2_hiera_b+")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads, load average {os.getloadavg()[0]:.2f}; "
          f"{args.size} px, M = {args.modalities}, batch 1, median of {args.repeats} after 1 warm-up", flush=True)
    cols = ["encoder fwd", "rest of fwd", "bwd to encoder", "bwd through encoder", "optimiser"]
    print(f"\n| method | backbone | step (s) | {' | '.join(cols)} | floor: no-grad encoder fwd (s) | step / floor | Δpeak (MiB) |")
    print("|---|---|---|" + "---|" * len(cols) + "---|---|---|", flush=True)
    profiles = {}
    ctx = mp.get_context("spawn")
    for name in methods:
        a, b = ctx.Pipe()
        spec = {"method": name, "size": args.size, "modalities": args.modalities, "repeats": args.repeats,
                "threads": args.threads, "sam": sam, "sam2": sam2, "profile": args.profile}
        p = ctx.Process(target=run, args=(b, spec), daemon=True)
        p.start()
        r = a.recv()
        p.join()
        bb = sam if FAMILY[name] == "sam" else sam2
        if "error" in r:
            print(f"| {name} | {bb} | {r['error']} |", flush=True)
            continue
        shares = " | ".join(f"{r[c]:.3f} ({100 * r[c] / r['step']:.0f} %)" for c in cols)
        print(f"| {name} | {bb} | {r['step']:.3f} | {shares} | {r['floor']:.3f} | {r['step'] / r['floor']:.1f} | "
              f"{r['dpeak_mib']:.0f} |", flush=True)
        if "profile" in r:
            profiles[name] = r["profile"]
    for name, table in profiles.items():
        print(f"\nprofile {name} (one step, self CPU time):\n{table}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
