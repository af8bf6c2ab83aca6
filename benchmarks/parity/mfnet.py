"""Parity of mmsam's MFNet with the official code (sstary/SSRS, folder ``MFNet/``).

    python benchmarks/parity/mfnet.py --official /path/to/SSRS [--adapter mm_adapter|mm_lora|both] [--write-golden]

``--official`` is a checkout (or ``git archive``) of https://github.com/sstary/SSRS holding
``MFNet/``; its code runs unchanged. Put it OUTSIDE this repository. It needs ``einops`` and
``timm`` (only ``timm.models.layers``; stubbed below when timm is not installed: the stubs only
initialise weights that are overwritten, and ``drop_path`` is 0), ``cv2`` (stubbed when missing:
only a drawing helper uses it) and ``matplotlib`` (stubbed when missing: imported, unused). None
of these is a dependency of mmsam.

What it does, per adapter (MMAdapter = the official ``-mod sam_adpt``, MMLoRA = ``-mod sam_lora``):

1. builds ours: ``MFNet(num_classes=6, modalities=["irrg", "dsm"],
   backbone="sam_vit_b", img_size=256)`` (256 px is the paper's tile; at smaller sizes the
   official reflect padding fails on the 1/32 map), fills it with
   :func:`mmsam.testing.fill_deterministic` (then sets the decoder's fusion weights to
   ``1 + N(0, 0.05²)`` so both branches of every weighted sum are active), and gives it the
   position embedding and relative-position tables generated at the official sizes (64×64
   grid; 127-row tables in MMLoRA's global blocks), resized with the project's
   ``resize_pos_embed`` / ``resize_rel_pos``;
2. builds the official ``UNetFormer`` of ``MFNet/UNetFormer_MMSAM.py`` with ``sys.argv`` set to
   ``-mod <mod> -image_size 256`` and its registry entry ``"vit_l"`` pointed at the official
   ``build_sam_vit_b`` with an empty checkpoint file (``torch.save({}, f)``);
3. copies every tensor of ours into the official model by the key mapping below (every official
   tensor must be mapped except SAM's prompt encoder and mask decoder, which MFNet never calls
   and ours drops, and the decoder's constant ``relative_position_index``);
4. runs both in eval mode on one fixed input (IRRG 1×3×256×256, DSM 1×256×256: the official
   forward repeats the DSM to 3 channels, ours is given the same repeat) and prints max |Δ| of the
   encoder outputs, the DFM pyramid and the logits, the trainable parameters of both, and max
   |Δ| of the gradients of a cross-entropy loss against a fixed random label.

``--write-golden`` stores the official outputs in ``tests/golden/mfnet_<adapter>.safetensors``
(read by ``tests/unit/test_golden_mfnet.py``, which needs no official code).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mmsam.adapters import MMAdapterConfig, MMLoRAConfig
from mmsam.backbones.checkpoints import resize_pos_embed, resize_rel_pos
from mmsam.errors import CheckpointError
from mmsam.interop.mfnet import CONSTANT_OFFICIAL, UNUSED_OFFICIAL, Rule
from mmsam.interop.mfnet import build_mapping as _build_mapping
from mmsam.interop.mfnet import rule_for as _rule_for
from mmsam.methods import MFNet
from mmsam.testing import fill_deterministic, fixed_input

SEED = 0
IMG = 256
NUM_CLASSES = 6
MODALITIES = ("irrg", "dsm")
OFFICIAL_MOD = {"mm_adapter": "sam_adpt", "mm_lora": "sam_lora"}
GLOBAL_BLOCKS = (2, 5, 8, 11)  # ViT-B
OFFICIAL_GRID = 64  # the official position embedding (and MMLoRA's global rel-pos tables) are sized for 1024 px
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"
ENC = "backbone.image_encoder."


# ----------------------------------------------------------------------------- ours (also used by the golden test)

def official_size_tables(adapter: str, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Deterministic tensors at the official sizes, keyed by the official names."""
    tables = {"image_encoder.pos_embed": 0.05 * fixed_input((1, OFFICIAL_GRID, OFFICIAL_GRID, 768), seed, name="official.pos_embed")}
    if adapter == "mm_lora":  # LoraBlock sizes its global blocks' tables for a 64 grid
        for i in GLOBAL_BLOCKS:
            for axis in ("h", "w"):
                name = f"image_encoder.blocks.{i}.attn.rel_{axis}"
                tables[name] = 0.05 * fixed_input((2 * OFFICIAL_GRID - 1, 64), seed, name="official." + name)
    return tables


