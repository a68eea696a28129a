"""Driver side of training: validate, connect, build the TorchTrainer from the config, fit,
summarise. Everything that can be checked before a worker starts is checked here."""

from __future__ import annotations

import json
import os
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from scm_ray.config import ConfigError, TrainJobConfig, flatten, to_dict
from scm_ray.storage import absolute, is_uri, run_location
from scm_ray.interrupts import Interrupted
from scm_ray.paths import writable_storage
from scm_ray.startup import StartupClock


@dataclass
class TrainingOutcome:
    run_dir: str
    epochs_done: int
    metrics: dict
    best_checkpoint: str | None
    latest_checkpoint: str | None
    failures: int
    seconds: float
    error: str | None = None
    interrupted: bool = False  # Ctrl-C: the run stopped where it was, resumable


def resolve_run_dir(cfg: TrainJobConfig, default_name: str) -> tuple[str, str, str]:
    """(storage_path, name, run_dir) with a local storage path made absolute (Ray needs that)."""
    return run_location(cfg.ray.storage_path, cfg.ray.name, default_name)


# Settings a resumed run may change: where things are and how many epochs, not what is trained.
RESUMABLE_CHANGES = ("ray.", "train.epochs", "train.max_skipped_steps", "data.root", "data.cache_dir", "data.num_workers")


def changed_settings(saved: dict, current: dict, allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """`key: old -> new` for every flattened field that differs between two config dicts,
    except those starting with one of `allowed` (what a resume may change)."""
    saved, current = flatten(saved), flatten(current)
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
            if not k.startswith(allowed) and saved.get(k) != current.get(k)]


def check_resumable(cfg: TrainJobConfig, run_dir: str) -> None:
    """Same ray.name + storage resumes; refuse when the run there was trained with other
    settings (say --set optim.lr=...), which would otherwise silently continue, or report, the
    old run. Local storage only: a URI run folder is not read here."""
    if is_uri(run_dir):
        return
    metas = sorted(Path(run_dir).glob("checkpoint_epoch*/meta.json"))
    if not metas:
        return
    try:
        saved = json.loads(metas[-1].read_text())["config"]
    except (OSError, ValueError, KeyError):
        return  # an unreadable checkpoint is Ray Train's to report when it restores
    changed = changed_settings(saved, to_dict(cfg))
    if changed:
        raise ConfigError("ray.name", f"{run_dir} holds a run trained with other settings "
                          f"({'; '.join(changed)}); resuming would mix them: choose a new ray.name, "
                          "or give the run's own settings to continue it")


def check_model(cfg: TrainJobConfig) -> None:
    """Build the model on the meta device (no memory, no weights): an architecture scm-ray
    cannot wrap fails here, naming model.name, instead of in every worker and every restart.
    Then the pretrained weights: see check_pretrained."""

    import torch

    from scm_ray.model.build import build_model

    try:
        with torch.device("meta"):
            build_model(dataclasses.replace(cfg.model, pretrained=""), cfg.scm)
    except ConfigError:
        raise  # already names the field and the reason
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise ConfigError("model.name", f"cannot build {cfg.model.name!r} for WSOL: {err}") from err
    check_pretrained(cfg)


def check_pretrained(cfg: TrainJobConfig) -> None:
    """Resolve model.pretrained once, on the driver, before Ray starts: "hub" is fetched into
    this machine's Hugging Face cache (or fails within seconds when the hub is out of reach),
    and the weights are loaded into the backbone by timm, so a file of another architecture is
    refused here, naming the mismatched keys. A local file missing on this machine is only
    warned about: on a cluster it may live on the workers' nodes alone."""
    from scm_ray.model.build import build_backbone

    weights = cfg.model.pretrained
    if not weights:
        return
    if weights != "hub" and not Path(weights).expanduser().is_file():
        print(f"[scm-ray] WARNING model.pretrained: {weights} is not a file on this machine; "
              "the workers must see it", flush=True)
        return
    m = cfg.model
    build_backbone(m.name, m.img_size, m.patch_size, m.drop_path_rate, m.embed_dim, m.depth,
                   m.num_heads, pretrained=weights)


