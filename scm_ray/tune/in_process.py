"""A trial that trains in its own Tune process (`ray.num_workers: 0` in a search).

Why: a trial of one worker needs no worker group. Run on Ray Train, each trial starts a
controller, four helper actors and a worker process before its first step (about 15 s of a
trial's start on a 2-core machine, README "Start-up time"); here the engine runs in the trial's
actor, which Tune starts with the worker's resources (`ray.cpus_per_worker`, and
`ray.gpus_per_worker` with `ray.use_gpu`: Ray then shows the trial its GPU as cuda:0).

The trial's run folder is the one `scm-ray train --set ray.num_workers=0` writes
(`scm_ray/train/local.py`): the same checkpoints, `metrics.parquet` and resume. What Ray Train did
for a trial is done so: every epoch's metrics go to Tune after its checkpoint is in the run
folder; a trial Tune restarts (`ray.max_failures`, or a resumed search) continues from the run
folder's latest checkpoint; a run already at its last epoch reports that epoch again (Tune needs
a result from every trial). Tune retries any failed trial, also one no restart can fix.
"""

from __future__ import annotations

import json

from scm_ray.startup import StartupClock


def run_trial_in_process(config: dict, plan: dict) -> None:
    """Tune's trainable for in-process trials (the sampled `config`, the search's `plan`).
    The engine's imports (torch, timm, FFCV) happen here, inside the trial's start-up clock."""
    startup = StartupClock.for_trial()
    from ray import tune

    from scm_ray.train import engine
    from scm_ray.train.local import InProcessContext
    from scm_ray.train.trainer import check_resumable
    from scm_ray.tune.trial import trial_run_config

    class TrialContext(InProcessContext):
        """The trial's process as a world of one: the run folder first, then Tune."""

        def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
            super().report(metrics, checkpoint_dir)  # persisted before Tune may stop the trial
            tune.report(metrics)

    trial_id = tune.get_context().get_trial_id()
    cfg = trial_run_config(plan["base"], config, plan, trial_id)
    run_dir = f"{plan['runs_root']}/{trial_id}"
    check_resumable(cfg, run_dir)
    startup.mark("trial")
    finished = finished_metrics(run_dir, cfg.train.epochs)
    if finished is not None:
        print(f"[scm-ray] the run finished at epoch {cfg.train.epochs}; reporting its final metrics",
              flush=True)
        tune.report(finished)
        return
    engine.train(cfg, run_dir, TrialContext(cfg, run_dir), None, startup)


def finished_metrics(run_dir: str, epochs: int) -> dict | None:
    """The latest checkpoint's metrics when it is the run's last epoch (`epochs`), else None."""
    from scm_ray.checkpoint import META_FILE
    from scm_ray.train import engine

    with engine.latest_checkpoint(run_dir) as directory:
        if directory is None:
            return None
        meta = json.loads((directory / META_FILE).read_text())
    return meta["metrics"] if int(meta["epoch"]) >= epochs else None

