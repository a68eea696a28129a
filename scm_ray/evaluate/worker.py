"""Evaluating checkpoints one after another in a process that keeps its loaders (no Ray here).

The Ray actor (pool.py) is a thin shell around `CheckpointEvaluator`, so this logic also runs
and is tested in a plain process. Per checkpoint: rebuild the model from the checkpoint alone
(SCM dropped), run it over the held-out split ("wsol" only) and the test split, count boxes in
background threads while the model runs the next batch, and compute the protocol's metrics.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scm_ray.checkpoint import (
    CheckpointData,
    CheckpointError,
    CheckpointUnavailable,
    load_checkpoint,
    model_from_checkpoint,
)
from scm_ray.config import EvaluateJobConfig, resolve_precision
from scm_ray.evaluate.outcome import (
    CHECKPOINT_ERROR,
    DATA_ERROR,
    RUN_ERROR,
    UNAVAILABLE_ERROR,
    CheckpointReport,
    failed_report,
)
from scm_ray.evaluate.plots import OverlaySamples, curves_png, overlays_png
from scm_ray.inference import BatchMaps, batch_maps, make_accumulator, update_accumulator
from scm_ray.metrics import LocalizationAccumulator, LocalizationResult, MetricSet
from scm_ray.metrics.metric_set import TEST, VAL

# On a CPU the model's temporaries are host memory: over a loader batch of 64 images at 224 px
# (scores for every class, attention, the upsampled maps) they swung an actor's memory by
# ~200 MB from batch to batch. 32 images at a time halves that swing for ~4 % of throughput
# (`scm-ray bench scale`, 2-core CPU). A GPU gets the whole batch.
CPU_MODEL_IMAGES = 32


class DataError(RuntimeError):
    """The dataset a checkpoint is evaluated on is missing, unreadable or does not fit it."""


@dataclass
class SplitRun:
    """One pass over a split. images / seconds leave out the first batch when there are more:
    it pays FFCV's pipeline compilation on an actor's first checkpoint, which is not the
    steady rate a user plans with (wall_s keeps the whole cost)."""

    samples: OverlaySamples
    acc: LocalizationAccumulator | None = None
    first_batch: int = 0
    images: int = 0
    seconds: float = 0.0


class BoxCounter:
    """Counts one split's boxes in background threads while the caller runs the model.

    Each thread takes a private accumulator from a free list, so no accumulator is ever updated
    by two threads; the integer counts merge exactly at the end, whatever the interleaving. At
    most 2 batches per thread wait, which bounds the maps held in memory.
    """

    def __init__(self, make: Any, threads: int):
        self.accumulators = [make() for _ in range(threads)]
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for acc in self.accumulators:
            self.free.put(acc)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="boxes")
        self.pending: deque[Future] = deque()
        self.limit = 2 * threads

    def add(self, maps: BatchMaps) -> None:
        while len(self.pending) >= self.limit:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._count, maps))

    def _count(self, maps: BatchMaps) -> None:
        acc = self.free.get()
        try:
            update_accumulator(acc, maps)
        finally:
            self.free.put(acc)

    def finish(self) -> LocalizationAccumulator:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        total, *rest = self.accumulators
        for acc in rest:
            total.merge(acc)
        return total


class DataCache:
    """Loaders per (dataset, split), built once per process and reused for every checkpoint:
    FFCV compiles a loader's pipeline on its first epoch (~20 s in a Ray worker)."""

    def __init__(self, job: EvaluateJobConfig, device: torch.device):
        self.cfg = job.data
        self.device = device
        self.roots: dict[str, Path] = {}
        self.loaders: dict[tuple[str, str], Any] = {}

    def root(self, location: str) -> Path:
        from scm_ray.data.staging import stage_dataset

        if location not in self.roots:
            try:
                self.roots[location] = stage_dataset(location, self.cfg.cache_dir or None)
            except (FileNotFoundError, OSError) as exc:
                raise DataError(str(exc)) from None
        return self.roots[location]

    def loader(self, location: str, split: str):
        from scm_ray.data.loaders import eval_loader

        key = (location, split)
        if key not in self.loaders:
            beton = self.root(location) / f"{split}.beton"
            if not beton.is_file():
                found = sorted(p.stem for p in beton.parent.glob("*.beton"))
                raise DataError(f"{beton} not found; splits in {beton.parent}: {found or 'none'}")
            try:
                self.loaders[key] = eval_loader(beton, self.cfg.batch_size, self.cfg.num_workers,
                                                device=self.device)
            except (ValueError, OSError) as exc:
                raise DataError(f"{beton}: {exc}") from None
        return self.loaders[key]

    def info(self, location: str) -> dict:
        from scm_ray.data.ffcv_io import read_info

        try:
            return read_info(self.root(location))
        except (FileNotFoundError, ValueError):
            return {}


