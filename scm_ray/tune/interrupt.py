"""Ctrl-C during a search: Tune saves the experiment's state and stops its trials, then the
command ends with one line saying how to resume (exit 130, scm_ray.interrupts).

Why not Tune's own handler: it logs a warning naming `Tuner.restore(...)`, which is not how an
scm-ray search resumes (`--set search.resume=true`), and an error-level "Trials did not
complete" line. Our SIGINT handler asks Tune to stop through SIGUSR1, the signal Tune's loop
always listens to, and those lines are dropped while it does. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

# Tune's own lines about an interrupt it was asked for (see the module docstring)
_TUNE_LINES = ("Stop signal received", "Experiment has been interrupted", "Trials did not complete")


class SearchInterrupt:
    """Whether a Ctrl-C arrived while the search ran."""

    requested = False


class _DropTuneLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TUNE_LINES)


@contextlib.contextmanager
def stop_search_on_ctrl_c() -> Iterator[SearchInterrupt]:
    state = SearchInterrupt()
    if threading.current_thread() is not threading.main_thread():  # only the main thread has signals
        yield state
        return
    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # read by Tuner.fit: keep ours in place
    logger, drop = logging.getLogger("ray.tune.tune"), _DropTuneLines()

    def on_ctrl_c(signum, frame):
        tune_listens = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if state.requested or not tune_listens:  # a second Ctrl-C, or Tune's loop not running yet
            raise KeyboardInterrupt
        state.requested = True
        logger.addFilter(drop)
        print("\n[scm-ray] stopping the search: saving its state (Ctrl-C again to stop at once)", flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
        logger.removeFilter(drop)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env
