"""The training engine: plain torch, no Ray (docs/architecture.md).

One call, `train(cfg, run_dir, ctx)`, runs a rank's whole training: staged data -> FFCV loaders
for this rank's shard -> model (DDP when the world is larger than one) -> AdamW + per-step
schedule -> per epoch: train, validate (metric counts merged over ranks, so the split is covered
exactly once), report, checkpoint (rank 0 writes; every rank reports).

Everything a launcher provides is behind `TrainContext`: this rank, the world, the device, the
checkpoint to continue from and where reports go. The Ray Train adapter (ray_adapter.py)
implements it on top of `ray.train`; the in-process launcher (local.py, `ray.num_workers: 0`)
implements it with a folder. Why: the loop is then tested, debugged (pdb) and read without a
cluster, and Ray stays a thin shell, as in scm_ray/evaluate/ (worker.py vs pool.py).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F

from scm_ray.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from scm_ray.config import TrainJobConfig, resolve_precision, to_dict
from scm_ray.data.staging import stage_dataset
from scm_ray.inference import evaluate_split
from scm_ray.metrics.boxes import NonFiniteMap
from scm_ray.model import build_model, param_groups
from scm_ray.model.wsol import join_scm_state
from scm_ray.startup import STARTUP_FILE, StartupClock
from scm_ray.storage import filesystem
from scm_ray.train.history import append_history, write_text
from scm_ray.train.schedule import build_scheduler, last_step_lr, lr_multiplier
from scm_ray.train.tracking import Tracker

HISTORY_JSON = "history.json"  # inside each checkpoint: the epochs so far (metrics.parquet's rows)
WORKERS_FILE = "workers.json"

# Called before every optimizer step with the global step (0-based). None in normal runs; tests
# wrap the worker function with one that raises, to exercise restarts (tests/train/faults.py).
StepHook = Callable[[int], None]


class TrainingDiverged(RuntimeError):
    """More optimizer steps in a row than train.max_skipped_steps were skipped or undone: the
    run learns nothing, and a restart from the last checkpoint would only repeat it."""


class TrainContext(Protocol):
    """What a launcher gives the engine: one rank of a world of `world_size` processes."""

    rank: int
    world_size: int
    device: torch.device
    node: str  # where this rank runs (a Ray node id, or "local"): recorded in workers.json

    def restore(self) -> contextlib.AbstractContextManager[Path | None]:
        """A local directory holding the checkpoint to continue from, or None (a fresh run)."""

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """One epoch's metrics (every rank: a barrier); rank 0 passes a checkpoint directory,
        named `checkpoint_epochNNNN`, that the launcher persists under the run folder before
        it returns (the directory is temporary)."""


@dataclass
class TrainState:
    """What a checkpoint restores: the model, the optimizer and schedule, and where we are."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0  # epochs finished
    global_step: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class StepSettings:
    """How this rank runs an epoch's optimizer steps."""

    device: torch.device
    use_bf16: bool
    grad_clip: float  # 0 = off
    steps: int  # optimizer steps per epoch
    rank: int
    log_every: int
    max_skipped: int  # steps in a row skipped or undone before the run ends (TrainingDiverged)


