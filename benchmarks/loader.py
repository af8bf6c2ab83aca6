"""Training data loader throughput next to the training step's: is the loader fast enough?

    python benchmarks/loader.py                                  # DELIVER recipe, synthetic 1042 px scenes
    python benchmarks/loader.py --config configs/deliver/sam_lora_vit_b.yaml --root data/DELIVER  # a real download
    python benchmarks/loader.py --workers 0,2,8 --batches 20 --time-step --step-batch 1

Reads the ``data:`` section of ``--config`` (default: the DELIVER SAM-LoRA recipe: 4 modalities,
1024 px random-resize-crop, flips, batch 4, its ``num_workers``) and iterates the *training* loader
alone: samples/s over ``--batches`` batches after the first (the first batch, which includes
starting the workers, is reported apart). Without ``--root``, a synthetic DELIVER-layout set at
DELIVER's own size (1042 x 1042, ``--synth-size``) is written to a temporary folder first.

The loader must outrun the step: issue 15 asks for ≥ 3x the step's samples/s. ``--time-step``
times the recipe's training step on this machine (its method with random weights, batch
``--step-batch``, median of ``--step-repeats`` after one warm-up); ``--step-seconds S`` takes a
step time measured elsewhere (e.g. ``benchmarks/gpu.py`` on a GPU) with ``--step-batch`` samples.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def loader_throughput(data: dict[str, Any], workers: int, batches: int) -> dict[str, float]:
    """Samples/s of the training loader with ``workers`` workers (after its first batch)."""
    from mmsam.data.datamodule import MultiModalDataModule

    dm = MultiModalDataModule(**{**data, "num_workers": workers, "preflight": "off"})
    dm.setup("fit")
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    bs = first["label"].shape[0]
    n, t1 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += batch["label"].shape[0]
    dt = time.perf_counter() - t1
    del it, loader
    return {"workers": workers, "batch": bs, "first_batch_s": t_first, "samples_per_s": n / dt, "samples": n}


def step_seconds(config: Path, batch: int, repeats: int, size: int, root: Path) -> float:
    """Median seconds of the config's training step (its task built as ``mmsam fit`` does, random weights)."""
    from mmsam.cli import lightning_main

    cli = lightning_main(["--config", str(config), "--model.method.init_args.checkpoint", "null",
                          "--data.root", str(root), "--data.preflight", "off", "--trainer.logger", "false"], run=False)
    task = cli.model.train()
    mods, k = list(task.modalities), task.num_classes
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    sample = {"modalities": {m: torch.randn(batch, 3, size, size, generator=g) for m in mods},
              "label": torch.randint(0, k, (batch, size, size), generator=g)}
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        task.loss_fn(task.method(sample)["logits"], sample["label"]).backward()
        opt.step()
        dt = time.perf_counter() - t
        print(f"  step {r}: {dt:.1f} s{' (warm-up)' if r == 0 else ''}", flush=True)
        if r:
            times.append(dt)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs/deliver/sam_lora_vit_b.yaml")
    ap.add_argument("--root", type=Path, help="the data set's folder (default: synthetic scenes in a temporary folder)")
    ap.add_argument("--synth-size", type=int, default=1042, help="side of the synthetic scenes (DELIVER: 1042)")
    ap.add_argument("--synth-train", type=int, default=24)
    ap.add_argument("--workers", help="comma-separated worker counts (default: the config's num_workers)")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--time-step", action="store_true", help="time the config's training step here too")
    ap.add_argument("--step-seconds", type=float, help="a step time measured elsewhere (seconds per step of --step-batch samples)")
    ap.add_argument("--step-batch", type=int, default=1)
    ap.add_argument("--step-repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if not args.config.is_file():
        ap.error(f"--config {args.config}: no such file")
    config = yaml.safe_load(args.config.read_text())
    data = dict(config["data"])
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [int(data.get("num_workers", 2))]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}: dataset {data['dataset']}, "
          f"{len(data['modalities'])} modalities, train_size {data['train_size']}, batch {data['batch_size']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            from mmsam.data.synthetic import GENERATORS

            root = Path(tmp) / "synthetic"
            t = time.perf_counter()
            GENERATORS[data["dataset"]](root, num_train=args.synth_train, num_val=2, num_test=2,
                                        size=args.synth_size, progress=False)
            print(f"synthetic {data['dataset']} set, {args.synth_train} training scenes of {args.synth_size} px, "
                  f"written in {time.perf_counter() - t:.0f} s", flush=True)
        else:
            root = args.root
        data.update(root=str(root), synthesize=False)
        rows = [loader_throughput(data, w, args.batches) for w in workers]
        step = args.step_seconds
        if args.time_step:
            step = step_seconds(args.config, args.step_batch, args.step_repeats, int(data["train_size"]), root)
            print(f"training step here: {step:.2f} s for {args.step_batch} sample(s)")
    print("\n| workers | batch | first batch (s) | samples/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['batch']} | {r['first_batch_s']:.1f} | {r['samples_per_s']:.2f} |")
    if step:
        sps = args.step_batch / step
        for r in rows:
            print(f"loader / step samples/s with {r['workers']} workers: {r['samples_per_s'] / sps:.1f}x "
                  f"(step {sps:.3f} samples/s; target >= 3x)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
