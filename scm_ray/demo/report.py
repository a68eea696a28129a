"""The demo's evaluation step: the run's checkpoints through the evaluation pool, and two
trivial baselines on the same test split, side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scm_ray.config import TrainJobConfig
from scm_ray.metrics import box_iou

# The centre box covers the middle half of each side (a quarter of the image).
CENTRE_FRACTION = 0.5


@dataclass
class DemoReport:
    gt_known: dict[str, float]  # per arm: test GT-Known of the checkpoint chosen on val
    centre_box: float
    whole_image: float
    table: str


def split_boxes(data_dir: Path, split: str) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Ground-truth boxes (stored-image pixels) of an evaluation split and its image size."""
    import torch

    from scm_ray.data.loaders import eval_loader

    boxes: list[np.ndarray] = []
    size = (0, 0)
    for images, _labels, batch_boxes, counts, _index in eval_loader(
        str(data_dir / f"{split}.beton"), batch_size=200, num_workers=1, device=torch.device("cpu")
    ):
        size = tuple(images.shape[-2:])
        for b, n in zip(batch_boxes.numpy(), counts.numpy()):
            boxes.append(b[: int(n)].copy())
    return boxes, size


def fixed_box_gt_known(boxes: list[np.ndarray], box: np.ndarray) -> float:
    """GT-Known (percent) of one fixed box for every image: IoU >= 0.5 with any GT box."""
    hits = [box_iou(box[None], gt).max() >= 0.5 for gt in boxes]
    return 100.0 * float(np.mean(hits)) if hits else 0.0


def baselines(data_dir: Path, split: str) -> dict[str, float]:
    boxes, (h, w) = split_boxes(data_dir, split)
    mx, my = w * (1 - CENTRE_FRACTION) / 2, h * (1 - CENTRE_FRACTION) / 2
    centre = np.array([mx, my, w - 1 - mx, h - 1 - my], dtype=np.float64)
    whole = np.array([0, 0, w - 1, h - 1], dtype=np.float64)
    return {"centre box": fixed_box_gt_known(boxes, centre),
            "whole image": fixed_box_gt_known(boxes, whole)}


def evaluate_demo(cfg: TrainJobConfig, runs: dict[str, str], data_dir: Path, out: Path) -> DemoReport:
    """Evaluate every checkpoint of each run through the actor pool (wsol protocol: checkpoint
    and taus from the held-out val split, applied to test) and compare each run's chosen
    checkpoint with the trivial baselines."""
    from scm_ray.config import EvaluateJobConfig, load_config
    from scm_ray.evaluate import evaluate_checkpoints

    eval_cfg = load_config(EvaluateJobConfig, None, [
        f"data.root={data_dir}", "eval.protocol=wsol", f"eval.threshold_step={cfg.eval.threshold_step}",
    ])
    chosen, tables = {}, []
    for arm, run_dir in runs.items():
        outcome = evaluate_checkpoints(run_dir, str(out), eval_cfg, data=str(data_dir))
        if outcome.best is None:
            raise RuntimeError(f"no checkpoint of {run_dir} could be evaluated; see {outcome.results_path}")
        chosen[arm] = outcome.best
        tables.append(f"{arm}: {run_dir}\n{outcome.table}")
    base = baselines(data_dir, cfg.data.test_split)
    lines = [*tables, "", "test split, each run's checkpoint and taus chosen on the held-out val split:",
             f"  {'method':<34}{'GT-Known':>10}{'Top-1 Loc':>11}{'Top-1 Cls':>11}  checkpoint"]
    for arm, best in chosen.items():
        lines.append(f"  {'ViT + ' + arm:<34}{best['test/gt_known']:>9.1f}%{best['test/top1_loc']:>10.1f}%"
                     f"{best['test/top1_cls']:>10.1f}%  {Path(best['checkpoint']).name}")
    lines += [f"  {name + ' (trivial baseline)':<34}{value:>9.1f}%" for name, value in base.items()]
    scm, plain = (float(b["test/gt_known"]) for b in chosen.values())
    verdict = ("the SCM beats" if scm > plain else "the SCM does NOT beat") + \
        f" the same model trained without it here ({scm - plain:+.1f} points GT-Known)"
    lines.append(f"  {verdict}")
    return DemoReport(gt_known={arm: float(b["test/gt_known"]) for arm, b in chosen.items()},
                      centre_box=base["centre box"], whole_image=base["whole image"],
                      table="\n".join(lines))
