"""Finding checkpoints under a path, naming them, and telling whether one changed (no Ray).

A checkpoint is a directory holding ``model.pt`` or ``meta.json`` (checkpoint.py). PATH may be
one such directory, the ``model.pt`` file itself, a training run folder, or any tree above them
(a Tune experiment: trial folders holding run folders). Everything else Ray Train or Tune
leaves in those folders (metrics, summaries, experiment state) is ignored. A directory with a
``model.pt`` that cannot be read still counts: it is reported as a failed row rather than
silently skipped, so a damaged checkpoint is noticed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from scm_ray.checkpoint import META_FILE, MODEL_FILE

_EPOCH = re.compile(r"epoch_?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class FoundCheckpoint:
    """One checkpoint directory and how it is named in the results."""

    path: Path  # absolute checkpoint directory
    run: str  # the folder holding it, relative to PATH where PATH is above it
    slug: str  # unique, file-name-safe name for its plots

    @property
    def key(self) -> str:
        """The results table's identity of this checkpoint."""
        return str(self.path)


def is_checkpoint_dir(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() or (path / META_FILE).is_file()


def find_checkpoints(root: str | Path) -> list[FoundCheckpoint]:
    """Every checkpoint at or below `root`, sorted by path. Hidden folders are skipped and the
    walk does not descend into a checkpoint (Ray may nest nothing useful there)."""
    root = Path(root).expanduser().resolve()
    if root.is_file():
        if root.name != MODEL_FILE:
            raise FileNotFoundError(f"{root}: expected a checkpoint folder or its {MODEL_FILE}")
        root = root.parent
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such checkpoint folder")
    found: list[Path] = []
    for current, dirs, _files in os.walk(root, followlinks=False):
        here = Path(current)
        if is_checkpoint_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return [_describe(p, root) for p in sorted(found)]


def _describe(path: Path, root: Path) -> FoundCheckpoint:
    """run = the folder holding the checkpoint: its name when PATH is the checkpoint or the run
    folder, its path below PATH in a deeper tree (Tune trials share run-folder names)."""
    if path == root or path.parent == root:
        run = path.parent.name
        relative = Path(run) / path.name
    else:
        run = str(path.parent.relative_to(root))
        relative = path.relative_to(root)
    return FoundCheckpoint(path=path, run=run, slug=slugify(relative))


def slugify(relative: Path) -> str:
    """"trial_1/run/checkpoint_epoch0002" -> "trial_1__run__checkpoint_epoch0002"."""
    text = "__".join(part for part in relative.parts if part not in ("", ".", "/"))
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text) or "checkpoint"


def fingerprint(path: Path) -> str:
    """Changes whenever model.pt is rewritten (size and mtime), without reading the weights:
    cheap enough to compute for thousands of checkpoints on every run."""
    model = path / MODEL_FILE
    try:
        stat = model.stat()
    except FileNotFoundError:
        return "no-model.pt"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def epoch_from_name(path: Path) -> int | None:
    """The epoch a checkpoint folder's name carries (checkpoint_epoch0003 -> 3), if any."""
    match = _EPOCH.search(path.name)
    return int(match.group(1)) if match else None


def data_root_of(path: Path) -> str | None:
    """data.root from the checkpoint's meta.json (read without loading weights), if readable."""
    try:
        meta = json.loads((path / META_FILE).read_text())
        return str(meta["config"]["data"]["root"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
