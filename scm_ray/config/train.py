"""The training job's config (`scm-ray train --config`): the shared sections plus the optimizer,
the per-worker loop and the Ray worker group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scm_ray.config.loader import check, setting
from scm_ray.config.sections import DataConfig, EvalConfig, ModelConfig, Precision, SCMConfig


def check_name(value: str, key: str) -> None:
    """A run or search name becomes one folder under the storage path: a single path component
    (no '/', no '..', not hidden), or "" for a derived name."""
    check(not value or ("/" not in value and "\\" not in value and not value.startswith(".")),
          key, f"must be a single folder name (no '/', '..' or leading '.'), got {value!r}")


MAX_LR = 1e30  # optim.lr above this is refused: AdamW's float32 arithmetic fails near 3e37

@dataclass(frozen=True)
class OptimConfig:
    """AdamW as the reference (eps 1e-8, weight decay 0.05 except 1-D params, biases, pos_embed,
    cls_token, lambda, beta) and the learning-rate schedule, stepped per iteration.
    `scm-ray config show --schedule` prints the lr per epoch."""

    lr: float = setting(5e-5, help="peak learning rate")
    weight_decay: float = setting(0.05, help="AdamW weight decay (not on 1-D params, pos_embed, cls_token, SCM)")
    eps: float = setting(1e-8, help="AdamW epsilon")
    betas: list[float] = setting(help="AdamW betas, two numbers in [0, 1)", factory=lambda: [0.9, 0.999])
    schedule: Literal["step", "cosine", "constant"] = setting(
        "step", help="step: x step_gamma at each milestone; cosine: down to min_lr; constant")
    step_milestones: list[int] = setting(
        help="1-based epochs at whose start the lr is multiplied by step_gamma", factory=lambda: [30])
    step_gamma: float = setting(0.1, help="step schedule factor, in (0, 1]")
    min_lr: float = setting(0.0, help="cosine schedule's final lr, in [0, lr]")
    warmup_epochs: float = setting(0.0, help="linear warm-up from 0, in epochs (fractions allowed)")
    grad_clip: float = setting(0.0, help="clip the global gradient norm to this; 0 = off")

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.lr <= MAX_LR, "lr", f"must be <= {MAX_LR:g} (AdamW's float32 arithmetic fails near 3e37), "
                                        f"got {self.lr}")
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


@dataclass(frozen=True)
class TrainConfig:
    """The per-worker training loop."""

    epochs: int = setting(30, help="epochs to train")
    precision: Precision = setting("auto", help="auto: bf16 autocast on GPUs, fp32 on CPUs")
    compile: bool = setting(False, help="torch.compile the model")
    seed: int = setting(0, help="model initialisation seed")
    log_every_steps: int = setting(50, help="rank 0 prints progress every this many steps")
    max_steps_per_epoch: int = setting(0, help="cap on optimizer steps per epoch (0 = the whole split)")
    tracking: list[Literal["tensorboard", "mlflow"]] = setting(
        help="TensorBoard scalars go to the run folder always; add mlflow for MLflow",
        factory=lambda: ["tensorboard"])
    mlflow_uri: str = setting("", help='MLflow tracking URI; "" = sqlite:///<ray.storage_path>/mlflow.db')
    mlflow_experiment: str = setting(
        "", help='MLflow experiment; "" = the storage folder\'s name (a search\'s trials: the search\'s name)')
    max_skipped_steps: int = setting(
        0, help="end the run when more optimizer steps than this in a row are skipped or undone "
                "(non-finite loss, gradients or weights); 0 = max(10, 5% of an epoch's steps), "
                "at most half an epoch's steps")

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")
        check(self.max_steps_per_epoch >= 0, "max_steps_per_epoch", "must be >= 0 (0 = all)")
        check(self.max_skipped_steps >= 0, "max_skipped_steps", f"must be >= 0 (0 = auto), got {self.max_skipped_steps}")


@dataclass(frozen=True)
class RayConfig:
    """Cluster connection, worker group, storage and fault tolerance (Ray Train RunConfig)."""

    address: str = setting("", help='"" = RAY_ADDRESS if set, else an embedded local Ray; "auto" or ray://host:port')
    num_workers: int = setting(2, help="DDP worker processes; 0 = no worker group: `train` runs in its own "
                                "process, no Ray (debugging); `tune`, each trial in its trial's process")
    use_gpu: bool = setting(False, help="one GPU per worker (NCCL)")
    cpus_per_worker: float = setting(1.0, help="CPUs reserved per worker")
    gpus_per_worker: float = setting(1.0, help="GPUs reserved per worker (with use_gpu)")
    storage_path: str = setting("runs", help="folder or URI (s3://, gs://) every node can reach")
    name: str = setting("", help='run folder name; "" = <config name>-<time>; same name + storage = resume')
    num_to_keep: int = setting(3, help="best checkpoints kept by checkpoint_metric")
    checkpoint_metric: str = setting("val/gt_known", help="per-epoch metric that ranks checkpoints")
    checkpoint_mode: Literal["max", "min"] = setting("max", help="whether checkpoint_metric is better high or low")
    max_failures: int = setting(0, help="worker-group restarts from the latest checkpoint; -1 = unlimited")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        "WARNING", help="Ray Train's own log level (the epoch lines stay)")

    def __post_init__(self) -> None:
        check(self.num_workers >= 0, "num_workers", f"must be >= 0 (0 = in this process), got {self.num_workers}")
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
        check_name(self.name, "name")


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything a training run needs; the YAML of `scm-ray train --config`."""

    model: ModelConfig = setting(help="backbone and head", factory=ModelConfig)
    scm: SCMConfig = setting(help="Spatial Calibration Module (training only)", factory=SCMConfig)
    data: DataConfig = setting(help="prepared dataset and loaders", factory=DataConfig)
    optim: OptimConfig = setting(help="AdamW and the lr schedule", factory=OptimConfig)
    train: TrainConfig = setting(help="the per-worker training loop", factory=TrainConfig)
    eval: EvalConfig = setting(help="per-epoch validation protocol", factory=EvalConfig)
    ray: RayConfig = setting(help="cluster, worker group, storage, fault tolerance", factory=RayConfig)

    def __post_init__(self) -> None:
        check(
            self.data.crop_size == self.model.img_size,
            "data.crop_size",
            f"must equal model.img_size={self.model.img_size}, got {self.data.crop_size}",
        )
        # scm.start_epoch >= train.epochs is allowed (a short smoke run of a warm-up recipe): the
        # driver says the SCM stays off; a search refuses such trials (tune/space.py).

    def scm_never_active(self) -> bool:
        """Whether the model has ADBs but the run ends before scm.start_epoch switches them on."""
        return self.scm.num_blocks > 0 and self.scm.start_epoch >= self.train.epochs
