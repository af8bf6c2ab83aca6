"""Speed / memory levers of mmsam measured on and off, each variant in its own process, interleaved.

    python benchmarks/levers.py [--only attention,adamw,frozen,merged,checkpointing,compile_tiny,compile_vitb] [--repeats 5] [--threads 2]

* ``attention``: one SAM ViT-B global-attention block (width 768, 12 heads, decomposed relative
  positions) forward + backward at token grids 16 / 32 / 48 (256 / 512 / 768 px): the official
  hand-written ``Attention`` vs ``SdpaAttention`` (``mmsam.backbones.sam_attention``).
* ``adamw``: one AdamW step over MemorySAM's trainable set (Hiera-B+ shapes: 14.5 M parameters in
  ~470 tensors): the for-loop default on CPU vs ``foreach=True`` vs ``fused=True``.
* ``frozen``: a SAM-LoRA (ViT-B, 256 px, 2 modalities) training step with the frozen weights at
  ``requires_grad=False`` (mmsam) vs ``True`` with only the LoRA in the optimiser (what a model does
  that freezes by leaving weights out of the optimiser, e.g. the official MFNet's SGD over
  ``net.parameters()`` with the encoder trainable flag still on).
* ``merged``: SAM-LoRA ViT-B inference (256 px, 2 modalities): LoRA unmerged, merged (the wrapper
  skips its LoRA), merged and unwrapped (``W + ΔW`` back in SAM's own Linear, as a merged export is), and
  the same method with the adapters removed (plain SAM).
* ``checkpointing``: a training step (AdamW over the trainable set, batch 1, 2 modalities) with
  activation checkpointing of the frozen encoder's blocks off / on (``set_grad_checkpointing``):
  SAM-LoRA on the tiny test SAM (128 px), MFNet ViT-B (MMAdapter) and SAM-LoRA ViT-B at ``--img``.
* ``compile_tiny`` / ``compile_vitb`` (not in the default ``--only``): a SAM-LoRA training step
  (2 modalities; the tiny test SAM at 128 px / ViT-B at ``--img``) eager vs ``torch.compile`` of each
  encoder block (``compile_encoder``, scope ``blocks``) vs of the whole method (scope ``method``).
  The compiled arms run with inductor's caches off, so their first run pays the whole (cold)
  compilation: ``1st run`` minus the median step is the compile time.

Every table also gives the first (warm-up) run of each arm, which is left out of the median.
Δpeak = the process's peak resident memory minus its resident memory before the first run.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from typing import Any, Callable

import torch

from speed_vs_official import rss_kib  # VmRSS / VmHWM in KiB (this folder is on sys.path when run as a script)


def make_attention(spec: dict) -> Callable[[], None]:
    from segment_anything.modeling.image_encoder import Attention

    from mmsam.backbones.sam_attention import set_sam_attention

    torch.manual_seed(0)
    g = spec["grid"]
    attn = Attention(768, 12, use_rel_pos=True, input_size=(g, g)).requires_grad_(False)
    attn.qkv.weight.requires_grad_(True)  # a LoRA-like trainable path through qkv: the input needs its gradient
    set_sam_attention(attn, spec["impl"])
    x = torch.randn(1, g, g, 768, requires_grad=True)

    def run() -> None:
        attn(x).sum().backward()
        x.grad = None
        attn.qkv.weight.grad = None

    return run


def _memsam_shapes() -> list[torch.Size]:
    from mmsam.methods import MemorySAM

    model = MemorySAM(25, ["rgb", "depth"], backbone="sam2_hiera_b+", img_size=64)  # shapes do not depend on the size
    return [p.shape for p in model.parameters() if p.requires_grad]


def make_adamw(spec: dict) -> Callable[[], None]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in spec["shapes"]]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    kw = {"foreach": True} if spec["variant"] == "foreach" else {"fused": True} if spec["variant"] == "fused" else {"foreach": False}
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kw)
    return opt.step


def _sam_lora(img: int) -> torch.nn.Module:
    from speed_vs_official import build_method

    torch.manual_seed(0)
    return build_method("sam_lora", num_classes=25, modalities=["rgb", "depth"], backbone="sam_vit_b", img_size=img)


def _batch(img: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {"modalities": {m: torch.randn(1, 3, img, img, generator=g) for m in ("rgb", "depth")},
            "label": torch.randint(0, 25, (1, img, img), generator=g)}


def _train_step(model: torch.nn.Module, img: int) -> Callable[[], None]:
    """One AdamW training step of ``model`` (CE on its logits) over the 2-modality test batch."""
    import torch.nn.functional as F

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = _batch(img)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch)["logits"], batch["label"]).backward()
        opt.step()

    return run


def make_frozen(spec: dict) -> Callable[[], None]:
    import torch.nn.functional as F

    model = _sam_lora(spec["img"]).train()
    adapters = [p for p in model.parameters() if p.requires_grad]
    if spec["variant"] == "requires_grad":
        model.requires_grad_(True)
    opt = torch.optim.AdamW(adapters, lr=1e-4)
    batch = _batch(spec["img"])

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch)["logits"], batch["label"]).backward()
        opt.step()

    return run


def make_merged(spec: dict) -> Callable[[], None]:
    from mmsam.adapters import adapter_layers, merge_adapters

    model = _sam_lora(spec["img"]).eval()
    if spec["variant"] == "plain":
        for path, layer in list(adapter_layers(model)):
            parent, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent), leaf, layer.base_layer)
    elif spec["variant"] == "merged":
        merge_adapters(model)
    elif spec["variant"] == "merged, unwrapped":  # what `mmsam export --merged` gives: W + ΔW in SAM's own Linear
        merge_adapters(model)
        for path, layer in list(adapter_layers(model)):
            parent, _, leaf = path.rpartition(".")
            setattr(model.get_submodule(parent), leaf, layer.base_layer)
    batch = _batch(spec["img"])

    def run() -> None:
        with torch.inference_mode():
            model(batch)

    return run


def make_checkpointing(spec: dict) -> Callable[[], None]:
    from speed_vs_official import build_method

    torch.manual_seed(0)
    model = build_method(spec["method"], num_classes=25, modalities=["rgb", "depth"], backbone=spec["backbone"],
                         img_size=spec["img"]).train()
    model.set_grad_checkpointing(spec["variant"] == "on")
    return _train_step(model, spec["img"])


def make_compile(spec: dict) -> Callable[[], None]:
    from speed_vs_official import build_method

    from mmsam.engine.compile import compile_encoder

    torch.manual_seed(0)
    backbone = "sam_vit_tiny" if spec["size"] == "tiny" else "sam_vit_b"
    model = build_method("sam_lora", num_classes=25, modalities=["rgb", "depth"], backbone=backbone, img_size=spec["img"]).train()
    if spec["variant"] != "eager":
        from torch._inductor import config as inductor_config

        inductor_config.force_disable_caches = True  # a cold start: the first run compiles everything
        compile_encoder(model, scope=spec["variant"], device="cpu")
    return _train_step(model, spec["img"])


MAKERS = {"attention": make_attention, "adamw": make_adamw, "frozen": make_frozen, "merged": make_merged,
          "checkpointing": make_checkpointing, "compile": make_compile}


def worker(conn: Any, spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    run = MAKERS[spec["kind"]](spec)
    conn.send(rss_kib("VmRSS"))
    while conn.recv() == "run":
        t = time.perf_counter()
        run()
        conn.send(time.perf_counter() - t)
    conn.send(rss_kib("VmHWM"))


def compare(title: str, arms: list[tuple[str, dict]], args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    procs = {}
    for label, spec in arms:
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker, args=(b, {**spec, "threads": args.threads}), daemon=True)
        p.start()
        procs[label] = (p, a, a.recv())
    times: dict[str, list[float]] = {k: [] for k in procs}
    first: dict[str, float] = {}
    labels = list(procs)
    for r in range(1 + args.repeats):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            procs[label][1].send("run")
            dt = procs[label][1].recv()
            if r:
                times[label].append(dt)
            else:
                first[label] = dt
    base = labels[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    delta = {}
    for label, (p, conn, rss0) in procs.items():
        conn.send("stop")
        delta[label] = (conn.recv() - rss0) / 1024
        p.join()
    print(f"\n{title}")
    print(f"| variant | time (s) | spread | 1st run (s) | Δpeak (MiB) | time / {base} | Δpeak / {base} |")
    print("|---|---|---|---|---|---|---|")
    for k in labels:
        print(f"| {k} | {med[k]:.4f} | {min(times[k]):.4f}–{max(times[k]):.4f} | {first[k]:.2f} | {delta[k]:.0f} | "
              f"{med[k] / med[base]:.2f} | {delta[k] / max(delta[base], 1e-9):.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="attention,adamw,frozen,merged,checkpointing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--grids", default="16,32,48")
    ap.add_argument("--img", type=int, default=256)
    args = ap.parse_args()
    only = args.only.split(",")
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} after 1 warm-up, "
          f"load average {os.getloadavg()[0]:.2f}")
    if "attention" in only:
        for g in map(int, args.grids.split(",")):
            compare(f"SAM ViT-B global attention block, grid {g} x {g} ({16 * g} px), forward + backward",
                    [(impl, {"kind": "attention", "grid": g, "impl": impl}) for impl in ("official", "sdpa")], args)
    if "adamw" in only:
        shapes = _memsam_shapes()
        compare(f"AdamW step over MemorySAM Hiera-B+'s trainable set ({sum(s.numel() for s in shapes):,} parameters, {len(shapes)} tensors)",
                [(v, {"kind": "adamw", "shapes": shapes, "variant": v}) for v in ("for-loop", "foreach", "fused")], args)
    if "frozen" in only:
        compare(f"SAM-LoRA ViT-B training step, {args.img} px, 2 modalities",
                [(v, {"kind": "frozen", "img": args.img, "variant": v}) for v in ("frozen", "requires_grad")], args)
    if "merged" in only:
        compare(f"SAM-LoRA ViT-B inference, {args.img} px, 2 modalities",
                [(v, {"kind": "merged", "img": args.img, "variant": v}) for v in ("plain", "lora", "merged", "merged, unwrapped")], args)
    if "checkpointing" in only:
        for method, backbone, img, title in (("sam_lora", "sam_vit_tiny", 128, "SAM-LoRA, tiny test SAM"),
                                             ("mfnet", "sam_vit_b", args.img, "MFNet (MMAdapter) ViT-B"),
                                             ("sam_lora", "sam_vit_b", args.img, "SAM-LoRA ViT-B")):
            compare(f"{title} training step, {img} px, 2 modalities, encoder grad checkpointing",
                    [(v, {"kind": "checkpointing", "method": method, "backbone": backbone, "img": img, "variant": v})
                     for v in ("off", "on")], args)
    for size, img in (("tiny", 128), ("vitb", args.img)):
        if f"compile_{size}" in only:
            name = "tiny test SAM" if size == "tiny" else "ViT-B"
            compare(f"SAM-LoRA {name} training step, {img} px, 2 modalities: eager vs torch.compile (1st run − time ≈ compile time)",
                    [(v, {"kind": "compile", "size": size, "img": img, "variant": v}) for v in ("eager", "blocks", "method")], args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
