"""Connecting to Ray: the embedded local default, RAY_ADDRESS, or an explicit address."""

from __future__ import annotations

import logging
import os
import socket
import sys

import ray


def connect(address: str = "", num_cpus: int | None = None) -> str:
    """Initialise Ray once; returns a short description of what we are connected to.

    "" means RAY_ADDRESS when set (e.g. inside `ray job submit`), else a fresh local Ray on this
    machine with the dashboard off. Anything else ("auto", "ray://host:10001", "127.0.0.1:6379")
    is passed to ray.init.
    """
    if ray.is_initialized():
        return "existing Ray session"
    quiet_console()
    target = address or os.environ.get("RAY_ADDRESS", "")
    if target:
        ray.init(address=target, log_to_driver=True)
        return f"Ray cluster at {target}"
    local_defaults()
    _loopback_only()
    # The dashboard (on 127.0.0.1 only) serves Ray's state API, which Ray Train's clean-up of
    # finished worker groups relies on; without it that actor warns every few seconds.
    port = state_api_port()
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 _node_ip_address=LOOPBACK, log_to_driver=True, configure_logging=False)
    finally:
        if port is not None:  # Ray's processes have it; commands this process starts get their own
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    _start_watchdog()
    auth = ", token auth" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
    return f"local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs{auth})"


def quiet_console() -> None:
    """Plain worker-line prefixes when the output is not a terminal (a log file, a pipe): Ray
    wraps "(pid=...)" in colour codes unless RAY_COLOR_PREFIX=0. An explicit setting wins."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def local_defaults() -> None:
    """Settings for the embedded local Ray, made before it starts so its processes inherit
    them. Ray Train's preemption watcher (it watches for nodes being drained, e.g. spot
    preemption) has nothing to watch on one machine, and its actor logs an error-level line from
    Ray's core on every run (constructor arguments in the object store): off, unless
    RAY_TRAIN_ENABLE_PREEMPTION_WATCHER says otherwise. Ray's notice that a new local cluster
    uses token authentication (its default) is dropped: the connect line says it instead."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenNotice) for f in logger.filters):
        logger.addFilter(_TokenNotice())


class _TokenNotice(logging.Filter):
    """Drops exactly Ray's "Token authentication is enabled for this Ray cluster" notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def state_api_port() -> int | None:
    """A port for the local Ray's dashboard, announced to every process of that Ray (they start
    after this and inherit the variable) as RAY_API_SERVER_ADDRESS. Why: Ray Train's placement
    group cleaner asks the state API for its controller without an address, and when several
    Ray instances run on one host (other users, other jobs) Ray cannot tell which is meant and
    the cleaner's thread dies with a traceback. None (Ray's own choice) when the variable is set.
    `connect` removes it again once Ray's processes have started."""
    if os.environ.get("RAY_API_SERVER_ADDRESS"):
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    return port


LOOPBACK = "127.0.0.1"


def _start_watchdog() -> None:
    """scm_ray.ray_watchdog ends this Ray's processes if this driver dies without shutting
    it down (see there why)."""
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-m", "scm_ray.ray_watchdog", str(os.getpid())],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


def _loopback_only() -> None:
    """Make the embedded Ray a loopback-only node: GCS, raylet, workers, the dashboard agent
    (gRPC, HTTP and the Prometheus /metrics endpoint) and the runtime-env agent then bind
    127.0.0.1 instead of every interface or the host's address.

    Why this way: each of those binds to loopback exactly when the node's IP is a loopback
    address, but ray.init turns `_node_ip_address="127.0.0.1"` into the host's address unless
    Ray's "clusters enabled" switch is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when Ray is
    imported, so the already-imported constant is set too; Ray's own processes inherit the
    variable). The switch only concerns nodes joining this one, which an embedded Ray never has.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def is_loopback_only() -> bool:
    """Whether every node of the connected cluster has a loopback address (the embedded Ray,
    or cluster/start_local_head.sh without --expose): its DDP ranks then meet without a
    network listener (scm_ray/train/loopback.py)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(n.get("NodeManagerAddress", "").startswith("127.") for n in nodes)


def is_local_embedded(address: str = "") -> bool:
    return not (address or os.environ.get("RAY_ADDRESS", ""))


def check_resources(num_workers: int, cpus_per_worker: float, gpus_per_worker: float,
                    use_gpu: bool) -> list[str]:
    """Why the requested worker group cannot fit the connected cluster now (empty = fits).

    On the embedded local Ray these are errors (it cannot grow); on a real cluster an autoscaler
    may add nodes, so callers only warn.
    """
    problems = []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    max_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    total = ray.cluster_resources()
    if cpus_per_worker > max_cpu:
        problems.append(f"ray.cpus_per_worker={cpus_per_worker} but the largest node has {max_cpu} CPUs")
    if use_gpu and gpus_per_worker > max_gpu:
        problems.append(f"ray.use_gpu with gpus_per_worker={gpus_per_worker} but the largest node has {max_gpu} GPUs")
    need_cpu = num_workers * cpus_per_worker
    if need_cpu > total.get("CPU", 0):
        problems.append(f"ray.num_workers={num_workers} x ray.cpus_per_worker={cpus_per_worker} = "
                        f"{need_cpu} CPUs but the cluster has {total.get('CPU', 0):g}")
    if use_gpu and num_workers * gpus_per_worker > total.get("GPU", 0):
        problems.append(f"ray.num_workers={num_workers} GPU workers need {num_workers * gpus_per_worker:g} "
                        f"GPUs but the cluster has {total.get('GPU', 0):g}")
    return problems
