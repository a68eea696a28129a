"""What evaluating one checkpoint produced, or why it failed: made by the worker, and by the
pool's driver when an actor dies. Torch-free, so the driver (scm-ray evaluate) never imports
torch or the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# error_kind values. Only a defect of the checkpoint file itself is certain to repeat while the
# file is unchanged, so only that kind is remembered between runs (see results.py). A file this
# process could not reach (not found, an I/O error) is "unavailable": the node may not see the
# path or a mount may have hiccupped, so a re-run tries it again.
CHECKPOINT_ERROR = "checkpoint"
UNAVAILABLE_ERROR = "unavailable"
DATA_ERROR = "data"
RUN_ERROR = "error"
ACTOR_ERROR = "actor"


@dataclass
class CheckpointReport:
    """What evaluating one checkpoint produced: its results-table fields, its resolved config
    (for the columns that vary between checkpoints) and files to write (name suffix -> bytes)."""

    row: dict[str, Any]
    config: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def failed_report(kind: str, message: str) -> CheckpointReport:
    return CheckpointReport({"status": "failed", "error_kind": kind, "error": message})