def skipped_steps_limit(configured: int, steps_per_epoch: int) -> int:
    """train.max_skipped_steps, or (0) max(10, 5% of an epoch's steps) but at most half an
    epoch: a run that cannot take a step for that long has diverged (a short run included: 8
    steps an epoch would otherwise never reach 10 in a row before its weights break validation),
    while a rare bad batch never ends a run."""
    return configured or min(max(10, math.ceil(0.05 * steps_per_epoch)), steps_per_epoch // 2)


class FiniteUpdates:
    """Keeps non-finite values out of the weights, counting what it did.

    A step is skipped before the update when the loss or the gradient norm is not finite (the
    norm is computed for clipping anyway). A finite gradient can still give a non-finite update
    (a huge lr, weights near the float limit): after the update one fused inf-norm over the
    parameters (NaN and inf both propagate into it) decides, and the weights are copied back
    from the copy taken before the update. Cost: one copy of the weights per step (a fused
    copy, a small fraction of a step's forward and backward) and one host sync, which the
    pre-update check already paid. The optimizer's moments keep the step's finite gradient.
    """

    def __init__(self, model: torch.nn.Module, limit: int):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.backup = [torch.empty_like(p) for p in self.params]
        self.limit = limit
        self.in_a_row = 0

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """optimizer.step(), undone when it made a weight non-finite; whether it was kept."""
        with torch.no_grad():
            torch._foreach_copy_(self.backup, self.params)
            optimizer.step()
            if torch.isfinite(torch.nn.utils.get_total_norm(self.params, norm_type=math.inf)):
                return True
            torch._foreach_copy_(self.params, self.backup)
        return False

    def count(self, applied: bool, where: str) -> None:
        """Count a step; raise TrainingDiverged after more than `limit` failed in a row."""
        self.in_a_row = 0 if applied else self.in_a_row + 1
        if self.in_a_row > self.limit:
            raise TrainingDiverged(
                f"{self.in_a_row} optimizer steps in a row skipped or undone (non-finite loss, "
                f"gradients or weights) up to {where}; limit train.max_skipped_steps={self.limit}. "
                "Lower optim.lr, set optim.grad_clip, or check the scm.* settings")


@dataclass
class EpochTotals:
    """This rank's sums over an epoch (merged over ranks in `epoch_metrics`)."""

    loss: torch.Tensor
    seen: int = 0
    skipped: int = 0
    seconds: float = 0.0


def use_bf16(precision: str, device: torch.device) -> bool:
    """train.precision on this device (config.resolve_precision: the rule evaluation shares)."""
    return resolve_precision(precision, device.type) == "bf16"


def train(cfg: TrainJobConfig, run_dir: str, ctx: TrainContext, before_step: StepHook | None = None,
          startup: StartupClock | None = None) -> None:
    """Train (or continue) the run in `run_dir` on this rank until cfg.train.epochs. `startup`
    (the launcher's marks so far) is completed up to the first optimizer step on rank 0."""
    first = FirstStep(startup, run_dir) if startup is not None and ctx.rank == 0 else None
    mark = first.clock.mark if first else (lambda phase: None)
    torch.manual_seed(cfg.train.seed)  # identical init on every rank (DDP also broadcasts)
    data_root = stage_dataset(cfg.data.root, cfg.data.cache_dir or None)
    record_worker(run_dir, ctx)
    mark("dataset")
    train_data, val_data = build_loaders(cfg, data_root, ctx)
    mark("loaders")
    steps = len(train_data)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    state = build_state(cfg, ctx.device, steps)
    restore_state(state, ctx)
    train_data.set_epoch(state.epoch)  # a resumed run sees the epoch's own shuffle and crops
    def wrapped(find_unused: bool):
        ddp = wrap_ddp(state.model, ctx.device, ctx.world_size, find_unused)
        return torch.compile(ddp) if cfg.train.compile else ddp

    # DDP looks for unused parameters only while the SCM's are unused (its warm-up epochs, see
    # scm.start_epoch): looking afterwards costs a graph traversal per step and warns on every rank.
    has_scm = state.model.scm is not None
    first_epoch = state.epoch
    step_fn = wrapped(find_unused=has_scm and first_epoch < cfg.scm.start_epoch)
    mark("model")
    settings = StepSettings(ctx.device, use_bf16(cfg.train.precision, ctx.device), cfg.optim.grad_clip,
                            steps, ctx.rank, cfg.train.log_every_steps,
                            skipped_steps_limit(cfg.train.max_skipped_steps, steps))
    guard = FiniteUpdates(state.model, settings.max_skipped)
    config = to_dict(cfg)
    tracker = Tracker(cfg, run_dir) if ctx.rank == 0 else None
    status = "FAILED"
    try:
        for epoch in range(state.epoch, cfg.train.epochs):
            if has_scm and epoch == cfg.scm.start_epoch > first_epoch:
                step_fn = wrapped(find_unused=False)
            metrics = run_epoch(cfg, state, step_fn, train_data, val_data, settings, guard, tracker,
                                ctx.world_size, epoch, before_step, first)
            first = None
            state.epoch = epoch + 1
            state.history.append(metrics)
            report_epoch(state, config, metrics, run_dir, ctx)
            if tracker is not None:
                tracker.epoch(state.history)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.close(status)


@dataclass
class FirstStep:
    """Rank 0's start-up clock until the first optimizer step: then one line, and
    startup.json in the run folder (scm_ray/startup.py). A worker group restarted after a
    failure carries the command's marks again; its file is left as the first start wrote it."""

    clock: StartupClock
    run_dir: str

    def batch(self) -> None:
        self.clock.mark("first batch")

    def step(self) -> None:
        self.clock.mark("first step")
        print(self.clock.line(), flush=True)
        if not self._written_by_this_command():
            write_text(self.run_dir, STARTUP_FILE, self.clock.to_json())

    def _written_by_this_command(self) -> bool:
        fs, path = filesystem(self.run_dir)
        try:
            with fs.open_input_stream(f"{path}/{STARTUP_FILE}") as f:
                return json.loads(f.read())["origin"] == self.clock.origin
        except (OSError, ValueError, KeyError):
            return False


def build_state(cfg: TrainJobConfig, device: torch.device, steps_per_epoch: int) -> TrainState:
    """Model, AdamW (the reference's weight-decay groups) and the per-step lr schedule."""
    model = build_model(cfg.model, cfg.scm).to(device)
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr,
                                  betas=tuple(o.betas), eps=o.eps)
    scheduler = build_scheduler(optimizer, partial(
        lr_multiplier, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs,
        schedule=o.schedule, milestones=o.step_milestones, gamma=o.step_gamma,
        warmup_epochs=o.warmup_epochs, min_lr_ratio=o.min_lr / o.lr,
    ))
    return TrainState(model, optimizer, scheduler)


