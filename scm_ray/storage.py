"""Storage locations, one convention for the whole package (plain pyarrow; no Ray).

A location is either a URI pyarrow.fs understands (s3://, gs://, file://, ...) or a local or
shared-filesystem path. Run folders are `<storage>/<name>`, a name being given or derived from
the config's name and the start time; local storage is made absolute because Ray's workers run
in other folders and on other nodes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    """Whether `location` is a URI (scheme://...) rather than a filesystem path."""
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem serving `location` and the path on it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def absolute(location: str) -> str:
    """A local path made absolute (`~` expanded); a URI as is."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def join(location: str, *names: str) -> str:
    """`location/name/...` for paths and URIs alike."""
    return "/".join([location.rstrip("/"), *names])


def run_location(storage: str, name: str, default_name: str) -> tuple[str, str, str]:
    """(storage, name, folder) of a run or search: storage made absolute when local, the name
    given or `<default_name>-<YYYYmmdd-HHMMSS>`, and the folder `<storage>/<name>`."""
    storage = absolute(storage)
    name = name or f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return storage, name, join(storage, name)
