"""The search's live status table, printed by the driver while trials run.

Why not Tune's own: its heartbeat table shows the first four metrics a trial reports (not the
objective) and the logical resources of the trial actors, which reserve nothing here (their Ray
Train worker groups hold the CPUs/GPUs), so it reads "0/2 CPUs" while every CPU is busy. The
search runs Tune with verbose=0 and this callback prints instead: one row per trial with its
status, searched values, epochs so far, the objective's latest and best value.
"""

from __future__ import annotations

import math
import time

from ray import tune

from scm_ray.tune.report import _fmt, text_table


class TrialTable(tune.Callback):
    """Prints the table when a trial starts, ends or fails, and at most every `every_s` seconds
    while results arrive."""

    def __init__(self, metric: str, mode: str, space: list[str], every_s: float = 60.0):
        self.metric, self.mode, self.space, self.every_s = metric, mode, space, every_s
        self._best: dict[str, float] = {}
        self._printed = -math.inf

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._print(trials, f"trial {trial.trial_id} started")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            best = self._best.get(trial.trial_id)
            better = best is None or (value > best if self.mode == "max" else value < best)
            self._best[trial.trial_id] = value if better else best
        if time.monotonic() - self._printed >= self.every_s:
            self._print(trials, "progress")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._print(trials, f"trial {trial.trial_id} finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._print(trials, f"trial {trial.trial_id} failed")

    def _print(self, trials, why: str) -> None:
        self._printed = time.monotonic()
        print(f"[scm-ray] {why}:\n{self.table(trials)}", end="", flush=True)

    def table(self, trials) -> str:
        header = ["trial", "status", *self.space, "epoch", self.metric, f"best ({self.mode})"]
        rows = [[t.trial_id, t.status, *(_fmt(t.config.get(name, "-")) for name in self.space),
                 _fmt((t.last_result or {}).get("epoch", "-")),
                 _fmt((t.last_result or {}).get(self.metric, "-")),
                 _fmt(self._best.get(t.trial_id, "-"))] for t in trials]
        return "".join("  " + line + "\n" for line in text_table(header, rows).splitlines())
