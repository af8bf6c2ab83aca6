"""LoRA vs Conv-LoRA inside SAM-LoRA on the synthetic DELIVER set, with the same budget.

    python benchmarks/lora_vs_convlora.py                    # one seed, ~2 min on 1 CPU thread
    python benchmarks/lora_vs_convlora.py --seeds 0 1 2      # three seeds, ~6 min

Both models are ``SamLoRA`` on ``sam_vit_tiny`` (random weights) at 128 px with every modality
(RGB, depth, event, LiDAR), trained for the same steps on the same batches (same seed, AdamW,
same lr, OHEM CE) and differing only in the adapter on each block's whole fused qkv:
``LoRA(r, alpha)`` vs ``Conv-LoRA(r, alpha, M experts)``, whose gates' balance loss is added as
the method does. The data set (160 train / 40 val, generated with seed 0) is shared by all seeds;
a seed sets the initialisation, the batch order and the augmentation. Prints each model's
validation mIoU (mean over the classes that occur) and the ratio of their median training-step
times (forward + loss + backward + optimiser step), measured in the same process on the same
batches, the two models alternating step by step.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmsam.adapters import ConvLoRAConfig, LoRAConfig, collect_balance_losses
from mmsam.data.datamodule import MultiModalDataModule
from mmsam.data.synthetic import generate_deliver
from mmsam.losses import build_loss
from mmsam.methods import SamLoRA
from mmsam.metrics import SegmentationMetrics

MODALITIES = ["rgb", "depth", "event", "lidar"]
KINDS = ("lora", "conv_lora")


def build(kind: str, args: argparse.Namespace, seed: int) -> SamLoRA:
    torch.manual_seed(seed)  # the same frozen backbone and head for both
    common = dict(r=args.rank, alpha=args.alpha, parts=None, target_modules=["attn.qkv"])
    lora = LoRAConfig(**common) if kind == "lora" else ConvLoRAConfig(**common, num_experts=args.experts)
    return SamLoRA(25, MODALITIES, backbone="sam_vit_tiny", img_size=args.size, adapter=lora)


def evaluate(model: SamLoRA, loader) -> float:
    metric = SegmentationMetrics(25, ignore_index=255, absent_classes="skip")
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            metric.update(model(batch)["logits"], batch["label"])
    model.train()
    return 100 * float(metric.compute()["mIoU"])


def run(dm: MultiModalDataModule, args: argparse.Namespace, seed: int) -> dict[str, tuple[float, float]]:
    """Train both models ``args.steps`` steps; ``{kind: (val mIoU, median step seconds)}``."""
    models = {k: build(k, args, seed) for k in KINDS}
    opts = {k: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=args.lr, weight_decay=0.01)
            for k, m in models.items()}
    loss_fn = build_loss("ohem")
    times: dict[str, list[float]] = {k: [] for k in KINDS}

    def batches():  # endless; every batch trains both models
        while True:
            yield from dm.train_dataloader()

    torch.manual_seed(seed)
    start = time.perf_counter()
    for step, batch in zip(range(args.steps), batches()):
        for k, m in models.items():  # alternate the two models on the same batch
            t = time.perf_counter()
            out = m(batch)
            loss = loss_fn(out["logits"], batch["label"])
            balance = collect_balance_losses(m)
            if balance is not None:
                loss = loss + balance
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            times[k].append(time.perf_counter() - t)
        if (step + 1) % 100 == 0:
            print(f"  seed {seed}: step {step + 1}/{args.steps}  ({time.perf_counter() - start:.0f} s)", flush=True)
    val = dm.val_dataloader()
    return {k: (evaluate(m, val), statistics.median(times[k][5:] or times[k])) for k, m in models.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="synthetic DELIVER root (generated if empty; default: a temp dir)")
    p.add_argument("--steps", type=int, default=400, help="training steps of each model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rank", type=int, default=3)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1, help="1 keeps timings stable on a shared 2-core machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    tmp = None if args.root else tempfile.mkdtemp(prefix="synth_deliver_")
    root = Path(args.root or tmp)
    try:
        if not any(root.glob("img/*/*/*/*.png")):
            generate_deliver(root, num_train=160, num_val=40, num_test=0, size=args.size, seed=0, progress=False)
        dm = MultiModalDataModule(root=str(root), modalities=MODALITIES, train_size=args.size, eval_size=args.size,
                                  batch_size=args.batch, eval_batch_size=args.batch, num_workers=0)
        dm.setup("fit")
        adapters = {k: sum(q.numel() for q in build(k, args, 0).param_groups()["adapters"]) for k in KINDS}
        print(f"SamLoRA sam_vit_tiny {args.size}px, 4 modalities, batch {args.batch}, {args.steps} steps, rank {args.rank}, "
              f"alpha {args.alpha:g}, {args.experts} experts, lr {args.lr:g}, {args.threads} thread(s); "
              f"adapter parameters: LoRA {adapters['lora']:,d}, Conv-LoRA {adapters['conv_lora']:,d}")
        rows = []
        for seed in args.seeds:
            res = run(dm, args, seed)
            rows.append(res)
            (ml, tl), (mc, tc) = res["lora"], res["conv_lora"]
            print(f"seed {seed}: val mIoU LoRA {ml:6.2f}  Conv-LoRA {mc:6.2f}  (diff {mc - ml:+.2f})   "
                  f"median step LoRA {1000 * tl:6.1f} ms  Conv-LoRA {1000 * tc:6.1f} ms  ratio {tc / tl:.2f}", flush=True)
        if len(rows) > 1:
            ml = statistics.mean(r["lora"][0] for r in rows)
            mc = statistics.mean(r["conv_lora"][0] for r in rows)
            ratio = statistics.mean(r["conv_lora"][1] / r["lora"][1] for r in rows)
            print(f"mean of {len(rows)} seeds: val mIoU LoRA {ml:.2f}  Conv-LoRA {mc:.2f}  (diff {mc - ml:+.2f})   "
                  f"step-time ratio Conv-LoRA/LoRA {ratio:.2f}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
