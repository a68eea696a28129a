"""Ctrl-C (SIGINT) as an outcome, not a crash: the command says how to continue and exits 130.

Why: a KeyboardInterrupt used to end `evaluate` in a raw traceback and `train` with exit 1, no
summary. Code that knows how its work resumes raises `Interrupted(hint)` from the
KeyboardInterrupt (after writing what it has); `scm_ray.cli.main` prints one line with the
hint and exits 130 (128 + SIGINT, what shells report for a Ctrl-C).
"""

from __future__ import annotations

EXIT_CODE = 130


class Interrupted(KeyboardInterrupt):
    """`hint`: what to run to continue, e.g. "the same command (with --set ray.name=NAME)"."""

    def __init__(self, hint: str):
        super().__init__(hint)
        self.hint = hint
