"""The columns of every results file, in one place: metrics.parquet (training, one row per
epoch), results.parquet (evaluation, one row per checkpoint) and trials.parquet (a search, one
row per trial). The README's "Result files" table is `markdown()` of this module (a test keeps
them equal) and the tests check real files against it with `check_columns`.

One naming scheme: a metric column is `<split>/<metric>`, where the split prefix is the role
of the split (metric_set.VAL: the split checkpoints and tau are chosen on; metric_set.TEST: the
split an evaluation reports), metric names come from `MetricSet`, Top-k is `topk_*` with k in
the column `k`, percentages are 0-100 (unit "%"), taus are fractions of the map's range, and
counts are integers. trials.parquet repeats a trial's last epoch as `final/<metrics column>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scm_ray.metrics.metric_set import TAU_METRICS, TEST, VAL


@dataclass(frozen=True)
class Column:
    """A column, or a family of columns (`name` with a <placeholder>), of one results file."""

    name: str
    kind: str  # int, float, str
    unit: str  # "%", "s", "count", "" ...
    meaning: str

    def pattern(self) -> re.Pattern:
        parts = re.split(r"(<[^>]+>)", self.name)
        return re.compile("".join(".+" if p.startswith("<") else re.escape(p) for p in parts) + r"\Z")


def split_metrics(prefix: str, where: str) -> list[Column]:
    """The metric columns of one split under its prefix (what MetricSet.columns names)."""
    return [
        Column(f"{prefix}num_images", "int", "count", f"images of the {where}"),
        Column(f"{prefix}top1_cls", "float", "%", "Top-1 classification accuracy"),
        Column(f"{prefix}topk_cls", "float", "%", "Top-k classification accuracy (k in `k`)"),
        Column(f"{prefix}gt_known", "float", "%", "GT-Known Loc (= MaxBoxAcc v1): box of the ground-truth "
                                                  "class map at IoU >= 0.5 (paper protocol: top-1 class map)"),
        Column(f"{prefix}top1_loc", "float", "%", "Top-1 Loc: top-1 class right and GT-Known box right"),
        Column(f"{prefix}topk_loc", "float", "%", "Top-k Loc: class among the top k and GT-Known box right"),
        Column(f"{prefix}maxboxacc_v2", "float", "%", "MaxBoxAccV2: mean of the per-IoU columns below"),
        Column(f"{prefix}maxboxacc_v2_iou<NN>", "float", "%", "box accuracy at IoU >= NN/100, all contours, "
                                                             "best tau"),
        Column(f"{prefix}<metric>_tau", "float", "fraction", f"the tau each of {', '.join(TAU_METRICS)} and "
                                                            "maxboxacc_v2_iou<NN> was read at"),
    ]


METRICS_PARQUET = [
    Column("epoch", "int", "", "1-based epoch"),
    Column("global_step", "int", "count", "optimizer steps so far"),
    Column("epoch_seconds", "float", "s", "wall time of the epoch's training and validation"),
    Column("lr", "float", "", "learning rate in effect during the epoch"),
    Column("k", "int", "", "the k of topk_* (min(5, classes))"),
    Column("scm_active", "int", "0/1", "whether the ADBs ran this epoch (scm.start_epoch)"),
    Column("scm/lambda_<i>", "float", "", "ADB i's learned lambda after the epoch"),
    Column("scm/beta_<i>", "float", "", "ADB i's learned beta after the epoch"),
    Column("train/loss", "float", "", "mean training loss over all workers"),
    Column("train/images_per_s", "float", "img/s", "training throughput, all workers"),
    Column("train/skipped_steps", "int", "count", "optimizer steps skipped or undone (non-finite values)"),
    Column("guard/nonfinite", "int", "count", "non-finite losses, gradients or weights seen"),
    Column("guard/alpha_capped", "int", "count", "Newton-Schulz alpha capped for convergence"),
    Column("guard/beta_clamped", "int", "count", "ADB beta clamped to its range"),
    *split_metrics(VAL, "validation split (data.val_split)"),
]

RESULTS_PARQUET = [
    Column("checkpoint", "str", "", "checkpoint folder"),
    Column("run", "str", "", "run folder name"),
    Column("epoch", "int", "", "the checkpoint's epoch"),
    Column("global_step", "int", "count", "the checkpoint's optimizer step"),
    Column("status", "str", "", "ok | failed"),
    Column("error", "str", "", "why it failed (null when ok)"),
    Column("error_kind", "str", "", "checkpoint | unavailable | data | error | actor (a failed row)"),
    Column("protocol", "str", "", "wsol | paper"),
    Column("tau_source", "str", "", "where test/ taus came from: held-out | this split"),
    Column("k", "int", "", "the k of topk_* (min(5, classes))"),
    *split_metrics(TEST, "reported split (data.test_split)"),
    *split_metrics(VAL, "held-out split (data.heldout_split; wsol only)"),
    Column("test_split", "str", "", "name of the split reported as test/"),
    Column("heldout_split", "str", "", "name of the split reported as val/ (null under paper)"),
    Column("images_per_s", "float", "img/s", "evaluation throughput after the first batch"),
    Column("wall_s", "float", "s", "wall time of the checkpoint's task"),
    Column("eval_s", "float", "s", "time scoring the splits"),
    Column("load_s", "float", "s", "time loading the checkpoint"),
    Column("start_time", "float", "unix s", "task start"),
    Column("end_time", "float", "unix s", "task end"),
    Column("evaluated_at", "float", "unix s", "when the row was written"),
    Column("attempts", "int", "count", "tries of this checkpoint"),
    Column("actor_id", "str", "", "Ray actor that scored it"),
    Column("actor_name", "str", "", "its name"),
    Column("host", "str", "", "its node"),
    Column("pid", "int", "", "its process"),
    Column("device", "str", "", "cpu | cuda:N"),
    Column("precision", "str", "", "fp32 | bf16 | fp16"),
    Column("data_root", "str", "", "dataset the splits came from"),
    Column("fingerprint", "str", "", "model.pt size and time (a re-run reuses unchanged rows)"),
    Column("eval_key", "str", "", "hash of the evaluation settings"),
    Column("config_json", "str", "", "the checkpoint's training config"),
    Column("result_json", "str", "", "per-checkpoint JSON (curves), relative to the output folder"),
    Column("curves_png", "str", "", "metric-vs-tau plot, relative"),
    Column("cams_png", "str", "", "map overlays, relative"),
    Column("<section>.<field>", "any", "", "config fields that differ between the rows"),
]

TRIALS_PARQUET = [
    Column("trial_id", "str", "", "Tune's trial id (its run is runs/<trial_id>)"),
    Column("stop_reason", "str", "", "completed | early-stopped | stopped | error"),
    Column("epochs_run", "int", "", "epochs the trial trained"),
    Column("best_epoch", "int", "", "epoch of the best objective"),
    Column("best/<objective>", "float", "as the metric", "best value of search.metric"),
    Column("final/<metrics.parquet column>", "as in metrics.parquet", "as there",
           "the last epoch's value of every metrics.parquet column but epoch"),
    Column("error", "str", "", "why the trial failed (null otherwise)"),
    Column("run_dir", "str", "", "the trial's run folder"),
    Column("config", "str", "", "the searched values, JSON"),
    Column("config/<section>.<field>", "any", "", "one searched value"),
]

FILES = {"metrics.parquet": METRICS_PARQUET, "results.parquet": RESULTS_PARQUET, "trials.parquet": TRIALS_PARQUET}

# arrow type ids a kind accepts (a column whose values are all null is typed null)
_KINDS = {"int": ("int64", "int32", "null"), "float": ("double", "float", "null"),
          "str": ("string", "large_string", "null")}


def match(file: str, column: str) -> Column | None:
    """The schema entry a column of `file` belongs to (exact names before families)."""
    entries = FILES[file]
    exact = [c for c in entries if c.name == column]
    if exact:
        return exact[0]
    return next((c for c in entries if "<" in c.name and c.pattern().match(column)), None)


def check_columns(file: str, schema) -> list[str]:
    """What in a pyarrow schema of `file` the table above does not describe: unknown columns,
    or a column of another kind (an integer count stored as a double)."""
    problems = []
    for name, arrow_type in zip(schema.names, schema.types):
        entry = match(file, name)
        if file == "trials.parquet" and entry is not None and entry.name.startswith("final/"):
            entry = match("metrics.parquet", name[len("final/"):])
        if entry is None:
            problems.append(f"{file}: column {name!r} is not in the README table")
        elif entry.kind in _KINDS and str(arrow_type) not in _KINDS[entry.kind]:
            problems.append(f"{file}: column {name!r} is {arrow_type}, the table says {entry.kind}")
    return problems


def markdown() -> str:
    """The README's table of every column of every results file."""
    lines = []
    for file, entries in FILES.items():
        lines += [f"`{file}`", "", "| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
        lines += [f"| `{c.name}` | {c.kind} | {c.unit} | {c.meaning} |" for c in entries]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
