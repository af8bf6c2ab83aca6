"""Parity of mmsam's Conv-LoRA with the official AutoGluon code, run side by side.

Runs the *official* files of an AutoGluon checkout (imported one by one, their package-level
imports stubbed; nothing of them is copied into mmsam) next to mmsam on the same tensors:

1. **layer**: ``multimodal/src/autogluon/multimodal/models/adaptation_layers.py``
   ``ConvLoRALinear`` vs ``mmsam.adapters.ConvLoRALinear`` on the same frozen linear. mmsam's
   layer is filled with ``mmsam.testing.fill_deterministic``; every tensor is copied into the
   official layer through ``KEY_MAP`` (each official parameter must be mapped). Both run on
   ``mmsam.testing.fixed_input`` in training mode (same RNG seed, so the same gate noise) and in
   eval mode; compared: outputs, the gate (balance) loss, the gradients of every trainable tensor
   and of the input.
2. **loss**: HF ``Mask2FormerLoss`` built by AutoGluon's ``get_loss_func`` (``optim/losses/utils.py``,
   with AutoGluon's ``configs/optim/default.yaml``), fed the targets AutoGluon's
   ``SemanticSegImageProcessor.prepare_per_category_binary_masks`` makes and summed by
   ``SemanticSegmentationLitModule._compute_loss`` (``optim/lit_semantic_seg.py``), vs
   ``mmsam.losses.mask_classification.MaskClassificationLoss`` with ConvLoRASAM's defaults, on fixed
   predictions and labels (same RNG seed, so the same sampled points). Compared: the matching,
   each term and the total.
3. **metrics**: official ``Binary_IoU`` and ``Multiclass_IoU`` (``optim/metrics/semantic_seg_metrics.py``)
   vs ``BinarySegmentationMetrics`` (``Binary_IoU``) and ``SegmentationMetrics(ignore_in_union=True)``.

Usage (transformers 4.38, the version AutoGluon pinned when Conv-LoRA landed, and scipy are
needed for the official loss; mmsam itself needs neither)::

    python benchmarks/parity/convlora.py --official /path/to/autogluon [--write-golden]

``--official`` is an AutoGluon checkout (work tree) or a bare git directory (read at HEAD).
``--write-golden`` stores the inputs and the official outputs in ``tests/golden/convlora_*.safetensors``,
which ``tests/unit/test_golden_convlora.py`` checks without the official code.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmsam.adapters.conv_lora import ConvLoRAConfig, ConvLoRALinear
from mmsam.losses.mask_classification import MaskClassificationLoss, semantic_targets
from mmsam.metrics import BinarySegmentationMetrics, SegmentationMetrics
from mmsam.testing import fill_deterministic, fixed_input, save_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
MM = "multimodal/src/autogluon/multimodal"

# ---- the fixed problem (the golden test rebuilds exactly this) ---------------------------------
SEED = 0
IN_FEATURES, OUT_FEATURES = 16, 48  # a fused qkv: 3 x 16
LAYER = dict(r=3, alpha=32.0, num_experts=8)
X4_SHAPE = (8, 4, 4, IN_FEATURES)  # (B', h, w, C): eight windows, as in SAM's windowed blocks
X3_SHAPE = (2, 16, IN_FEATURES)  # (B, N, C) with a square N
NUM_CLASSES, NUM_QUERIES = 4, 10
MASK_SHAPE = (2, NUM_QUERIES, 16, 16)  # decoder masks at 1/4 of the label resolution
LABEL_SHAPE = (2, 64, 64)


def key_map(num_experts: int) -> dict[str, str]:
    """mmsam state-dict name -> official ``ConvLoRALinear`` name."""
    m = {
        "base_layer.weight": "weight",
        "base_layer.bias": "bias",
        "conv_lora.lora_A.0.weight": "lora_A",
        "conv_lora.lora_B.0.weight": "lora_B",
        "conv_lora.moe.0.w_gate": "lora_moe_gating.w_gate",
        "conv_lora.moe.0.w_noise": "lora_moe_gating.w_noise",
    }
    for i in range(num_experts):
        m[f"conv_lora.moe.0.experts.{i}.conv.weight"] = f"lora_moe_experts.{i}.0.weight"
        m[f"conv_lora.moe.0.experts.{i}.conv.bias"] = f"lora_moe_experts.{i}.0.bias"
    return m


def build_mmsam_layer() -> ConvLoRALinear:
    layer = ConvLoRALinear(nn.Linear(IN_FEATURES, OUT_FEATURES), ConvLoRAConfig(**LAYER))
    return fill_deterministic(layer, SEED)


def layer_inputs() -> dict[str, torch.Tensor]:
    return {
        "x4": fixed_input(X4_SHAPE, SEED, name="x4"),
        "x3": fixed_input(X3_SHAPE, SEED, name="x3"),
        "grad_weight": fixed_input((*X4_SHAPE[:-1], OUT_FEATURES), SEED, name="grad_weight"),
    }


def run_mmsam_layer(layer: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Training forward of x4 (seeded), backward of ``Σ out·w + balance``; eval forwards of x4 and x3."""
    out: dict[str, torch.Tensor] = {}
    layer.train()
    x = inputs["x4"].clone().requires_grad_(True)
    torch.manual_seed(SEED)
    y = layer(x)
    balance = layer.conv_lora.balance_loss
    ((y * inputs["grad_weight"]).sum() + balance).backward()
    out["train_out"], out["balance"], out["grad.input"] = y.detach(), balance.detach().reshape(()), x.grad
    for name, p in layer.named_parameters():
        if p.requires_grad:
            out[f"grad.{name}"] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()  # unchosen experts: none
    layer.eval()
    with torch.no_grad():
        out["eval_out"] = layer(inputs["x4"])
        out["eval_out3"] = layer(inputs["x3"])
    return out


