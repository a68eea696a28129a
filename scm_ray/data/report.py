"""Conversion reports: every bad input line or image is recorded with its file and line, and
every skipped record is counted under a reason, so nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class SourceError(ValueError):
    """The source cannot be converted at all (e.g. a required annotation file is missing)."""


@dataclass(frozen=True)
class Problem:
    """One finding. `line` is 1-based, None when the problem is about a whole file or image."""

    reason: str
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}: {self.message}"


# Reasons a record is skipped (it never reaches the table). Other reasons are findings about
# input lines that carried no record of their own (e.g. an annotation for an unknown image id).
SKIP_REASONS = (
    "missing_image",
    "unreadable_image",
    "size_mismatch",
    "bad_box",
    "label_out_of_range",
    "unknown_class",
    "label_conflict",
    "duplicate_id",
    "missing_annotation",
    "malformed_line",
)


@dataclass
class Report:
    """Findings of one conversion, plus the number of records written per split."""

    problems: list[Problem] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    written: Counter = field(default_factory=Counter)

    def add(self, reason: str, file: str | Path, line: int | None, message: str, skip: bool = True) -> None:
        """Record a finding; `skip` counts one skipped record under `reason`."""
        self.problems.append(Problem(reason, str(file), line, message))
        if skip:
            self.skipped[reason] += 1

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self, max_problems: int = 200) -> dict:
        """JSON-friendly summary for the record table's metadata block (problem list capped)."""
        return {
            "written": dict(self.written),
            "skipped": dict(self.skipped),
            "num_problems": len(self.problems),
            "problems": [str(p) for p in self.problems[:max_problems]],
        }

    def lines(self, max_problems: int = 20) -> list[str]:
        """Human summary: totals, skip reasons, the first problems."""
        out = [f"records written: {sum(self.written.values())} "
               + "(" + ", ".join(f"{k} {v}" for k, v in self.written.items()) + ")"]
        out.append(f"records skipped: {self.num_skipped}"
                   + ("" if not self.skipped else " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) + ")"))
        notes = len(self.problems) - self.num_skipped
        if notes > 0:
            out.append(f"other findings: {notes}")
        for p in self.problems[:max_problems]:
            out.append(f"  {p}")
        if len(self.problems) > max_problems:
            out.append(f"  ... and {len(self.problems) - max_problems} more (all in records.parquet metadata up to 200)")
        return out