def restore_state(state: TrainState, ctx: TrainContext) -> None:
    """Continue from the checkpoint the launcher hands over (a resume or a failure restart)."""
    with ctx.restore() as directory:
        if directory is None:
            return
        data = load_checkpoint(directory)
        state.model.load_state_dict(join_scm_state(data.model_state, data.scm_state))
        train_state = load_train_state(directory)
        state.optimizer.load_state_dict(train_state["optimizer"])
        if "scheduler" in train_state:
            state.scheduler.load_state_dict(train_state["scheduler"])
        history = Path(directory) / HISTORY_JSON
        state.history = json.loads(history.read_text()) if history.exists() else []
        state.epoch, state.global_step = data.epoch, data.global_step
    print(f"[scm-ray] resumed from epoch {data.epoch} (step {data.global_step})", flush=True)


def record_worker(run_dir: str, ctx: TrainContext) -> None:
    """Rank 0 writes <run_dir>/workers.json: where each rank runs (node, host, pid, device)."""
    me = {"node_id": ctx.node, "host": socket.gethostname(), "pid": os.getpid(), "device": str(ctx.device)}
    everyone = [me]
    if ctx.world_size > 1:
        everyone = [None] * ctx.world_size
        dist.all_gather_object(everyone, me)
    if ctx.rank == 0:
        write_text(run_dir, WORKERS_FILE, json.dumps(dict(enumerate(everyone)), indent=2))


def build_loaders(cfg: TrainJobConfig, root: Path, ctx: TrainContext):
    """This rank's training shard (reshuffled per epoch) and validation slice."""
    from scm_ray.data.loaders import eval_loader, train_loader

    data, rank, world = cfg.data, ctx.rank, ctx.world_size
    train_data = train_loader(
        str(root / f"{data.train_split}.beton"), batch_size=data.batch_size,
        num_workers=data.num_workers, resize_size=data.resize_size, crop_size=data.crop_size,
        seed=data.seed, rank=rank, world_size=world, device=ctx.device, distributed=world > 1,
        square=data.resize_mode == "square",
    )
    val_data = eval_loader(
        str(root / f"{data.val_split}.beton"), batch_size=data.eval_batch_size,
        num_workers=data.num_workers, rank=rank, world_size=world, device=ctx.device,
    )
    return train_data, val_data


