"""Ends the embedded Ray's processes when the driver that started them dies without shutting
Ray down (SIGKILL, OOM killer).

Why: GCS, raylet and the workers follow a dead driver within a second or two, but Ray's
dashboard agent and runtime-env agent were seen outliving it for about a minute, still
listening. `ray_session.connect` starts this watchdog (`python -m scm_ray.ray_watchdog PID`,
in its own session so a Ctrl-C to the terminal does not reach it): it records the driver's
descendants every half second and, once the driver is gone, terminates those still running
(and their children), then kills what is left after two seconds. A normal exit has nothing
left for it to do. It imports neither Ray nor torch (psutil only).
"""

from __future__ import annotations

import os
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 2.0


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(driver_pid: int) -> int:
    """Block until `driver_pid` exits, then end its recorded descendants; returns how many
    were still running."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return 0
    known: dict[int, psutil.Process] = {}  # psutil.Process compares pid and start time
    me = os.getpid()
    while _alive(driver):
        try:
            known.update((p.pid, p) for p in driver.children(recursive=True) if p.pid != me)
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    left = [p for p in known.values() if _alive(p)]
    for process in list(left):
        try:
            left.extend(process.children(recursive=True))
        except psutil.Error:
            pass
    left = [p for p in {p.pid: p for p in left}.values() if p.pid != me]
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(left, timeout=GRACE_S)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass
    return len(left)


if __name__ == "__main__":
    sys.exit(0 if watch(int(sys.argv[1])) >= 0 else 1)
