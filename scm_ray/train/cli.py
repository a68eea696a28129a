"""`scm-ray train --config FILE [--set key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from scm_ray.config import TrainJobConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (jobs/configs/train_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set scm.num_blocks=3 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from scm_ray.startup import StartupClock

    clock = StartupClock.for_command()
    clock.mark("imports")
    cfg = load_config(TrainJobConfig, args.config, args.overrides)  # fails before Ray starts
    if cfg.scm_never_active():
        print(f"[scm-ray] note: scm.start_epoch={cfg.scm.start_epoch} >= train.epochs={cfg.train.epochs}: "
              "the SCM stays off for this whole run", flush=True)
    from scm_ray.train.trainer import run_training

    outcome = run_training(cfg, default_name=Path(args.config).stem, startup=clock)
    if outcome.error:
        print(f"[scm-ray] training failed: {outcome.error}")
        return 1
    print(f"[scm-ray] results in {outcome.run_dir}")
    return 0
