"""Typed configuration: one dataclass per concern, composed per job, loaded from YAML.

Why this shape: a job's config is validated completely on the driver before any cluster resource
is taken, crosses the Ray boundary once as a plain dict (`to_dict`), and is rebuilt on the other
side (`from_dict`). Unknown keys, wrong types and out-of-range values are errors that name the
dotted key and what is allowed.

Override syntax on the command line: ``--set scm.num_blocks=3 --set optim.lr=1e-4``; the value is
parsed as YAML (so ``[16,4,4]``, ``true``, ``null`` work).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range. `key` is the dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self):
        """Pickle as (key, message): a ConfigError raised in a Ray actor or worker then reaches
        the driver as itself (the default would call __init__ with one argument and fail)."""
        return type(self), (self.key, self.message)

    def prefixed(self, prefix: str) -> "ConfigError":
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(key, self.message)


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds. Used in __post_init__."""
    if not condition:
        raise ConfigError(key, message)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Backbone and head. Any timm ViT/DeiT with a CLS token; the patch grid follows from
    img_size / patch_size (nothing assumes 14 x 14)."""

    name: str = "deit_small_patch16_224"
    num_classes: int = 200
    img_size: int = 224
    patch_size: int = 16
    # Width/depth/heads overrides for small models (None keeps the timm architecture's value).
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.1
    # "" = random init; a local file path (.pth/.safetensors/.bin); or "hub" to let timm
    # download the named model's weights (only when the machine can reach the hub).
    pretrained: str = ""

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "must name a timm ViT/DeiT, e.g. deit_small_patch16_224")
        check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        check(self.patch_size >= 1, "patch_size", f"must be >= 1, got {self.patch_size}")
        check(
            self.img_size >= self.patch_size and self.img_size % self.patch_size == 0,
            "img_size",
            f"must be a positive multiple of patch_size={self.patch_size}, got {self.img_size}",
        )
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be null or >= 1, got {value}")
        if self.embed_dim is not None and self.num_heads is not None:
            check(
                self.embed_dim % self.num_heads == 0,
                "num_heads",
                f"must divide embed_dim={self.embed_dim}, got {self.num_heads}",
            )
        check(
            0.0 <= self.drop_path_rate < 1.0,
            "drop_path_rate",
            f"must be in [0, 1), got {self.drop_path_rate}",
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side


@dataclass
class SCMConfig:
    """Spatial Calibration Module (training-only Activation Diffusion Blocks). num_blocks=0 is
    the TS-CAM baseline."""

    num_blocks: int = 4
    alpha: float = 0.002
    # One Newton-Schulz iteration count per block, or a single count for all blocks.
    iterations: list[int] = field(default_factory=lambda: [16, 4, 4, 4])
    lambda_init: float = 1.0
    beta_init: float = 0.5
    # Train the plain backbone (TS-CAM) for this many epochs before switching the SCM on: from
    # random weights the SCM needs a classification warm-up (DESIGN section 8).
    start_epoch: int = 0
    # "fast" (structured Newton-Schulz) or "dense" (the straightforward reference algorithm).
    implementation: Literal["fast", "dense"] = "fast"

    def __post_init__(self) -> None:
        check(self.num_blocks >= 0, "num_blocks", f"must be >= 0, got {self.num_blocks}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        its = self.iterations
        check(len(its) >= 1, "iterations", "must hold at least one count")
        check(all(i >= 0 for i in its), "iterations", f"counts must be >= 0, got {its}")
        check(
            len(its) in (1, self.num_blocks) or self.num_blocks == 0,
            "iterations",
            f"needs one count per block ({self.num_blocks}) or a single count, got {its}",
        )
        check(self.beta_init > 0, "beta_init", f"must be > 0, got {self.beta_init}")
        check(self.start_epoch >= 0, "start_epoch", f"must be >= 0, got {self.start_epoch}")

    def block_iterations(self) -> list[int]:
        """Per-block iteration counts, the single-count form expanded."""
        if len(self.iterations) == 1:
            return list(self.iterations) * self.num_blocks
        return list(self.iterations[: self.num_blocks])


@dataclass
class DataConfig:
    """A prepared dataset folder (records.parquet + one <split>.beton per split, DESIGN section 4)
    and the loader settings. `root` may be a local path, a shared filesystem path or a URI that
    pyarrow.fs understands (s3://, gs://, file://); URIs are staged to local disk once per node."""

    root: str = "data/synthetic"
    train_split: str = "train"
    # Held-out split with boxes: per-epoch validation, and threshold choice in the wsol protocol.
    val_split: str = "val"
    test_split: str = "test"
    # Training pipeline: resize -> random crop -> flip, as the reference. "square" resizes both
    # sides to resize_size (the released SCM code); "short_side" keeps the aspect ratio.
    resize_size: int = 256
    crop_size: int = 224
    resize_mode: Literal["square", "short_side"] = "square"
    # Per-worker batch sizes.
    batch_size: int = 64
    eval_batch_size: int = 64
    num_workers: int = 2
    seed: int = 0
    # Where a URI root is staged on each node ("" = $SCM_RAY_DATA_CACHE or ~/.cache/scm-ray).
    cache_dir: str = ""

    def __post_init__(self) -> None:
        check(bool(self.root), "root", "must name a prepared dataset folder or URI")
        for key in ("train_split", "val_split", "test_split"):
            check(bool(getattr(self, key)), key, "must name a split")
        check(self.crop_size >= 1, "crop_size", f"must be >= 1, got {self.crop_size}")
        check(
            self.resize_size >= self.crop_size,
            "resize_size",
            f"must be >= crop_size={self.crop_size}, got {self.resize_size}",
        )
        for key in ("batch_size", "eval_batch_size"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass
class OptimConfig:
    """AdamW as the reference (eps 1e-8, weight decay 0.05 except 1-D params, biases, pos_embed,
    cls_token, lambda, beta) and the learning-rate schedule, stepped per iteration."""

    lr: float = 5e-5
    weight_decay: float = 0.05
    eps: float = 1e-8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # "step": step_milestones are 1-based epochs at whose start the lr is multiplied by
    # step_gamma (CUB as released: [30], so epoch 30 runs at lr/10); "cosine": down to min_lr over
    # all epochs; "constant". `scm-ray config show --schedule` prints the lr per epoch.
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_milestones: list[int] = field(default_factory=lambda: [30])
    step_gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    # Clip the global gradient norm to this value; 0 disables clipping.
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        check(
            all(m >= 1 for m in self.step_milestones) and self.step_milestones == sorted(self.step_milestones),
            "step_milestones",
            f"must be increasing epochs >= 1, got {self.step_milestones}",
        )
        check(0 < self.step_gamma <= 1, "step_gamma", f"must be in (0, 1], got {self.step_gamma}")
        check(0 <= self.min_lr <= self.lr, "min_lr", f"must be in [0, lr], got {self.min_lr}")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass
class TrainConfig:
    """The per-worker training loop."""

    epochs: int = 30
    # "auto": bf16 autocast on GPUs, fp32 on CPUs.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = 0
    log_every_steps: int = 50
    # Cap on optimizer steps per epoch (0 = the whole split); for smoke runs.
    max_steps_per_epoch: int = 0
    # Testing aid: raise in the first attempt at this global step (-1 = never).
    inject_failure_at_step: int = -1

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")
        check(self.max_steps_per_epoch >= 0, "max_steps_per_epoch", "must be >= 0 (0 = all)")


@dataclass
class EvalConfig:
    """Localization evaluation settings (DESIGN section 3)."""

    # "wsol": GT-class maps, threshold chosen on the held-out split; "paper": the released SCM
    # code's same-split protocol with top-1 predicted maps (labelled as such).
    protocol: Literal["wsol", "paper"] = "wsol"
    threshold_step: float = 0.01
    iou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])

    def __post_init__(self) -> None:
        check(
            0 < self.threshold_step <= 0.5,
            "threshold_step",
            f"must be in (0, 0.5], e.g. 0.01 or 0.001; got {self.threshold_step}",
        )
        check(
            len(self.iou_thresholds) >= 1 and all(0 < t <= 1 for t in self.iou_thresholds),
            "iou_thresholds",
            f"must be numbers in (0, 1], got {self.iou_thresholds}",
        )


