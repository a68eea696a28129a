"""Connecting to Ray: the embedded local default, RAY_ADDRESS, or an explicit address."""

from __future__ import annotations

import os

import ray


def connect(address: str = "", num_cpus: int | None = None) -> str:
    """Initialise Ray once; returns a short description of what we are connected to.

    "" means RAY_ADDRESS when set (e.g. inside `ray job submit`), else a fresh local Ray on this
    machine with the dashboard off. Anything else ("auto", "ray://host:10001", "127.0.0.1:6379")
    is passed to ray.init.
    """
    if ray.is_initialized():
        return "existing Ray session"
    target = address or os.environ.get("RAY_ADDRESS", "")
    if target:
        ray.init(address=target, log_to_driver=True)
        return f"Ray cluster at {target}"
    # The dashboard (on 127.0.0.1 only) serves Ray's state API, which Ray Train's clean-up of
    # finished worker groups relies on; without it that actor warns every few seconds.
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=True, configure_logging=False)
    return f"local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


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