def check_dataset(cfg: TrainJobConfig) -> None:
    """A local dataset folder must hold the splits training reads (URIs are checked by workers)."""
    if is_uri(cfg.data.root):
        return
    root = Path(cfg.data.root).expanduser()
    if not root.is_dir():
        raise ConfigError("data.root", f"dataset folder not found: {root} "
                          "(create one with `scm-ray prepare ...`)")
    for key in ("train_split", "val_split"):
        split = getattr(cfg.data, key)
        beton = root / f"{split}.beton"
        if not beton.is_file():
            found = sorted(p.stem for p in root.glob("*.beton"))
            raise ConfigError(f"data.{key}", f"{beton} not found; splits in {root}: {found or 'none'}")
    check_prepared_for(root, cfg)


def check_prepared_for(root: Path, cfg: TrainJobConfig) -> None:
    """The dataset must fit the model: its class count, and the validation split stored at the
    model's input size (evaluation feeds stored images as they are). Caught here, a mismatch
    costs nothing; caught by timm at the first validation, it costs an epoch per restart."""
    from scm_ray.data.ffcv_io import DataFileError, check_prepared_files, check_split, read_info

    try:
        info = read_info(root)
        check_split(info, cfg.data.train_split, kind="train", num_classes=cfg.model.num_classes)
        check_split(info, cfg.data.val_split, kind="eval", eval_size=cfg.model.img_size)
        check_prepared_files(root, info, [cfg.data.train_split, cfg.data.val_split])
    except DataFileError as err:
        raise ConfigError("data.root", str(err)) from None
    except (OSError, ValueError) as err:
        raise ConfigError("data.root", f"{root}: {err} (model.num_classes={cfg.model.num_classes}, "
                                       f"model.img_size={cfg.model.img_size})") from err


# What every epoch reports next to the val/ metrics (scm/ and guard/ keys vary with the model).
EPOCH_KEYS = ("epoch", "global_step", "epoch_seconds", "lr", "scm_active",
              "train/loss", "train/images_per_s", "train/skipped_steps")


def check_metric(cfg: TrainJobConfig, key: str, name: str) -> None:
    """`name` (the value of config field `key`) must be a metric the epochs report: a typo
    would otherwise score every checkpoint -inf (Ray only logs it) or fail every trial late."""
    from scm_ray.inference import validation_metrics

    val = validation_metrics(cfg.eval.protocol, cfg.eval.iou_thresholds,
                             cfg.model.num_classes).epoch_columns("val/")
    if name in val or name in EPOCH_KEYS or name.startswith(("scm/", "guard/")):
        return
    raise ConfigError(key, f"{name!r} is not a reported metric; one of: {', '.join([*val, *EPOCH_KEYS])}")


