"""Procedural data sets written in the benchmarks' own layouts.

The generators import the loaders' layout constants (:mod:`mmsam.data.datasets`), never the
reverse; :func:`get_generator` finds the one writing a registered data set's layout.
"""
from __future__ import annotations

from typing import Callable, Optional

from mmsam.data.synthetic.aerial import generate_aerial
from mmsam.data.synthetic.deliver import generate_deliver, is_generated
from mmsam.data.synthetic.mcubes import generate_mcubes
from mmsam.data.synthetic.muses import generate_muses

#: Registered data set name -> ``generator(root, *, seed, num_train, ..., overwrite) -> summary``.
GENERATORS: dict[str, Callable[..., dict]] = {
    "deliver": generate_deliver,
    "mcubes": generate_mcubes,
    "muses": generate_muses,
    "muses_sdk": generate_muses,
    "vaihingen": generate_aerial,
}


def get_generator(dataset: str) -> Optional[Callable[..., dict]]:
    """The generator writing data set ``dataset``'s layout; None if there is none."""
    return GENERATORS.get(dataset)


__all__ = ["GENERATORS", "generate_aerial", "generate_deliver", "generate_mcubes",
           "generate_muses", "get_generator", "is_generated"]
