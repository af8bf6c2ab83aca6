"""Training-step time and peak memory of mmsam next to the papers' official code, side by side.

    python benchmarks/speed_vs_official.py --memorysam /path/to/MemorySAM --ssrs /path/to/SSRS \
        --autogluon /path/to/autogluon [--img-size 256] [--batch 1] [--repeats 5] [--threads 2]
        [--configs memorysam_t,memorysam_b+,mfnet_mm_adapter,mfnet_mm_lora,convlora] [--levers] [--profile]

The three paths are local checkouts of https://github.com/Chenfei-Liao/MemorySAM,
https://github.com/sstary/SSRS and https://github.com/autogluon/autogluon (put them outside this
repository; nothing of them is copied into mmsam). A configuration whose path is not given is
skipped. The official code imports packages mmsam does not need: ``pip install einops timm
transformers==4.38.2`` (SSRS MFNet: einops, timm; AutoGluon Conv-LoRA: transformers as AutoGluon pinned
it). An arm that cannot be built, or whose step fails (the official MFNet decoder fails at
64 and 128 px; 256 px runs), is reported in one line and the other arms go on.
The official code is built as ``benchmarks/parity/*.py`` build it (they check that the
same tensors give the same outputs; this script only times).

Per configuration, every *arm* (ours, official, the frozen-encoder floor, and with ``--levers``
variants of ours) runs in its own process (``multiprocessing`` spawn: separate peak memory, and
the official MemorySAM needs its vendored ``sam2`` package, which cannot share an interpreter with
the pip ``sam2`` mmsam uses). The coordinator asks the arms for one step each in turn, rotating
the order every round (interleaved A/B: load on a shared machine hits all arms alike), discards
``--warmup`` rounds and reports the median of ``--repeats``. A training step is
``zero_grad; forward; loss; backward; optimiser step`` at the same settings on both sides:

* **MemorySAM** (Hiera-T / Hiera-B+): 2 modalities, K = 25 class tokens, LoRA r 4 on q, v; loss
  OHEM CE + SPMM x 256², AdamW (official ``train_sam2_lora.py``; its ``semseg/losses.py`` OHEM and
  ``PrototypeSegmentation``). Trainable set on the official side = ours (LoRA, decoder without
  IoU / object-score heads, memory attention / encoder, loose SAM 2 tensors). The official script
  also turns on ``torch.autograd.set_detect_anomaly(True)`` globally; the official arm runs without
  it (the fair, faster baseline); ``--official-anomaly`` adds an arm as shipped.
* **MFNet** (ViT-B, MMAdapter = official ``-mod sam_adpt``, MMLoRA = ``-mod sam_lora``): IRRG + DSM,
  6 classes, CE, SGD(lr 0.01, momentum 0.9, wd 5e-4) as the official ``MFNet/train.py``; official
  trainable set = ours (the official constructor freezes the MMAdapter adapters; here they train
  on both sides).
* **Conv-LoRA layer**: a ViT-B fused qkv (768 -> 2304) on SAM's 14 x 14 windows
  (4 windows per 256 px image, M = 2 images per sample); official ``ConvLoRALinear``
  (``models/adaptation_layers.py``) vs ours, r 3, 8 experts, plus our plain LoRA (r 3) for the
  Conv-LoRA / LoRA cost; loss Σ y·w + balance, AdamW.
* **floor**: the frozen encoder (mmsam's backbone, default settings) forward under
  ``torch.inference_mode`` on the same M·B images (for the layer: the frozen Linear).

``CPU time`` is the step's process CPU time (all threads; less sensitive than wall time to other
jobs on a shared machine, which delay a process without adding to its CPU time). Peak memory is the process's high-water resident set (``VmHWM``), after imports and building;
``Δpeak`` is that peak minus the resident set just before the first step (activations, gradients,
optimiser state). Prints one table per configuration and the ratios ours / official, step / floor
and Δpeak / floor's Δpeak. ``--profile`` adds a ``torch.profiler`` table (top operators by self CPU
time) of one step of every arm. ``--levers`` adds arms of ours with one lever switched (SDPA in
SAM ViT attention instead of the official hand-written one; foreach / fused AdamW; channels_last inputs;
MemorySAM upsampling all K + 1 maps per frame as SAM 2's heads step does).
MemorySAM and MFNet always get the memory lever's arm, ``ours, grad checkpointing``
(activation checkpointing of the frozen encoder's blocks, ``set_grad_checkpointing``), and with
``--compiled`` ``ours, compiled`` (``torch.compile`` of each encoder block,
``mmsam.engine.compile.compile_encoder``, inductor's caches off). Each table is followed by every
arm's first (warm-up, left out of the median) step: for the compiled arm, that step minus the
median is the compile time.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
MEMSAM_MODALITIES = ["rgb", "depth"]
MFNET_MODALITIES = ["irrg", "dsm"]
K_MEMSAM, K_MFNET = 25, 6
CONVLORA = dict(r=3, alpha=32.0, num_experts=8)


def build_method(name: str, **kwargs: Any) -> torch.nn.Module:
    """An mmsam method by short name (sam_lora, mlesam, memorysam, mfnet, conv_lora_sam)."""
    from mmsam import methods

    classes = {"sam_lora": methods.SamLoRA, "mlesam": methods.MLESAM, "memorysam": methods.MemorySAM,
               "mfnet": methods.MFNet, "conv_lora_sam": methods.ConvLoRASAM}
    return classes[name](**kwargs)


def rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _import_parity(name: str) -> types.ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks" / "parity"))
    return __import__(name)


def _adamw(params: list[torch.nn.Parameter], variant: str = "default", lr: float = 6e-5) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (official ``semseg/optimizers.py``); ``variant``: default / foreach / fused."""
    wd = [p for p in params if p.dim() > 1]
    nwd = [p for p in params if p.dim() <= 1]
    groups = [{"params": wd}, {"params": nwd, "weight_decay": 0.0}]
    kw = {"foreach": True} if variant == "foreach" else {"fused": True} if variant == "fused" else {}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **kw)


