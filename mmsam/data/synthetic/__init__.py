"""Procedural data sets written in the benchmarks' own layouts."""
from mmsam.data.synthetic.aerial import generate_aerial
from mmsam.data.synthetic.deliver import generate_deliver, is_generated
from mmsam.data.synthetic.mcubes import generate_mcubes
from mmsam.data.synthetic.muses import generate_muses

__all__ = ["generate_aerial", "generate_deliver", "generate_mcubes", "generate_muses", "is_generated"]
