"""The per-worker training function run by Ray Train (one process per rank).

It receives the job config as a plain dict (the one crossing of the Ray boundary), rebuilds the
typed config, and runs: staged data -> FFCV loaders for this rank's shard -> model (DDP) ->
AdamW + per-step schedule -> per epoch: train, validate (metric counts merged over ranks so the
split is covered exactly once), report, checkpoint (rank 0 writes; every rank reports).
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ray
import ray.train
import ray.train.torch

from scm_ray.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from scm_ray.config import TrainJobConfig, from_dict, to_dict
from scm_ray.data.staging import stage_dataset
from scm_ray.inference import evaluate_split
from scm_ray.model import build_model, param_groups
from scm_ray.train.history import append_history
from scm_ray.train.schedule import build_scheduler, last_step_lr, lr_multiplier


class NonFiniteLossError(RuntimeError):
    pass


def train_worker(loop_config: dict) -> None:
    """Ray Train entry point. loop_config = {"job": <TrainJobConfig dict>, "run_dir": str}."""
    cfg = from_dict(TrainJobConfig, loop_config["job"])
    run_dir: str = loop_config["run_dir"]
    _quiet_report_log(cfg.ray.log_level)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.train.seed)  # identical init on every rank (DDP also broadcasts)

    data_root = stage_dataset(cfg.data.root, cfg.data.cache_dir or None)
    _record_worker(run_dir, rank, world)
    train_data, val_data = _loaders(cfg, data_root, rank, world, device)
    steps_per_epoch = len(train_data)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)

    model = build_model(cfg.model, cfg.scm).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
    )
    scheduler = build_scheduler(optimizer, partial(
        lr_multiplier, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs,
        schedule=cfg.optim.schedule, milestones=cfg.optim.step_milestones,
        gamma=cfg.optim.step_gamma, warmup_epochs=cfg.optim.warmup_epochs,
        min_lr_ratio=cfg.optim.min_lr / cfg.optim.lr,
    ))
    start_epoch, global_step, history = _restore(model, optimizer, scheduler)
    train_data.set_epoch(start_epoch)  # a resumed run sees the epoch's own shuffle and crops
    ddp = _wrap(model, device, world, find_unused=cfg.scm.start_epoch > 0)
    step_fn = torch.compile(ddp) if cfg.train.compile else ddp

    for epoch in range(start_epoch, cfg.train.epochs):
        model.scm_enabled = epoch >= cfg.scm.start_epoch
        t0 = time.perf_counter()
        loss, seen, skipped, global_step = _train_epoch(
            step_fn, model, optimizer, scheduler, train_data, steps_per_epoch, device, use_bf16,
            cfg.optim.grad_clip, global_step, cfg.train.inject_failure_at_step, run_dir, rank,
            epoch + 1, cfg.train.log_every_steps,
        )
        train_seconds = time.perf_counter() - t0
        metrics = _epoch_metrics(model, loss, seen, skipped, train_seconds, scheduler, world, device)
        metrics["epoch"] = epoch + 1
        metrics["global_step"] = global_step
        metrics["scm_active"] = int(model.uses_scm)
        metrics.update(evaluate_split(
            model, val_data, device, cfg.model.num_classes, protocol=cfg.eval.protocol,
            threshold_step=cfg.eval.threshold_step, iou_thresholds=cfg.eval.iou_thresholds,
            use_bf16=use_bf16, prefix="val/", distributed=world > 1,
        ))
        metrics["epoch_seconds"] = time.perf_counter() - t0
        history.append(metrics)
        _report(model, optimizer, scheduler, to_dict(cfg), epoch + 1, global_step, metrics,
                history, run_dir, rank)


def _quiet_report_log(level: str) -> None:
    """Ray Train V2 logs every report at INFO under a logger named by its file path, outside
    the `ray.train` hierarchy that RunConfig's LoggingConfig sets; apply ray.log_level to it."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a Ray without that module has nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(level)


def _record_worker(run_dir: str, rank: int, world: int) -> None:
    """Rank 0 writes <run_dir>/workers.json: where each rank runs (node, host, pid, device)."""
    import json
    import socket

    from scm_ray.train.history import write_text

    me = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
          "pid": os.getpid(), "device": str(ray.train.torch.get_device())}
    everyone = [None] * world
    if world > 1:
        dist.all_gather_object(everyone, me)
    else:
        everyone = [me]
    if rank == 0:
        write_text(run_dir, "workers.json", json.dumps(dict(enumerate(everyone)), indent=2))


def _loaders(cfg: TrainJobConfig, root: Path, rank: int, world: int, device: torch.device):
    from scm_ray.data.loaders import eval_loader, train_loader

    data = cfg.data
    train_data = train_loader(
        str(root / f"{data.train_split}.beton"), batch_size=data.batch_size,
        num_workers=data.num_workers, resize_size=data.resize_size, crop_size=data.crop_size,
        seed=data.seed, rank=rank, world_size=world, device=device, distributed=world > 1,
        square=data.resize_mode == "square",
    )
    val_data = eval_loader(
        str(root / f"{data.val_split}.beton"), batch_size=data.eval_batch_size,
        num_workers=data.num_workers, rank=rank, world_size=world, device=device,
    )
    return train_data, val_data


