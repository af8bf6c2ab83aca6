"""Weight-decay groups (official MemorySAM / AutoGluon optimisers: no decay on 1-D tensors)."""
from __future__ import annotations

import torch
from torch import nn

from mmsam.engine.task import param_groups_with_decay


def test_no_decay_1d_splits_biases_and_norms() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups_with_decay({"adapters": list(m.parameters())}, no_decay_1d=True)
    by_name = {g["name"]: g for g in groups}
    assert [p.shape for p in by_name["adapters"]["params"]] == [torch.Size([4, 4])]
    assert len(by_name["adapters_no_decay"]["params"]) == 3 and by_name["adapters_no_decay"]["weight_decay"] == 0.0
    opt = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    plain = param_groups_with_decay({"adapters": list(m.parameters())})
    assert len(plain) == 1 and len(plain[0]["params"]) == 4

