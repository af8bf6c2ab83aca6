"""MemorySAM's semantic prototype memory: hand-made values, training-only, checkpoints, DDP."""
from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from mmsam.engine.schedule import WarmupPoly
from mmsam.engine.task import SegmentationTask
from mmsam.losses.prototype import CODE_SCALE, SemanticPrototypeMemory
from mmsam.methods import MemorySAM

MODS = ["rgb", "depth"]


def _example():
    # two channels on a 2x2 map; labels: class 0 on the top row, class 1 bottom-left, ignored bottom-right
    feats = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [4.0, 0.0]]]])
    labels = torch.tensor([[[0, 0], [1, 255]]])
    return feats, labels


def test_clean_form_prototypes_update_and_loss_by_hand():
    spmm = SemanticPrototypeMemory(3, 2, momentum=0.2, form="clean")
    feats, labels = _example()
    p = torch.tensor([[2.0, 2.0], [5.0, 4.0], [0.0, 0.0]])  # class means; class 2 absent -> 0
    loss = spmm(feats, labels)
    assert torch.allclose(spmm.prototypes, 0.2 * p)
    # the loss is taken after the update: mean((P - 0.2 P)^2) over K x C
    assert torch.isclose(loss, (0.8 * p).pow(2).mean())
    # second batch: G <- 0.8 G + 0.2 P2
    feats2 = feats * 2
    loss2 = spmm(feats2, labels)
    g2 = 0.8 * 0.2 * p + 0.2 * (2 * p)
    assert torch.allclose(spmm.prototypes, g2)
    assert torch.isclose(loss2, (2 * p - g2).pow(2).mean())


def test_code_form_divides_by_the_count_twice_and_scales_by_65536():
    spmm = SemanticPrototypeMemory(3, 2, momentum=0.2, weight=0.5, form="code")
    feats, labels = _example()
    p = torch.tensor([[4.0 / 4, 4.0 / 4], [5.0, 4.0], [0.0, 0.0]])  # sums / n^2 (n = 2, 1)
    loss = spmm(feats, labels)
    assert torch.allclose(spmm.prototypes, 0.2 * p)
    assert CODE_SCALE == 65536
    assert torch.isclose(loss, 0.5 * 65536 * (0.8 * p).pow(2).mean())


def test_labels_are_nearest_resized_to_the_feature_size():
    spmm = SemanticPrototypeMemory(2, 1, momentum=1.0, form="clean")
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    labels = torch.tensor([[[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1]]])  # 4x4 -> 2x2 picks [0,1;1,0]
    spmm(feats, labels)
    assert torch.allclose(spmm.prototypes, torch.tensor([[2.5], [2.5]]))
    labels[0, 0, 0] = 1
    spmm(feats, labels)
    assert torch.allclose(spmm.prototypes, torch.tensor([[4.0], [2.0]]))


def test_loss_gradient_reaches_the_features_only_through_the_current_prototypes():
    spmm = SemanticPrototypeMemory(3, 2, form="clean")
    feats, labels = _example()
    feats.requires_grad_(True)
    spmm(feats, labels).backward()
    assert feats.grad is not None and feats.grad[0, :, 1, 1].abs().sum() == 0  # the ignored pixel
    assert not spmm.prototypes.requires_grad


def _model(spmm: bool, **kw) -> MemorySAM:
    torch.manual_seed(0)
    return MemorySAM(4, MODS, backbone="sam2_hiera_micro", img_size=64, spmm=spmm, object_score_gate=False, **kw)


def _batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"modalities": {m: torch.randn(b, 3, 64, 64, generator=g) for m in MODS},
            "present": {m: torch.ones(b, dtype=torch.bool) for m in MODS},
            "label": torch.randint(0, 4, (b, 64, 64), generator=g)}