def wrap_ddp(model: torch.nn.Module, device: torch.device, world: int, find_unused: bool):
    """DDP over the launcher's process group (gloo on CPUs, nccl on GPUs); the model itself
    in a world of one."""
    if world == 1:
        return model
    # No buffers to sync per step (ViT has none that matter; the SCM guard counters are per rank
    # and zero at init). torch >= 2.14 names this forward_sync_buffers.
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
            else "broadcast_buffers")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused, **{sync: False},
    )


def run_epoch(cfg: TrainJobConfig, state: TrainState, step_fn, train_data, val_data,
              settings: StepSettings, guard: FiniteUpdates, tracker: Tracker | None, world: int,
              epoch: int, before_step: StepHook | None, first: FirstStep | None = None) -> dict:
    """Train one epoch (0-based `epoch`), then validate; the epoch's metrics row."""
    model = state.model
    model.scm_enabled = epoch >= cfg.scm.start_epoch
    t0 = time.perf_counter()
    totals = train_epoch(state, step_fn, train_data, settings, guard, epoch + 1, before_step, tracker, first)
    totals.seconds = time.perf_counter() - t0
    metrics = epoch_metrics(model, totals, state.scheduler, world, settings.device)
    metrics["epoch"] = epoch + 1
    metrics["global_step"] = state.global_step
    metrics["scm_active"] = int(model.uses_scm)
    try:
        metrics.update(evaluate_split(
            model, val_data, settings.device, cfg.model.num_classes, protocol=cfg.eval.protocol,
            threshold_step=cfg.eval.threshold_step, iou_thresholds=cfg.eval.iou_thresholds,
            use_bf16=settings.use_bf16, prefix="val/", distributed=world > 1,
        ))
    except NonFiniteMap as err:  # finite weights (the guard keeps them so) too large for float32
        raise TrainingDiverged(
            f"validation after epoch {epoch + 1}: {err}: the weights are finite but the model's "
            f"output is not ({totals.skipped} optimizer steps skipped this epoch, limit "
            f"train.max_skipped_steps={settings.max_skipped}). Lower optim.lr or set optim.grad_clip") from None
    metrics["epoch_seconds"] = time.perf_counter() - t0
    return metrics


