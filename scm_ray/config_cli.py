"""`scm-ray config show --config FILE [--set key=value ...] [--schedule]`: what a run will do.

Prints the fully resolved config as YAML (every field, defaults included, each with its one-line
help as a comment; loading the output back gives the same config), or with `--schedule` the lr
in effect during each 1-based epoch. Knows every job kind, so it lives beside the command line,
not in scm_ray.config (which the jobs' packages import).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from scm_ray.config import EvaluateJobConfig, TrainJobConfig, load_config, load_yaml
from scm_ray.config.loader import field_help
from scm_ray.tune.config import TuneJobConfig

# Shipped job YAMLs are named <kind>_<anything>.yaml; each kind loads with its job config class.
JOB_CONFIGS: dict[str, type] = {"train": TrainJobConfig, "tune": TuneJobConfig, "evaluate": EvaluateJobConfig}


def job_config_class(path: str | Path) -> type:
    """The job config a YAML is for: by its name's <kind>_ prefix, else by its sections (a
    `search` section is a search; `report` an evaluation; anything else training)."""
    kind = Path(path).name.split("_", 1)[0]
    if kind in JOB_CONFIGS:
        return JOB_CONFIGS[kind]
    data = load_yaml(path)
    if "search" in data:
        return JOB_CONFIGS["tune"]
    return EvaluateJobConfig if "report" in data else TrainJobConfig


def _scalar(value: Any) -> str:
    """One YAML value on one line (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def render(config: Any, indent: int = 0) -> list[str]:
    """YAML lines of a config dataclass, each field followed by its help as a comment."""
    lines, pad = [], "  " * indent
    for f in dataclasses.fields(config):
        value, help_text = getattr(config, f.name), field_help(f)
        comment = f"  # {help_text}" if help_text else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{comment}")
            lines += render(value, indent + 1)
        elif isinstance(value, dict) and value:
            lines.append(f"{pad}{f.name}:{comment}")
            lines += [f"{pad}  {_scalar(k)}: {_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{pad}{f.name}: {_scalar(value)}{comment}")
    return lines


def schedule_lines(cfg: TrainJobConfig) -> list[str]:
    """`epoch lr` per 1-based epoch: the lr in effect during it (at its last step, as
    metrics.parquet's `lr`), with one optimizer step per epoch standing for any count."""
    from scm_ray.train.schedule import lr_per_epoch

    o = cfg.optim
    lrs = lr_per_epoch(o.lr, cfg.train.epochs, 1, schedule=o.schedule, milestones=o.step_milestones,
                       gamma=o.step_gamma, warmup_epochs=o.warmup_epochs, min_lr_ratio=o.min_lr / o.lr)
    return ["epoch  lr"] + [f"{epoch:>5}  {lr:.6g}" for epoch, lr in enumerate(lrs, start=1)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved config (or its lr per epoch)")
    show.add_argument("--config", required=True, help="a job YAML (train_*, tune_*, evaluate_*)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, as the job's own command takes it (repeatable)")
    show.add_argument("--schedule", action="store_true",
                      help="print the lr in effect during each 1-based epoch instead")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(job_config_class(args.config), args.config, args.overrides)
    if args.schedule:
        if not isinstance(cfg, TrainJobConfig):
            print(f"scm-ray config show: {args.config} has no training schedule (an evaluation config)")
            return 2
        print("\n".join(schedule_lines(cfg)))
        return 0
    print(f"# {args.config}, resolved (every field; defaults included)")
    print("\n".join(render(cfg)))
    return 0
