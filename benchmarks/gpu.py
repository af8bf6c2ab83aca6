"""Training step of every method at its paper's settings on one GPU: time, peak memory, TFLOP/s, MFU, largest batch.

    python benchmarks/gpu.py                                  # every setting, bf16 autocast, CUDA
    python benchmarks/gpu.py --settings memorysam_b+ mfnet_mmlora_vit_b --no-largest-batch
    python benchmarks/gpu.py --settings sam_lora_vit_b mfnet_mmlora_vit_b --sam-attention official   # SDPA lever off
    python benchmarks/gpu.py --device cpu --img-scale 0.125 --steps 2 --warmup 1 --no-largest-batch   # smoke test

Random weights (the timing does not depend on them). Settings (batch per device as the recipes in
``configs/`` use it): SAM-LoRA ViT-B 1024 px, 4 modalities, batch 4 (``configs/deliver/sam_lora_vit_b.yaml``);
MLE-SAM Hiera-B+ 1024, 4 modalities, batch 4; MemorySAM Hiera-B+ 1024, 4 modalities, K = 25, batch 1;
MFNet ViT-B MMAdapter / MMLoRA 256 px, IRRG + DSM, 6 classes, batch 10 (paper IV-B); Conv-LoRA SAM
ViT-H 1024, 1 modality, batch 1. One step = ``zero_grad; forward; loss; backward; AdamW step``
under ``torch.autocast(dtype=bfloat16)`` (``--dtype fp32`` to turn it off), fused AdamW.

Per setting it prints: the median step time over ``--steps`` timed steps after ``--warmup`` (CUDA
events), the peak allocated memory (``torch.cuda.max_memory_allocated``), the FLOPs of one step
(``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions, forward + backward),
TFLOP/s = FLOPs / step time, MFU = TFLOP/s / the device's dense bf16 peak (``--peak-tflops``, or
a table of known devices), and the largest batch that fits (doubling, then bisection; ``--max-batch``).
Also the inference time of SAM-LoRA with its LoRA merged into the frozen weights vs the plain SAM
method without adapters (target: <= 1.05x).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

PEAK_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "RTX 4090": 165.2}
DRIVING = ["rgb", "depth", "event", "lidar"]


@dataclass
class Setting:
    method: str
    kwargs: dict[str, Any]
    modalities: list[str]
    num_classes: int
    batch: int
    img_size: int
    ohem: bool = False
    main_loss: bool = True  # False: the method's own out["losses"] already score the logits (Conv-LoRA)


def settings() -> dict[str, Setting]:
    from mmsam.adapters import MMAdapterConfig, MMLoRAConfig

    return {
        "sam_lora_vit_b": Setting("sam_lora", {"backbone": "sam_vit_b"}, DRIVING, 25, 4, 1024, ohem=True),
        "mlesam_b+": Setting("mlesam", {"backbone": "sam2_hiera_b+"}, DRIVING, 25, 4, 1024, ohem=True),
        "memorysam_b+": Setting("memorysam", {"backbone": "sam2_hiera_b+"}, DRIVING, 25, 1, 1024, ohem=True),
        "mfnet_mmadapter_vit_b": Setting("mfnet", {"backbone": "sam_vit_b", "adapter": MMAdapterConfig()}, ["irrg", "dsm"], 6, 10, 256),
        "mfnet_mmlora_vit_b": Setting("mfnet", {"backbone": "sam_vit_b", "adapter": MMLoRAConfig()}, ["irrg", "dsm"], 6, 10, 256),
        "convlora_vit_h": Setting("conv_lora_sam", {"backbone": "sam_vit_h"}, ["rgb"], 2, 1, 1024, main_loss=False),
    }


SAM_ATTENTION = "sdpa"  # --sam-attention: SAM ViT attention implementation (mmsam.backbones.sam_attention)
LEVERS: dict[str, bool] = {"grad_checkpointing": False, "compile": False}  # --grad-checkpointing, --compile


def build(s: Setting, img_size: int, device: torch.device) -> torch.nn.Module:
    from mmsam.backbones.sam_attention import set_sam_attention
    from speed_vs_official import build_method

    torch.manual_seed(0)
    model = build_method(s.method, num_classes=s.num_classes, modalities=s.modalities, img_size=img_size, **s.kwargs)
    set_sam_attention(model, SAM_ATTENTION)
    if LEVERS["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    model = model.to(device).train()
    if LEVERS["compile"]:
        from mmsam.engine.compile import compile_encoder

        compile_encoder(model, device=device)  # each encoder block; the warm-up steps pay the compilation
    return model


def make_batch(s: Setting, batch: int, img_size: int, device: torch.device) -> dict[str, Any]:
    g = torch.Generator(device="cpu").manual_seed(0)
    mods = {m: torch.randn(batch, 3, img_size, img_size, generator=g).to(device) for m in s.modalities}
    label = torch.randint(0, s.num_classes, (batch, img_size, img_size), generator=g).to(device)
    return {"modalities": mods, "label": label}


def make_step(model: torch.nn.Module, s: Setting, batch: dict[str, Any], dtype: torch.dtype | None) -> Callable[[], None]:
    from mmsam.losses.ohem_ce import OhemCrossEntropy

    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].is_cuda
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=fused)
    main = OhemCrossEntropy(ignore_index=255, thresh=0.7) if s.ohem else (lambda x, y: F.cross_entropy(x, y, ignore_index=255))
    device_type = params[0].device.type

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(batch)
            loss = sum((v for v in (out.get("losses") or {}).values()), start=torch.zeros((), device=batch["label"].device))
            if s.main_loss:
                loss = loss + main(out["logits"].float(), batch["label"])
            for aux in (out.get("aux") or {}).values():
                loss = loss + F.cross_entropy(aux.float(), batch["label"], ignore_index=255)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(step: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def fits(s: Setting, batch: int, img_size: int, device: torch.device, dtype: torch.dtype | None) -> bool:
    model = None
    try:
        model = build(s, img_size, device)
        step = make_step(model, s, make_batch(s, batch, img_size, device), dtype)
        step()
        step()
        sync(device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(s: Setting, img_size: int, device: torch.device, dtype: torch.dtype | None, cap: int) -> str:
    lo, hi = 0, 1
    while hi <= cap and fits(s, hi, img_size, device, dtype):
        lo, hi = hi, hi * 2
    if hi > cap:
        return f">= {lo}"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(s, mid, img_size, device, dtype) else (lo, mid)
    return str(lo)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def merged_inference(img_size: int, device: torch.device, dtype: torch.dtype | None, warmup: int, steps: int) -> dict[str, float]:
    """SAM-LoRA ViT-B with its LoRA merged vs the same method without adapters (plain SAM), eval forward."""
    from mmsam.adapters import merge_adapters
    from speed_vs_official import build_method

    out = {}
    x = make_batch(Setting("sam_lora", {}, DRIVING, 25, 1, img_size), 1, img_size, device)
    for name in ("plain", "lora", "merged"):
        torch.manual_seed(0)
        model = build_method("sam_lora", num_classes=25, modalities=DRIVING, backbone="sam_vit_b", img_size=img_size).to(device).eval()
        if name == "plain":
            from mmsam.adapters.inject import adapter_layers

            for path, layer in list(adapter_layers(model)):  # put the frozen Linear back in place of each adapter layer
                parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
                setattr(parent, path.rsplit(".", 1)[-1], layer.base_layer)
        elif name == "merged":
            merge_adapters(model.backbone.image_encoder)

        def fwd(model: torch.nn.Module = model) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x)

        out[name] = time_steps(fwd, warmup, steps, device)
        del model
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="*", help="subset of the settings (default: all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--img-scale", type=float, default=1.0, help="multiply every image size (smoke tests on a CPU)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device, for MFU")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--no-largest-batch", action="store_true")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--sam-attention", choices=["sdpa", "official"], default="sdpa",
                    help="SAM ViT attention: SDPA with the rel-pos bias as mask (default) or the official hand-written one")
    ap.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing of the encoder blocks")
    ap.add_argument("--compile", action="store_true", help="torch.compile each encoder block (raise --warmup: it compiles there)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    LEVERS.update(grad_checkpointing=args.grad_checkpointing, compile=args.compile)
    global SAM_ATTENTION
    SAM_ATTENTION = args.sam_attention
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.dtype}, SAM attention {args.sam_attention}")
    peak = peak_tflops(device, args.peak_tflops)
    table = settings()
    chosen = args.settings or list(table)
    results = {}
    print("| setting | img | batch | step (s) | samples/s | peak mem (GiB) | TFLOP/step | TFLOP/s | MFU | largest batch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in chosen:
        s = table[name]
        img = max(64, int(round(s.img_size * args.img_scale / 64)) * 64)
        model = build(s, img, device)
        step = make_step(model, s, make_batch(s, s.batch, img, device), dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time_steps(step, args.warmup, args.steps, device)
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        flops = count_flops(step)
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
        tfs = flops / t / 1e12
        mfu = f"{tfs / peak:.1%}" if peak else "–"
        lb = "–" if args.no_largest_batch else largest_batch(s, img, device, dtype, args.max_batch)
        results[name] = {"img": img, "batch": s.batch, "step_s": t, "peak_gib": mem, "tflop_per_step": flops / 1e12,
                         "tflops": tfs, "mfu": mfu, "largest_batch": lb}
        print(f"| {name} | {img} | {s.batch} | {t:.3f} | {s.batch / t:.2f} | {mem:.2f} | {flops / 1e12:.2f} | {tfs:.1f} | {mfu} | {lb} |", flush=True)
    if not args.no_inference:
        img = max(64, int(round(1024 * args.img_scale / 64)) * 64)
        inf = merged_inference(img, device, dtype, args.warmup, args.steps)
        results["merged_inference"] = inf
        print(f"inference, SAM-LoRA ViT-B {img} px, 4 modalities: plain SAM {inf['plain']:.4f} s, LoRA {inf['lora']:.4f} s, "
              f"merged {inf['merged']:.4f} s; merged / plain {inf['merged'] / inf['plain']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
