"""What a finished search leaves in its experiment folder, next to Ray Tune's own files:

  trials.parquet   one row per trial: its sampled values, final and best metrics, epochs run,
                   why it stopped (completed / early-stopped / error), its training run folder
  best.yaml        the base training config with the best trial's values: `scm-ray train --config`
  leaderboard.txt  the ranking (also printed)
  objective.png    the objective against each searched parameter

Trials rank by the best value of the objective over their epochs (the checkpoint a training
run keeps is its best epoch too), then by the final value. The row building works on plain
dicts, so everything below `rows_from_results` is Ray-free.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scm_ray.config import dump_yaml
from scm_ray.tune.config import TuneJobConfig
from scm_ray.storage import filesystem
from scm_ray.train.history import write_parquet, write_text
from scm_ray.tune.space import is_log_scale, trial_config

TRIALS_FILE = "trials.parquet"
BEST_FILE = "best.yaml"
LEADERBOARD_FILE = "leaderboard.txt"
PLOT_FILE = "objective.png"

# Tune's bookkeeping in every result; not the training's metrics.
_TUNE_KEYS = {
    "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid", "hostname",
    "node_ip", "config", "time_since_restore", "iterations_since_restore", "training_iteration",
    "done", "checkpoint_path", "experiment_tag", "checkpoint_dir_name", "should_checkpoint",
}


@dataclass
class SearchSummary:
    experiment: str
    rows: list[dict]  # ranked, best first
    best: dict | None
    seconds: float

    @property
    def num_errors(self) -> int:
        return sum(row["stop_reason"] == "error" for row in self.rows)


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def target_epochs(cfg: TuneJobConfig, sample: dict) -> int:
    """Epochs after which a trial counts as completed: its train.epochs, or ASHA's max_t."""
    epochs = trial_config(cfg.base_dict(), sample).train.epochs
    sched = cfg.search.scheduler
    if sched.kind == "asha" and sched.max_t:
        epochs = min(epochs, sched.max_t)
    return epochs


def trial_row(cfg: TuneJobConfig, trial_id: str, sample: dict, history: list[dict], last: dict,
              error: str | None, run_dir: str) -> dict:
    """One trial's row from what Tune received from it: `history` (one dict per epoch) and
    `last`, its latest result."""
    metric, sign = cfg.search.metric, 1 if cfg.search.mode == "max" else -1
    scored = [(sign * _number(h.get(metric)), int(h.get("epoch", 0))) for h in history]
    scored = [s for s in scored if not math.isnan(s[0])]
    best_value, best_epoch = max(scored, key=lambda s: (s[0], -s[1])) if scored else (math.nan, 0)
    epochs_run = int(_number(last.get("epoch", 0)) or 0)
    if error:
        reason = "error"
    elif epochs_run >= target_epochs(cfg, sample):
        reason = "completed"
    else:
        reason = "early-stopped" if cfg.search.scheduler.kind == "asha" else "stopped"
    row = {"trial_id": trial_id, "stop_reason": reason, "epochs_run": epochs_run,
           f"best/{metric}": sign * best_value, "best_epoch": best_epoch,
           f"final/{metric}": _number(last.get(metric)), "error": error, "run_dir": run_dir,
           "config": json.dumps(sample, sort_keys=True)}
    row.update({f"config/{name}": value for name, value in sample.items()})
    # the last epoch's other numbers; its epoch is epochs_run; counts stay integers
    row.update({f"final/{k}": _integer_or_float(v) for k, v in sorted(last.items())
                if k not in _TUNE_KEYS and k not in (metric, "epoch") and isinstance(v, (int, float, np.number))
                and not isinstance(v, (bool, np.bool_))})
    return row