def build_trainer(cfg: TrainJobConfig, storage: str, name: str, run_dir: str,
                  extra_callbacks: list | None = None, train_fn=None, loopback: bool = False,
                  startup: StartupClock | None = None):
    """The Ray Train V2 TorchTrainer for this config. `extra_callbacks` (Ray Train user
    callbacks) join the epoch printer, e.g. Tune's report callback when a trial runs it;
    `train_fn` wraps the per-worker function (default: ray_adapter.train_worker itself); `loopback`
    (the embedded local Ray) sets DDP up without a network listener (scm_ray/train/loopback.py);
    `startup` (the driver's start-up marks) travels to rank 0, which completes and prints it."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from scm_ray.train.callbacks import EpochPrinter
    from scm_ray.train.ray_adapter import train_worker

    # Ray Train's print patch on the workers both prints a line and logs it to a handler that
    # prints it too: every line a worker printed reached the driver twice. Ray Train passes
    # this variable on from here to its controller and workers (an explicit setting wins).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if loopback:
        from scm_ray.train.loopback import LoopbackTorchConfig as torch_config
    else:
        torch_config = TorchConfig
    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = cfg.ray.gpus_per_worker
    return TorchTrainer(
        train_fn or train_worker,
        train_loop_config={"job": to_dict(cfg), "run_dir": run_dir,
                           "startup": startup.to_dict() if startup else None},
        torch_config=torch_config(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.ray.num_to_keep,
                checkpoint_score_attribute=cfg.ray.checkpoint_metric,
                checkpoint_score_order=cfg.ray.checkpoint_mode,
            ),
            callbacks=[EpochPrinter(cfg.train.epochs, run_dir, cfg.scm.num_blocks), *(extra_callbacks or [])],
            logging_config=LoggingConfig(log_level=cfg.ray.log_level),
        ),
    )


def run_training(cfg: TrainJobConfig, default_name: str = "train", train_fn=None,
                 startup: StartupClock | None = None) -> TrainingOutcome:
    """Validate, fit (on Ray Train, or in this process with ray.num_workers=0), and write the
    run summary. Raises ConfigError before any cluster resource is taken when the config cannot
    work. `train_fn` replaces the Ray Train worker function (tests wrap it to inject faults);
    `startup` collects the time to the first optimizer step (scm_ray/startup.py)."""
    startup = startup or StartupClock.for_call()  # called from Python (the demo, tests): from here
    cfg, storage, name, run_dir = checked(cfg, default_name)
    startup.mark("checks")
    if cfg.ray.num_workers == 0:
        return _fit_in_process(cfg, run_dir, startup)
    from scm_ray import ray_session

    print(f"[scm-ray] {ray_session.connect(cfg.ray.address)}", flush=True)
    startup.mark("ray")
    problems = ray_session.check_resources(cfg.ray.num_workers, cfg.ray.cpus_per_worker,
                                           cfg.ray.gpus_per_worker, cfg.ray.use_gpu)
    if problems and ray_session.is_local_embedded(cfg.ray.address):
        raise ConfigError("ray", "; ".join(problems))
    for problem in problems:
        print(f"[scm-ray] WARNING {problem} (waiting for the autoscaler)", flush=True)
    print(f"[scm-ray] run folder: {run_dir}", flush=True)
    start = time.perf_counter()
    try:
        result = build_trainer(cfg, storage, name, run_dir, train_fn=train_fn,
                               loopback=ray_session.is_loopback_only(), startup=startup).fit()
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C. During fit, Ray Train's own SIGINT handler aborts its controller and then
        # calls sys.exit: the SystemExit raised here is that (nothing else in fit exits).
        outcome = _outcome_from_run_folder(cfg, run_dir, time.perf_counter() - start, None)
        outcome.interrupted = True
        _write_summary(outcome, cfg)
        raise Interrupted(f"the same command and --set ray.name={name}") from None
    except Exception as exc:  # Ray Train V2 raises the workers' error once retries are spent
        outcome = _outcome_from_run_folder(cfg, run_dir, time.perf_counter() - start,
                                           f"{type(exc).__name__}: {exc}")
    else:
        outcome = _outcome(result, run_dir, cfg, time.perf_counter() - start)
    _write_summary(outcome, cfg)
    return outcome


def checked(cfg: TrainJobConfig, default_name: str) -> tuple[TrainJobConfig, str, str, str]:
    """Every check that needs no cluster; (the config the run uses: a local data.root made
    absolute, since workers run elsewhere; storage path; run name; run folder)."""
    check_model(cfg)
    check_dataset(cfg)
    check_metric(cfg, "ray.checkpoint_metric", cfg.ray.checkpoint_metric)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=absolute(cfg.data.root)))
    storage, name, run_dir = resolve_run_dir(cfg, default_name)
    writable_storage("ray.storage_path", storage)
    check_resumable(cfg, run_dir)
    return cfg, storage, name, run_dir


def _fit_in_process(cfg: TrainJobConfig, run_dir: str, startup: StartupClock) -> TrainingOutcome:
    """ray.num_workers=0: the engine in this process, no Ray imported."""
    import torch

    from scm_ray.train.local import train_in_process

    if cfg.ray.use_gpu and not torch.cuda.is_available():
        raise ConfigError("ray.use_gpu", "ray.num_workers=0 trains in this process, which sees no CUDA device")
    print(f"[scm-ray] training in this process (ray.num_workers=0); run folder: {run_dir}", flush=True)
    start = time.perf_counter()
    error = None
    try:
        train_in_process(cfg, run_dir, startup=startup)
    except Exception as exc:  # the epochs finished before the error still count
        error = f"{type(exc).__name__}: {exc}"
    outcome = _outcome_from_run_folder(cfg, run_dir, time.perf_counter() - start, error)
    _write_summary(outcome, cfg)
    return outcome


def _outcome_from_run_folder(cfg: TrainJobConfig, run_dir: str, seconds: float,
                             error: str | None) -> TrainingOutcome:
    """The outcome as the run folder records it (metrics.parquet, the checkpoints kept)."""
    from scm_ray.train.local import kept_checkpoints, ranked

    done = _history_or_empty(run_dir)
    kept = kept_checkpoints(run_dir)
    best = ranked(kept, cfg.ray.checkpoint_metric, cfg.ray.checkpoint_mode)[:1]
    root = run_dir.rstrip("/")
    return TrainingOutcome(run_dir, len(done), done[-1] if done else {},
                           f"{root}/{best[0]}" if best else None,
                           f"{root}/{max(kept)}" if kept else None,
                           _count_failures(run_dir), seconds, error=error)


def _history_or_empty(run_dir: str) -> list[dict]:
    """metrics.parquet's rows, or [] when no epoch finished (or the file cannot be read)."""
    from scm_ray.train.history import read_history

    try:
        return read_history(run_dir)
    except (OSError, ValueError):
        return []


