"""The run folder's records, on any pyarrow filesystem: the metrics history (Parquet), the
readable summary, the count of worker-group failures, and the one-line epoch summary printed
by every launcher. No Ray here."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from scm_ray.storage import filesystem

HISTORY_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.txt"
FAILURES_FILE = "failures.json"


def append_history(run_dir: str, history: list[dict]) -> None:
    """(Re)write <run_dir>/metrics.parquet with one row per epoch so far."""
    keys = sorted({k for row in history for k in row})
    write_parquet(run_dir, HISTORY_FILE, pa.table({k: [row.get(k) for row in history] for k in keys}))


def write_parquet(folder: str, name: str, table: pa.Table) -> None:
    """Replace <folder>/<name> by `table` atomically (temp file + rename in the same folder),
    so a process killed mid-write leaves the previous table, never a truncated one."""
    import uuid

    fs, path = filesystem(folder)
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
    fs, path = filesystem(run_dir)
    return pq.read_table(f"{path}/{HISTORY_FILE}", filesystem=fs).to_pylist()


def write_text(run_dir: str, name: str, text: str) -> None:
    fs, path = filesystem(run_dir)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as out:
        out.write(text.encode())


def read_failures(run_dir: str) -> int:
    """Worker-group restarts recorded in the run folder (0 when none)."""
    fs, path = filesystem(run_dir)
    try:
        with fs.open_input_stream(f"{path}/{FAILURES_FILE}") as stream:
            return int(json.loads(stream.read().decode())["failures"])
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return 0


def record_failure(run_dir: str) -> int:
    """Count one more worker-group failure in the run folder; the new count."""
    failures = read_failures(run_dir) + 1
    write_text(run_dir, FAILURES_FILE, json.dumps({"failures": failures}))
    return failures


def format_epoch_line(metrics: dict, epochs: int, scm_blocks: int = 1) -> str:
    """One driver line per epoch; "(SCM off: warm-up)" while a model with ADBs (scm_blocks > 0)
    trains without them (scm.start_epoch), never for the model without the SCM (0 blocks)."""
    keys = [("train/loss", "loss {:.4f}"), ("train/images_per_s", "{:.0f} img/s"),
            ("lr", "lr {:.2e}"), ("val/top1_cls", "top1-cls {:.1f}"),
            ("val/gt_known", "GT-Known {:.1f}"), ("val/top1_loc", "top1-loc {:.1f}"),
            ("val/maxboxacc_v2", "MaxBoxAccV2 {:.1f}"), ("epoch_seconds", "{:.1f} s")]
    parts = [f"epoch {metrics.get('epoch', '?')}/{epochs}"]
    parts += [fmt.format(metrics[k]) for k, fmt in keys if isinstance(metrics.get(k), (int, float))]
    if metrics.get("scm_active") == 0 and scm_blocks > 0:
        parts.append("(SCM off: warm-up)")
    return "[scm-ray] " + " | ".join(parts)
