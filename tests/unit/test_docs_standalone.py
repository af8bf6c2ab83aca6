"""Docs stand on their own: no tracked file cites the internal reading notes.

Those notes (``<shared>/reference/<name>.md``) are not part of the repository, so a reader cannot
open them. Cite the paper (section, table, equation) and the official repository's file instead,
and write what the reader needs into ``docs/``. Citing the project's own ``docs/...md`` is fine.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTES = "memorysam|mlesam|mfnet|convlora|datasets|ecosystem"
# Written so that this file does not match its own patterns.
FORBIDDEN = [
    ("path to the notes folder", re.compile("shared" + r"/+reference")),
    ("note file", re.compile(r"\breference/[A-Za-z0-9_-]+\.md")),
    # A bare note file name followed by a section sign (optionally quoted); ``docs/methods/<name>.md`` and
    # ``docs/datasets.md`` are the project's own pages and stay allowed.
    ("bare note section", re.compile(rf"(?<![\w./-])(?:{NOTES})\.md[`'\"]*\s*§")),
]
SUFFIXES = ("*.py", "*.md", "*.yaml", "*.toml")


def offences(text: str) -> list[str]:
    """The forbidden citations in ``text``, as ``"line N: kind: match"``."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FORBIDDEN:
            found += [f"line {n}: {kind}: {m.group(0)!r}" for m in pattern.finditer(line)]
    return found


@pytest.mark.parametrize(
    "text, bad",
    [
        # Split literals: this file is checked too.
        ("see ``../" + "shared/" + "reference/" + "memorysam" + ".md`` §2", True),
        ("`reference" + "/mfnet.md §3`", True),
        ("as mlesam" + ".md §2.4 says", True),
        ("(`convlora" + ".md` §5 Q3)", True),
        ("ecosystem" + ".md §1", True),
        ("choices in ``docs/methods/memorysam.md``", False),
        ("`docs/methods/mlesam.md` §2", False),
        ("layout in `docs/datasets.md` §5", False),
        ("MFNet paper Sec. III-B, Eq. 10; official `MFNet/train.py`", False),
    ],
)
def test_patterns(text: str, bad: bool) -> None:
    assert bool(offences(text)) is bad


def test_no_tracked_file_cites_internal_notes() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *SUFFIXES], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [f for f in listed.split("\0") if f]
    assert files, "git ls-files listed nothing"
    report = []
    for name in files:
        path = ROOT / name
        if path.is_file():
            report += [f"{name}: {o}" for o in offences(path.read_text(encoding="utf-8", errors="replace"))]
    assert not report, (
        f"{len(report)} citation(s) of the internal notes; cite the paper and the official file "
        "instead (docs must stand on their own):\n" + "\n".join(report[:60])
    )