def _outcome(result, run_dir: str, cfg: TrainJobConfig, seconds: float) -> TrainingOutcome:
    metrics = dict(result.metrics or {})
    best = None
    if result.best_checkpoints:
        metric = cfg.ray.checkpoint_metric
        sign = 1 if cfg.ray.checkpoint_mode == "max" else -1
        scored = [(sign * m.get(metric, float("-inf")), c.path) for c, m in result.best_checkpoints]
        best = max(scored)[1]
    failures = _count_failures(run_dir)
    return TrainingOutcome(
        run_dir=run_dir,
        epochs_done=int(metrics.get("epoch", 0)),
        metrics=metrics,
        best_checkpoint=best,
        latest_checkpoint=result.checkpoint.path if result.checkpoint else None,
        failures=failures,
        seconds=seconds,
        error=str(result.error) if result.error else None,
    )


def _count_failures(run_dir: str) -> int:
    """Worker-group restarts seen by the epoch printer (recorded in the run folder)."""
    from scm_ray.train.history import read_failures

    return read_failures(run_dir)


def _write_summary(outcome: TrainingOutcome, cfg: TrainJobConfig) -> None:
    from scm_ray.train.history import write_text

    m = outcome.metrics
    status = "interrupted" if outcome.interrupted else "failed" if outcome.error else "completed"
    lines = [
        f"run folder      {outcome.run_dir}",
        f"status          {status}",
        f"epochs          {outcome.epochs_done} / {cfg.train.epochs}",
        f"wall time       {outcome.seconds:.1f} s",
        f"worker failures {outcome.failures} (max_failures {cfg.ray.max_failures})",
        f"best checkpoint {outcome.best_checkpoint} (by {cfg.ray.checkpoint_metric})",
        f"last checkpoint {outcome.latest_checkpoint}",
        "last epoch      " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(m.items())),
    ]
    if outcome.error:
        lines.append(f"error           {outcome.error}")
    text = "\n".join(lines) + "\n"
    write_text(outcome.run_dir, "summary.txt", text)
    write_text(outcome.run_dir, "outcome.json", json.dumps(outcome.__dict__, indent=2, default=str))
    if not outcome.interrupted:  # Ctrl-C: the command's one line says it
        print(text, flush=True)