def train_epoch(state: TrainState, step_fn, loader, s: StepSettings, guard: FiniteUpdates,
                epoch: int, before_step: StepHook | None = None,
                tracker: Tracker | None = None, first: FirstStep | None = None) -> EpochTotals:
    """One epoch of optimizer steps on this rank (1-based `epoch`, for the progress lines).
    Rank 0 prints a progress line every `log_every` steps (a long epoch is otherwise silent)
    and logs the step's loss and lr to its tracker; `first` times the first batch and step.
    Every rank takes the same decisions: the gradients are all-reduced and the weights equal."""
    model, optimizer = state.model, state.optimizer
    model.train()
    totals = EpochTotals(torch.zeros((), device=s.device))
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        if i >= s.steps:
            break
        if first is not None:
            first.batch()
        if before_step is not None:
            before_step(state.global_step)
        with torch.autocast(device_type=s.device.type, dtype=torch.bfloat16, enabled=s.use_bf16):
            logits = step_fn(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
        applied = bool(torch.isfinite(norm) and torch.isfinite(loss))
        if not applied:  # never let a non-finite value reach the weights
            print(f"[scm-ray] rank {s.rank} step {state.global_step}: non-finite loss/gradients "
                  f"(loss {loss.item():.4g}, grad norm {norm.item():.4g}); optimizer step skipped",
                  flush=True)
        elif not (applied := guard.step(optimizer)):
            print(f"[scm-ray] rank {s.rank} step {state.global_step}: the update made weights "
                  "non-finite; undone", flush=True)
        totals.skipped += not applied
        if first is not None:
            first.step()
            first = None
        guard.count(applied, f"epoch {epoch} step {i + 1}")
        state.scheduler.step()
        state.global_step += 1
        totals.loss += loss.detach() * labels.shape[0]
        totals.seen += labels.shape[0]
        if tracker is not None and (i + 1) % s.log_every == 0:
            tracker.step(state.global_step, loss.item(), last_step_lr(state.scheduler))
        if s.rank == 0 and (i + 1) % s.log_every == 0 and i + 1 < s.steps:
            rate = totals.seen / max(time.perf_counter() - start, 1e-9)
            print(f"[scm-ray] epoch {epoch} step {i + 1}/{s.steps} | loss {loss.item():.4f} | "
                  f"{rate:.0f} img/s on rank 0", flush=True)
    return totals


def epoch_metrics(model, totals: EpochTotals, scheduler, world: int, device: torch.device) -> dict:
    """Loss/throughput summed over ranks, lr, per-block lambda/beta and the SCM guard counts."""
    guards = model.scm.pop_guard_counts() if model.scm is not None else {}
    stats = torch.tensor([totals.loss.item(), totals.seen, totals.skipped, totals.seconds,
                          guards.get("alpha_capped", 0), guards.get("beta_clamped", 0),
                          guards.get("nonfinite", 0)], dtype=torch.float64)
    if world > 1:
        stats = stats.to(device) if device.type == "cuda" else stats
        dist.all_reduce(stats)
        stats = stats.cpu()
    loss_sum, seen, skipped, seconds, a, b, n = stats.tolist()
    skipped = round(skipped / world)  # every rank skips the same steps (see train_epoch)
    metrics = {
        "train/loss": loss_sum / max(seen, 1),
        "train/images_per_s": seen / max(seconds / world, 1e-9),
        "train/skipped_steps": skipped,
        "lr": last_step_lr(scheduler),  # in effect during the epoch (at its last step)
        "guard/alpha_capped": int(a), "guard/beta_clamped": int(b), "guard/nonfinite": int(n),
    }
    if model.scm is not None:
        for i, block in enumerate(model.scm.blocks):
            metrics[f"scm/lambda_{i}"] = block.lam.item()
            metrics[f"scm/beta_{i}"] = block.beta.item()
    if a or b or n or skipped:
        print(f"[scm-ray] WARNING numerical guards fired this epoch: alpha capped {int(a)}, "
              f"beta clamped {int(b)}, non-finite maps {int(n)}, skipped steps {int(skipped)}",
              flush=True)
    return metrics


def checkpoint_name(epoch: int) -> str:
    """The folder of epoch `epoch`'s checkpoint in the run folder (one place for the name)."""
    return f"checkpoint_epoch{epoch:04d}"


def report_epoch(state: TrainState, config: dict, metrics: dict, run_dir: str, ctx: TrainContext) -> None:
    """Every rank reports (a barrier); only rank 0 writes the checkpoint and the history table."""
    if ctx.rank != 0:
        ctx.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / checkpoint_name(state.epoch)
        save_checkpoint(directory, state.model, config, state.epoch, state.global_step, metrics,
                        state.optimizer, state.scheduler)
        (directory / HISTORY_JSON).write_text(json.dumps(state.history))
        append_history(run_dir, state.history)
        ctx.report(metrics, str(directory))


@contextlib.contextmanager
def latest_checkpoint(run_dir: str) -> Iterator[Path | None]:
    """The run folder's latest `checkpoint_epochNNNN` with a model.pt (as a local directory;
    a URI run folder's is downloaded for the duration), or None."""
    import pyarrow.fs as pafs

    fs, path = filesystem(run_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        infos = []
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                   and i.base_name.startswith("checkpoint_epoch"))
    names = [n for n in names if fs.get_file_info(f"{path}/{n}/model.pt").type == pafs.FileType.File]
    if not names:
        yield None
        return
    if isinstance(fs, pafs.LocalFileSystem):
        yield Path(path) / names[-1]
        return
    with tempfile.TemporaryDirectory() as tmp:
        pafs.copy_files(f"{path}/{names[-1]}", tmp, source_filesystem=fs)
        yield Path(tmp)
