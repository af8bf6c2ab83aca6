"""Does fusion matter on the synthetic DELIVER set? RGB-only vs all four modalities.

Trains the same tiny dilated conv net (per-pixel classifier, ~20k parameters) once per input
set with the same seed, batches and crops: RGB only, depth (HHA) only, and
RGB+depth+event+LiDAR concatenated; prints validation mIoU of each (overall and per
condition) and the fused / RGB ratio. CPU only, about a minute on 2 cores.

    python benchmarks/synth_fusion_check.py [--root DIR] [--steps 600] [--sets rgb,depth,all]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mmsam.data.datasets import create_dataset  # noqa: E402
from mmsam.data.datasets.deliver import DELIVER_CLASSES  # noqa: E402
from mmsam.data.synthetic import generate_deliver  # noqa: E402

ALL = ("rgb", "depth", "event", "lidar")
K = 25


def load(root: Path, split: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Stack a whole split in memory: {modality: (N,3,H,W)}, labels (N,H,W), conditions."""
    ds = create_dataset("deliver", root=root, split=split, modalities=ALL)
    items = [ds[i] for i in range(len(ds))]
    mods = {m: torch.stack([it["modalities"][m] for it in items]) for m in ALL}
    labels = torch.stack([it["label"] for it in items])
    return mods, labels, [it["meta"]["condition"] for it in items]


def tiny_net(cin: int, width: int = 32) -> nn.Module:
    """4 convs (3x3 dilations 1, 2, 4, then 1x1): receptive field 15 px."""
    layers: list[nn.Module] = []
    c = cin
    for d in (1, 2, 4):
        layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(width, K, 1))


def confusion(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    keep = label != 255
    idx = label[keep] * K + pred[keep]
    return torch.bincount(idx, minlength=K * K).reshape(K, K)


def class_iou(cm: torch.Tensor) -> torch.Tensor:
    """IoU per class; NaN for classes absent from the ground truth."""
    inter = cm.diag().float()
    union = cm.sum(0).float() + cm.sum(1).float() - inter
    iou = inter / union.clamp(min=1)
    iou[cm.sum(1) == 0] = float("nan")
    return iou


def miou(cm: torch.Tensor) -> float:
    return float(class_iou(cm).nanmean())


def run(x_tr, y_tr, x_va, y_va, cond_va, steps: int, batch: int, crop: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = tiny_net(x_tr.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)  # same batches and crops for every input set
    n, _, H, W = x_tr.shape
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        top = int(torch.randint(0, H - crop + 1, (1,), generator=g))
        left = int(torch.randint(0, W - crop + 1, (1,), generator=g))
        xb = x_tr[idx, :, top:top + crop, left:left + crop]
        yb = y_tr[idx, top:top + crop, left:left + crop]
        loss = F.cross_entropy(net(xb), yb, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x_va[i:i + 8]).argmax(1) for i in range(0, len(x_va), 8)])
    cm = confusion(pred, y_va)
    out = {"all": miou(cm), "per_class": class_iou(cm)}
    for c in sorted(set(cond_va)):
        sel = torch.tensor([ci == c for ci in cond_va])
        out[c] = miou(confusion(pred[sel], y_va[sel]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None,
                   help="DELIVER-layout set (the synthetic one is generated if empty)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sets", default="rgb,depth,all",
                   help="comma-separated input sets: modality names joined by '+', or 'all'")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "synthetic_deliver"
    if not any(Path(root).glob("img/*/*/*/*.png")):
        print(f"generating the synthetic DELIVER set under {root}")
        generate_deliver(root, seed=args.seed, progress=False)
    t0 = time.perf_counter()
    tr, y_tr, _ = load(root, "train")
    va, y_va, cond_va = load(root, "val")
    results = {}
    sets = {"rgb", "all"} | set(args.sets.split(","))
    order = sorted(sets, key=lambda n: (n == "all", n != "rgb", n))
    for name in order:
        mods = ALL if name == "all" else tuple(name.split("+"))
        x_tr = torch.cat([tr[m] for m in mods], 1)
        x_va = torch.cat([va[m] for m in mods], 1)
        t = time.perf_counter()
        results[name] = run(x_tr, y_tr, x_va, y_va, cond_va,
                            args.steps, args.batch, args.crop, args.seed)
        print(f"{'+'.join(mods):>22}: val mIoU {results[name]['all']:.4f}  "
              f"({time.perf_counter() - t:.1f}s)  per condition: "
              + " ".join(f"{c}={v:.3f}" for c, v in results[name].items()
                         if c not in ("all", "per_class")))
    print("per-class IoU: " + "  ".join(order))
    for k in torch.nonzero(~results["rgb"]["per_class"].isnan()).flatten().tolist():
        print(f"  {DELIVER_CLASSES[k]:>12}: " + "  ".join(
            f"{float(results[n]['per_class'][k]):.3f}" for n in order))
    rgb, fused = results["rgb"]["all"], results["all"]["all"]
    print(f"fusion / rgb mIoU ratio: {fused / rgb:.3f}  (train {len(y_tr)}, val {len(y_va)}, "
          f"{args.steps} steps, total {time.perf_counter() - t0:.1f}s)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
