"""Failure injection for the fault-tolerance tests: wrappers around the worker function that
raise once at a chosen optimizer step (not a config field: users never see it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class InjectedFailure(RuntimeError):
    pass


def fail_once(at_step: int, marker: str | Path) -> Callable[[int], None]:
    """A step hook raising InjectedFailure at global step `at_step`, in the first attempt only
    (`marker` is written then, so the restarted attempt goes on)."""
    marker = Path(marker)

    def hook(global_step: int) -> None:
        if global_step != at_step or marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("injected\n")
        raise InjectedFailure(f"injected failure at global step {at_step}")

    return hook


def failing_worker(at_step: int, marker: str | Path) -> Callable[[dict], None]:
    """The Ray Train worker function, with rank 0 failing once at `at_step`."""

    def worker(loop_config: dict) -> None:
        import ray.train

        from scm_ray.train.ray_adapter import train_worker

        rank = ray.train.get_context().get_world_rank()
        train_worker(loop_config, before_step=fail_once(at_step, marker) if rank == 0 else None)

    return worker


def _pickle_by_value() -> None:
    """Ray workers unpickle these functions without importing the tests package."""
    try:
        import ray.cloudpickle
    except ImportError:
        return
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


_pickle_by_value()