def loss_inputs() -> dict[str, torch.Tensor]:
    coarse = fixed_input((LABEL_SHAPE[0], NUM_CLASSES, 4, 4), SEED, name="label_scores")
    coarse[1, 3] = -10.0  # image 1 has no class 3: the images hold different class sets
    labels = F.interpolate(coarse.argmax(1, keepdim=True).float(), size=LABEL_SHAPE[1:], mode="nearest")[:, 0].long()
    return {
        "mask_logits": 3.0 * fixed_input(MASK_SHAPE, SEED, name="mask_logits"),
        "class_logits": 2.0 * fixed_input((MASK_SHAPE[0], NUM_QUERIES, NUM_CLASSES + 1), SEED, name="class_logits"),
        "labels": labels,
    }


def run_mmsam_loss(loss: MaskClassificationLoss, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    targets = semantic_targets(inputs["labels"])
    torch.manual_seed(SEED)
    indices = loss.match(inputs["mask_logits"], inputs["class_logits"], targets)
    torch.manual_seed(SEED)
    terms = loss(inputs["mask_logits"], inputs["class_logits"], inputs["labels"])
    out = {k: v.detach().reshape(()) for k, v in terms.items()}
    out["total"] = sum(terms.values()).detach().reshape(())
    for i, (q, t) in enumerate(indices):
        out[f"match{i}"] = torch.stack([q, t])
    return out


def metric_inputs() -> dict[str, torch.Tensor]:
    prob = torch.sigmoid(2.0 * fixed_input((3, 16, 16), SEED, name="binary_logit"))
    fg = torch.zeros(3, 16, 16, dtype=torch.long)
    fg[0, 4:12, 4:12] = 1
    fg[1, :6, :] = 1  # image 2 has no foreground at all
    sem = fixed_input((2, NUM_CLASSES, 16, 16), SEED, name="semantic_logits")
    lab = fixed_input((2, NUM_CLASSES, 16, 16), SEED, name="semantic_truth").argmax(1)
    lab[:, :3] = 255  # a band of ignored pixels
    return {"binary_prob": prob, "binary_label": fg, "semantic_logits": sem, "semantic_label": lab}


def run_mmsam_metrics(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    b = BinarySegmentationMetrics(scores=["Binary_IoU"])
    p = inputs["binary_prob"]
    b.update(torch.stack([torch.zeros_like(p), torch.logit(p.double()).float()], 1), inputs["binary_label"])
    m = SegmentationMetrics(NUM_CLASSES, ignore_in_union=True)
    m.update(inputs["semantic_logits"], inputs["semantic_label"])
    pooled = SegmentationMetrics(2)
    pooled.update(torch.stack([1 - p, p], 1), inputs["binary_label"])
    return {"Binary_IoU": b.compute()["Binary_IoU"].reshape(()), "mIoU_ignore_in_union": m.compute()["mIoU"].reshape(()),
            "pooled_binary_mIoU": pooled.compute()["mIoU"].reshape(())}


# ---- loading the official files ------------------------------------------------------------------


def official_source(path: Path) -> tuple[Path, str]:
    """The ``multimodal/src`` folder of the checkout and its commit (a bare git dir is exported at HEAD)."""
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        if (path / "COMMIT").exists():
            commit = (path / "COMMIT").read_text().strip()
    if (path / MM).is_dir():
        return path, commit
    tmp = Path(tempfile.mkdtemp(prefix="autogluon_"))
    archive = subprocess.run(["git", "-C", str(path), "archive", "HEAD", "multimodal/src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(tmp)
    return tmp, commit


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # importable as a package
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _load(name: str, file: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_official(root: Path) -> types.SimpleNamespace:
    """Import the few official files needed under a private package name ``agmm``, stubbing what
    they import but never call here (autogluon.core, the data collators, the Lightning base class...)."""
    src = root / MM
    placeholder = type("Placeholder", (), {"__init__": lambda self, *a, **k: None})
    _stub("autogluon")
    _stub("autogluon.core")
    _stub("autogluon.core.metrics", METRICS=collections.defaultdict(dict))
    for pkg in ("agmm", "agmm.models", "agmm.data", "agmm.optim", "agmm.optim.metrics", "agmm.optim.losses"):
        _stub(pkg)
    _stub("pytorch_metric_learning", distances=None, losses=None, miners=None)
    _stub("agmm.models.utils", run_model=None)
    _stub("agmm.optim.lit_module", LitModule=placeholder)
    _stub("agmm.data.collator", ListCollator=placeholder, PadCollator=placeholder)
    _stub("agmm.data.process_image", ImageProcessor=placeholder)
    for m, names in {"bce_loss": ["BBCEWithLogitLoss"], "focal_loss": ["FocalLoss"], "lemda_loss": ["LemdaLoss"],
                     "softmax_losses": ["MultiNegativesSoftmaxLoss", "SoftTargetCrossEntropy"], "structure_loss": ["StructureLoss"]}.items():
        _stub(f"agmm.optim.losses.{m}", **{n: placeholder for n in names})
    ns = types.SimpleNamespace()
    ns.constants = _load("agmm.constants", src / "constants.py")
    ns.layers = _load("agmm.models.adaptation_layers", src / "models/adaptation_layers.py")
    ns.metrics = _load("agmm.optim.metrics.semantic_seg_metrics", src / "optim/metrics/semantic_seg_metrics.py")
    ns.losses = _load("agmm.optim.losses.utils", src / "optim/losses/utils.py")
    ns.lit = _load("agmm.optim.lit_semantic_seg", src / "optim/lit_semantic_seg.py")
    ns.data = _load("agmm.data.process_semantic_seg_img", src / "data/process_semantic_seg_img.py")
    from omegaconf import OmegaConf

    ns.optim_config = OmegaConf.load(src / "configs/optim/default.yaml").optim
    return ns


# ---- the official side ---------------------------------------------------------------------------


def official_layer(ag: types.SimpleNamespace, ours: ConvLoRALinear) -> nn.Module:
    theirs = ag.layers.ConvLoRALinear(IN_FEATURES, OUT_FEATURES, r=LAYER["r"], lora_alpha=LAYER["alpha"],
                                      conv_lora_expert_num=LAYER["num_experts"])
    mapping = key_map(LAYER["num_experts"])
    ours_sd, theirs_sd = ours.state_dict(), dict(theirs.named_parameters())
    assert set(mapping) == set(ours_sd), f"unmapped mmsam tensors: {sorted(set(ours_sd) ^ set(mapping))}"
    assert set(mapping.values()) == set(theirs_sd), f"unmapped official tensors: {sorted(set(theirs_sd) ^ set(mapping.values()))}"
    with torch.no_grad():
        for k, v in mapping.items():
            assert theirs_sd[v].shape == ours_sd[k].shape, (k, v)
            theirs_sd[v].copy_(ours_sd[k])
    theirs.bias.requires_grad_(False)  # frozen with the weight (AutoGluon trains only ".*lora_*." in the encoder)
    return theirs


def run_official_layer(theirs: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    inv = {v: k for k, v in key_map(LAYER["num_experts"]).items()}
    theirs.train()
    x = inputs["x4"].clone().requires_grad_(True)
    torch.manual_seed(SEED)
    y, balance = theirs(x)
    ((y * inputs["grad_weight"]).sum() + balance.sum()).backward()
    out["train_out"], out["balance"], out["grad.input"] = y.detach(), balance.detach().reshape(()), x.grad
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            out[f"grad.{inv[name]}"] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
    theirs.eval()
    with torch.no_grad():
        out["eval_out"] = theirs(inputs["x4"])[0]
        out["eval_out3"] = theirs(inputs["x3"])[0]
    return out


def run_official_loss(ag: types.SimpleNamespace, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    c = ag.constants
    loss_func = ag.losses.get_loss_func(problem_type=c.SEMANTIC_SEGMENTATION, loss_func_name="mask2former_loss",
                                        config=ag.optim_config, num_classes=NUM_CLASSES)
    processor = types.SimpleNamespace(ignore_label=255)
    mask_labels, class_labels = [], []
    for lab in inputs["labels"]:
        masks, classes = ag.data.SemanticSegImageProcessor.prepare_per_category_binary_masks(processor, lab[None].float())
        mask_labels.append(masks)
        class_labels.append(classes)
    torch.manual_seed(SEED)
    indices = loss_func.matcher(inputs["mask_logits"], inputs["class_logits"], mask_labels, class_labels)
    torch.manual_seed(SEED)
    terms = loss_func(masks_queries_logits=inputs["mask_logits"], class_queries_logits=inputs["class_logits"],
                      mask_labels=[m.to(inputs["mask_logits"]) for m in mask_labels], class_labels=class_labels)  # as _compute_loss
    lit = types.SimpleNamespace(loss_func=loss_func)
    output = {"sam": {c.LOGITS: inputs["mask_logits"], c.CLASS_LOGITS: inputs["class_logits"]}}
    torch.manual_seed(SEED)
    total = ag.lit.SemanticSegmentationLitModule._compute_loss(lit, output, inputs["labels"], mask_labels=mask_labels,
                                                                class_labels=class_labels)
    out = {"mask_ce": terms["loss_cross_entropy"], "mask_bce": terms["loss_mask"], "mask_dice": terms["loss_dice"], "total": total}
    out = {k: v.detach().reshape(()) for k, v in out.items()}
    for i, (q, t) in enumerate(indices):
        out[f"match{i}"] = torch.stack([torch.as_tensor(q), torch.as_tensor(t)]).long()
    out["_weight_dict"] = loss_func.weight_dict
    out["_matcher_costs"] = (loss_func.matcher.cost_class, loss_func.matcher.cost_mask, loss_func.matcher.cost_dice)
    return out


def run_official_metrics(ag: types.SimpleNamespace, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    b = ag.metrics.Binary_IoU()
    b.update(inputs["binary_prob"], inputs["binary_label"])
    m = ag.metrics.Multiclass_IoU(num_classes=NUM_CLASSES)
    m.update(inputs["semantic_logits"], inputs["semantic_label"])
    return {"Binary_IoU": b.compute().float().reshape(()), "mIoU_ignore_in_union": m.compute().float().reshape(())}


# ---- main ----------------------------------------------------------------------------------------


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> dict[str, float]:
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="AutoGluon checkout (work tree or bare git dir)")
    parser.add_argument("--write-golden", action="store_true", help="write tests/golden/convlora_*.safetensors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible reductions
    root, commit = official_source(args.official)
    ag = load_official(root)
    import transformers

    print(f"official AutoGluon {commit}, transformers {transformers.__version__}, torch {torch.__version__}")

    # 1. layer
    ours_layer = build_mmsam_layer()
    theirs_layer = official_layer(ag, ours_layer)
    li = layer_inputs()
    ours, theirs = run_mmsam_layer(ours_layer, li), run_official_layer(theirs_layer, li)
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    with torch.no_grad():
        s = li["x4"].mean(dim=(1, 2)) @ ours_layer.conv_lora.lora_A[0].weight.T
        routes = (s @ ours_layer.conv_lora.moe[0].w_gate).argmax(1).tolist()
    print(f"\n[layer] experts chosen in eval mode per window: {routes}")
    d_layer = max_diff(ours, theirs, sorted(ours))
    for k, v in d_layer.items():
        print(f"  max|Δ| {k:<42} {v:.3e}   (official max|.| {float(theirs[k].abs().max()):.3e})")

    # 2. loss
    lo = loss_inputs()
    ours_loss = run_mmsam_loss(MaskClassificationLoss(NUM_CLASSES), lo)
    theirs_loss = run_official_loss(ag, lo)
    print(f"\n[loss] official weight_dict {theirs_loss.pop('_weight_dict')} (never applied), matcher costs "
          f"class/mask/dice {theirs_loss.pop('_matcher_costs')}")
    for i in range(LABEL_SHAPE[0]):
        same = torch.equal(ours_loss[f"match{i}"], theirs_loss[f"match{i}"])
        print(f"  image {i} matching identical: {same}   {theirs_loss[f'match{i}'].tolist()}")
        assert same
    d_loss = max_diff(ours_loss, theirs_loss, ["mask_ce", "mask_bce", "mask_dice", "total"])
    for k, v in d_loss.items():
        print(f"  {k:<10} official {float(theirs_loss[k]):.6f}   mmsam {float(ours_loss[k]):.6f}   |Δ| {v:.3e}")

    # 3. metrics
    mi = metric_inputs()
    ours_m, theirs_m = run_mmsam_metrics(mi), run_official_metrics(ag, mi)
    print("\n[metrics]")
    for k in theirs_m:
        print(f"  {k:<22} official {float(theirs_m[k]):.6f}   mmsam {float(ours_m[k]):.6f}   |Δ| {abs(float(theirs_m[k] - ours_m[k])):.3e}")
    print(f"  (pooled background/foreground mIoU on the same binary set: {float(ours_m['pooled_binary_mIoU']):.6f})")
    d_metric = max_diff(ours_m, theirs_m, list(theirs_m))

    worst = max(max(d_layer.values()), max(d_loss.values()), max(d_metric.values()))
    print(f"\nworst max|Δ| {worst:.3e}")

    if args.write_golden:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        meta = {"official_repo": "autogluon/autogluon", "official_commit": commit, "transformers": transformers.__version__,
                "torch": torch.__version__, "command": "python benchmarks/parity/convlora.py --official PATH --write-golden"}
        save_golden(GOLDEN / "convlora_layer.safetensors", {**{f"in.{k}": v for k, v in li.items()},
                                                            **{f"official.{k}": v for k, v in theirs.items()}},
                    {**meta, "max_abs_diff": f"{max(d_layer.values()):.3e}"})
        small = {k: v.to(torch.uint8) if k == "labels" else v for k, v in lo.items()}  # labels < 256: stored as uint8
        save_golden(GOLDEN / "convlora_loss.safetensors", {**{f"in.{k}": v for k, v in small.items()},
                                                           **{f"official.{k}": v for k, v in theirs_loss.items()},
                                                           **{f"in.metric.{k}": v.to(torch.uint8) if "label" in k else v for k, v in mi.items()},
                                                           **{f"official.metric.{k}": v for k, v in theirs_m.items()}},
                    {**meta, "max_abs_diff": f"{max(max(d_loss.values()), max(d_metric.values())):.3e}"})
        print(f"wrote {GOLDEN / 'convlora_layer.safetensors'} and {GOLDEN / 'convlora_loss.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
