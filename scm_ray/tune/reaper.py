"""Releasing the worker groups of trials Tune has stopped.

Why this exists: Tune stops a trial (ASHA's early stop, and ASHA's stop when a trial reaches
max_t) by ending the trial's actor. The trial's Ray Train controller is owned by that actor and
dies with it, before it can remove its workers' placement group, and a placement group outlives
the actor that made it. Ray Train's own clean-up actor notices a dead controller through the
dashboard's state API, which an embedded local Ray (dashboard off) lacks and which cannot tell
two Ray instances on one host apart. A group left behind holds the CPUs/GPUs the next trial
waits for, so with concurrency capped to what fits, the search stalls.

So every trial's rank-0 worker records its worker group's placement group in the trial's run
folder (`record_worker_group`), and the driver removes the recorded groups once the trial is over
(`WorkerGroupReaper`). Only public Ray APIs are used.
"""

from __future__ import annotations

import time

import pyarrow.fs as pafs
import ray
from ray import tune
from ray.util.placement_group import PlacementGroup, remove_placement_group

from scm_ray.storage import filesystem
from scm_ray.train.history import write_text

GROUPS_FOLDER = "placement_groups"  # in a trial's run folder: one empty file per group id
_HELD = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def record_worker_group(run_dir: str) -> None:
    """Rank 0 of a trial's worker group records the placement group it runs in."""
    if ray.train.get_context().get_world_rank() == 0:
        group = ray.util.get_current_placement_group()
        if group is not None:
            write_text(f"{run_dir}/{GROUPS_FOLDER}", group.id.hex(), "")


def release_worker_groups(run_dir: str) -> int:
    """Remove the placement groups the run in `run_dir` recorded that Ray still holds.
    Returns how many were removed."""
    fs, path = filesystem(f"{run_dir}/{GROUPS_FOLDER}")
    recorded = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    if not recorded:
        return 0
    table = ray.util.placement_group_table()
    removed = 0
    for info in recorded:
        group_id = info.base_name
        if table.get(group_id, {}).get("state") in _HELD:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
            removed += 1
    return removed


class WorkerGroupReaper(tune.Callback):
    """Driver-side Tune callback releasing finished trials' worker groups.

    A completed or early-stopped trial is released a little later (Tune calls back before it
    ends the trial's actor, and removing the group under a live controller would look like a
    worker failure to it), and once more later still in case the controller restarted its
    group in between. A trial that errored, or is about to be retried, lost its actor
    already: released at once (and not again for a retried trial, whose next attempt will
    record a group of its own)."""

    def __init__(self, runs_root: str, delays_s: tuple[float, ...] = (2.0, 15.0)):
        self.runs_root = runs_root
        self.delays_s = delays_s
        self._due: list[tuple[float, str]] = []

    def _release(self, trial_id: str, say: bool = False) -> None:
        """Release the trial's groups; said aloud only after a failure (a group released after a
        completed or early-stopped trial is the expected course of things, see above)."""
        removed = release_worker_groups(f"{self.runs_root}/{trial_id}")
        if removed and say:
            print(f"[scm-ray] released the worker group(s) of failed trial {trial_id} ({removed})", flush=True)

    def _later(self, trial_id: str) -> None:
        now = time.monotonic()
        self._due.extend((now + delay, trial_id) for delay in self.delays_s)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._later(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._release(trial.trial_id, say=True)
        self._later(trial.trial_id)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._release(trial.trial_id, say=True)

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        due = [trial_id for when, trial_id in self._due if when <= now]
        self._due = [(when, trial_id) for when, trial_id in self._due if when > now]
        for trial_id in dict.fromkeys(due):
            self._release(trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        for trial_id in dict.fromkeys(trial_id for _, trial_id in self._due):
            self._release(trial_id)
        self._due = []
