"""The embedded local Ray listens on loopback only, and a SIGKILLed driver leaves nothing
behind: every socket the Ray processes (GCS, raylet, agents, dashboard, the DDP workers) listen
on during a real 2-worker training run is on 127.0.0.1, and 10 s after the driver is killed
none of its processes is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

from tests.cluster.local_head import LOOPBACK, listening_sockets  # noqa: E402
from tests.subprocess_env import own_ray_env  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def test_embedded_ray_listens_on_loopback_and_dies_with_its_driver(synthetic_dataset, tmp_path):
    env = own_ray_env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    log = tmp_path / "train.log"
    run = tmp_path / "runs" / "loopback"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "scm_ray.cli", "train", "--config", "jobs/configs/train_synthetic.yaml",
             "--set", f"data.root={synthetic_dataset}", "--set", f"ray.storage_path={tmp_path / 'runs'}",
             "--set", "ray.name=loopback", "--set", "ray.num_workers=2", "--set", "train.epochs=50",
             "--set", "model.depth=1", "--set", "scm.num_blocks=1", "--set", "scm.iterations=[2]"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    seen: dict[int, psutil.Process] = {}
    sockets: set[tuple] = set()
    try:
        deadline = time.monotonic() + 300
        # until an epoch is done: both DDP ranks trained and validated (gradients and metric
        # counts all-reduced over the loopback-only process group)
        while not (run / "metrics.parquet").is_file():
            assert driver.poll() is None, f"training ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no epoch finished in time:\n{log.read_text()[-3000:]}"
            family = psutil.Process(driver.pid).children(recursive=True)
            seen.update((p.pid, p) for p in family)
            sockets.update(listening_sockets([psutil.Process(driver.pid), *family]))
            time.sleep(0.5)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        driver.wait(timeout=30)
    exposed = sorted(s for s in sockets if s[2] not in LOOPBACK)
    assert not exposed, exposed
    names = " ".join(name for _, name, _, _ in sockets)
    for part in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "dashboard.py"):
        assert part in names, f"no socket of {part} seen: the check would miss it\n{sorted(sockets)}"
    assert sum("RayTrainWorker" in name for _, name, _, _ in sockets) >= 2, sorted(sockets)
    time.sleep(10)
    left = [(p.pid, p.cmdline()) for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
