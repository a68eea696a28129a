"""DDP set-up that opens no socket beyond loopback, for the embedded local Ray.

Why: Ray Train's TorchConfig rendezvous (`env://` or `tcp://`) makes rank 0 host torch's
TCPStore, which listens on every interface (torch offers no bind address), for the whole run.
On one machine the ranks can meet through a file instead (`file://`, torch's FileStore), and
gloo's and NCCL's own sockets are pinned to the loopback interface. Multi-node clusters keep
Ray Train's default: their ranks must reach each other over the network.

This subclasses Ray Train's torch backend (`ray.train.torch.config._TorchBackend`) and reuses
its process-group helper, so a Ray upgrade that renames them fails here, loudly, at start-up.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend


def _loopback_interface() -> str | None:
    """The name of the interface holding 127.0.0.1 ("lo" on Linux, "lo0" on macOS)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == "127.0.0.1" for a in addresses):
            return name
    return None


def _init_on_loopback(store: str, **kwargs) -> None:
    """On a worker: pin gloo/NCCL to loopback, then Ray Train's own process-group set-up."""
    interface = _loopback_interface()
    if interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    _setup_torch_process_group(init_method=store, **kwargs)


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: "LoopbackTorchConfig") -> None:
        # A fresh rendezvous file per worker-group start (a restart must not meet the old one).
        store = f"file://{tempfile.gettempdir()}/scm-ray-ddp-{uuid.uuid4().hex}"
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([
            worker_group.execute_single_async(
                rank, _init_on_loopback, store=store, backend=backend_config.backend, world_rank=rank,
                world_size=len(worker_group), timeout_s=backend_config.timeout_s)
            for rank in range(len(worker_group))
        ])


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """TorchConfig whose ranks meet through a file and talk over loopback (one machine)."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
