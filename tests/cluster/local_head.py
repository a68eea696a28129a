"""A throw-away local Ray head for tests: started with cluster/start_local_head.sh on free ports and
its own temp dir, and stopped by killing exactly the processes of that temp dir. Plus submitting a
job to it the way `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml` does.

Why not `ray stop`: it stops every Ray process of the user on the machine, and other test runs
(or people) on this machine may have their own Ray running.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "start_local_head.sh"
RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"


@dataclass
class LocalHead:
    temp_dir: Path
    port: int
    dashboard_port: int
    start_output: str

    @property
    def address(self) -> str:
        """What `ray job submit --address` and JobSubmissionClient take."""
        return f"http://127.0.0.1:{self.dashboard_port}"


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_head(temp_dir: Path, num_cpus: int = 2, timeout_s: float = 120) -> LocalHead:
    """Start a head through the shipped script, with every fixed-default port replaced by a free
    one so it can run beside another Ray on the same machine."""
    port, dashboard, client, agent, metrics, runtime_env = free_ports(6)
    cmd = [
        str(SCRIPT), "--port", str(port), "--dashboard-port", str(dashboard),
        "--num-cpus", str(num_cpus), "--temp-dir", str(temp_dir), "--",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    output = result.stdout + result.stderr
    head = LocalHead(temp_dir, port, dashboard, output)
    if result.returncode != 0:
        stop_head(head)
        raise RuntimeError(f"start_local_head.sh failed ({result.returncode}):\n{output}")
    return head


def head_processes(temp_dir: Path) -> list[psutil.Process]:
    """Every process of this head: those naming its temp dir on their command line (GCS, raylet,
    dashboard, monitors) and all their descendants (workers, job drivers)."""
    marker = str(temp_dir)
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # never this test process or its callers
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid in spared:
                continue
            if any(marker in arg for arg in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for proc in [root, *root.children(recursive=True)]:
                if proc.pid not in spared:
                    found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening_sockets(processes: list[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """(pid, process name and command line, address, port) of every listening TCP socket and
    bound UDP socket of `processes`."""
    found = []
    for process in processes:
        try:
            name = f"{process.name()} {' '.join(process.cmdline())}"
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and conn.laddr):
                    found.append((process.pid, name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


def _send(procs: list[psutil.Process], action: str) -> None:
    for proc in procs:
        try:
            getattr(proc, action)()
        except psutil.NoSuchProcess:
            pass


def stop_head(head: LocalHead, grace_s: float = 3) -> None:
    """Terminate this head's processes, then kill what is left after `grace_s` (the GCS and raylet
    take longer than that to exit on SIGTERM, and nothing of a test cluster needs saving)."""
    procs = head_processes(head.temp_dir)
    _send(procs, "terminate")
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    deadline = time.monotonic() + 3 * grace_s
    while alive and time.monotonic() < deadline:  # kill; again for workers forked meanwhile
        _send(alive, "kill")
        psutil.wait_procs(alive, timeout=1)
        alive = head_processes(head.temp_dir)


def submit_and_wait(client, entrypoint: list[str], timeout_s: float) -> str:
    """Submit with the repository as working dir and cluster/runtime_env.yaml; return the logs of
    a SUCCEEDED job, or fail the test with the final status and the job's logs."""
    from ray.job_submission import JobStatus

    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    runtime_env["working_dir"] = str(REPO)
    job_id = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env)
    deadline = time.monotonic() + timeout_s
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(2)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    command = " ".join(entrypoint)
    if not status.is_terminal():
        client.stop_job(job_id)
        pytest.fail(f"job {job_id} ({command}) still {status} after {timeout_s}s; logs:\n{logs}")
    if status != JobStatus.SUCCEEDED:
        message = client.get_job_info(job_id).message
        pytest.fail(f"job {job_id} ({command}) ended {status}: {message}; logs:\n{logs}")
    return logs
