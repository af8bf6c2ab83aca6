"""Pieces the synthetic generators share."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from mmsam.errors import ConfigError

#: file each generator writes last, naming itself: its presence marks a complete set
MARKER = "mmsam_synthetic.json"


def written_by(root: Union[str, Path], generator: str) -> bool:
    """True if ``root`` holds a complete set whose marker names ``generator``."""
    try:
        info = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("generator") == generator


def check_generate_args(num_train: int, num_val: int, num_test: int,
                        size: int) -> dict[str, int]:
    """Split -> sample count; ConfigError on a negative/non-int count or a size below 16."""
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if any(not isinstance(v, int) or v < 0 for v in counts.values()):
        raise ConfigError(f"sample counts must be non-negative ints, got {counts}")
    if not isinstance(size, int) or size < 16:
        raise ConfigError(f"size must be an int >= 16, got {size!r}")
    return counts
