"""The search job's config (`scm-ray tune --config`): a training config (every trial's starting
point) plus `search`. It lives beside the search-space rules (space.py) it validates with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scm_ray.config import TrainJobConfig, check, setting, to_dict
from scm_ray.config.train import check_name
from scm_ray.tune.space import check_space, flatten_space, max_epochs


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping of trials: ASHA ranks trials at rungs of epochs on the search metric."""

    kind: Literal["none", "asha"] = setting("asha", help="asha stops weak trials early; none runs all to the end")
    grace_period: int = setting(1, help="epochs every trial runs before it can be stopped")
    reduction_factor: float = setting(4.0, help="only the best 1/reduction_factor of a rung go on")
    max_t: int = setting(0, help="epochs of the longest trial; 0 = train.epochs (its largest if searched)")

    def __post_init__(self) -> None:
        check(self.grace_period >= 1, "grace_period", f"must be >= 1 epoch, got {self.grace_period}")
        check(self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor}")
        check(self.max_t >= 0, "max_t", f"must be >= 0 (0 = train.epochs), got {self.max_t}")


@dataclass(frozen=True)
class SearchConfig:
    """What Ray Tune searches and how (scm_ray/tune/space.py documents the space format)."""

    space: dict[str, Any] = setting(help="dotted training field -> {loguniform|uniform|randint|choice|grid_search: [...]}",
                                    factory=dict)
    metric: str = setting("val/gt_known", help="the objective: any per-epoch metric training reports")
    mode: Literal["max", "min"] = setting("max", help="whether the metric is better high or low")
    searcher: Literal["random", "grid", "optuna"] = setting(
        "random", help="random (grid_search still enumerates), grid (lists only), optuna (TPE)")
    seed: int = setting(0, help="searcher seed")
    num_samples: int = setting(8, help="trials (times the grid's size)")
    max_concurrent_trials: int = setting(0, help="trials at once; 0 = as many as the cluster fits")
    scheduler: SchedulerConfig = setting(help="early stopping", factory=SchedulerConfig)
    storage_path: str = setting("", help='experiment folder parent; "" = ray.storage_path')
    name: str = setting("", help='experiment folder name; "" = <config name>-<time>')
    resume: bool = setting(False, help="continue the experiment <storage_path>/<name> where it stopped")

    def __post_init__(self) -> None:
        # A --set search.space.optim.lr={...} arrives nested; the YAML form is dotted. Normalised
        # while the object is being built, never after.
        object.__setattr__(self, "space", flatten_space(self.space))
        check(bool(self.metric), "metric", "must name a reported metric, e.g. val/gt_known")
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        check(self.max_concurrent_trials >= 0, "max_concurrent_trials", "must be >= 0 (0 = what fits)")
        check_name(self.name, "name")
        check(not self.resume or bool(self.name), "resume", "needs search.name: the experiment to continue")


@dataclass(frozen=True)
class TuneJobConfig(TrainJobConfig):
    """The YAML of `scm-ray tune --config`: a training config (every trial's starting point,
    same sections as TrainJobConfig) plus `search`."""

    search: SearchConfig = setting(help="what Ray Tune searches and how", factory=SearchConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
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
        return max_epochs(self.search.space, self.train.epochs)

    def asha_max_t(self) -> int:
        """ASHA's max_t: search.scheduler.max_t, or (0) the longest trial's epochs, so that no
        trial is cut short at the base config's train.epochs and counted as early-stopped."""
        return self.search.scheduler.max_t or self.longest_trial()

    def base_dict(self) -> dict:
        """The training sections as a plain dict: every trial's config before its samples."""
        return {k: v for k, v in to_dict(self).items() if k != "search"}