def build_ours(adapter: str, seed: int = SEED) -> torch.nn.Module:
    """Our MFNet (ViT-B, 256 px) with deterministic weights, in eval mode."""
    config = MMAdapterConfig() if adapter == "mm_adapter" else MMLoRAConfig()
    model = MFNet(
        num_classes=NUM_CLASSES, modalities=list(MODALITIES), backbone="sam_vit_b", img_size=IMG, adapter=config
    )
    fill_deterministic(model, seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if name.startswith("decoder.") and name.endswith(".weights"):
                p.add_(1.0)  # ReLU-normalised fusion weights: keep both terms of each weighted sum
        grid = IMG // 16
        for name, t in official_size_tables(adapter, seed).items():
            if name.endswith("pos_embed"):
                params[ENC + "pos_embed"].copy_(resize_pos_embed(t, (grid, grid)))
            else:  # image_encoder.blocks.i.attn.rel_h -> ours ...attn.rel_pos_h
                block, axis = name.split(".")[2], name[-1]
                params[f"{ENC}blocks.{block}.attn.rel_pos_{axis}"].copy_(resize_rel_pos(t, 2 * grid - 1))
    return model.eval()


def fixed_data(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IRRG (1, 3, H, W), DSM (1, H, W) (the official forward's single-channel layout), label (1, H, W)."""
    irrg = fixed_input((1, 3, IMG, IMG), seed, name="irrg")
    dsm = fixed_input((1, IMG, IMG), seed, name="dsm")
    label = torch.randint(0, NUM_CLASSES, (1, IMG, IMG), generator=torch.Generator().manual_seed(seed))
    return irrg, dsm, label


def ours_batch(irrg: torch.Tensor, dsm: torch.Tensor) -> dict:
    """Ours takes every modality with 3 channels: the DSM repeated, as the official forward does."""
    return {"modalities": {"irrg": irrg, "dsm": dsm.unsqueeze(1).repeat(1, 3, 1, 1)}}


def run_ours(model: torch.nn.Module, irrg: torch.Tensor, dsm: torch.Tensor, label: torch.Tensor) -> dict[str, object]:
    """Forward (with the encoder outputs and the DFM pyramid) and the gradients of the CE loss."""
    taps: dict[str, object] = {}
    hooks = [
        model.backbone.image_encoder.register_forward_hook(lambda m, i, o: taps.__setitem__("encoder", o)),
        model.dfm.register_forward_hook(lambda m, i, o: taps.__setitem__("dfm", o)),
    ]
    model.zero_grad(set_to_none=True)
    try:
        logits = model(ours_batch(irrg, dsm))["logits"]
    finally:
        for h in hooks:
            h.remove()
    loss = F.cross_entropy(logits, label)
    loss.backward()
    enc = taps["encoder"]
    return {
        "logits": logits.detach(),
        "loss": loss.detach(),
        "encoder": enc.detach().reshape(len(MODALITIES), -1, *enc.shape[1:]),  # (M, B, 256, 16, 16)
        "dfm": [f.detach() for f in taps["dfm"]],
        "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
    }


def trainable_names(model: torch.nn.Module) -> list[str]:
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


# Gradient slices stored in the golden files (ours names; first 64 values, flattened).
GRAD_SLICES = {
    "mm_adapter": [
        ENC + "blocks.0.attn.adapters.irrg.down.weight",
        ENC + "blocks.11.mlp.adapters.dsm.up.weight",
        ENC + "blocks.5.mlp.lambdas.irrg",
        ENC + "blocks.5.mlp.lambdas.dsm",
        "dfm.pyramids.dsm.up4.0.weight",
        "dfm.se.irrg.3.fc1.weight",
        "decoder.p1.channel.1.weight",
        "decoder.seg_head.2.weight",
    ],
    "mm_lora": [
        ENC + "blocks.0.attn.qkv.lora.irrg.lora_A.1.weight",
        ENC + "blocks.11.mlp.lin2.lora.dsm.lora_B.0.weight",
        ENC + "blocks.5.mlp.lin1.lambdas.irrg",
        ENC + "blocks.5.mlp.lin1.lambdas.dsm",
        "dfm.pyramids.dsm.up4.0.weight",
        "dfm.se.irrg.3.fc1.weight",
        "decoder.p1.channel.1.weight",
        "decoder.seg_head.2.weight",
    ],
}
SUB = 8  # logits stored at every 8th pixel


def golden_tensors(out: dict[str, object], names: list[str], slices: list[str], data: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The small tensors a golden file holds (also what the test recomputes from ours)."""
    irrg, dsm, label = data
    logits, enc, dfm, grads = out["logits"], out["encoder"], out["dfm"], out["grads"]
    g = {
        "input_sums": torch.stack([irrg.double().sum(), dsm.double().sum(), label.double().sum()]),
        "logits_sub": logits[..., ::SUB, ::SUB].contiguous(),
        "logits_sums": torch.stack([logits.double().sum(), logits.double().abs().sum()]),
        "loss": out["loss"].reshape(1),
        "encoder_sub": enc[:, :, ::8, ::4, ::4].contiguous(),  # (M, B, 32, 4, 4)
        "encoder_sums": enc.double().flatten(1).sum(1),
        "dfm_sums": torch.stack([f.double().abs().sum() for f in dfm]),
        "dfm_1_32_sub": dfm[3][:, ::8].contiguous(),  # (B, 32, 8, 8)
        "grad_norms": torch.stack([grads[n].double().norm() for n in names]),
    }
    for i, n in enumerate(slices):
        g[f"grad_slice_{i}"] = grads[n].flatten()[:64].clone()
    return g


# ----------------------------------------------------------------------------- the official model

def _stub_missing_imports() -> None:
    """Stand-ins for imports the official modules make but that do not touch the computation."""
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:  # only trunc_normal_ (init, overwritten) and DropPath (rate 0: never built)
        layers = types.ModuleType("timm.models.layers")
        layers.trunc_normal_ = torch.nn.init.trunc_normal_
        layers.DropPath = lambda *a, **k: torch.nn.Identity()
        layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
        timm = types.ModuleType("timm")
        models = types.ModuleType("timm.models")
        timm.models, models.layers = models, layers
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    for name in ("cv2", "matplotlib", "matplotlib.pyplot"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    if not hasattr(sys.modules["matplotlib"], "pyplot"):
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]


def build_official(ssrs: Path, adapter: str) -> torch.nn.Module:
    """``UNetFormer`` of ``MFNet/UNetFormer_MMSAM.py``, unchanged, with a ViT-B at 256 px."""
    root = str(ssrs / "MFNet")
    if root not in sys.path:
        sys.path.insert(0, root)
    _stub_missing_imports()
    import MedSAM.models.sam as official_sam
    import UNetFormer_MMSAM as official

    ckpt = Path(tempfile.mkdtemp()) / "empty.pth"
    torch.save({}, ckpt)
    # the constructor calls sam_model_registry["vit_l"](args, checkpoint="weights/..."): ViT-B instead
    official.sam_model_registry = {"vit_l": lambda args, checkpoint=None: official_sam.build_sam_vit_b(args, checkpoint=str(ckpt))}
    argv = sys.argv
    sys.argv = ["UNetFormer_MMSAM", "-mod", OFFICIAL_MOD[adapter], "-image_size", str(IMG)]
    try:
        torch.manual_seed(0)
        model = official.UNetFormer(num_classes=NUM_CLASSES)
    finally:
        sys.argv = argv
    return model


def official_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers, once each, ``sam.image_encoder.`` written ``image_encoder.``."""
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[name.replace("sam.image_encoder.", "image_encoder.", 1)] = t
    return out


# ----------------------------------------------------------------------------- the key mapping (mmsam.interop.mfnet)

def rule_for(key: str, adapter: str) -> Rule | None:
    return _rule_for(key, adapter, MODALITIES)


def build_mapping(official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], adapter: str) -> dict[str, Rule]:
    try:
        return _build_mapping(official, ours, adapter, MODALITIES)
    except CheckpointError as e:
        raise SystemExit(str(e)) from None


def copy_into_official(official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], mapping: dict[str, Rule], tables: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, (src, fn) in mapping.items():
            value = tables[key] if key in tables else fn([ours[k] for k in src])
            if tuple(value.shape) != tuple(official[key].shape):
                raise SystemExit(f"{key}: official {tuple(official[key].shape)} vs mapped {tuple(value.shape)} from {src}")
            official[key].copy_(value)


def run_official(model: torch.nn.Module, irrg: torch.Tensor, dsm: torch.Tensor, label: torch.Tensor, trainable: set[str]) -> dict[str, object]:
    taps: dict[str, object] = {}
    hooks = [model.image_encoder.register_forward_hook(lambda m, i, o: taps.__setitem__("encoder", o))]
    hooks += [getattr(model, f"fusion{i}").register_forward_hook(lambda m, i, o, k=i: taps.__setitem__(f"fusion{k}", o)) for i in range(1, 5)]
    params = dict(official_tensors(model))
    for name, p in model.named_parameters():
        p.requires_grad_(name.replace("sam.image_encoder.", "image_encoder.", 1) in trainable)
    model.zero_grad(set_to_none=True)
    try:
        logits = model(irrg, dsm)
    finally:
        for h in hooks:
            h.remove()
    loss = F.cross_entropy(logits, label)
    loss.backward()
    x, y = taps["encoder"]
    return {
        "logits": logits.detach(),
        "loss": loss.detach(),
        "encoder": torch.stack([x.detach(), y.detach()]),
        "dfm": [taps[f"fusion{i}"].detach() for i in range(1, 5)],
        "grads": {k: params[k].grad for k in trainable},
    }


# ----------------------------------------------------------------------------- main

def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def compare(adapter: str, ssrs: Path, write_golden: bool, commit: str | None = None) -> dict[str, object]:
    torch.manual_seed(SEED)
    ours_model = build_ours(adapter)
    official_model = build_official(ssrs, adapter).eval()
    ours_sd = {**dict(ours_model.named_parameters()), **dict(ours_model.named_buffers())}
    official_sd = official_tensors(official_model)
    tables = official_size_tables(adapter)
    mapping = build_mapping(official_sd, ours_sd, adapter)
    copy_into_official(official_sd, ours_sd, mapping, tables)

    used = {k for src, _ in mapping.values() for k in src}
    unmapped_ours = sorted(k for k in ours_sd if k not in used and not k.endswith(("num_batches_tracked", "rel_index")))
    unused_official = [k for k in official_sd if k.startswith(UNUSED_OFFICIAL)]
    # trainable parameters: the official constructor's own choice (``'lora_' in name`` in the
    # image encoder; everything outside it), and ours mapped to the official names
    ctor_trainable = {k for k, t in official_sd.items() if isinstance(t, torch.nn.Parameter) and t.requires_grad}
    ours_train = set(trainable_names(ours_model))
    ours_train_official = {k for k, (src, _) in mapping.items() if all(s in ours_train for s in src)}
    assert all(any(s in ours_train for s in src) == all(s in ours_train for s in src) for src, _ in mapping.values())
    n = lambda keys: sum(official_sd[k].numel() for k in keys)  # noqa: E731
    count_ours = sum(p.numel() for p in ours_model.parameters() if p.requires_grad)
    ctor_used = {k for k in ctor_trainable if not k.startswith(UNUSED_OFFICIAL)}

    irrg, dsm, label = fixed_data()
    o = run_ours(ours_model, irrg, dsm, label)
    t = run_official(official_model, irrg, dsm, label, ours_train_official)
    gd = {k: maxdiff(t["grads"][k], fn([o["grads"][s] for s in src])) for k, (src, fn) in mapping.items() if k in ours_train_official}
    worst = max(gd, key=gd.get)
    num = sum(float((t["grads"][k].double() - fn([o["grads"][s] for s in src]).double()).pow(2).sum()) for k, (src, fn) in mapping.items() if k in gd)
    den = sum(float(t["grads"][k].double().pow(2).sum()) for k in gd)
    worst_rel = max(gd, key=lambda k: gd[k] / max(float(t["grads"][k].abs().max()), 1e-30))
    report = {
        "adapter": adapter,
        "official_mod": OFFICIAL_MOD[adapter],
        "mapped_official_tensors": len(mapping),
        "unused_official_tensors (SAM prompt encoder, mask decoder, pixel mean/std)": len(unused_official),
        "unmapped_ours": unmapped_ours,
        "trainable_ours": count_ours,
        "trainable_official_constructor_all": n(ctor_trainable),
        "trainable_official_constructor_without_prompt_encoder_mask_decoder": n(ctor_used),
        "official_constructor_vs_ours": {
            "only_official": n(ctor_used - ours_train_official), "only_ours": n(ours_train_official - ctor_used),
            "only_ours_examples": sorted(ours_train_official - ctor_used)[:3],
        },
        "trainable_ours_mapped_to_official": n(ours_train_official),
        "max|d| encoder": maxdiff(o["encoder"], t["encoder"]),
        "max|d| dfm": max(maxdiff(a, b) for a, b in zip(o["dfm"], t["dfm"])),
        "max|d| logits": maxdiff(o["logits"], t["logits"]),
        "max|logits|": float(t["logits"].abs().max()),
        "|d| loss": maxdiff(o["loss"], t["loss"]),
        "max|d| grads": gd[worst],
        "max|grad|": max(float(g.abs().max()) for g in t["grads"].values()),
        "max|d| grads at": worst,
        "max|grad| there": float(t["grads"][worst].abs().max()),
        "max relative |d| grads (per tensor, / its max|grad|)": gd[worst_rel] / float(t["grads"][worst_rel].abs().max()),
        "at": worst_rel,
        "relative L2 |d| of all gradients": (num / den) ** 0.5,
    }
    if write_golden:
        shapes = {k: list(official_sd[k].shape) for k in mapping}  # the official layout, for the import test
        write(adapter, ssrs, commit, o, t, mapping, ours_train, (irrg, dsm, label), report, shapes)
    return report


def write(adapter, ssrs, commit, ours_out, off_out, mapping, ours_train, data, report, official_shapes) -> None:
    from mmsam.testing import save_golden

    # official gradients in ours' names and layout (a fused qkv LoRA matrix split back into q and v)
    grads: dict[str, torch.Tensor] = {}
    for key, (src, fn) in mapping.items():
        if all(s in ours_train for s in src):
            g = off_out["grads"][key]
            if len(src) == 1:
                grads[src[0]] = g.reshape(ours_out["grads"][src[0]].shape)
            else:
                for s, part in zip(src, g.chunk(len(src), 0)):
                    grads[s] = part
    names = sorted(ours_train)
    assert set(grads) == set(names)
    off = dict(off_out, grads=grads)
    tensors = golden_tensors(off, names, GRAD_SLICES[adapter], data)
    commit = commit or subprocess.run(["git", "-C", str(ssrs), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {
        "official": "https://github.com/sstary/SSRS MFNet/UNetFormer_MMSAM.py, -mod " + OFFICIAL_MOD[adapter],
        "official_commit": commit or "unknown (not a git checkout)",
        "torch": torch.__version__,
        "command": f"python benchmarks/parity/mfnet.py --official <SSRS> --adapter {adapter} --write-golden",
        "seed": str(SEED),
        "grad_names": json.dumps(names),
        "grad_slices": json.dumps(GRAD_SLICES[adapter]),
        "measured": json.dumps({k: v for k, v in report.items() if k.startswith(("max", "|d|"))}),
        "official_shapes": json.dumps(official_shapes),
    }
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    path = GOLDEN_DIR / f"mfnet_{adapter}.safetensors"
    save_golden(path, tensors, meta)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} kB)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, type=Path, help="a checkout of sstary/SSRS (holding MFNet/)")
    ap.add_argument("--adapter", choices=["mm_adapter", "mm_lora", "both"], default="both")
    ap.add_argument("--write-golden", action="store_true")
    ap.add_argument("--official-commit", help="the SSRS commit, recorded in the golden files (default: git rev-parse HEAD in --official)")
    args = ap.parse_args(argv)
    for adapter in (["mm_adapter", "mm_lora"] if args.adapter == "both" else [args.adapter]):
        report = compare(adapter, args.official.resolve(), args.write_golden, args.official_commit)
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