def test_spmm_is_training_only_and_leaves_inference_unchanged(monkeypatch):
    on, off = _model(True), _model(False)
    off.load_state_dict(on.state_dict(), strict=False)  # same weights; `off` has no prototype buffer
    on.eval(), off.eval()

    def boom(*a, **k):
        raise AssertionError("SPMM ran in eval mode")

    monkeypatch.setattr(on.spmm, "forward", boom)
    with torch.no_grad():
        a, b = on(_batch()), off(_batch())
    assert torch.equal(a["logits"], b["logits"]) and "losses" not in a
    monkeypatch.undo()
    assert on.spmm.prototypes.abs().sum() == 0
    on.train()
    out = on(_batch())
    assert out["losses"]["proto"].requires_grad and on.spmm.prototypes.abs().sum() > 0
    out["losses"]["proto"].backward()
    # the loss trains conv_s0 (the 32-channel projection) and the shared LoRA through it
    assert on.decoder.conv_s0.weight.grad.abs().sum() > 0
    assert "losses" not in _model(False).train()(_batch())


def test_spmm_features_are_the_mean_over_present_modalities():
    m = _model(True, spmm_form="clean", spmm_momentum=1.0).train()
    batch = _batch(b=1)
    batch["present"]["depth"] = torch.tensor([False])
    m(batch)
    with_absent = m.spmm.prototypes.clone()
    m(batch | {"modalities": {"rgb": batch["modalities"]["rgb"]}, "present": {"rgb": torch.tensor([True])}})
    assert torch.allclose(m.spmm.prototypes, with_absent, atol=1e-6)


# ---- a Lightning checkpoint round trip -----------------------------------------------------
def _items(n=4):
    g = torch.Generator().manual_seed(1)
    return [{"modalities": {m: torch.randn(3, 64, 64, generator=g) for m in MODS},
             "present": {m: torch.tensor(True) for m in MODS},
             "label": torch.randint(0, 4, (64, 64), generator=g),
             "meta": {"id": str(i), "condition": "", "case": ""}} for i in range(n)]


class _RecordAtStart(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.prototypes = pl_module.method.spmm.prototypes.clone()


def _trainer(steps, **kw):
    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def test_prototypes_survive_a_checkpoint_and_resume(tmp_path):
    loader = DataLoader(_items(), batch_size=2)
    task = SegmentationTask(lambda k, mods: _model(True), num_classes=4, modalities=MODS, lr_scheduler=partial(WarmupPoly, warmup_epochs=0))
    trainer = _trainer(2)
    trainer.fit(task, train_dataloaders=loader)
    saved = task.method.spmm.prototypes.clone()
    assert saved.abs().sum() > 0
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(state["state_dict"]["method.spmm.prototypes"], saved)

    fresh = SegmentationTask(lambda k, mods: _model(True), num_classes=4, modalities=MODS, lr_scheduler=partial(WarmupPoly, warmup_epochs=0))
    assert fresh.method.spmm.prototypes.abs().sum() == 0
    rec = _RecordAtStart()
    _trainer(4, callbacks=[rec]).fit(fresh, train_dataloaders=loader, ckpt_path=tmp_path / "last.ckpt")
    assert torch.equal(rec.prototypes, saved)  # restored before training goes on
    assert not torch.equal(fresh.method.spmm.prototypes, saved)  # and updated by the later steps


# ---- DDP: the memory stays identical across processes ---------------------------------------
def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        feats, labels = _example()
        for form in ("clean", "code"):
            spmm = SemanticPrototypeMemory(3, 2, momentum=0.5, form=form)
            spmm(feats * (rank + 1), labels if rank == 0 else torch.zeros_like(labels))
            queue.put((rank, form, spmm.prototypes.clone()))
    finally:
        dist.destroy_process_group()


def test_ddp_processes_keep_the_same_global_prototypes():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {(rank, form): protos for rank, form, protos in (queue.get(timeout=120) for _ in range(4))}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    feats, labels = _example()
    for form in ("clean", "code"):
        assert torch.equal(results[0, form], results[1, form])
        one = SemanticPrototypeMemory(3, 2, form=form)
        s0, n0 = one.class_sums(feats, labels)
        s1, n1 = one.class_sums(feats * 2, torch.zeros_like(labels))
        if form == "clean":  # the class means over both processes' pixels
            expected = (s0 + s1) / (n0 + n1).clamp(min=1)[:, None]
        else:  # the mean of the processes' prototypes (the code's per-process scale)
            expected = (one.current_prototypes(s0, n0) + one.current_prototypes(s1, n1)) / 2
        assert torch.allclose(results[0, form], 0.5 * expected), form
