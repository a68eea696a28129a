"""Where the time goes before a run's first optimizer step.

A `StartupClock` collects marks (a phase's name, the wall time it ended) from the moment a
command's process started (or a Tune trial began) to the first optimizer step: the driver marks
its phases (imports, checks, Ray), hands the marks to the workers inside the loop config, and
rank 0 of the engine adds its own (worker group, dataset, loaders, model, first batch, first
step), prints one line and writes `startup.json` to the run folder (README, "Start-up time").
Wall time (time.time), not a monotonic clock, because the marks cross
processes (and, on a cluster, machines whose clocks NTP keeps within milliseconds).

Plain Python: the engine, the driver and the trial actor all use it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

STARTUP_FILE = "startup.json"  # in the run folder, written by rank 0 after its first step

# A phase's name -> what it covers, for the printed line's readers and the README.
PHASES = {
    "imports": "interpreter start and imports, up to the command's own code",
    "checks": "config, model (on the meta device), dataset and storage checks",
    "ray": "import ray and connect (the embedded default: start a local Ray)",
    "trial": "Tune: from the trial's start to its TorchTrainer's fit (an in-process trial: to the "
             "engine's start, its imports included)",
    "worker group": "Ray Train's controller, worker processes, torch import, process group",
    "dataset": "staging the dataset, recording the workers",
    "loaders": "FFCV loaders built (files opened, pipelines planned)",
    "model": "model, optimizer, schedule, checkpoint restore, DDP wrap",
    "first batch": "the first training batch (FFCV compiles its pipeline with numba here)",
    "first step": "the first forward, backward and optimizer step",
}


def process_start_time() -> float:
    """When this process started (wall time): the interpreter's own start-up counts too."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil or no /proc: count from now
        return time.time()


@dataclass
class StartupClock:
    origin: float  # wall time the clock counts from
    since: str  # what happened at origin, for the line: "the command started"
    marks: list[tuple[str, float]] = field(default_factory=list)

    @classmethod
    def for_command(cls) -> StartupClock:
        return cls(process_start_time(), "the command started")

    @classmethod
    def for_trial(cls) -> StartupClock:
        return cls(time.time(), "the trial started")

    @classmethod
    def for_call(cls) -> StartupClock:
        """For training started from Python (not the command line): count from now."""
        return cls(time.time(), "training was started")

    def mark(self, phase: str) -> None:
        """`phase` ended now."""
        self.marks.append((phase, time.time()))

    def phases(self) -> list[tuple[str, float]]:
        """(phase, seconds) in order: each mark minus the one before it (the first: origin)."""
        out, last = [], self.origin
        for phase, at in self.marks:
            out.append((phase, max(0.0, at - last)))
            last = at
        return out

    def total(self) -> float:
        return self.marks[-1][1] - self.origin if self.marks else 0.0

    def line(self) -> str:
        parts = ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in self.phases())
        return f"[scm-ray] first optimizer step {self.total():.1f} s after {self.since} ({parts} s)"

    def to_dict(self) -> dict:
        return {"origin": self.origin, "since": self.since, "marks": [list(m) for m in self.marks]}

    @classmethod
    def from_dict(cls, data: dict | None) -> StartupClock | None:
        if not data:
            return None
        return cls(float(data["origin"]), str(data["since"]), [(str(p), float(t)) for p, t in data["marks"]])

    def to_json(self) -> str:
        """startup.json: the phases in seconds, the total, and the raw marks."""
        return json.dumps({"since": self.since, "total_s": round(self.total(), 3),
                           "phases_s": {p: round(s, 3) for p, s in self.phases()}, **self.to_dict()}, indent=2)
