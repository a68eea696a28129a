"""`ray.num_workers: 0`: the training engine in the driver process, no Ray at all.

For debugging (pdb, prints, a profiler) and for machines without a cluster. The run folder is
the one a Ray Train run writes: `<storage>/<name>/checkpoint_epochNNNN/` (the best
`ray.num_to_keep` by `ray.checkpoint_metric`, and always the latest), metrics.parquet, and a
rerun with the same name continues from the latest checkpoint there.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import torch

from scm_ray.checkpoint import META_FILE
from scm_ray.config import TrainJobConfig
from scm_ray.startup import StartupClock
from scm_ray.train import engine
from scm_ray.storage import filesystem
from scm_ray.train.history import format_epoch_line


class InProcessContext:
    """The driver process as a world of one (rank 0); reports persist into the run folder."""

    rank = 0
    world_size = 1
    node = "local"

    def __init__(self, cfg: TrainJobConfig, run_dir: str):
        self.device = torch.device("cuda:0" if cfg.ray.use_gpu else "cpu")
        self.run_dir = run_dir
        self.cfg = cfg

    def restore(self) -> contextlib.AbstractContextManager[Path | None]:
        return engine.latest_checkpoint(self.run_dir)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            persist_checkpoint(checkpoint_dir, self.run_dir)
            prune_checkpoints(self.run_dir, Path(checkpoint_dir).name, self.cfg.ray.num_to_keep,
                              self.cfg.ray.checkpoint_metric, self.cfg.ray.checkpoint_mode)
        print(format_epoch_line(metrics, self.cfg.train.epochs, self.cfg.scm.num_blocks), flush=True)


def train_in_process(cfg: TrainJobConfig, run_dir: str, before_step: engine.StepHook | None = None,
                     startup: StartupClock | None = None) -> None:
    """Run (or continue) the training of `run_dir` here; raises what the engine raises."""
    engine.train(cfg, run_dir, InProcessContext(cfg, run_dir), before_step, startup)


def persist_checkpoint(source: str, run_dir: str) -> None:
    """Copy a checkpoint directory into the run folder under its own name; a local copy is
    written beside it first and renamed, so a crash never leaves a half checkpoint that a
    resume would pick as the latest."""
    fs, path = filesystem(run_dir)
    name = Path(source).name
    fs.create_dir(path, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        import shutil

        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        target = Path(path) / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return
    pafs.copy_files(source, f"{path}/{name}", destination_filesystem=fs)


def kept_checkpoints(run_dir: str) -> dict[str, dict]:
    """checkpoint folder name -> its metrics (meta.json), for every checkpoint in the run folder."""
    fs, path = filesystem(run_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return {}
    kept = {}
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_epoch"):
            continue
        try:
            with fs.open_input_stream(f"{path}/{info.base_name}/{META_FILE}") as stream:
                kept[info.base_name] = json.loads(stream.read().decode()).get("metrics", {})
        except (OSError, ValueError):
            continue
    return kept


def ranked(kept: dict[str, dict], metric: str, mode: str) -> list[str]:
    """Checkpoint names best first by `metric` (missing = worst; ties: the later one first),
    the order Ray Train's checkpoint manager keeps them in."""
    sign = 1 if mode == "max" else -1

    def score(name: str) -> tuple[float, str]:
        value = kept[name].get(metric)
        return (sign * value if isinstance(value, (int, float)) else float("-inf"), name)

    return sorted(kept, key=score, reverse=True)


def prune_checkpoints(run_dir: str, latest: str, num_to_keep: int, metric: str, mode: str) -> None:
    """Delete all but the best `num_to_keep` checkpoints and the latest (as Ray Train does)."""
    kept = kept_checkpoints(run_dir)
    doomed = [n for n in ranked(kept, metric, mode)[num_to_keep:] if n != latest]
    fs, path = filesystem(run_dir)
    for name in doomed:
        fs.delete_dir(f"{path}/{name}")

