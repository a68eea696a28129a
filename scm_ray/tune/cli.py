"""`scm-ray tune --config FILE [--set key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from scm_ray.config import load_config
from scm_ray.tune.config import TuneJobConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="search YAML (jobs/configs/tune_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set search.num_samples=16 "
                             "or --set ray.storage_path=s3://bucket/runs (repeatable)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TuneJobConfig, args.config, args.overrides)  # space checked before Ray starts
    from scm_ray.tune.search import run_search

    summary = run_search(cfg, default_name=Path(args.config).stem)
    if summary.best is None:
        print(f"[scm-ray] no trial reported {cfg.search.metric}; see {summary.experiment}")
        return 1
    return 0
