"""Predict every scene of a folder of co-registered modality files (``mmsam predict --model``).

Files are matched to modalities by a pattern per modality with one ``*`` standing for the scene
id, e.g. ``rgb: "*_rgb.png"`` and ``depth: "*_depth.png"`` (flat), or ``rgb: "rgb/*.png"`` (a
folder per modality). A scene needs at least one modality; the ones not found are absent (the
robustness protocol). Writes ``<id>.png`` (class ids, palette embedded), ``<id>_overlay.png`` (the
colours over the first present modality) and, optionally, ``<id>_probs.npy`` (float16 K×H×W).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from mmsam.deploy.predictor import Predictor
from mmsam.errors import ConfigError, MMSamError
from mmsam.palette import default_palette, palette_png

__all__ = ["FolderReport", "default_patterns", "find_scenes", "predict_folder"]


def default_patterns(modalities: Sequence[str]) -> dict[str, str]:
    """``<id>_<modality>.<any extension>`` for every modality."""
    return {m: f"*_{m}.*" for m in modalities}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """The first ``*`` captures the scene id (it may span folders); further ``*`` stay in one folder."""
    parts = pattern.split("*")
    if len(parts) < 2:
        raise ConfigError(f"pattern {pattern!r} needs a '*' standing for the scene id")
    body = re.escape(parts[0]) + "(?P<id>.+?)" + re.escape(parts[1]) + "".join("[^/]*" + re.escape(p) for p in parts[2:])
    return re.compile(f"^{body}$")


def find_scenes(root: Path, patterns: Mapping[str, str]) -> dict[str, dict[str, Path]]:
    """``{scene id: {modality: file}}`` for every file under ``root`` that a pattern matches
    (hidden files skipped; a file matching two modalities' patterns is an error)."""
    regexes = {m: _pattern_regex(p) for m, p in patterns.items()}
    scenes: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        hits = [(m, r.match(rel)) for m, r in regexes.items()]
        hits = [(m, h) for m, h in hits if h is not None]
        if len(hits) > 1:
            raise ConfigError(f"{path}: matches the patterns of {[m for m, _ in hits]}; make the patterns distinct")
        if hits:
            m, h = hits[0]
            scenes.setdefault(h.group("id"), {})[m] = path
    return scenes


@dataclass
class FolderReport:
    """What ``predict_folder`` did: scenes written and scenes skipped with the reason."""

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    absent: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"predicted {len(self.written)} scene(s), skipped {len(self.skipped)}"]
        if self.absent:
            lines.append("absent modalities: " + ", ".join(f"{m} in {n} scene(s)" for m, n in sorted(self.absent.items())))
        lines += [f"  skipped {sid}: {why}" for sid, why in self.skipped]
        return "\n".join(lines)


def _overlay(base: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> Image.Image:
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(palette)] = np.asarray(palette, dtype=np.float32)
    img = np.clip(base, 0, 1) * 255.0
    out = (1 - alpha) * img + alpha * lut[labels]
    return Image.fromarray(out.round().astype(np.uint8))


def predict_folder(
    predictor: Predictor,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    patterns: Mapping[str, str] | None = None,
    probabilities: bool = False,
    overlay: bool = True,
    progress: bool = True,
) -> FolderReport:
    """Predict every scene under ``input_dir`` into ``output_dir`` (see the module docstring)."""
    from tqdm.auto import tqdm

    root, out = Path(input_dir), Path(output_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: --input must be a folder")
    pats = dict(predictor.info.get("patterns") or {}) or default_patterns(predictor.modalities)
    pats.update(patterns or {})
    unknown = sorted(set(pats) - set(predictor.modalities))
    if unknown:
        raise ConfigError(f"patterns for {unknown}: not modalities of this model ({', '.join(predictor.modalities)})")
    scenes = find_scenes(root, {m: p for m, p in pats.items() if m in predictor.modalities})
    if not scenes:
        shown = ", ".join(f"{m}: {p}" for m, p in pats.items())
        raise ConfigError(f"{root}: no file matches the modality patterns ({shown}); set them with --pattern MODALITY=GLOB")
    palette = predictor.palette or default_palette(len(predictor.class_names))
    report = FolderReport()
    out.mkdir(parents=True, exist_ok=True)
    for sid, files in tqdm(sorted(scenes.items()), desc="predict", unit="scene", disable=not progress):
        for m in predictor.modalities:
            if m not in files:
                report.absent[m] = report.absent.get(m, 0) + 1
        try:
            pred = predictor.predict({m: files[m] for m in predictor.modalities if m in files}, probabilities=probabilities)
        except MMSamError as e:
            report.skipped.append((sid, str(e)))
            continue
        target = out / f"{sid}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        palette_png(pred.labels, palette).save(target)
        if overlay:
            first = next(m for m in predictor.modalities if m in files)
            base = predictor.read(first, files[first]).numpy().transpose(1, 2, 0)
            _overlay(base, pred.labels, palette).save(out / f"{sid}_overlay.png")
        if probabilities and pred.probabilities is not None:
            np.save(out / f"{sid}_probs.npy", pred.probabilities.astype(np.float16))
        report.written.append(sid)
    return report

