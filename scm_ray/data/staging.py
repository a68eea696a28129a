"""Stage a prepared dataset given as a URI (s3://, gs://, file://, ...) to local disk.

FFCV memory-maps local files, so a remote dataset folder is copied once per node: every worker
on the node calls `stage_dataset` with the same cache root, one of them copies under a file lock,
the others wait and reuse the copy. A completion marker makes a half-copied folder (a worker
killed mid-copy) be copied again instead of being used.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path

import pyarrow.fs as pafs

from scm_ray.storage import is_uri

DONE_MARKER = ".staged"


def default_cache_root() -> Path:
    return Path(os.environ.get("SCM_RAY_DATA_CACHE", Path.home() / ".cache" / "scm-ray" / "datasets"))


def stage_dataset(location: str, cache_root: str | Path | None = None) -> Path:
    """Local folder holding the dataset at `location` (returned as is when already local)."""
    if not is_uri(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data.root: dataset folder not found: {path}")
        return path
    try:
        fs, root = pafs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for bad or unknown URIs
        raise FileNotFoundError(f"data.root: cannot open {location}: {exc}") from None
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"data.root: {location} is not a folder")
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = hashlib.sha256(location.rstrip("/").encode()).hexdigest()[:16]
    target = cache_root / key
    target.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copier per node; the others wait here
        if not (target / DONE_MARKER).exists():
            _copy_tree(fs, root, target)
            (target / DONE_MARKER).write_text(f"{location}\n{time.time()}\n")
    return target


def _copy_tree(fs: pafs.FileSystem, root: str, target: Path) -> None:
    selector = pafs.FileSelector(root, recursive=True)
    local = pafs.LocalFileSystem()
    for item in fs.get_file_info(selector):
        relative = item.path[len(root):].lstrip("/")
        dest = target / relative
        if item.type == pafs.FileType.Directory:
            dest.mkdir(parents=True, exist_ok=True)
        elif item.type == pafs.FileType.File:
            dest.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(item.path, str(dest), source_filesystem=fs, destination_filesystem=local)