def _display_images(images: torch.Tensor, count: int) -> list[np.ndarray]:
    """Normalised (B, 3, H, W) -> uint8 (H, W, 3) copies of the first `count` images."""
    from scm_ray.data.loaders import MEAN_255, STD_255

    x = images[:count].detach().float().cpu().permute(0, 2, 3, 1).numpy()  # (n, H, W, 3)
    return list(np.clip(x * STD_255 + MEAN_255, 0, 255).astype(np.uint8))


def _warm_box_kernels() -> None:
    """Load the numba box kernels now (from their cache, or compiling them), so the first
    checkpoint's throughput is not charged for it."""
    acc = make_accumulator(0.5, MetricSet("paper", (0.5,), 2))  # "paper": every kernel runs
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    acc.update(np.array([0]), np.array([[0, 1]]), [np.array([[1, 1, 5, 5]])], ramp[None], ramp[None])


class CheckpointEvaluator:
    """Evaluates checkpoints on this process's device, reusing data loaders across them."""

    def __init__(self, job: EvaluateJobConfig, device: torch.device | str = "cpu"):
        self.job = job
        self.device = torch.device(device)
        self.precision = resolve_precision(job.ray.precision, self.device.type)
        self.use_bf16 = self.precision == "bf16"
        self.box_threads = job.ray.box_threads or max(1, int(job.ray.cpus_per_actor))
        self.data = DataCache(job, self.device)
        _warm_box_kernels()

    def evaluate(self, checkpoint: str, data_root: str, title: str = "") -> CheckpointReport:
        """Never raises for a bad checkpoint or dataset: those become a failed report."""
        started = time.time()
        try:
            report = self._evaluate(Path(checkpoint), data_root, title or Path(checkpoint).name)
        except CheckpointUnavailable as exc:
            report = failed_report(UNAVAILABLE_ERROR, str(exc))
        except CheckpointError as exc:
            report = failed_report(CHECKPOINT_ERROR, str(exc))
        except DataError as exc:
            report = failed_report(DATA_ERROR, str(exc))
        except Exception as exc:  # a model or metric failure on this checkpoint only
            report = failed_report(RUN_ERROR, f"{type(exc).__name__}: {exc}")
        ended = time.time()
        report.row.update(start_time=started, end_time=ended, wall_s=ended - started, pid=os.getpid(),
                          host=socket.gethostname(), device=str(self.device), precision=self.precision)
        return report

    def _evaluate(self, path: Path, data_root: str, title: str) -> CheckpointReport:
        t0 = time.perf_counter()
        data = load_checkpoint(path)
        model = model_from_checkpoint(data).to(self.device).eval()  # SCM-free
        load_s = time.perf_counter() - t0
        data_root = data_root or str(data.config.get("data", {}).get("root") or "")
        if not data_root:
            raise DataError("no dataset: the checkpoint's config names none; give --data")
        info = self.data.info(data_root)
        self._check_fits(data, info, data_root)
        protocol = self.job.eval.protocol
        num_classes = data.model_config.num_classes
        t1 = time.perf_counter()
        runs, heldout = [], None
        ious = self.job.eval.iou_thresholds
        if protocol == "wsol":  # taus picked on the held-out split, always under "wsol"
            runs.append(self._run_split(model, data_root, self.job.data.heldout_split,
                                        MetricSet.for_dataset("wsol", ious, num_classes), 0))
            heldout = runs[-1].acc.compute("wsol")
        runs.append(self._run_split(model, data_root, self.job.data.test_split,
                                    MetricSet.for_dataset(protocol, ious, num_classes),
                                    self.job.report.overlay_images))
        test = runs[-1].acc.compute(protocol, thresholds_from=heldout)
        eval_s = time.perf_counter() - t1
        seconds = sum(r.seconds for r in runs)
        row = {"status": "ok", "error_kind": None, "error": None, "epoch": data.epoch,
               "global_step": data.global_step, "protocol": test.protocol, "tau_source": test.tau_source,
               "k": test.k, **test.metric_set().row(test, TEST), "load_s": load_s, "eval_s": eval_s,
               "images_per_s": sum(r.images for r in runs) / seconds if seconds > 0 else None}
        if heldout is not None:
            row.update(heldout.metric_set().row(heldout, VAL))
        return CheckpointReport(row, data.config, self._files(test, heldout, runs[-1].samples, info, title))

    def _check_fits(self, data: CheckpointData, info: dict, data_root: str) -> None:
        """A dataset with more classes than the model's head cannot be scored by it."""
        classes = info.get("num_classes")
        model_classes = data.model_config.num_classes
        if classes is not None and int(classes) > model_classes:
            raise DataError(f"{data_root} has {classes} classes but the checkpoint's model predicts "
                            f"{model_classes}")

    def _run_split(self, model, data_root: str, split: str, metrics: MetricSet, keep: int) -> SplitRun:
        """Model on this thread, boxes on the counter's threads; the first `keep` images kept
        for the overlay figure."""
        loader = self.data.loader(data_root, split)
        eval_cfg = self.job.eval
        counter = BoxCounter(lambda: make_accumulator(eval_cfg.threshold_step, metrics), self.box_threads)
        run = SplitRun(samples=OverlaySamples(panels=keep))
        start = warm = time.perf_counter()
        try:
            for batch in loader:
                for images, labels, boxes, box_count in self._model_chunks(batch):
                    maps = batch_maps(model, images, labels, boxes, box_count, self.use_bf16)
                    if keep:
                        self._keep(run.samples, images, maps)
                    counter.add(maps)
                if run.first_batch == 0:
                    run.first_batch, warm = len(batch.labels), time.perf_counter()
        finally:
            run.acc = counter.finish()
        end = time.perf_counter()
        steady = run.acc.n_images - run.first_batch
        run.images, run.seconds = (steady, end - warm) if steady > 0 else (run.acc.n_images, end - start)
        return run

    def _model_chunks(self, batch) -> list[tuple[torch.Tensor, ...]]:
        """(images, labels, boxes, box_count) of a loader batch, in slices the model runs at once
        (CPU_MODEL_IMAGES on a CPU)."""
        tensors = (batch.images, batch.labels, batch.boxes, batch.box_count)
        step = CPU_MODEL_IMAGES if self.device.type == "cpu" else len(batch.labels)
        return [tuple(t[s:s + step] for t in tensors) for s in range(0, len(batch.labels), step)]

    @staticmethod
    def _keep(samples: OverlaySamples, images: torch.Tensor, maps: BatchMaps) -> None:
        """The batch's images the overlay figure may use (a few per class, see OverlaySamples)."""
        picked = samples.wanted(maps.labels)
        if not picked:
            return
        samples.images += _display_images(images[picked], len(picked))
        samples.maps += [maps.gt_maps[i].copy() for i in picked]
        samples.labels += [int(maps.labels[i]) for i in picked]
        samples.predicted += [int(maps.topk[i, 0]) for i in picked]
        samples.gt_boxes += [maps.gt_boxes[i].copy() for i in picked]

    def _files(self, test: LocalizationResult, heldout: LocalizationResult | None,
               samples: OverlaySamples, info: dict, title: str) -> dict[str, bytes]:
        files = {"result.json": json.dumps({"test": test.as_dict(),
                                            "heldout": heldout.as_dict() if heldout else None},
                                           default=float).encode()}
        if not self.job.report.plots:
            return files
        files["curves.png"] = curves_png(test, heldout, title)
        if len(samples) and test.gt_known.tau is not None:
            files["cams.png"] = overlays_png(samples, test.gt_known.tau, info.get("class_names"), title)
        return files