def _wrap(model: torch.nn.Module, device: torch.device, world: int, find_unused: bool):
    if world == 1:
        return model
    # No buffers to sync per step (ViT has none that matter; the SCM guard counters are per rank
    # and zero at init). torch >= 2.14 names this forward_sync_buffers.
    import inspect

    sync = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
            else "broadcast_buffers")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused, **{sync: False},
    )


def _restore(model, optimizer, scheduler) -> tuple[int, int, list[dict]]:
    """Continue from the latest checkpoint Ray Train hands us (resume or failure restart)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0, []
    with checkpoint.as_directory() as directory:
        data = load_checkpoint(directory)
        state = dict(data.model_state)
        state.update({f"scm.{k}": v for k, v in data.scm_state.items()})
        model.load_state_dict(state)
        train_state = load_train_state(directory)
        optimizer.load_state_dict(train_state["optimizer"])
        if "scheduler" in train_state:
            scheduler.load_state_dict(train_state["scheduler"])
        history = _read_history(Path(directory))
    print(f"[scm-ray] resumed from epoch {data.epoch} (step {data.global_step})", flush=True)
    return data.epoch, data.global_step, history


def _read_history(directory: Path) -> list[dict]:
    import json

    path = directory / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def _train_epoch(step_fn, model, optimizer, scheduler, loader, steps: int, device, use_bf16: bool,
                 grad_clip: float, global_step: int, fail_at: int, run_dir: str, rank: int,
                 epoch: int, log_every: int):
    """One epoch; returns (summed loss, samples, skipped steps, global step) for this rank.
    Rank 0 prints a progress line every `log_every` steps (a long epoch is otherwise silent)."""
    model.train()
    total_loss = torch.zeros((), device=device)
    seen, skipped = 0, 0
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        if i >= steps:
            break
        if rank == 0:
            _maybe_inject_failure(global_step, fail_at, run_dir)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = step_fn(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
        if torch.isfinite(norm) and torch.isfinite(loss):
            optimizer.step()
        else:  # never let a non-finite value reach the weights
            skipped += 1
            print(f"[scm-ray] rank {rank} step {global_step}: non-finite loss/gradients "
                  f"(loss {loss.item():.4g}, grad norm {norm.item():.4g}); optimizer step skipped",
                  flush=True)
        scheduler.step()
        global_step += 1
        total_loss += loss.detach() * labels.shape[0]
        seen += labels.shape[0]
        if rank == 0 and (i + 1) % log_every == 0 and i + 1 < steps:
            rate = seen / max(time.perf_counter() - start, 1e-9)
            print(f"[scm-ray] epoch {epoch} step {i + 1}/{steps} | loss {loss.item():.4f} | "
                  f"{rate:.0f} img/s on rank 0", flush=True)
    return total_loss, seen, skipped, global_step


def _maybe_inject_failure(global_step: int, fail_at: int, run_dir: str) -> None:
    """Testing aid (train.inject_failure_at_step): fail once, in the first attempt only."""
    if fail_at < 0 or global_step != fail_at:
        return
    marker = Path(run_dir) / f".injected_failure_{fail_at}"
    if "://" in run_dir or marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("injected\n")
    raise RuntimeError(f"injected failure at global step {fail_at} (train.inject_failure_at_step)")


def _epoch_metrics(model, loss_sum, seen, skipped, seconds, scheduler, world, device) -> dict:
    """Loss/throughput summed over ranks, lr, per-block lambda/beta and the SCM guard counts."""
    guards = model.scm.pop_guard_counts() if model.scm is not None else {}
    stats = torch.tensor([loss_sum.item(), seen, skipped, seconds,
                          guards.get("alpha_capped", 0), guards.get("beta_clamped", 0),
                          guards.get("nonfinite", 0)], dtype=torch.float64)
    if world > 1:
        stats = stats.to(device) if device.type == "cuda" else stats
        dist.all_reduce(stats)
        stats = stats.cpu()
    loss_sum, seen, skipped, seconds, a, b, n = stats.tolist()
    metrics = {
        "train/loss": loss_sum / max(seen, 1),
        "train/images_per_s": seen / max(seconds / world, 1e-9),
        "train/skipped_steps": int(skipped),
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


def _report(model, optimizer, scheduler, config: dict, epoch: int, global_step: int,
            metrics: dict, history: list[dict], run_dir: str, rank: int) -> None:
    """Every rank reports (a barrier); only rank 0 writes the checkpoint and the history table."""
    import json
    import tempfile

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, model, config, epoch, global_step, metrics, optimizer, scheduler)
        (Path(tmp) / "history.json").write_text(json.dumps(history))
        append_history(run_dir, history)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_epoch{epoch:04d}")
