"""What a trial trains: the search's base config with the trial's sampled values, its run folder
and tracking. One place for both kinds of trial (search.py's Ray Train trials, in_process.py's)."""

from __future__ import annotations

import dataclasses

from scm_ray.config import TrainJobConfig
from scm_ray.tune.space import trial_config


def trial_run_config(base: dict, sample: dict, plan: dict, trial_id: str) -> TrainJobConfig:
    """The training config of one trial: its run goes to <runs_root>/<trial_id>; with MLflow
    tracking, every trial of a search is a run of one experiment named after the search, in
    the store `scm-ray train` uses for the search's storage folder."""
    from scm_ray.train.tracking import mlflow_uri

    cfg = trial_config(base, sample)
    ray_cfg = dataclasses.replace(cfg.ray, storage_path=plan["runs_root"], name=trial_id)
    train_cfg = cfg.train
    if "mlflow" in train_cfg.tracking:
        train_cfg = dataclasses.replace(train_cfg, mlflow_experiment=train_cfg.mlflow_experiment or plan["name"],
                                        mlflow_uri=mlflow_uri(cfg, plan["storage"]))
    return dataclasses.replace(cfg, ray=ray_cfg, train=train_cfg)
