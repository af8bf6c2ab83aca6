"""Parity of ``mmsam.methods.MemorySAM`` with the official MemorySAM code (``LoRA_Sam``).

    python benchmarks/parity/memorysam.py --official /path/to/MemorySAM [--backbone sam2_hiera_t]
        [--img-size 64] [--classes 4] [--batch 1] [--seed 0] [--write-golden]

``--official`` is a local checkout of https://github.com/Chenfei-Liao/MemorySAM (only
``semseg/models/sam2/``, ``semseg/losses.py`` and ``train_sam2_lora.py`` are read). Nothing of it is
copied into mmsam: the official side runs in a subprocess whose ``sam2`` package is the official
vendored copy (``semseg/models/sam2/sam2``), as in the official environment; mmsam uses the pip
``sam2`` package, and the two cannot share one interpreter.

What it does:

1. builds our MemorySAM (shared LoRA r 4 on q/v with ``slice_width: in``, K-class decoder, memory
   attention / encoder trained, object-score gate on, SPMM ``code`` form) on the real official
   Hiera config (random weights; no checkpoint is needed) and fills it with
   ``mmsam.testing.fill_deterministic(model, seed)`` (LoRA B factors included, so the LoRA path is
   exercised);
2. the subprocess builds the official model exactly as ``train_sam2_lora.py`` does
   (``build_sam2("<backbone>.yaml")`` + ``LoRA_Sam(sam2, 4)``), with two substitutions that the
   official code hard-codes for its own runs: the number of class tokens (the literal
   ``num_multimask_outputs=25`` of DELIVER in ``SAM2Base._build_sam_heads``; here ``--classes``,
   so golden files stay small) and the number of modalities (``m = 2`` in ``LoRA_Sam.forward``;
   for M = 3 that line is recompiled as ``m = len(batched_input)``, nothing else); plus the image
   size (hydra override ``++model.image_size``), which the official config exposes;
3. copies our tensors into the official model through an explicit key map (``official_to_ours``),
   asserting that every official tensor (parameters and buffers) is mapped, that every tensor of
   our SAM 2 model is used, and that shapes agree;
4. runs both in training mode with every dropout set to 0 (memory attention's 0.1 would make the
   two sides draw different masks) on ``mmsam.testing.fixed_input`` for M = 2 and 3 modalities,
   and compares the logits, the OHEM CE (official ``semseg/losses.py``), the SPMM loss (the official
   ``PrototypeSegmentation`` of ``train_sam2_lora.py`` × 256 × 256, from zero prototypes) and the
   gradients of our trainable parameter set (LoRA, decoder, memory attention / encoder, loose SAM 2
   tensors) of their sum;
5. with ``--write-golden``: ``tests/golden/memorysam_<backbone>.safetensors`` (inputs, label, the
   official logits and losses; metadata: official commit, command, our constructor args, the
   measured differences), read by ``tests/unit/test_golden_memorysam.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from mmsam.interop.memorysam import official_to_ours  # noqa: E402  (light: mmsam.errors and torch only)

MODALITIES = ["rgb", "depth", "event"]  # frame order; M = 2 uses the first two
LORA_RANK = 4  # train_sam2_lora.py: LoRA_Sam(sam2, 4)
REPO = Path(__file__).resolve().parents[2]

# ---- shared helpers (both processes) -----------------------------------------------------


def no_dropout(module: nn.Module) -> None:
    """Training mode without randomness: nn.Dropout p = 0, SAM 2 attention ``dropout_p`` = 0."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0


