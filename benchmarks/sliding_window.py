"""Whole-image vs sliding-window inference of large tiles: time and peak memory.

    python benchmarks/sliding_window.py --backbone sam_vit_tiny --tiles 512,1024 --window 256 --stride 128

Whole-image: a SAM-LoRA built for the tile's size (SAM's position embedding and global attention
then grow with the tile). Sliding window: the same method built for ``--window`` px, run by
``mmsam.engine.sliding_window.sliding_window_logits`` with ``--window-batch`` crops per forward.
Each measurement runs in its own process; peak memory is the process's peak resident memory during
inference above what it held before (CPU), or ``torch.cuda.max_memory_allocated`` (``--device cuda``).
Time: the fastest of ``--repeats`` runs after a warm-up. Weights are random: only cost is compared.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Any

import torch

from mmsam.engine.sliding_window import sliding_window_logits, window_starts
from mmsam.methods import SamLoRA


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _measure(args: dict[str, Any], tile: int, sliding: bool, queue: Any) -> None:
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    device = torch.device(args["device"])
    mods = args["modalities"]
    size = args["window"] if sliding else tile
    method = SamLoRA(6, mods, backbone=args["backbone"], img_size=size).eval().to(device)
    batch = {
        "modalities": {m: torch.randn(1, 3, tile, tile, device=device) for m in mods},
        "present": {m: torch.ones(1, dtype=torch.bool, device=device) for m in mods},
        "meta": {"id": ["tile"]},
    }

    def run() -> torch.Tensor:
        if sliding:
            return sliding_window_logits(method, batch, window=args["window"], stride=args["stride"], window_batch=args["window_batch"])
        return method(batch)["logits"]

    base = _rss_mib()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    with torch.inference_mode():
        out = run()  # warm-up, also the peak
        if device.type == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(args["repeats"]):
            t = time.perf_counter()
            out = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    seconds = min(times)  # the least disturbed run (shared machines)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # ru_maxrss: KiB on Linux
    assert out.shape[-2:] == (tile, tile)
    queue.put((seconds, peak))


def measure(args: dict[str, Any], tile: int, sliding: bool) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(args, tile, sliding, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="sam_vit_tiny")
    p.add_argument("--tiles", default="512,1024", help="square tile sides, comma-separated")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--window-batch", type=int, default=4)
    p.add_argument("--modalities", default="rgb,dsm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    ns = p.parse_args()
    args = {**vars(ns), "modalities": ns.modalities.split(",")}
    print(f"{ns.backbone}, modalities {ns.modalities}, window {ns.window} stride {ns.stride} window_batch {ns.window_batch}, "
          f"{ns.device} ({ns.threads} threads), random weights")
    print(f"{'tile':>6}  {'windows':>7}  {'whole s':>8}  {'window s':>8}  {'time ratio':>10}  {'whole MiB':>9}  {'window MiB':>10}  {'mem ratio':>9}")
    for tile in (int(t) for t in ns.tiles.split(",")):
        n = len(window_starts(tile, ns.window, ns.stride)) ** 2
        tw, mw = measure(args, tile, sliding=False)
        ts, ms = measure(args, tile, sliding=True)
        print(f"{tile:>6}  {n:>7}  {tw:8.3f}  {ts:8.3f}  {ts / tw:10.2f}  {mw:9.1f}  {ms:10.1f}  {ms / max(mw, 1e-6):9.2f}")


if __name__ == "__main__":
    main()
