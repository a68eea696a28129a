"""`scm-ray bench adb`: the ADB stack alone, the fast implementation against the dense one.

Why beside `bench step`: the stack is a small part of a DeiT-S step on a CPU, so its changes
drown in the backbone's time there; on its own, forward + backward, its time, the bytes it saves
for backward and the operators it dispatches (a proxy for GPU kernel launches) show what a change
does. Inputs are random (S from a normal, F from a softmax, as the model feeds them); both
implementations run on the same inputs, interleaved, one thread by default; minima are reported.
Only torch and scm_ray.model are imported.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scm_ray.model.scm import SpatialCalibration

MIB = 2**20
IMPLEMENTATIONS = ("fast", "dense")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=200, help="classes of the S map")
    parser.add_argument("--grid", type=int, default=14, help="H = W of the token grid")
    parser.add_argument("--iterations", type=int, nargs="+", default=[16, 4, 4, 4],
                        help="Newton-Schulz steps per ADB (the count sets the number of ADBs)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    semantic = torch.randn(args.batch, args.channels, args.grid, args.grid, generator=generator)  # (B, C, H, W)
    attention = torch.randn(args.batch, args.grid**2, generator=generator).softmax(dim=1)  # (B, N)
    stacks = {name: SpatialCalibration(len(args.iterations), iterations=args.iterations, implementation=name)
              for name in IMPLEMENTATIONS}
    print(f"ADB stack, forward + backward: batch {args.batch}, {args.channels} channels, "
          f"{args.grid} x {args.grid} grid, iterations {'/'.join(map(str, args.iterations))}, "
          f"{args.threads} thread(s), minimum of {args.repeats}", flush=True)
    times = {name: [] for name in IMPLEMENTATIONS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in IMPLEMENTATIONS[repeat % 2:] + IMPLEMENTATIONS[:repeat % 2]:
            start = time.perf_counter()
            step(stacks[name], semantic, attention)
            if repeat:
                times[name].append(time.perf_counter() - start)
    print(f"{'stack':<8}{'ms':>10}{'saved MiB':>12}{'ops':>8}")
    for name in IMPLEMENTATIONS:
        saved, ops = saved_bytes_and_ops(stacks[name], semantic, attention)
        print(f"{name:<8}{1000 * min(times[name]):>10.1f}{saved / MIB:>12.2f}{ops:>8}")
    ratio = min(times["dense"]) / min(times["fast"])
    print(f"adb: fast stack {ratio:.2f}x the dense one's speed ({1000 * min(times['fast']):.1f} ms vs "
          f"{1000 * min(times['dense']):.1f} ms)")
    return 0


def step(stack: SpatialCalibration, semantic: torch.Tensor, attention: torch.Tensor) -> None:
    """Forward + backward through the stack, gradients for S, F and the blocks' parameters."""
    s = semantic.clone().requires_grad_()
    f = attention.clone().requires_grad_()
    out_s, out_f = stack(s, f)
    (out_s.square().mean() + out_f.square().mean()).backward()
    stack.zero_grad(set_to_none=True)


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def saved_bytes_and_ops(stack: SpatialCalibration, semantic: torch.Tensor, attention: torch.Tensor) -> tuple[int, int]:
    """Bytes of the distinct tensors autograd saves for backward, and operators dispatched
    by one forward + backward."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    counter = _CountOps()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), counter:
        step(stack, semantic, attention)
    return sum(seen.values()), counter.count