def make_inputs(batch: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(3, B, 3, S, S)`` (modality outermost) and a label ``(B, S, S)`` with an ignored patch."""
    from mmsam.testing import fixed_input

    x = fixed_input((len(MODALITIES), batch, 3, size, size), seed, name="memorysam_parity_images")
    g = torch.Generator().manual_seed(seed)
    # blocky labels (8 x 8 cells) so the stride-4 SPMM features see every class in several cells
    cells = torch.randint(0, classes, (batch, size // 8, size // 8), generator=g)
    label = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    label[:, : size // 8, : size // 8] = 255  # ignored pixels (OHEM and SPMM skip them)
    return x, label


# ---- the official side (subprocess) -------------------------------------------------------


def _official_worker(workdir: Path) -> None:
    import ast
    import importlib.util
    import inspect
    import textwrap
    import types

    import torch.nn.functional as F

    job = torch.load(workdir / "job.pt")
    root = Path(job["official"]).resolve()
    sys.path.insert(0, str(root / "semseg/models/sam2"))
    sys.modules.setdefault("icecream", types.SimpleNamespace(ic=lambda *a: a))  # imported, never used
    import sam2  # the official vendored package

    assert Path(sam2.__file__).resolve().is_relative_to(root), f"sam2 resolves to {sam2.__file__}, not the checkout"
    import sam2.modeling.sam2_base as sam2_base

    k = job["classes"]
    src = inspect.getsource(sam2_base.SAM2Base._build_sam_heads)
    assert src.count("num_multimask_outputs=25") == 1, "the official decoder no longer hard-codes 25 tokens"
    official_decoder = sam2_base.MaskDecoder
    sam2_base.MaskDecoder = lambda **kw: official_decoder(**{**kw, "num_multimask_outputs": k})

    from sam2.build_sam import build_sam2
    from sam2.sam_lora_image_encoder_seg import LoRA_Sam

    sam = build_sam2(f"{job['backbone']}.yaml", None, device="cpu", mode="eval",
                     hydra_overrides_extra=[f"++model.image_size={job['img_size']}"])
    model = LoRA_Sam(sam, LORA_RANK)
    # LoRA_Sam.forward hard-codes m = 2 modalities; recompile it with m = len(batched_input) for M = 3
    fsrc = textwrap.dedent(inspect.getsource(LoRA_Sam.forward))
    assert fsrc.count("m = 2\n") == 1
    ns: dict = {}
    exec(compile(fsrc.replace("m = 2\n", "m = len(batched_input)\n"), "<LoRA_Sam.forward, m = M>", "exec"),
         vars(sys.modules[LoRA_Sam.__module__]), ns)
    forward_m = types.MethodType(ns["forward"], model)

    # the official losses: semseg/losses.py and train_sam2_lora.py's PrototypeSegmentation
    spec = importlib.util.spec_from_file_location("official_losses", root / "semseg/losses.py")
    losses = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(losses)
    ohem = losses.OhemCrossEntropy(ignore_label=255)
    train_src = (root / "train_sam2_lora.py").read_text()
    cls_node = next(n for n in ast.parse(train_src).body
                    if isinstance(n, ast.ClassDef) and n.name == "PrototypeSegmentation")
    pns = {"torch": torch, "F": F}
    exec(compile(ast.get_source_segment(train_src, cls_node), "<PrototypeSegmentation>", "exec"), pns)
    proto_cls = pns["PrototypeSegmentation"]

    # our tensors into the official model, every key accounted for
    ours = job["state_dict"]
    theirs = model.state_dict()
    used = set()
    with torch.no_grad():
        for name, t in theirs.items():
            o = official_to_ours(name)
            assert o in ours, f"official {name} -> {o}: not in our state dict"
            assert ours[o].shape == t.shape, f"{name}: official {tuple(t.shape)} vs ours {tuple(ours[o].shape)}"
            t.copy_(ours[o])
            used.add(o)
    unused = sorted(set(ours) - used)
    assert not unused, f"our tensors with no official counterpart: {unused[:10]}"

    model.train()
    no_dropout(model)
    for p in model.parameters():
        p.requires_grad_(True)  # gradients of everything; the caller compares our trainable set
    x, label = job["images"], job["label"]
    result = {"mapped": len(theirs)}
    for m in job["ms"]:
        model.zero_grad(set_to_none=True)
        images = [x[i] for i in range(m)]
        logits, feat = (model(images, multimask_output=True) if m == 2 else forward_m(images, multimask_output=True))
        proto = proto_cls.__new__(proto_cls)  # its __init__ puts the zero prototypes on 'cuda'
        proto.num_classes, proto.feature_dim = k, feat.shape[1]
        proto.global_prototypes = torch.zeros(k, feat.shape[1])
        l_ohem = ohem(logits, label)
        l_proto = proto.compute_loss(feat, label) * 256 * 256  # train_sam2_lora.py, line 234
        (l_ohem + l_proto).backward()
        grads = {official_to_ours(n): p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        result[m] = {"logits": logits.detach(), "ohem": l_ohem.detach(), "proto": l_proto.detach(), "grads": grads}
    torch.save(result, workdir / "result.pt")


def run_official(official: Path, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        torch.save(job, Path(d) / "job.pt")
        env = {**os.environ, "PYTHONPATH": ""}  # the official side must import its own sam2, not pip's
        subprocess.run([sys.executable, __file__, "--_worker", d], check=True, env=env, cwd=d)
        return torch.load(Path(d) / "result.pt")


# ---- our side --------------------------------------------------------------------------------


def init_args(args: argparse.Namespace) -> dict:
    """Our constructor args (stored in the golden file's metadata)."""
    return {
        "num_classes": args.classes,
        "modalities": MODALITIES,
        "backbone": args.backbone,
        "img_size": args.img_size,
        "train_memory": True,
        "object_score_gate": True,
        "spmm": True,
        "spmm_momentum": 0.2,
        "spmm_weight": 1.0,
        "spmm_form": "code",
    }


def fill_pe_buffer(model: nn.Module, seed: int) -> None:
    """``fill_deterministic`` leaves buffers other than BatchNorm statistics alone; the prompt
    encoder's random Fourier matrix (``positional_encoding_gaussian_matrix``, N(0, 1) at
    construction) would then depend on torch's global RNG. Draw it from the seed and its name."""
    from mmsam.testing import fixed_input

    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("positional_encoding_gaussian_matrix"):
                b.copy_(fixed_input(tuple(b.shape), seed, name=name))


def build_ours(kwargs: dict, seed: int) -> nn.Module:
    from mmsam.methods import MemorySAM
    from mmsam.testing import fill_deterministic

    model = MemorySAM(**kwargs)  # adapter=None: rank 4 on q and v, scale 1, slice_width "in"
    fill_deterministic(model, seed)
    fill_pe_buffer(model, seed)
    model.train()
    no_dropout(model)
    return model


def run_ours(model: nn.Module, x: torch.Tensor, label: torch.Tensor, m: int) -> dict:
    from mmsam.losses.ohem_ce import OhemCrossEntropy

    model.spmm.prototypes.zero_()
    model.zero_grad(set_to_none=True)
    out = model({"modalities": {n: x[i] for i, n in enumerate(MODALITIES[:m])}, "label": label})
    l_ohem = OhemCrossEntropy(ignore_index=255, thresh=0.7)(out["logits"], label)
    l_proto = out["losses"]["proto"]
    (l_ohem + l_proto).backward()
    return {"logits": out["logits"].detach(), "ohem": l_ohem.detach(), "proto": l_proto.detach(),
            "object_scores": {k: v.detach() for k, v in out["object_scores"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, help="local checkout of Chenfei-Liao/MemorySAM")
    ap.add_argument("--backbone", default="sam2_hiera_t",
                    choices=["sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l"])
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=4, help="K (the official code hard-codes 25, DELIVER)")
    ap.add_argument("--batch", type=int, default=1)
    # seed 3: the (frozen, random) object-score head scores every frame > 0 (+0.48, +0.43, +0.42 on
    # Hiera-T at 64 px), so no frame is blanked by the -1024 gate and all logits carry information
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--write-golden", action="store_true")
    ap.add_argument("--official-commit", help="commit of the checkout, for the golden file's metadata "
                    "(default: git rev-parse HEAD in --official)")
    ap.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker is not None:
        _official_worker(args._worker)
        return
    if args.official is None:
        ap.error("--official is required")
    official = args.official.resolve()
    if not (official / "semseg/models/sam2/sam2/sam_lora_image_encoder_seg.py").is_file():
        ap.error(f"{official} is not a MemorySAM checkout (no semseg/models/sam2/sam2/sam_lora_image_encoder_seg.py)")

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    kwargs = init_args(args)
    model = build_ours(kwargs, args.seed)
    x, label = make_inputs(args.batch, args.img_size, args.classes, args.seed)
    ms = [2, 3]
    prefix = "backbone.sam2_model."
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}
    theirs = run_official(official, {"official": str(official), "backbone": args.backbone, "img_size": args.img_size,
                                     "classes": args.classes, "state_dict": sd, "images": x, "label": label, "ms": ms})
    # our trainable parameters under their SAM 2 state-dict names
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    our_params = {prefix + n: p for n, p in model.backbone.sam2_model.named_parameters() if id(p) in trainable}
    assert len(our_params) == len(trainable), "a trainable parameter lies outside SAM 2"

    print(f"MemorySAM parity: {args.backbone}, {args.img_size} px, K = {args.classes}, B = {args.batch}, "
          f"seed {args.seed}; {theirs['mapped']} official tensors mapped; "
          f"{sum(p.numel() for p in our_params.values()):,} trainable parameters ({len(our_params)} tensors)")
    print("| M | logits max abs diff | max abs logit | OHEM official | OHEM abs diff | SPMM official | SPMM abs diff "
          "| grads max abs diff | max abs grad | object scores (ours) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    report, golden = {}, {"images": x, "label": label.to(torch.uint8)}
    for m in ms:
        ours = run_ours(model, x, label, m)
        off = theirs[m]
        d_logits = (ours["logits"] - off["logits"]).abs().max().item()
        gdiff, gmax, missing = 0.0, 0.0, []
        for name, p in our_params.items():
            g_off = off["grads"].get(name)
            if p.grad is None:
                if g_off is not None and g_off.abs().max() > 0:
                    missing.append(name)
                continue
            if g_off is None:
                g_off = torch.zeros_like(p.grad)
            gdiff = max(gdiff, (p.grad - g_off).abs().max().item())
            gmax = max(gmax, p.grad.abs().max().item())
        if missing:
            raise AssertionError(f"official gradients where ours have none: {missing}")
        scores = ", ".join(f"{k} {v.flatten()[0].item():+.3f}" for k, v in ours["object_scores"].items())
        d_ohem, d_proto = abs(ours["ohem"] - off["ohem"]).item(), abs(ours["proto"] - off["proto"]).item()
        print(f"| {m} | {d_logits:.1e} | {off['logits'].abs().max().item():.3g} | {off['ohem'].item():.7f} | "
              f"{d_ohem:.1e} | {off['proto'].item():.7f} | {d_proto:.1e} | {gdiff:.1e} | {gmax:.3g} | {scores} |")
        report[m] = {"logits": d_logits, "ohem": d_ohem, "proto": d_proto, "grads": gdiff}
        golden.update({f"logits_m{m}": off["logits"], f"ohem_m{m}": off["ohem"].reshape(1),
                       f"proto_m{m}": off["proto"].reshape(1)})
    if args.write_golden:
        from mmsam.testing import save_golden

        commit = args.official_commit
        if commit is None:
            r = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True)
            commit = r.stdout.strip() if r.returncode == 0 else "unknown"
        command = (f"python benchmarks/parity/memorysam.py --official <MemorySAM checkout at {commit}> "
                   f"--backbone {args.backbone} --img-size {args.img_size} --classes {args.classes} "
                   f"--batch {args.batch} --seed {args.seed} --write-golden")
        out = REPO / "tests/golden" / f"memorysam_{args.backbone}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_golden(out, golden, {
            "official_repo": "https://github.com/Chenfei-Liao/MemorySAM",
            "official_commit": commit,
            "command": command,
            "init_args": json.dumps(kwargs),
            "seed": str(args.seed),
            "ms": json.dumps(ms),
            "max_abs_diff": json.dumps(report),
            "torch": torch.__version__,
        })
        print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size / 1024:.0f} kB), official commit {commit}")


if __name__ == "__main__":
    main()