@dataclass
class RayConfig:
    """Cluster connection, worker group, storage and fault tolerance (Ray Train RunConfig)."""

    # "" = RAY_ADDRESS if set, else start an embedded local Ray; "auto" or ray://host:port.
    address: str = ""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    # Local folder, shared filesystem path or URI (s3://, gs://) every node can reach.
    storage_path: str = "runs"
    # Run name; "" = derived from the config name and time. Same name + storage = resume.
    name: str = ""
    num_to_keep: int = 3
    checkpoint_metric: str = "val/gt_known"
    checkpoint_mode: Literal["max", "min"] = "max"
    max_failures: int = 0
    # Ray Train's own log level (its per-report INFO lines are noisy; our epoch lines remain).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    def __post_init__(self) -> None:
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        check(self.cpus_per_worker > 0, "cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        check(self.gpus_per_worker > 0, "gpus_per_worker", f"must be > 0, got {self.gpus_per_worker}")
        check(
            not (self.use_gpu and self.num_workers > 1 and self.gpus_per_worker < 1),
            "gpus_per_worker",
            f"must be >= 1 with use_gpu and several workers (NCCL refuses two ranks on one GPU), "
            f"got {self.gpus_per_worker}",
        )
        check(bool(self.storage_path), "storage_path", "must name a folder or URI")
        check(self.num_to_keep >= 1, "num_to_keep", f"must be >= 1, got {self.num_to_keep}")
        check(self.max_failures >= -1, "max_failures", "must be >= 0, or -1 for unlimited")
        check("/" not in self.name, "name", f"must not contain '/', got {self.name!r}")


@dataclass
class TrainJobConfig:
    """Everything a training run needs; the YAML of `scm-ray train --config`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    scm: SCMConfig = field(default_factory=SCMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        check(
            self.data.crop_size == self.model.img_size,
            "data.crop_size",
            f"must equal model.img_size={self.model.img_size}, got {self.data.crop_size}",
        )
        check(
            self.scm.start_epoch < self.train.epochs or self.scm.num_blocks == 0,
            "scm.start_epoch",
            f"must be < train.epochs={self.train.epochs} (else the SCM never trains)",
        )


@dataclass
class SchedulerConfig:
    """Early stopping of trials: ASHA ranks trials at rungs of epochs on the search metric."""

    kind: Literal["none", "asha"] = "asha"
    # Epochs every trial runs before it can be stopped (the first rung).
    grace_period: int = 1
    # At each rung only the best 1/reduction_factor of the trials seen there go on.
    reduction_factor: float = 4.0
    # Epochs of the longest trial; 0 = train.epochs (its largest value if searched).
    max_t: int = 0

    def __post_init__(self) -> None:
        check(self.grace_period >= 1, "grace_period", f"must be >= 1 epoch, got {self.grace_period}")
        check(self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor}")
        check(self.max_t >= 0, "max_t", f"must be >= 0 (0 = train.epochs), got {self.max_t}")


@dataclass
class SearchConfig:
    """What Ray Tune searches and how (scm_ray/tune/space.py documents the space format)."""

    # Dotted training-config field -> {loguniform|uniform|randint|choice|grid_search: [...]}.
    space: dict[str, Any] = field(default_factory=dict)
    # The objective: any per-epoch metric the training loop reports.
    metric: str = "val/gt_known"
    mode: Literal["max", "min"] = "max"
    # "random" (grid_search entries still enumerate), "grid" (lists only), "optuna" (TPE).
    searcher: Literal["random", "grid", "optuna"] = "random"
    seed: int = 0
    num_samples: int = 8
    # Trials running at once; 0 = as many as the cluster fits (capped to that in any case).
    max_concurrent_trials: int = 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # Experiment folder = <storage_path>/<name>; "" = ray.storage_path, "<config>-<time>".
    storage_path: str = ""
    name: str = ""
    # Continue the experiment <storage_path>/<name> where it stopped.
    resume: bool = False

    def __post_init__(self) -> None:
        check(bool(self.metric), "metric", "must name a reported metric, e.g. val/gt_known")
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        check(self.max_concurrent_trials >= 0, "max_concurrent_trials", "must be >= 0 (0 = what fits)")
        check("/" not in self.name, "name", f"must not contain '/', got {self.name!r}")
        check(not self.resume or bool(self.name), "resume", "needs search.name: the experiment to continue")


@dataclass
class TuneJobConfig(TrainJobConfig):
    """The YAML of `scm-ray tune --config`: a training config (every trial's starting point,
    same sections as TrainJobConfig) plus `search`."""

    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        from scm_ray.tune.space import check_space, flatten_space

        self.search.space = flatten_space(self.search.space)
        check_space(self.search.space, self.base_dict(), self.search.searcher)
        if self.search.scheduler.kind == "asha":
            self._check_asha()

    def _check_asha(self) -> None:
        """Here, not in ASHA: its own asserts fire only after Ray started."""
        sched, longest = self.search.scheduler, self.longest_trial()
        epochs = ("train.epochs" if "train.epochs" not in self.search.space
                  else "the largest search.space.train.epochs")
        max_t = self.asha_max_t()
        check(max_t <= longest, "search.scheduler.max_t", f"must be <= {epochs}={longest}, got {max_t}")
        check(sched.grace_period < max_t, "search.scheduler.grace_period",
              f"must be < max_t={max_t} epochs, else ASHA never stops a trial (or use kind: none)")

    def longest_trial(self) -> int:
        """Epochs of the longest trial the space allows (train.epochs may be searched)."""
        from scm_ray.tune.space import max_epochs

        return max_epochs(self.search.space, self.train.epochs)

    def asha_max_t(self) -> int:
        """ASHA's max_t: search.scheduler.max_t, or (0) the longest trial's epochs, so that no
        trial is cut short at the base config's train.epochs and counted as early-stopped."""
        return self.search.scheduler.max_t or self.longest_trial()

    def base_dict(self) -> dict:
        """The training sections as a plain dict: every trial's config before its samples."""
        return {k: v for k, v in to_dict(self).items() if k != "search"}

    def train_config(self) -> TrainJobConfig:
        return from_dict(TrainJobConfig, self.base_dict())


# Shipped job YAMLs are named <kind>_<anything>.yaml; each kind loads with its job config class.
JOB_CONFIGS: dict[str, type] = {"train": TrainJobConfig, "tune": TuneJobConfig}


@dataclass
class EvalDataConfig:
    """Which prepared dataset and splits the evaluation pool reads. Evaluation images are stored
    pre-resized, so only batch size and decoding threads matter here."""

    # "" = each checkpoint's own data.root (from its resolved config); else a folder or URI.
    root: str = ""
    # Split the "wsol" protocol picks tau (and the best checkpoint) on; unused by "paper".
    heldout_split: str = "val"
    test_split: str = "test"
    batch_size: int = 64
    num_workers: int = 1
    cache_dir: str = ""

    def __post_init__(self) -> None:
        for key in ("heldout_split", "test_split"):
            check(bool(getattr(self, key)), key, "must name a split")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass
class EvalPoolConfig:
    """The Ray actor pool: each actor loads the splits once, then evaluates many checkpoints."""

    # "" = RAY_ADDRESS if set, else an embedded local Ray; "auto" or ray://host:port.
    address: str = ""
    # 0 = as many as fit the cluster (one per GPU with use_gpu); never more than fit.
    num_actors: int = 0
    use_gpu: bool = False
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0
    # How often one checkpoint is re-run after the actor running it died; also how many actors
    # that die while starting are replaced before the pool gives up.
    max_retries: int = 2
    # Threads per actor turning maps into boxes while the model runs the next batch; 0 = one
    # per CPU of the actor.
    box_threads: int = 0
    # "auto": bf16 autocast on GPUs, fp32 on CPUs.
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self) -> None:
        check(self.num_actors >= 0, "num_actors", f"must be >= 0 (0 = as many as fit), got {self.num_actors}")
        check(self.cpus_per_actor > 0, "cpus_per_actor", f"must be > 0, got {self.cpus_per_actor}")
        check(self.gpus_per_actor > 0, "gpus_per_actor", f"must be > 0, got {self.gpus_per_actor}")
        check(self.max_retries >= 0, "max_retries", f"must be >= 0, got {self.max_retries}")
        check(self.box_threads >= 0, "box_threads", f"must be >= 0 (0 = auto), got {self.box_threads}")


