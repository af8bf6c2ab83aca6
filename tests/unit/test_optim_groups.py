"""Weight-decay groups and the poly horizon (official MemorySAM / AutoGluon optimisers)."""
from __future__ import annotations

import torch
from torch import nn

from mmsam.engine.task import param_groups_with_decay
from mmsam.engine.schedule import warmup_poly


def test_no_decay_1d_splits_biases_and_norms() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups_with_decay({"adapters": list(m.parameters())}, 0.01, no_decay_1d=True)
    by_name = {g["name"]: g for g in groups}
    assert [p.shape for p in by_name["adapters"]["params"]] == [torch.Size([4, 4])]
    assert len(by_name["adapters_no_decay"]["params"]) == 3 and by_name["adapters_no_decay"]["weight_decay"] == 0.0
    opt = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    plain = param_groups_with_decay({"adapters": list(m.parameters())}, 0.01)
    assert len(plain) == 1 and len(plain[0]["params"]) == 4


def test_poly_over_extra_epoch_does_not_reach_zero() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    # 10 epochs of 10 iterations decayed over 11 epochs, as MemorySAM's train_mm.py
    sched = warmup_poly(opt, total_steps=110, warmup_steps=0, power=0.9)
    for _ in range(99):
        opt.step(); sched.step()
    assert abs(opt.param_groups[0]["lr"] - (1 - 99 / 110) ** 0.9) < 1e-12