def _memsam_data(spec: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, s = spec["batch"], spec["img_size"]
    images = [torch.randn(b, 3, s, s, generator=g) for _ in MEMSAM_MODALITIES]
    cells = torch.randint(0, K_MEMSAM, (b, s // 8, s // 8), generator=g)
    label = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    label[:, : s // 8, : s // 8] = 255
    return images, label


def _mfnet_data(spec: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, s = spec["batch"], spec["img_size"]
    return (torch.randn(b, 3, s, s, generator=g), torch.randn(b, s, s, generator=g),
            torch.randint(0, K_MFNET, (b, s, s), generator=g))


# ----------------------------------------------------------------------------- arms: each returns step() and info

def _apply_levers(model: torch.nn.Module, spec: dict) -> None:
    if spec.get("attention"):
        from mmsam.backbones.sam_attention import set_sam_attention

        set_sam_attention(model, spec["attention"])
    if spec.get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if spec.get("compile"):
        from torch._inductor import config as inductor_config

        from mmsam.engine.compile import compile_encoder

        inductor_config.force_disable_caches = True  # a cold start: the warm-up step pays the whole compilation
        compile_encoder(model, scope="blocks", device="cpu")


def arm_memsam_ours(spec: dict) -> tuple[Callable[[], None], dict]:
    from mmsam.losses.ohem_ce import OhemCrossEntropy
    from mmsam.methods import MemorySAM

    torch.manual_seed(0)
    model = MemorySAM(K_MEMSAM, MEMSAM_MODALITIES, backbone=spec["backbone"], img_size=spec["img_size"]).train()
    _apply_levers(model, spec)
    model.upsample_all = bool(spec.get("upsample_all"))  # True: SAM 2's own heads step (all K + 1 maps upsampled)
    images, label = _memsam_data(spec)
    if spec.get("channels_last"):
        images = [x.contiguous(memory_format=torch.channels_last) for x in images]
    batch = {"modalities": dict(zip(MEMSAM_MODALITIES, images)), "label": label}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _adamw(params, spec.get("optimizer", "default"))
    ohem = OhemCrossEntropy(ignore_index=255, thresh=0.7)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(batch)
        (ohem(out["logits"], label) + out["losses"]["proto"]).backward()
        opt.step()

    ids = {id(p) for p in params}  # named under SAM 2's own names, the official key map's side
    trainable = ["backbone.sam2_model." + n for n, p in model.backbone.sam2_model.named_parameters() if id(p) in ids]
    assert len(trainable) == len(params), "a trainable parameter lies outside SAM 2"
    return step, {"trainable": trainable, "n_trainable": sum(p.numel() for p in params)}


def arm_memsam_official(spec: dict) -> tuple[Callable[[], None], dict]:
    import ast
    import importlib.util

    import torch.nn.functional as F

    root = Path(spec["official"]).resolve()
    sys.path.insert(0, str(root / "semseg/models/sam2"))
    sys.modules.setdefault("icecream", types.SimpleNamespace(ic=lambda *a: a))  # imported, never used
    import sam2

    assert Path(sam2.__file__).resolve().is_relative_to(root), f"sam2 resolves to {sam2.__file__}, not the checkout"
    from sam2.build_sam import build_sam2
    from sam2.sam_lora_image_encoder_seg import LoRA_Sam

    # the interop key map is light (mmsam.errors + torch); it names the official tensors as ours
    from mmsam.interop.memorysam import official_to_ours

    torch.manual_seed(0)
    sam = build_sam2(f"{spec['backbone']}.yaml", None, device="cpu", mode="eval",
                     hydra_overrides_extra=[f"++model.image_size={spec['img_size']}"])
    model = LoRA_Sam(sam, 4).train()
    ours = set(spec["trainable"])
    for n, p in model.named_parameters():
        p.requires_grad_(official_to_ours(n) in ours)
    spec_l = importlib.util.spec_from_file_location("official_losses", root / "semseg/losses.py")
    losses = importlib.util.module_from_spec(spec_l)
    spec_l.loader.exec_module(losses)
    ohem = losses.OhemCrossEntropy(ignore_label=255)
    src = (root / "train_sam2_lora.py").read_text()
    node = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == "PrototypeSegmentation")
    ns = {"torch": torch, "F": F}
    exec(compile(ast.get_source_segment(src, node), "<PrototypeSegmentation>", "exec"), ns)
    proto = ns["PrototypeSegmentation"].__new__(ns["PrototypeSegmentation"])  # its __init__ puts the prototypes on 'cuda'
    proto.num_classes, proto.feature_dim, proto.global_prototypes = K_MEMSAM, 32, torch.zeros(K_MEMSAM, 32)
    images, label = _memsam_data(spec)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _adamw(params, "default")
    if spec.get("anomaly"):
        torch.autograd.set_detect_anomaly(True)  # as train_sam2_lora.py ships

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, feat = model(images, multimask_output=True)
        (ohem(logits, label) + proto.compute_loss(feat, label) * 256 * 256).backward()
        opt.step()

    return step, {"n_trainable": sum(p.numel() for p in params)}


def arm_mfnet_ours(spec: dict) -> tuple[Callable[[], None], dict]:
    import torch.nn.functional as F

    from mmsam.adapters import MMAdapterConfig, MMLoRAConfig

    torch.manual_seed(0)
    config = MMAdapterConfig() if spec["adapter"] == "mm_adapter" else MMLoRAConfig()
    model = build_method("mfnet", num_classes=K_MFNET, modalities=MFNET_MODALITIES, backbone="sam_vit_b",
                          img_size=spec["img_size"], adapter=config).train()
    _apply_levers(model, spec)
    irrg, dsm, label = _mfnet_data(spec)
    batch = {"modalities": {"irrg": irrg, "dsm": dsm.unsqueeze(1).repeat(1, 3, 1, 1)}}
    if spec.get("channels_last"):
        batch["modalities"] = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch["modalities"].items()}
    params = [p for p in model.parameters() if p.requires_grad]
    kw = {"foreach": True} if spec.get("optimizer") == "foreach" else {"fused": True} if spec.get("optimizer") == "fused" else {}
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch)["logits"], label).backward()
        opt.step()

    names = [n for n, _ in list(model.named_parameters()) + list(model.named_buffers())]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return step, {"trainable": trainable, "names": names, "n_trainable": sum(p.numel() for p in params)}


def arm_mfnet_official(spec: dict) -> tuple[Callable[[], None], dict]:
    import torch.nn.functional as F

    parity = _import_parity("mfnet")
    parity.IMG = spec["img_size"]
    from mmsam.interop.mfnet import build_mapping, official_tensors

    model = parity.build_official(Path(spec["official"]).resolve(), spec["adapter"]).train()
    off = official_tensors(dict(model.named_parameters()))
    ours = dict.fromkeys(spec["names"])
    mapping = build_mapping({**official_tensors(dict(model.named_buffers())), **off}, ours, spec["adapter"], MFNET_MODALITIES)
    train = set(spec["trainable"])
    off_train = {k for k, (src, _) in mapping.items() if all(s in train for s in src)}
    for name, p in model.named_parameters():
        p.requires_grad_(name.replace("sam.image_encoder.", "image_encoder.", 1) in off_train)
    irrg, dsm, label = _mfnet_data(spec)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)  # train.py: net.parameters()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(irrg, dsm), label).backward()
        opt.step()

    return step, {"n_trainable": sum(p.numel() for p in params)}


