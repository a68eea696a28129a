"""Commands a test runs in a subprocess: the environment for one with its own embedded Ray
(without the addresses of a Ray this test process may have started: RAY_ADDRESS would attach the
command to it; RAY_API_SERVER_ADDRESS, set by scm_ray.ray_session.connect, names its state API),
and Ctrl-C sent to one once it is far enough along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PARENT_RAY = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def own_ray_env(*also_drop: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (*PARENT_RAY, *also_drop)}


def interrupt_when(argv: list[str], ready: Callable[[], bool], log: Path, timeout_s: float = 600,
                   poll_s: float = 0.2) -> tuple[int, str]:
    """Run `scm-ray ARGV` (its own Ray, output to `log`), send it SIGINT once ready() holds;
    (exit code, output). The command's whole process group is killed if it does not exit."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scm_ray.cli", *argv], cwd=REPO, env=own_ray_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert proc.poll() is None, f"ended before the interrupt:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never ready:\n{log.read_text()[-3000:]}"
            time.sleep(poll_s)
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, log.read_text()