def _integer_or_float(value) -> int | float:
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def rank(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """Best first: best objective, then final objective, then trial id; no value ranks last."""
    sign = 1 if mode == "max" else -1

    def key(row: dict) -> tuple:
        best, final = sign * row[f"best/{metric}"], sign * row[f"final/{metric}"]
        return (math.isnan(best), -best if not math.isnan(best) else 0.0,
                -final if not math.isnan(final) else 0.0, row["trial_id"])

    return sorted(rows, key=key)


def rows_from_results(cfg: TuneJobConfig, results, runs_root: str) -> list[dict]:
    """Rows from a Ray Tune ResultGrid."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id", "")
        sample = dict(result.config or metrics.get("config") or {})
        frame = result.metrics_dataframe
        history = [] if frame is None or frame.empty else frame.to_dict("records")
        history = [h for h in history if "epoch" in h and not math.isnan(_number(h["epoch"]))]
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        last = metrics if history else {}
        rows.append(trial_row(cfg, trial_id, sample, history, last, error, f"{runs_root}/{trial_id}"))
    return rank(rows, cfg.search.metric, cfg.search.mode)


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def write_trials(experiment: str, rows: list[dict]) -> None:
    """trials.parquet; a column whose values pyarrow cannot type as one (e.g. a choice of a
    number and a string) is stored as JSON text instead."""
    import pyarrow as pa

    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[key] = pa.array([json.dumps(v) for v in values])
    write_parquet(experiment, TRIALS_FILE, pa.table(columns))  # atomic: never a half table


def best_yaml_text(cfg: TuneJobConfig, row: dict, experiment: str) -> str:
    """The base training config with the best trial's values, under a header saying whence."""
    trial = trial_config(cfg.base_dict(), json.loads(row["config"]))
    train = dataclasses.replace(trial, ray=dataclasses.replace(trial.ray, name=""))  # a run of its own
    metric = cfg.search.metric
    header = (f"# Best trial {row['trial_id']} of the search {experiment}\n"
              f"# {metric} {row[f'best/{metric}']:.4g} (epoch {row['best_epoch']}), "
              f"searched values: {row['config']}\n"
              f"# Train it: scm-ray train --config best.yaml\n")
    return header + dump_yaml(train)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def leaderboard(rows: list[dict], metric: str, space: dict) -> str:
    header = ["rank", "trial", f"best {metric}", "epoch", "final", "epochs", "stopped", *space]
    return text_table(header, [
        [str(i + 1), row["trial_id"], _fmt(row[f"best/{metric}"]), str(row["best_epoch"]),
         _fmt(row[f"final/{metric}"]), str(row["epochs_run"]), row["stop_reason"],
         *(_fmt(row.get(f"config/{name}")) for name in space)]
        for i, row in enumerate(rows)
    ])


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    table = [header] + rows
    widths = [max(len(line[c]) for line in table) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in table) + "\n"


def plot_objective(rows: list[dict], metric: str, space: dict) -> bytes:
    """PNG: one panel per searched parameter, each trial's best objective against its value:
    choices (choice / grid_search) on a categorical axis in their listed order, loguniform on a
    log axis with a few plain ticks, the best trial starred, the search summarised in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter

    names = list(space)
    cols = min(3, len(names))
    rows_n = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    markers = {"completed": "o", "early-stopped": "v", "stopped": "s", "error": "x"}
    scored = [row for row in rows if not math.isnan(_number(row[f"best/{metric}"]))]
    best = scored[0] if scored else None  # rows come ranked
    for ax, name in zip(axes.flat, names):
        kind, args = next(iter(space[name].items()))
        categories = [json.dumps(v) for v in args] if kind in ("choice", "grid_search") else None

        def x_of(value):
            if not categories:
                return value
            if json.dumps(value) not in categories:  # e.g. a value a restored search no longer lists
                categories.append(json.dumps(value))
            return categories.index(json.dumps(value))

        for reason, marker in markers.items():
            picked = [row for row in rows if row["stop_reason"] == reason]
            if picked:
                ax.scatter([x_of(row.get(f"config/{name}")) for row in picked],
                           [_number(row[f"best/{metric}"]) for row in picked], marker=marker, label=reason)
        if best is not None:
            ax.scatter([x_of(best.get(f"config/{name}"))], [_number(best[f"best/{metric}"])], marker="*",
                       s=220, facecolors="none", edgecolors="crimson", linewidths=1.5, label="best trial")
        if categories:
            ax.set_xticks(range(len(categories)), categories)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif is_log_scale(space[name]):
            ax.set_xscale("log")
            lo, hi = args
            ax.set_xlim(lo / 1.15, hi * 1.15)  # the searched range, so its ends are ticked
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0), numticks=8))
            ax.xaxis.set_major_formatter(lambda x, _pos: f"{x:.0e}".replace("e-0", "e-"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small", frameon=False)
    title = f"{len(rows)} trials, best {metric} per trial"
    if best is not None:
        title += f"; best {_fmt(best[f'best/{metric}'])} ({best['trial_id']})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(cfg: TuneJobConfig, experiment: str, rows: list[dict]) -> str:
    """Write every output; returns the leaderboard text."""
    metric = cfg.search.metric
    write_trials(experiment, rows)
    board = leaderboard(rows, metric, cfg.search.space)
    write_text(experiment, LEADERBOARD_FILE, board)
    fs, path = filesystem(experiment)
    with fs.open_output_stream(f"{path}/{PLOT_FILE}") as out:
        out.write(plot_objective(rows, metric, cfg.search.space))
    if rows and not math.isnan(rows[0][f"best/{metric}"]):
        write_text(experiment, BEST_FILE, best_yaml_text(cfg, rows[0], experiment))
    return board


def summarise(cfg: TuneJobConfig, experiment: str, runs_root: str, results, seconds: float) -> SearchSummary:
    """Rows from Tune's results (trial runs under `runs_root`), the outputs written, the
    leaderboard printed."""
    rows = rows_from_results(cfg, results, runs_root)
    board = write_outputs(cfg, experiment, rows)
    has_best = bool(rows) and not math.isnan(rows[0][f"best/{cfg.search.metric}"])
    summary = SearchSummary(experiment, rows, rows[0] if has_best else None, seconds)
    counts = {r: sum(row["stop_reason"] == r for row in rows) for r in ("completed", "early-stopped", "stopped", "error")}
    print(f"[scm-ray] search done in {seconds:.0f} s: {len(rows)} trials, "
          + ", ".join(f"{n} {r}" for r, n in counts.items() if n), flush=True)
    print(board, end="", flush=True)
    for row in rows:
        if row["error"]:
            print(f"[scm-ray] trial {row['trial_id']} failed: {row['error'].splitlines()[0]}", flush=True)
    if summary.best is not None:
        print(f"[scm-ray] best config: {experiment}/{BEST_FILE}", flush=True)
    print(f"[scm-ray] trials table: {experiment}/{TRIALS_FILE}; plot: {experiment}/{PLOT_FILE}", flush=True)
    return summary