def _layer_input(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    windows = 4 * len(MFNET_MODALITIES) * spec["batch"]  # 256 px: a 16 x 16 grid padded to 2 x 2 windows of 14
    return torch.randn(windows, 14, 14, 768, generator=g), torch.randn(windows, 14, 14, 2304, generator=g)


def arm_layer_ours(spec: dict) -> tuple[Callable[[], None], dict]:
    from mmsam.adapters import ConvLoRAConfig, LoRAConfig
    from mmsam.adapters.conv_lora import ConvLoRALinear, collect_balance_losses
    from mmsam.adapters.lora import LoRALinear

    torch.manual_seed(0)
    base = torch.nn.Linear(768, 2304).requires_grad_(False)
    if spec["layer"] == "conv_lora":
        layer = ConvLoRALinear(base, ConvLoRAConfig(**CONVLORA))
    else:
        layer = LoRALinear(base, LoRAConfig(r=CONVLORA["r"], alpha=CONVLORA["alpha"]))
    layer.train()
    x, w = _layer_input(spec)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = _adamw(params, spec.get("optimizer", "default"))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = (layer(x) * w).sum()
        balance = collect_balance_losses(layer)
        (loss if balance is None else loss + balance).backward()
        opt.step()

    return step, {"n_trainable": sum(p.numel() for p in params)}


def arm_layer_official(spec: dict) -> tuple[Callable[[], None], dict]:
    parity = _import_parity("convlora")
    root, _ = parity.official_source(Path(spec["official"]).resolve())
    ag = parity.load_official(root)
    torch.manual_seed(0)
    layer = ag.layers.ConvLoRALinear(768, 2304, r=CONVLORA["r"], lora_alpha=CONVLORA["alpha"],
                                     conv_lora_expert_num=CONVLORA["num_experts"])
    layer.bias.requires_grad_(False)
    layer.train()
    x, w = _layer_input(spec)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = _adamw(params, "default")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        y, balance = layer(x)
        ((y * w).sum() + balance.sum()).backward()
        opt.step()

    return step, {"n_trainable": sum(p.numel() for p in params)}


def arm_floor(spec: dict) -> tuple[Callable[[], None], dict]:
    torch.manual_seed(0)
    if spec.get("layer"):
        layer = torch.nn.Linear(768, 2304).requires_grad_(False)
        x, _ = _layer_input(spec)
        run = lambda: layer(x)  # noqa: E731
    else:
        from mmsam.backbones import create_backbone

        extra = {"with_memory": False} if spec["backbone"].startswith("sam2") else {}
        backbone = create_backbone(spec["backbone"], img_size=spec["img_size"], **extra).eval().requires_grad_(False)
        s = spec["img_size"]
        x = torch.randn(2 * spec["batch"], 3, s, s, generator=torch.Generator().manual_seed(0))
        run = lambda: backbone(x)  # noqa: E731

    def step() -> None:
        with torch.inference_mode():
            run()

    return step, {"n_trainable": 0}


ARMS: dict[str, Callable[[dict], tuple[Callable[[], None], dict]]] = {
    "memsam_ours": arm_memsam_ours, "memsam_official": arm_memsam_official, "mfnet_ours": arm_mfnet_ours,
    "mfnet_official": arm_mfnet_official, "layer_ours": arm_layer_ours, "layer_official": arm_layer_official,
    "floor": arm_floor,
}


# ----------------------------------------------------------------------------- worker / coordinator

def worker(conn: Any, spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    try:
        step, info = ARMS[spec["arm"]](spec)
    except BaseException as e:  # report, do not hang the coordinator
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", {**info, "rss_built": rss_kib("VmRSS")}))
    while True:
        cmd = conn.recv()
        if cmd == "step":
            t, c = time.perf_counter(), time.process_time()
            try:
                step()
            except Exception as e:  # e.g. the official code refusing a size: one line, the other arms go on
                conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
                return
            conn.send((time.perf_counter() - t, time.process_time() - c))
        elif cmd == "profile":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            conn.send(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=spec.get("profile_rows", 12)))
        else:
            conn.send({"hwm": rss_kib("VmHWM")})
            return


def configs(args: argparse.Namespace) -> dict[str, list[tuple[str, dict]]]:
    """Configuration name -> [(arm label, spec)], in the order the arms are started."""
    common = {"img_size": args.img_size, "batch": args.batch, "threads": args.threads}
    out: dict[str, list[tuple[str, dict]]] = {}
    if args.memorysam:
        for short, bb in (("memorysam_t", "sam2_hiera_t"), ("memorysam_b+", "sam2_hiera_b+")):
            c = {**common, "backbone": bb}
            arms = [("ours", {**c, "arm": "memsam_ours"}), ("official", {**c, "arm": "memsam_official", "official": str(args.memorysam)}),
                    ("floor", {**c, "arm": "floor"})]
            if args.official_anomaly:
                arms.append(("official, anomaly on", {**c, "arm": "memsam_official", "official": str(args.memorysam), "anomaly": True}))
            arms.append(("ours, grad checkpointing", {**c, "arm": "memsam_ours", "grad_checkpointing": True}))
            if args.levers:
                arms += [("ours, foreach AdamW", {**c, "arm": "memsam_ours", "optimizer": "foreach"}),
                         ("ours, fused AdamW", {**c, "arm": "memsam_ours", "optimizer": "fused"}),
                         ("ours, channels_last", {**c, "arm": "memsam_ours", "channels_last": True}),
                         ("ours, all K + 1 maps upsampled", {**c, "arm": "memsam_ours", "upsample_all": True})]
            if args.compiled:
                arms.append(("ours, compiled", {**c, "arm": "memsam_ours", "compile": True}))
            out[short] = arms
    if args.ssrs:
        for adapter in ("mm_adapter", "mm_lora"):
            c = {**common, "adapter": adapter, "backbone": "sam_vit_b"}
            arms = [("ours", {**c, "arm": "mfnet_ours"}), ("official", {**c, "arm": "mfnet_official", "official": str(args.ssrs)}),
                    ("floor", {**c, "arm": "floor"})]
            arms.append(("ours, grad checkpointing", {**c, "arm": "mfnet_ours", "grad_checkpointing": True}))
            if args.levers:
                arms += [("ours, SDPA attention", {**c, "arm": "mfnet_ours", "attention": "sdpa"}),
                         ("ours, foreach SGD", {**c, "arm": "mfnet_ours", "optimizer": "foreach"}),
                         ("ours, channels_last", {**c, "arm": "mfnet_ours", "channels_last": True})]
            if args.compiled:
                arms.append(("ours, compiled", {**c, "arm": "mfnet_ours", "compile": True}))
            out[f"mfnet_{adapter}"] = arms
    if args.autogluon:
        c = {**common}
        arms = [("ours", {**c, "arm": "layer_ours", "layer": "conv_lora"}),
                ("official", {**c, "arm": "layer_official", "official": str(args.autogluon)}),
                ("floor", {**c, "arm": "floor", "layer": "linear"}),
                ("ours, plain LoRA", {**c, "arm": "layer_ours", "layer": "lora"})]
        if args.levers:
            arms.append(("ours, foreach AdamW", {**c, "arm": "layer_ours", "layer": "conv_lora", "optimizer": "foreach"}))
        out["convlora"] = arms
    return out


def run_config(name: str, arms: list[tuple[str, dict]], args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    procs: dict[str, tuple[Any, Any]] = {}
    info: dict[str, dict] = {}
    shared: dict[str, Any] = {}
    try:
        for label, spec in arms:  # started one after the other: ours first, its trainable names go to the official arm
            spec = {**spec, **{k: v for k, v in shared.items() if k not in spec}}
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker, args=(child, spec), daemon=True)
            p.start()
            kind, payload = parent.recv()
            if kind == "error":
                print(f"[{name}] {label}: could not build: {payload}", flush=True)
                p.join()
                continue
            procs[label] = (p, parent)
            info[label] = payload
            for k in ("trainable", "names"):
                if k in payload and label == "ours":
                    shared[k] = payload[k]
        labels = list(procs)
        times: dict[str, list[float]] = {k: [] for k in labels}
        cpu: dict[str, list[float]] = {k: [] for k in labels}
        first: dict[str, float] = {}
        failed: set[str] = set()
        for r in range(args.warmup + args.repeats):
            order = labels[r % len(labels):] + labels[: r % len(labels)]  # rotate: no arm always runs first
            for label in order:
                procs[label][1].send("step")
                dt, dc = procs[label][1].recv()
                if dt == "error":
                    print(f"[{name}] {label}: its step failed: {dc}", flush=True)
                    failed.add(label)
                    labels.remove(label)
                    continue
                if r >= args.warmup:
                    times[label].append(dt)
                    cpu[label].append(dc)
                elif r == 0:
                    first[label] = dt
        for label in failed:
            times.pop(label), cpu.pop(label), first.pop(label, None)
        profiles = {}
        if args.profile:
            for label in labels:
                procs[label][1].send("profile")
                profiles[label] = procs[label][1].recv()
        for label in labels:
            procs[label][1].send("done")
            info[label].update(procs[label][1].recv())
    finally:
        for p, _ in procs.values():
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    report(name, labels, times, cpu, info, args)
    if first:
        print("first (warm-up) step (s): " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))
    for label, table in profiles.items():
        print(f"\nprofile [{name}] {label} (one step, self CPU time):\n{table}")


