"""One real local Ray head for the job-submission tests of this folder, stopped (its processes
only) at the end of the session even when a test fails."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from .local_head import LocalHead, start_head, stop_head


@pytest.fixture(scope="session")
def ray_head():
    # Short and under /tmp: Ray's socket paths live below the temp dir and must stay < 108 chars.
    temp_dir = Path(tempfile.mkdtemp(prefix="scmray-", dir="/tmp"))
    try:
        node = start_head(temp_dir, num_cpus=2)
        try:
            yield node
        finally:
            stop_head(node)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def job_client(ray_head: LocalHead):
    from ray.job_submission import JobSubmissionClient

    # The head runs with Ray's token authentication (start_local_head.sh). Send the token
    # explicitly: this test process may have cached Ray's auth mode before the head existed.
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    return JobSubmissionClient(ray_head.address, headers={"Authorization": f"Bearer {token}"})
