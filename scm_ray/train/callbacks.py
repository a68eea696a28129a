"""Driver-visible progress of a Ray Train run: one line per epoch, a count of worker-group
failures in the run folder, and errors no restart can fix ending the run at once.

Ray Train V2 calls these on its controller (whose output Ray forwards to the driver's stdout).
"""

from __future__ import annotations

import logging

from ray.train.v2.api.callback import UserCallback

from scm_ray.train.history import format_epoch_line, record_failure


class _NoTraceback(logging.Filter):
    """Keeps a Ray Train warning, drops its traceback: the controller's request to Ray's
    autoscaling coordinator times out (5 s) whenever the machine is busy starting actors, which
    Ray itself calls safe to ignore, and the traceback would read as a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to send resource request"):
            record.exc_info, record.exc_text = None, None
        return True


_TRANSIENT_WARNINGS = "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"


class EpochPrinter(UserCallback):
    """Runs in Ray Train's controller process (it arrives there pickled, so unpickling is where it
    can set that process's loggers up, before the controller logs anything)."""

    def __init__(self, epochs: int, run_dir: str, scm_blocks: int = 1):
        self.epochs = epochs
        self.run_dir = run_dir
        self.scm_blocks = scm_blocks

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        logger = logging.getLogger(_TRANSIENT_WARNINGS)
        if not any(isinstance(f, _NoTraceback) for f in logger.filters):
            logger.addFilter(_NoTraceback())

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if metrics:
            print(format_epoch_line(metrics[0], self.epochs, self.scm_blocks), flush=True)

    def after_exception(self, run_context, worker_exceptions) -> None:
        permanent = next(filter(None, map(permanent_error, worker_exceptions.values())), None)
        if permanent is not None:
            # Raised here, on Ray Train's controller, this ends the run now (Ray Train does not
            # retry an error of its own controller) instead of consuming ray.max_failures.
            raise UnrecoverableError(f"{type(permanent).__name__}: {permanent} (a restart cannot fix this: "
                                     "not retried)")
        failures = record_failure(self.run_dir)
        first = next(iter(worker_exceptions.values()), None)
        print(f"[scm-ray] worker group failure #{failures}: {first!r}", flush=True)


class UnrecoverableError(RuntimeError):
    """A worker failed in a way every restart would repeat."""


def permanent_error(error: BaseException) -> BaseException | None:
    """The worker's own exception when it is one no restart can fix, else None: bad settings
    (ConfigError), a damaged or mismatched data file (DataFileError), a run that diverged
    (TrainingDiverged: a restart repeats it from the same checkpoint), code that cannot run
    (ImportError, SyntaxError, NameError). Worker deaths, NCCL/gloo errors and everything else
    stay retryable. Ray Train hands user errors over wrapped, the original in `_base_exc`."""
    from scm_ray.config import ConfigError
    from scm_ray.data.ffcv_io import DataFileError
    from scm_ray.train.engine import TrainingDiverged

    base = getattr(error, "_base_exc", error)
    permanent = (ConfigError, DataFileError, TrainingDiverged, ImportError, SyntaxError, NameError)
    return base if isinstance(base, permanent) else None