@dataclass
class EvalReportConfig:
    """What the evaluation writes besides results.parquet, and how the table ranks checkpoints."""

    # Ranking metric; under "wsol" it is read on the held-out split (checkpoint selection
    # without looking at test), under "paper" on the test split.
    sort_by: Literal["gt_known", "top1_loc", "topk_loc", "top1_cls", "maxboxacc", "maxboxacc_v2"] = "gt_known"
    # Test images drawn with their CAM, predicted and ground-truth boxes (the first N; 0 = none).
    overlay_images: int = 4
    plots: bool = True

    def __post_init__(self) -> None:
        check(0 <= self.overlay_images <= 64, "overlay_images", f"must be in [0, 64], got {self.overlay_images}")


@dataclass
class EvaluateJobConfig:
    """`scm-ray evaluate --config`: SCM-free evaluation of checkpoint trees by an actor pool."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    ray: EvalPoolConfig = field(default_factory=EvalPoolConfig)
    report: EvalReportConfig = field(default_factory=EvalReportConfig)


JOB_CONFIGS["evaluate"] = EvaluateJobConfig


# ----------------------------------------------------------------------------------------------
# Loading, overrides and serialisation
# ----------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{_type_name(inner)}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it in canonical form (int -> float
    where a float is expected, tuples -> lists). Raise ConfigError naming `key` otherwise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(key, f"expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")


def _from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = prefix or cls.__name__
        raise ConfigError(
            ".".join(filter(None, [prefix, unknown[0]])),
            f"unknown key in {where}; allowed keys: {', '.join(names)}",
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = ".".join(filter(None, [prefix, name]))
            kwargs[name] = _coerce(hints[name], data[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.prefixed(prefix) if prefix else exc


def from_dict(cls: type[T], data: dict | None) -> T:
    """Build and validate a config dataclass from plain data (YAML or a dict that crossed Ray)."""
    return _from_dict(cls, data or {})


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; lists stay whole (one field)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def to_dict(config: Any) -> dict:
    """Plain, YAML- and pickle-friendly dict of a config dataclass (the form that crosses Ray)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"scm.num_blocks=3"`` -> (["scm", "num_blocks"], 3). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(text, "override must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key, "override key must be a dotted name like scm.num_blocks")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply dotted ``key=value`` overrides to a nested dict (returns a new dict)."""
    import copy

    result = copy.deepcopy(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(path), f"{part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load a job config: YAML file (optional) + dotted overrides, fully validated."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(exc.key, f"{exc.message} (in {path})") from None
        raise


def dump_yaml(config: Any, path: str | Path | None = None) -> str:
    """Serialise a config to YAML text (and write it when `path` is given)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
