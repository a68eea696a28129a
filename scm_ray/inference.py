"""SCM-free evaluation of a model over a split: maps -> boxes -> metric counts (no Ray).

Used per epoch by the training workers (counts merged over ranks), by the evaluation actors
and by the demo. Every image of the split is counted exactly once: loaders hand each rank a
disjoint shard, and the accumulator's integer counts are summed across ranks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from scm_ray.data.ffcv_io import pixel_grid_boxes
from scm_ray.metrics import LocalizationAccumulator, MetricSet, thresholds_for
from scm_ray.model.wsol import class_maps


def validation_metrics(protocol: str, iou_thresholds, num_classes: int) -> MetricSet:
    """What evaluate_split reports for these settings (Top-k with k = min(5, classes))."""
    return MetricSet.for_dataset(protocol, iou_thresholds, num_classes)


def make_accumulator(threshold_step: float, metrics: MetricSet) -> LocalizationAccumulator:
    """Accumulator over tau = 0, step, ..., < 1 counting what `metrics` reports."""
    return LocalizationAccumulator.for_metrics(metrics, thresholds_for(threshold_step))


class BatchMaps(NamedTuple):
    """What the accumulator needs from one batch, as numpy (off the device and off FFCV's
    reused buffers), so the box extraction can run later or in another thread."""

    labels: np.ndarray  # (B,) int
    topk: np.ndarray  # (B, k) int, best first
    gt_boxes: list[np.ndarray]  # B arrays (m_i, 4)
    gt_maps: np.ndarray  # (B, h, w) map of the ground-truth class
    top1_maps: np.ndarray  # (B, h, w) map of the top-1 predicted class


@torch.no_grad()
def batch_maps(model, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
               box_count: torch.Tensor, use_bf16: bool = False) -> BatchMaps:
    """Maps for the GT class and the top-1 predicted class, and the top-5 predictions."""
    device = images.device
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        s0, f0 = model.maps(images)
    logits = s0.float().mean(dim=(2, 3))  # (B, C)
    topk = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
    classes = torch.stack([labels.to(device), topk[:, 0]], dim=1)  # (B, 2): GT, top-1
    cams = class_maps(s0, f0, classes, size=tuple(images.shape[-2:]))  # (B, 2, h, w)
    cams = cams.cpu().numpy()
    counts = box_count.cpu().numpy()
    height, width = images.shape[-2:]
    # whole pixels on the map's grid (files written before prepare did this hold fractions)
    gt_boxes = [pixel_grid_boxes(b[: int(n)], width, height) for b, n in zip(boxes.cpu().numpy(), counts)]
    return BatchMaps(labels.cpu().numpy(), topk.cpu().numpy(), gt_boxes, cams[:, 0], cams[:, 1])


def update_accumulator(acc: LocalizationAccumulator, maps: BatchMaps) -> None:
    """Boxes from the batch's maps -> counts (the CPU-heavy half; releases the GIL in numba)."""
    acc.update(maps.labels, maps.topk, maps.gt_boxes, gt_maps=maps.gt_maps, top1_maps=maps.top1_maps)


def accumulate_batch(model, acc: LocalizationAccumulator, images: torch.Tensor, labels: torch.Tensor,
                     boxes: torch.Tensor, box_count: torch.Tensor, use_bf16: bool = False) -> None:
    """Maps for the GT class and the top-1 predicted class, top-5 predictions, boxes -> counts."""
    update_accumulator(acc, batch_maps(model, images, labels, boxes, box_count, use_bf16))


def evaluate_split(model, loader, device: torch.device, num_classes: int, protocol: str = "wsol",
                   threshold_step: float = 0.01, iou_thresholds=(0.3, 0.5, 0.7), use_bf16: bool = False,
                   prefix: str = "", distributed: bool = False,
                   return_accumulator: bool = False):
    """Metrics (percent) of `model` over the loader's images; counts summed over ranks when
    `distributed`. SCM-free: only maps() is used."""
    module = getattr(model, "module", model)
    was_training = module.training
    module.eval()
    metric_set = validation_metrics(protocol, iou_thresholds, num_classes)
    acc = make_accumulator(threshold_step, metric_set)
    for images, labels, boxes, box_count, _index in loader:
        accumulate_batch(module, acc, images, labels, boxes, box_count, use_bf16)
    if distributed:
        acc = _all_reduce(acc, device)
    module.train(was_training)
    metrics = metric_set.epoch_row(acc.compute(protocol=protocol), prefix)
    return (metrics, acc) if return_accumulator else metrics


def _all_reduce(acc: LocalizationAccumulator, device: torch.device) -> LocalizationAccumulator:
    """Sum the accumulator's integer counts over all ranks (exact: counts, not averages)."""
    counts = torch.as_tensor(acc.counts_vector(), dtype=torch.int64)
    counts = counts.to(device) if device.type == "cuda" else counts
    dist.all_reduce(counts)
    acc.load_counts_vector(counts.cpu().numpy())
    return acc
