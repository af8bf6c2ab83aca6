"""Errors raised on bad user input: one clear message naming the file and what is wrong."""
from __future__ import annotations


class MMSamError(Exception):
    """Base class of every error mmsam raises on purpose."""


class DataError(MMSamError, ValueError):
    """A data file is missing, unreadable or does not fit the data set's contract."""


class ConfigError(MMSamError, ValueError):
    """A config value is unknown or inconsistent (e.g. an unknown modality name)."""


class CheckpointError(MMSamError, ValueError):
    """A checkpoint file cannot be read or does not fit the model it is loaded into."""
