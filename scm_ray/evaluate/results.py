"""The results table: one row per checkpoint in <out>/results.parquet, what a re-run may reuse,
the config columns that tell checkpoints apart, and the printed ranking (no Ray).

Columns with a dot in their name are the checkpoint's config fields that differ between the
rows (``optim.lr``, ``scm.num_blocks``); every other column is fixed by the evaluation itself.
The full config travels in ``config_json``, so the varying columns can be recomputed whenever
rows are added.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scm_ray.config import ConfigError, flatten
from scm_ray.evaluate.outcome import CHECKPOINT_ERROR
from scm_ray.metrics.accumulator import V2_IOUS
from scm_ray.metrics.metric_set import TEST, VAL, MetricSet
from scm_ray.train.history import write_parquet

RESULTS_FILE = "results.parquet"
# The one error_kind a re-run skips (the checkpoint file itself is broken).
PERMANENT_ERROR_KIND = CHECKPOINT_ERROR
# Leading columns, in this order; then the test split's metrics (test/...), the held-out
# split's (val/...), timings, provenance, and the config columns last (each group in its order).
FIRST_COLUMNS = ("checkpoint", "run", "epoch", "status", "error", "error_kind", "protocol", "tau_source", "k")
TIMING_COLUMNS = ("images_per_s", "wall_s", "eval_s", "load_s")
# Headline metrics of the printed table (the test split's).
TABLE_METRICS = ("gt_known", "top1_loc", "topk_loc", "top1_cls", "maxboxacc_v2")


def read_results(out_dir: str | Path, force: bool = False) -> list[dict]:
    """Rows of an earlier run in this folder (none when there is no table yet).

    A table that cannot be read (cut short by a full disk or a copy) would block every later
    evaluation: it is a ConfigError saying what to do, and with `force` (which re-evaluates
    everything anyway) it is moved aside to results.parquet.corrupt-<time> and rebuilt."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        if not force:
            raise ConfigError("out", f"{path} is not a readable results table ({err}); run again with "
                                     "--force to rebuild it (the file is kept beside it as "
                                     f"{RESULTS_FILE}.corrupt-<time>), or move it away") from None
    kept = path.with_name(f"{RESULTS_FILE}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, kept)
    print(f"[scm-ray] {path} could not be read; kept as {kept.name}, rebuilding it (--force)", flush=True)
    return []


def write_results(out_dir: str | Path, rows: list[dict], iou_thresholds=V2_IOUS) -> Path:
    """Replace <out>/results.parquet atomically (a crash mid-write keeps the previous table)."""
    write_parquet(str(out_dir), RESULTS_FILE, to_table(rows, iou_thresholds))
    return Path(out_dir) / RESULTS_FILE


def reusable(previous: dict | None, fingerprint: str, eval_key: str) -> bool:
    """Whether an earlier row still answers for this checkpoint: same model.pt, same settings,
    and either scored or failed for a defect of the file itself (which would only repeat). Any
    other failure (a file this node could not reach, a dead actor, the dataset) may pass now."""
    if previous is None:
        return False
    same = previous.get("fingerprint") == fingerprint and previous.get("eval_key") == eval_key
    return same and (previous.get("status") == "ok" or previous.get("error_kind") == PERMANENT_ERROR_KIND)


def eval_key(settings: dict) -> str:
    """A short, stable identity of the evaluation settings that change a row's numbers."""
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def with_varying_config(rows: list[dict]) -> list[dict]:
    """Rows with one dotted column per config field whose value differs between rows that have
    a config (checkpoints that failed to load have none and get nulls)."""
    flat = [flatten(json.loads(r["config_json"])) if r.get("config_json") else None for r in rows]
    known = [f for f in flat if f is not None]
    names = sorted({k for f in known for k in f})
    varying = [n for n in names if len({json.dumps(f.get(n), sort_keys=True) for f in known}) > 1]
    out = []
    for row, fields in zip(rows, flat):
        clean = {k: v for k, v in row.items() if "." not in k}
        clean.update({n: (fields.get(n) if fields else None) for n in varying})
        out.append(clean)
    return out


def metric_columns(iou_thresholds=V2_IOUS) -> list[str]:
    """Every metric column a results row can hold: the test split's, then the held-out split's."""
    metrics = MetricSet("wsol", tuple(iou_thresholds), 1)
    return metrics.columns(TEST) + metrics.columns(VAL)


def to_table(rows: list[dict], iou_thresholds=V2_IOUS) -> pa.Table:
    """Arrow table with stable column order; a column whose values mix kinds (a list here, a
    number there) is stored as JSON text so one odd config never breaks the file."""
    metrics = metric_columns(iou_thresholds)
    names = sorted({k for r in rows for k in r}, key=lambda name: _column_rank(name, metrics))
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        columns[name] = _uniform(values)
    return pa.table(columns) if rows else pa.table({"checkpoint": pa.array([], pa.string())})


def _column_rank(name: str, metrics: list[str]) -> tuple:
    if name in FIRST_COLUMNS:
        return (0, FIRST_COLUMNS.index(name), name)
    if name in metrics:
        return (1, metrics.index(name), name)
    if name in TIMING_COLUMNS:
        return (3, TIMING_COLUMNS.index(name), name)
    return (5 if "." in name else 4, 0, name)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else "other"


def _uniform(values: list) -> list:
    kinds = {_kind(v) for v in values if v is not None}
    if len(kinds) <= 1 and "other" not in kinds:
        return values
    return [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values]


# ---------------------------------------------------------------------------------- ranking


def ranking_column(rows: list[dict], sort_by: str = "gt_known") -> str:
    """The column checkpoints are ranked by: under "wsol" the held-out split's value (choosing
    a checkpoint by its test numbers would leak the test split), under "paper" the test's."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if ok and all(r.get("protocol") == "wsol" and r.get(VAL + sort_by) is not None for r in ok):
        return VAL + sort_by
    return TEST + sort_by


def ranked(rows: list[dict], column: str) -> list[dict]:
    """ok rows best first (ties: the earlier checkpoint path), then the failed ones by path."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get(column) is not None]
    ok.sort(key=lambda r: (-float(r[column]), str(r.get("checkpoint"))))
    rest = sorted((r for r in rows if r not in ok), key=lambda r: str(r.get("checkpoint")))
    return ok + rest


def best_row(rows: list[dict], sort_by: str = "gt_known") -> dict | None:
    column = ranking_column(rows, sort_by)
    order = ranked(rows, column)
    return order[0] if order and order[0].get("status") == "ok" and order[0].get(column) is not None else None


def _short_name(row: dict) -> str:
    name = Path(str(row.get("checkpoint", ""))).name
    return f"{row['run']}/{name}" if row.get("run") else name


def _cell(value: Any, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:{width}.1f}" if abs(value) >= 1 or value == 0 else f"{value:{width}.3g}"
    return str(value).rjust(width)


def format_table(rows: list[dict], sort_by: str = "gt_known") -> str:
    """The summary printed after an evaluation: ok rows ranked by `sort_by` (held-out under
    "wsol"), failed rows with their reasons, and the best checkpoint named."""
    if not rows:
        return "no checkpoints evaluated"
    column = ranking_column(rows, sort_by)
    metrics = [TEST + m for m in TABLE_METRICS]
    order = ranked(rows, column)
    metrics = ([] if column in metrics else [column]) + metrics
    width = max(12, *(len(_short_name(r)) for r in order))
    head = [f"{'#':>3}", "checkpoint".ljust(width), f"{'epoch':>5}"]
    head += [f"{m:>{max(9, len(m))}}" for m in metrics] + [f"{'tau':>5}", f"{'img/s':>7}", f"{'wall s':>7}"]
    lines = ["  ".join(head)]
    for i, row in enumerate(order, 1):
        if row.get("status") != "ok":
            continue
        cells = [f"{i:>3}", _short_name(row).ljust(width), _cell(row.get("epoch"), 5)]
        cells += [_cell(row.get(m), max(9, len(m))) for m in metrics]
        cells += [_cell(row.get(TEST + "gt_known_tau"), 5), _cell(row.get("images_per_s"), 7),
                  _cell(row.get("wall_s"), 7)]
        lines.append("  ".join(cells))
    failed = [r for r in order if r.get("status") != "ok"]
    for row in failed:
        lines.append(f"  failed  {_short_name(row)}: {row.get('error')}")
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    label = ok_rows[0].get("tau_source") if ok_rows else None
    lines.append(f"{len(ok_rows)} ok, {len(failed)} failed; ranked by {column}"
                 + (f"; protocol {ok_rows[0].get('protocol')}, tau from {label}" if ok_rows else ""))
    best = best_row(rows, sort_by)
    if best is not None:
        split = best.get("test_split") or "test"
        lines.append(f"best: {best['checkpoint']} ({column} {best[column]:.2f}; on {split}: gt_known "
                     f"{best[TEST + 'gt_known']:.2f}, top1_loc {best[TEST + 'top1_loc']:.2f})")
    else:
        lines.append("best: none (no checkpoint was evaluated successfully)")
    return "\n".join(lines)
