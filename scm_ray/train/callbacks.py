"""Driver-visible progress: one line per epoch, and a count of worker-group failures.

Ray Train V2 calls these on its controller (whose output Ray forwards to the driver's stdout).
"""

from __future__ import annotations

import json
import logging

from ray.train.v2.api.callback import UserCallback

from scm_ray.train.history import _fs, write_text

FAILURES_FILE = "failures.json"


def format_epoch_line(metrics: dict, epochs: int, scm_blocks: int = 1) -> str:
    """One driver line per epoch; "(SCM off: warm-up)" while a model with ADBs (scm_blocks > 0)
    trains without them (scm.start_epoch), never for the model without the SCM (0 blocks)."""
    keys = [("train/loss", "loss {:.4f}"), ("train/images_per_s", "{:.0f} img/s"),
            ("lr", "lr {:.2e}"), ("val/top1_cls", "top1-cls {:.1f}"),
            ("val/gt_known", "GT-Known {:.1f}"), ("val/top1_loc", "top1-loc {:.1f}"),
            ("val/maxboxacc_v2", "MaxBoxAccV2 {:.1f}"), ("epoch_seconds", "{:.1f} s")]
    parts = [f"epoch {metrics.get('epoch', '?')}/{epochs}"]
    parts += [fmt.format(metrics[k]) for k, fmt in keys if isinstance(metrics.get(k), (int, float))]
    if metrics.get("scm_active") == 0 and scm_blocks > 0:
        parts.append("(SCM off: warm-up)")
    return "[scm-ray] " + " | ".join(parts)


def read_failures(run_dir: str) -> int:
    fs, path = _fs(run_dir)
    try:
        with fs.open_input_stream(f"{path}/{FAILURES_FILE}") as stream:
            return int(json.loads(stream.read().decode())["failures"])
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return 0


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
        failures = read_failures(self.run_dir) + 1
        write_text(self.run_dir, FAILURES_FILE, json.dumps({"failures": failures}))
        first = next(iter(worker_exceptions.values()), None)
        print(f"[scm-ray] worker group failure #{failures}: {first!r}", flush=True)


class UnrecoverableError(RuntimeError):
    """A worker failed in a way every restart would repeat."""


def permanent_error(error: BaseException) -> BaseException | None:
    """The worker's own exception when it is one no restart can fix, else None: bad settings
    (ConfigError), a damaged or mismatched data file (DataFileError), code that cannot run
    (ImportError, SyntaxError, NameError). Worker deaths, NCCL/gloo errors and everything else
    stay retryable. Ray Train hands user errors over wrapped, the original in `_base_exc`."""
    from scm_ray.config import ConfigError
    from scm_ray.data.ffcv_io import DataFileError

    base = getattr(error, "_base_exc", error)
    return base if isinstance(base, (ConfigError, DataFileError, ImportError, SyntaxError, NameError)) else None
