"""Submitting through the Job Submission API to a head from cluster/start_local_head.sh, with the
repository as working dir: the entrypoint's `python` must be the project's environment, and the
code that runs must be the submitted copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .local_head import LOOPBACK, head_processes, listening_sockets, submit_and_wait

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _value(logs: str, key: str) -> str:
    return next(line.split(" ", 1)[1] for line in logs.splitlines() if line.startswith(f"{key} "))


def test_entrypoint_python_is_the_projects_venv(job_client):
    code = "import sys, scm_ray; print('PREFIX', sys.prefix); print('PKG', scm_ray.__file__)"
    logs = submit_and_wait(job_client, ["python", "-c", code], timeout_s=120)
    assert Path(_value(logs, "PREFIX")).resolve() == Path(sys.prefix).resolve(), logs
    # Ray puts the unpacked working dir first on PYTHONPATH, ahead of the editable install.
    assert "working_dir_files" in _value(logs, "PKG"), logs


def test_local_head_listens_on_loopback_only(ray_head, job_client):
    """GCS, raylet, dashboard, agents, workers and a job's driver: every socket on 127.0.0.1
    (start_local_head.sh without --expose)."""
    code = "import time, ray; ray.init(); ray.get(ray.remote(lambda: 1).remote()); time.sleep(1); print('DONE')"
    seen: set = set()
    client_job = submit_and_wait(job_client, ["python", "-c", code], timeout_s=120)
    assert "DONE" in client_job
    seen.update(listening_sockets(head_processes(ray_head.temp_dir)))
    names = " ".join(name for _, name, _, _ in seen)
    assert "gcs_server" in names and "raylet" in names, sorted(seen)
    assert not [s for s in seen if s[2] not in LOOPBACK], sorted(seen)
