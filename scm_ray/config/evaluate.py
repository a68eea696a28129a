"""The evaluation job's config (`scm-ray evaluate --config`): the protocol, which data, the actor
pool and the report. Its `data` and `ray` sections are not the training job's: the pool reads
pre-resized evaluation splits and runs actors, not a worker group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scm_ray.config.loader import check, setting
from scm_ray.config.sections import EvalConfig, Precision


@dataclass(frozen=True)
class EvalDataConfig:
    """Which prepared dataset and splits the evaluation pool reads. Evaluation images are stored
    pre-resized, so only batch size and decoding threads matter here."""

    root: str = setting("", help='"" = each checkpoint\'s own data.root; else a folder or URI')
    heldout_split: str = setting("val", help="split the wsol protocol picks tau and the checkpoint on")
    test_split: str = setting("test", help="split the metrics are reported on")
    batch_size: int = setting(64, help="images per batch per actor")
    num_workers: int = setting(1, help="FFCV decoding threads per actor")
    cache_dir: str = setting("", help='where a URI root is staged per node ("" = the default cache)')

    def __post_init__(self) -> None:
        for key in ("heldout_split", "test_split"):
            check(bool(getattr(self, key)), key, "must name a split")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class EvalPoolConfig:
    """The Ray actor pool: each actor loads the splits once, then evaluates many checkpoints."""

    address: str = setting("", help='"" = RAY_ADDRESS if set, else an embedded local Ray; "auto" or ray://host:port')
    num_actors: int = setting(0, help="0 = as many as fit the cluster (one per GPU with use_gpu)")
    use_gpu: bool = setting(False, help="one GPU per actor")
    cpus_per_actor: float = setting(1.0, help="CPUs reserved per actor")
    gpus_per_actor: float = setting(1.0, help="GPUs reserved per actor (with use_gpu)")
    max_retries: int = setting(2, help="re-runs of a checkpoint whose actor died; also actors replaced at start")
    box_threads: int = setting(0, help="threads per actor turning maps into boxes; 0 = one per CPU")
    precision: Precision = setting("auto", help="auto: bf16 autocast on GPUs, fp32 on CPUs")

    def __post_init__(self) -> None:
        check(self.num_actors >= 0, "num_actors", f"must be >= 0 (0 = as many as fit), got {self.num_actors}")
        check(self.cpus_per_actor > 0, "cpus_per_actor", f"must be > 0, got {self.cpus_per_actor}")
        check(self.gpus_per_actor > 0, "gpus_per_actor", f"must be > 0, got {self.gpus_per_actor}")
        check(self.max_retries >= 0, "max_retries", f"must be >= 0, got {self.max_retries}")
        check(self.box_threads >= 0, "box_threads", f"must be >= 0 (0 = auto), got {self.box_threads}")


@dataclass(frozen=True)
class EvalReportConfig:
    """What the evaluation writes besides results.parquet, and how the table ranks checkpoints."""

    sort_by: Literal["gt_known", "top1_loc", "topk_loc", "top1_cls", "maxboxacc_v2"] = setting(
        "gt_known", help="ranking metric: on the held-out split under wsol, on test under paper")
    overlay_images: int = setting(8, help="test images drawn with CAM and boxes, every class in turn, "
                                          "hits and misses, in [0, 64]")
    plots: bool = setting(True, help="write the curves and CAM pictures")

    def __post_init__(self) -> None:
        check(0 <= self.overlay_images <= 64, "overlay_images", f"must be in [0, 64], got {self.overlay_images}")


@dataclass(frozen=True)
class EvaluateJobConfig:
    """`scm-ray evaluate --config`: SCM-free evaluation of checkpoint trees by an actor pool."""

    eval: EvalConfig = setting(help="the protocol and its thresholds", factory=EvalConfig)
    data: EvalDataConfig = setting(help="dataset and splits read", factory=EvalDataConfig)
    ray: EvalPoolConfig = setting(help="the actor pool", factory=EvalPoolConfig)
    report: EvalReportConfig = setting(help="ranking, pictures", factory=EvalReportConfig)