def report(name: str, labels: list[str], times: dict[str, list[float]], cpu: dict[str, list[float]], info: dict[str, dict],
           args: argparse.Namespace) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    mib = lambda kib: kib / 1024  # noqa: E731
    delta = {k: mib(info[k]["hwm"] - info[k]["rss_built"]) for k in labels}
    print(f"\n### {name}: {args.img_size} px, batch {args.batch}, {args.threads} threads, median of {args.repeats} "
          f"after {args.warmup} warm-up (spread = min-max)")
    print("| arm | step (s) | spread | CPU time (s) | trainable | peak RSS (MiB) | Δpeak (MiB) | step / floor | Δpeak / floor Δpeak |")
    print("|---|---|---|---|---|---|---|---|---|")
    fl = "floor" if "floor" in med else None
    for k in labels:
        sf = f"{med[k] / med[fl]:.2f}" if fl else "–"
        mf = f"{delta[k] / max(delta[fl], 1e-9):.2f}" if fl else "–"
        print(f"| {k} | {med[k]:.3f} | {min(times[k]):.3f}–{max(times[k]):.3f} | {cpu_med[k]:.2f} | {info[k]['n_trainable']:,} | "
              f"{mib(info[k]['hwm']):.0f} | {delta[k]:.0f} | {sf} | {mf} |")
    if "ours" in med and "official" in med:
        print(f"ours / official: step {med['ours'] / med['official']:.2f} (fastest {low['ours'] / low['official']:.2f}, "
              f"CPU time {cpu_med['ours'] / cpu_med['official']:.2f}), peak RSS "
              f"{info['ours']['hwm'] / info['official']['hwm']:.2f}, Δpeak {delta['ours'] / max(delta['official'], 1e-9):.2f}")
    for k in labels:
        if k.startswith("ours,") or k.startswith("official,"):
            base = "ours" if k.startswith("ours") else "official"
            print(f"{k} / {base}: step {med[k] / med[base]:.2f} (fastest {low[k] / low[base]:.2f}, "
                  f"CPU time {cpu_med[k] / cpu_med[base]:.2f}), Δpeak {delta[k] / max(delta[base], 1e-9):.2f}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memorysam", type=Path, help="checkout of Chenfei-Liao/MemorySAM")
    ap.add_argument("--ssrs", type=Path, help="checkout of sstary/SSRS (holding MFNet/)")
    ap.add_argument("--autogluon", type=Path, help="checkout of autogluon/autogluon")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--configs", help="comma-separated subset of: memorysam_t, memorysam_b+, mfnet_mm_adapter, mfnet_mm_lora, convlora")
    ap.add_argument("--levers", action="store_true", help="add arms of ours with one lever switched")
    ap.add_argument("--compiled", action="store_true",
                    help="add an arm of ours with torch.compile per encoder block (its warm-up compiles for minutes on a CPU)")
    ap.add_argument("--official-anomaly", action="store_true", help="add the official MemorySAM arm with anomaly detection on, as shipped")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step per arm")
    args = ap.parse_args(argv)
    checks = {"memorysam": "semseg/models/sam2/sam2/sam_lora_image_encoder_seg.py", "ssrs": "MFNet/UNetFormer_MMSAM.py",
              "autogluon": "multimodal/src/autogluon/multimodal/models/adaptation_layers.py"}
    for key, rel in checks.items():
        path = getattr(args, key)
        if path is not None and not (path / rel).is_file():
            ap.error(f"--{key} {path}: not a checkout of the official code (no {rel})")
    if not (args.memorysam or args.ssrs or args.autogluon):
        ap.error("give at least one of --memorysam, --ssrs, --autogluon")
    todo = configs(args)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = sorted(set(wanted) - set(todo))
        if unknown:
            ap.error(f"--configs: {unknown} unknown or without its checkout; available: {sorted(todo)}")
        todo = {k: todo[k] for k in wanted}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    for name, arms in todo.items():
        run_config(name, arms, args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
