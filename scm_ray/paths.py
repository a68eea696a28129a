"""Output folders checked before anything runs: a folder scm-ray will write must be one.

Why: a storage path that cannot be written used to fail in pyarrow after a whole training run,
and an `--out` naming an existing file in a FileExistsError traceback. Both are knowable before
Ray starts, so they are ConfigErrors naming the field and the path. URIs are left to the
filesystem that serves them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from scm_ray.config import ConfigError
from scm_ray.storage import is_uri


def output_folder(key: str, path: str | os.PathLike) -> Path:
    """`path` as an absolute folder that exists (created if missing) and takes new files;
    otherwise a ConfigError for `key` saying what is wrong with it."""
    folder = Path(path).expanduser().resolve()
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(key, f"{path}: {blocker} is a file, not a folder; give a folder "
                               "(new or existing) for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".scm-ray-write-check-"):
            pass
    except OSError as err:
        raise ConfigError(key, f"{path} cannot be written ({err.strerror or err}); give a folder "
                               "you can write") from None
    return folder


def writable_storage(key: str, storage: str) -> None:
    """A local storage path (ray.storage_path, search.storage_path) must be a writable folder."""
    if not is_uri(storage):
        output_folder(key, storage)
