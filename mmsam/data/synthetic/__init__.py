"""Procedural data sets written in the benchmarks' own layouts."""
from mmsam.data.synthetic.deliver import generate_deliver, is_generated

__all__ = ["generate_deliver", "is_generated"]
