"""The run folder's metrics history (Parquet) and readable summary, on any pyarrow filesystem."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

HISTORY_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.txt"


def _fs(run_dir: str) -> tuple[pafs.FileSystem, str]:
    if "://" in run_dir:
        return pafs.FileSystem.from_uri(run_dir)
    return pafs.LocalFileSystem(), run_dir


def append_history(run_dir: str, history: list[dict]) -> None:
    """(Re)write <run_dir>/metrics.parquet with one row per epoch so far."""
    keys = sorted({k for row in history for k in row})
    write_parquet(run_dir, HISTORY_FILE, pa.table({k: [row.get(k) for row in history] for k in keys}))


def write_parquet(folder: str, name: str, table: pa.Table) -> None:
    """Replace <folder>/<name> by `table` atomically (temp file + rename in the same folder),
    so a process killed mid-write leaves the previous table, never a truncated one."""
    import uuid

    fs, path = _fs(folder)
    fs.create_dir(path, recursive=True)
    tmp = f"{path}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, f"{path}/{name}")
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def read_history(run_dir: str) -> list[dict]:
    fs, path = _fs(run_dir)
    return pq.read_table(f"{path}/{HISTORY_FILE}", filesystem=fs).to_pylist()


def write_text(run_dir: str, name: str, text: str) -> None:
    fs, path = _fs(run_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as out:
        out.write(text.encode())
