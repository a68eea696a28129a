"""Ray Train's side of training: the per-worker function and a `TrainContext` over `ray.train`.

The engine (engine.py) holds the loop; this file only tells it who it is (rank, world, device,
node) and hands its reports and checkpoints to Ray Train, which persists them under the run
folder, keeps the best `ray.num_to_keep`, and restarts a failed worker group from the latest.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import ray
import ray.train
import ray.train.torch

from scm_ray.config import TrainJobConfig, from_dict
from scm_ray.startup import StartupClock
from scm_ray.train import engine


class RayTrainContext:
    """This Ray Train worker as the engine's TrainContext."""

    def __init__(self, run_dir: str):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.node = ray.get_runtime_context().get_node_id()
        self.run_dir = run_dir

    @contextlib.contextmanager
    def restore(self) -> Iterator[Path | None]:
        """Ray Train's latest checkpoint; else the run folder's (a run started in-process)."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            with engine.latest_checkpoint(self.run_dir) as directory:
                yield directory
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:
            ray.train.report(metrics, checkpoint=None)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
                         checkpoint_dir_name=Path(checkpoint_dir).name)


def train_worker(loop_config: dict, before_step: engine.StepHook | None = None) -> None:
    """Ray Train entry point. loop_config = {"job": <TrainJobConfig dict>, "run_dir": str}
    (the config crosses the Ray boundary once, as a plain dict), plus the driver's start-up
    marks under "startup" (scm_ray/startup.py)."""
    startup = StartupClock.from_dict(loop_config.get("startup"))
    if startup is not None:
        startup.mark("worker group")
    cfg = from_dict(TrainJobConfig, loop_config["job"])
    _quiet_report_log(cfg.ray.log_level)
    run_dir = loop_config["run_dir"]
    engine.train(cfg, run_dir, RayTrainContext(run_dir), before_step, startup)


def _quiet_report_log(level: str) -> None:
    """Ray Train V2 logs every report at INFO under a logger named by its file path, outside
    the `ray.train` hierarchy that RunConfig's LoggingConfig sets; apply ray.log_level to it."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a Ray without that module has nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(level)
