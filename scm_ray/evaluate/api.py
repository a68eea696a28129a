"""`evaluate_checkpoints`: discover, skip what is already scored, run the pool, write the table.

The driver owns every file in the output folder; actors send back rows and rendered PNG bytes,
so the output folder only has to be reachable from the driver. results.parquet is rewritten
after every finished checkpoint, so an interrupted run loses nothing already scored and the
next run picks up where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scm_ray.config import ConfigError, EvaluateJobConfig, resolve_precision, to_dict
from scm_ray.storage import is_uri
from scm_ray.evaluate.discovery import FoundCheckpoint, data_root_of, epoch_from_name, find_checkpoints, fingerprint
from scm_ray.evaluate.results import (
    RESULTS_FILE,
    best_row,
    eval_key,
    format_table,
    ranking_column,
    read_results,
    reusable,
    with_varying_config,
    write_results,
)
from scm_ray.paths import output_folder

FILES_DIR = "checkpoints"


@dataclass
class EvalOutcome:
    """rows: one per checkpoint found under PATH (sorted by path), as in results.parquet."""

    rows: list[dict]
    results_path: Path
    best: dict | None
    ranked_by: str
    evaluated: int  # checkpoints run this time
    reused: int  # rows kept from an earlier run
    seconds: float
    table: str

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") != "ok"]


def evaluate_checkpoints(checkpoints: str, out: str, cfg: EvaluateJobConfig, data: str | None = None,
                         force: bool = False, progress: Callable | None = None) -> EvalOutcome:
    """Evaluate every checkpoint under `checkpoints` on the actor pool; results in `out`. Both
    are local or shared-mount paths: a URI is a ConfigError (copy the run folder first).

    `data` (or cfg.data.root) names the dataset; otherwise each checkpoint's own data.root is
    used. Checkpoints already scored with the same model.pt and settings are skipped unless
    `force`. `progress(PoolStatus)` is called while the pool runs.
    """
    start = time.perf_counter()
    _refuse_uris(checkpoints, out)
    found = _discover(checkpoints)
    out_dir = output_folder("out", out)
    override = _absolute(data or cfg.data.root)
    if override:
        _check_dataset(override, cfg)
    rows = {r["checkpoint"]: r for r in read_results(out_dir, force)}
    tasks, bases = _plan(found, rows, cfg, override, force)
    if tasks:
        _run_pool(tasks, bases, rows, found, cfg, out_dir, progress)
    mine = with_varying_config([rows[c.key] for c in found])
    columns = {k: None for row in mine for k in row}
    mine = [{**columns, **row} for row in mine]  # every row has every column, as in the file
    column = ranking_column(mine, cfg.report.sort_by)
    table = format_table(mine, cfg.report.sort_by)
    return EvalOutcome(mine, out_dir / "results.parquet", best_row(mine, cfg.report.sort_by), column,
                       len(tasks), len(found) - len(tasks), time.perf_counter() - start, table)


def _refuse_uris(checkpoints: str, out: str) -> None:
    """Evaluation walks the checkpoint tree and writes its table with plain file I/O, so a URI
    would be read as a relative path (`s3:/bucket/...` under the cwd, Ray's temporary working
    dir in a job): refuse it before Ray starts rather than lose the results."""
    if is_uri(checkpoints):
        raise ConfigError("checkpoints", f"{checkpoints} is a URI; evaluation reads checkpoints from a local "
                          "folder or a shared mount every node sees: copy the run there first (e.g. "
                          f"`aws s3 sync {checkpoints} /mnt/shared/runs/RUN`) and give that path as --checkpoints")
    if is_uri(out):
        raise ConfigError("out", f"{out} is a URI; evaluation writes results.parquet and plots to a local "
                          "folder or a shared mount: give that path as --out (and copy it to object storage "
                          f"afterwards if you want it there, e.g. `aws s3 sync DIR {out}`)")


def _discover(path: str) -> list[FoundCheckpoint]:
    try:
        found = find_checkpoints(path)
    except FileNotFoundError as exc:
        raise ConfigError("checkpoints", str(exc)) from None
    if not found:
        raise ConfigError("checkpoints", f"no checkpoint (a folder with model.pt or meta.json) under {path}")
    return found


def _absolute(location: str) -> str:
    """Local paths absolute (actors may run elsewhere than the driver's cwd); URIs unchanged."""
    if not location or is_uri(location):
        return location
    return str(Path(location).expanduser().resolve())


def _check_dataset(root: str, cfg: EvaluateJobConfig) -> None:
    """A dataset named for every checkpoint must have the splits read, before Ray starts."""
    if is_uri(root):
        return
    folder = Path(root)
    if not folder.is_dir():
        raise ConfigError("data.root", f"dataset folder not found: {folder} (create one with `scm-ray prepare ...`)")
    needed = [("data.test_split", cfg.data.test_split)]
    if cfg.eval.protocol == "wsol":
        needed.insert(0, ("data.heldout_split", cfg.data.heldout_split))
    for key, split in needed:
        if not (folder / f"{split}.beton").is_file():
            found = sorted(p.stem for p in folder.glob("*.beton"))
            raise ConfigError(key, f"{folder / (split + '.beton')} not found; splits in {folder}: {found or 'none'}")


def _settings(cfg: EvaluateJobConfig, root: str, precision: str | None = None) -> dict:
    """What changes a row's numbers (not its pictures): the eval section, the splits, the
    precision (by default the one actors run in when they get the device they ask for; a row
    records the one its actor used), and the dataset itself (its dataset.json, which a
    re-prepare at the same path rewrites)."""
    heldout = cfg.data.heldout_split if cfg.eval.protocol == "wsol" else None
    if precision is None:
        precision = resolve_precision(cfg.ray.precision, "cuda" if cfg.ray.use_gpu else "cpu")
    return {"eval": to_dict(cfg.eval), "data_root": root, "heldout": heldout, "test": cfg.data.test_split,
            "precision": precision, "dataset": _dataset_identity(root)}


def recorded_key(cfg: EvaluateJobConfig, base: dict, ran: str | None) -> str:
    """The cache key a finished row is stored under: the planned one, unless its actor ran in
    another precision than planned (a GPU actor that found no CUDA computes in fp32), whose
    numbers must not answer later for the planned precision."""
    if not ran or ran == base["precision"]:
        return base["eval_key"]
    return eval_key(_settings(cfg, base.get("data_root") or "", ran))


def _dataset_identity(root: str) -> str | None:
    """A hash of the dataset's description, or None where it cannot be read from here."""
    import hashlib

    try:
        text = (Path(root) / "dataset.json").read_bytes()
    except OSError:
        return None
    return hashlib.sha256(text).hexdigest()[:12]


def _plan(found: list[FoundCheckpoint], rows: dict[str, dict], cfg: EvaluateJobConfig, override: str,
          force: bool):
    """Tasks for the checkpoints that need (re-)evaluating, and the columns the driver knows."""
    from scm_ray.evaluate.pool import Task

    tasks, bases = [], {}
    for c in found:
        root = override or _absolute(data_root_of(c.path) or "")
        settings = _settings(cfg, root)
        key, fp = eval_key(settings), fingerprint(c.path)
        if not force and reusable(rows.get(c.key), fp, key):
            continue
        bases[c.key] = {"checkpoint": c.key, "run": c.run, "epoch": epoch_from_name(c.path), "fingerprint": fp,
                        "eval_key": key, "precision": settings["precision"], "data_root": root or None, "heldout_split": settings["heldout"],
                        "test_split": settings["test"]}
        tasks.append(Task(c.key, root, f"{c.run}/{c.path.name}"))
    return tasks, bases


def _run_pool(tasks, bases: dict, rows: dict, found: list[FoundCheckpoint], cfg: EvaluateJobConfig,
              out_dir: Path, progress: Callable | None) -> None:
    from scm_ray import ray_session
    from scm_ray.evaluate.pool import ActorPool, pool_size

    slugs = {c.key: c.slug for c in found}
    paths = {c.key: c.path for c in found}
    print(f"[scm-ray] {ray_session.connect(cfg.ray.address)}", flush=True)
    size = pool_size(cfg, len(tasks), ray_session.is_local_embedded(cfg.ray.address))
    print(f"[scm-ray] evaluating {len(tasks)} checkpoint(s) on {size} actor(s) "
          f"({len(found) - len(tasks)} already in {out_dir})", flush=True)

    def record(task, report, member) -> None:
        row = {**bases[task.checkpoint], **{k: v for k, v in report.row.items() if v is not None or k not in bases[task.checkpoint]}}
        row["eval_key"] = recorded_key(cfg, bases[task.checkpoint], report.row.get("precision"))
        row.update(attempts=task.attempts, actor_name=member.name if member else None, evaluated_at=time.time(),
                   config_json=json.dumps(report.config, sort_keys=True) if report.config else None)
        row.update(_write_files(out_dir, slugs[task.checkpoint], report.files))
        _note_next_to_checkpoint(paths[task.checkpoint], row, out_dir)
        rows[task.checkpoint] = row
        write_results(out_dir, with_varying_config(sorted(rows.values(), key=lambda r: str(r["checkpoint"]))),
                      cfg.eval.iou_thresholds)

    pool = ActorPool(cfg, size)
    try:
        pool.run(tasks, record, progress)
    finally:
        pool.shutdown()


def _write_files(out_dir: Path, slug: str, files: dict[str, bytes]) -> dict[str, str | None]:
    """<out>/checkpoints/<slug>/<name>; returns the row's file columns (paths relative to out)."""
    folder = out_dir / FILES_DIR / slug
    columns: dict[str, str | None] = {"curves_png": None, "cams_png": None, "result_json": None}
    for name, payload in files.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(payload)
        columns[name.replace(".", "_")] = str(Path(FILES_DIR) / slug / name)
    return columns


def _note_next_to_checkpoint(checkpoint: Path, row: dict, out_dir: Path) -> None:
    """<checkpoint>/evaluation.json: the tau this evaluation chose, where `Localizer` finds it.
    Best effort: a read-only checkpoint folder keeps only the results table."""
    from scm_ray.checkpoint import EVALUATION_FILE

    if row.get("status") != "ok":
        return
    keys = ("protocol", "tau_source", "test/gt_known", "test/gt_known_tau", "test/top1_loc", "test/top1_loc_tau",
            "eval_key")
    note = {k: row.get(k) for k in keys} | {"results": str(Path(out_dir).resolve() / RESULTS_FILE)}
    try:
        (checkpoint / EVALUATION_FILE).write_text(json.dumps(note, indent=2, default=float))
    except OSError:
        pass
