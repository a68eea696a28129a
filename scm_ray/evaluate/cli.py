"""`scm-ray evaluate --checkpoints PATH --out DIR [--data DIR] [--config YAML] [--set k=v] ...`."""

from __future__ import annotations

import argparse

from scm_ray.config import EvaluateJobConfig, load_config

# Shortcut flags and the config field each one sets (applied before any --set).
SHORTCUTS = {"protocol": "eval.protocol", "heldout": "data.heldout_split", "test_split": "data.test_split",
             "num_actors": "ray.num_actors", "address": "ray.address"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", required=True, metavar="PATH",
                        help="a checkpoint folder, a training run folder, or any tree of them (a Tune experiment); "
                             "a local or shared-mount path, not a URI")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (local or shared mount, not a URI): results.parquet, per-checkpoint plots; "
                             "re-runs skip what it holds")
    parser.add_argument("--data", metavar="DIR", help="prepared dataset (default: each checkpoint's own data.root)")
    parser.add_argument("--config", help="evaluation YAML (jobs/configs/evaluate_*.yaml); default: built-in defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set eval.threshold_step=0.001 (repeatable)")
    parser.add_argument("--protocol", choices=["wsol", "paper"], help="wsol: tau on the held-out split; paper: same split")
    parser.add_argument("--heldout", metavar="SPLIT", help="held-out split for tau and checkpoint choice (wsol)")
    parser.add_argument("--test-split", metavar="SPLIT", help="split the reported numbers come from")
    parser.add_argument("--num-actors", type=int, metavar="N", help="actors in the pool (0 = as many as fit)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--force", action="store_true", help="re-evaluate checkpoints already in --out")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every checkpoint got a row and at least one scored; 1 when none scored."""
    shortcuts = [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None]
    cfg = load_config(EvaluateJobConfig, args.config, shortcuts + args.overrides)  # fails before Ray starts
    from scm_ray.evaluate.api import evaluate_checkpoints

    outcome = evaluate_checkpoints(args.checkpoints, args.out, cfg, data=args.data, force=args.force)
    print(outcome.table)
    print(f"[scm-ray] {outcome.evaluated} evaluated, {outcome.reused} reused, {len(outcome.failed)} failed "
          f"in {outcome.seconds:.1f} s; results in {outcome.results_path}", flush=True)
    return 0 if outcome.best is not None else 1
