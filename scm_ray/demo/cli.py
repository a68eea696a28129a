"""`scm-ray demo` (`make demo`): the whole pipeline on the embedded default, and the paper's
claim put to the test.

Synthetic dataset -> FFCV files -> local Ray -> Ray Train (2 CPU workers), twice: a small ViT
with 4 ADBs, and the same model and recipe with none -> SCM-free evaluation of both runs'
checkpoints (wsol protocol: checkpoint and threshold chosen on the held-out val split, applied
to test) -> both next to two trivial baselines on the same test split -> CAM overlays. The last
line is machine-readable, whichever model wins:

    demo: GT-Known 85.8% (no SCM 67.5%, centre box 20.2%, whole image 0.0%) in 190 s
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from scm_ray.config import TrainJobConfig, load_config

SUMMARY_FILE = "summary.txt"  # in the demo's folder: the results table and the demo line

# (label, run-name prefix, ADB count): the paper's model, then the same model and recipe without
# the SCM, so the comparison isolates the SCM.
ARMS = (("SCM (4 ADBs)", "demo", 4), ("no SCM (0 ADBs)", "demo-no-scm", 0))

# Shipped inside the package (an installed scm-ray has no jobs/ folder); a copy of
# jobs/configs/train_synthetic.yaml, which tests/demo/test_demo_config.py keeps equal.
DEMO_CONFIG = Path(__file__).resolve().parent / "train_synthetic.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="folder for data, run and results")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training YAML")
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out).resolve()
    data_dir = out / "data"
    cfg = load_config(TrainJobConfig, args.config, [
        f"data.root={data_dir}", f"ray.storage_path={out / 'runs'}",
        *args.overrides,
    ])
    from scm_ray.data.prepare import prepare_synthetic

    print(f"[demo] 1/5 synthetic dataset -> {data_dir}", flush=True)
    prepare_synthetic(data_dir, num_train=args.num_train, num_val=args.num_val,
                      num_test=args.num_test, image_size=cfg.model.img_size,
                      num_classes=cfg.model.num_classes, seed=0, progress=True)

    from scm_ray.train.trainer import run_training

    runs = {}
    for step, (arm, name, blocks) in enumerate(ARMS, start=2):
        print(f"[demo] {step}/5 training {arm} on a local Ray (2 CPU workers)", flush=True)
        arm_cfg = dataclasses.replace(
            cfg, scm=dataclasses.replace(cfg.scm, num_blocks=blocks),
            ray=dataclasses.replace(cfg.ray, name=cfg.ray.name and name.replace("demo", cfg.ray.name, 1)))
        outcome = run_training(arm_cfg, default_name=name)
        if outcome.error:
            print(f"[demo] training {arm} failed: {outcome.error}")
            return 1
        runs[arm] = outcome.run_dir

    print("[demo] 4/5 evaluating both runs' checkpoints SCM-free (wsol protocol)", flush=True)
    from scm_ray.demo.report import evaluate_demo

    report = evaluate_demo(cfg, runs, data_dir, out / "results")
    print("[demo] 5/5 results", flush=True)
    print(report.table)
    for arm, run_dir in runs.items():
        print(f"[demo] run folder ({arm}): {run_dir}")
    print(f"[demo] results, CAM overlays and curves: {out / 'results'}; this summary: {out / SUMMARY_FILE}")
    scm, base = report.gt_known[ARMS[0][0]], report.gt_known[ARMS[1][0]]
    line = (f"demo: GT-Known {scm:.1f}% (no SCM {base:.1f}%, centre box {report.centre_box:.1f}%, "
            f"whole image {report.whole_image:.1f}%) in {time.perf_counter() - start:.0f} s")
    (out / SUMMARY_FILE).write_text(f"{report.table}\n{line}\n")
    print(line)
    return 0
