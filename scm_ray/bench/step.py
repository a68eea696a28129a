"""`scm-ray bench step`: training-step speed and peak memory, plain backbone vs SCM model.

One run, one device, synthetic inputs. Each variant (plain = backbone + conv head with no SCM;
the SCM model with the fast ADB stack; optionally the dense ADB stack) does full training steps
(forward, cross-entropy, backward, AdamW step). Repeats are interleaved across variants, in a
rotating order, so that drift on a shared machine hits every variant alike; warm-up steps (and
compilation) are excluded and medians are reported. The last line is the goal check of issue 9:
`step ratio scm/plain <throughput>, <peak memory> on <device>`, the worst over the modes run.

Peak memory is "bytes of live torch tensors" at the step's high-water mark, the same quantity on
both devices: the variant's own tensors alive between steps (parameters, optimizer state,
the input batch) plus the highest growth above the pre-step level during one step. The growth
comes from the CUDA allocator's max_memory_allocated on GPU and, on CPU, from replaying the
allocation/free events of the torch profiler (profile_memory=True) for one untimed step. Neither
counts allocator caching, oneDNN scratch space or Python objects.

Only torch, timm and scm_ray.model are imported: this runs on a GPU box without Ray or FFCV.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scm_ray.config import ModelConfig, SCMConfig
from scm_ray.model import WSOLModel, build_model, param_groups

MIB = 2**20


@dataclass
class Variant:
    """One model under test with its optimizer and a step closure."""

    name: str
    model: WSOLModel
    optimizer: torch.optim.Optimizer
    step: Callable[[], None]


@dataclass
class Result:
    """Timings (seconds per step, one entry per repeat) and peak memory of one variant."""

    name: str
    mode: str
    seconds: list[float]
    peak_bytes: int
    batch: int

    @property
    def ms(self) -> float:
        return 1000.0 * statistics.median(self.seconds)

    @property
    def ms_min(self) -> float:
        return 1000.0 * min(self.seconds)

    @property
    def img_per_s(self) -> float:
        return self.batch / statistics.median(self.seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default 128 on cuda, 8 on cpu)")
    parser.add_argument("--model", default="deit_small_patch16_224", help="timm ViT/DeiT name")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--embed-dim", type=int, default=None, help="width override (tiny runs)")
    parser.add_argument("--depth", type=int, default=None, help="depth override (tiny runs)")
    parser.add_argument("--num-heads", type=int, default=None, help="heads override (tiny runs)")
    parser.add_argument("--num-classes", type=int, default=200)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16 = autocast for the backbone; the ADB stack stays float32")
    parser.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the eager models")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="measure torch.compile'd models (default: on cuda; off on cpu, where "
                             "compiling takes minutes)")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend for the compiled mode (aot_eager: trace only)")
    parser.add_argument("--dense", action="store_true",
                        help="also measure the SCM with the dense (reference) ADB stack")
    parser.add_argument("--iterations", type=int, nargs="+", default=[16, 4, 4, 4],
                        help="Newton-Schulz steps per ADB; the count sets the number of ADBs")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats, median reported (default 5 on cuda, 3 on cpu)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed repeat (default 10 on cuda, 1 on cpu)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per variant and mode (default 2 on cuda, 1 on cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process = this process's CPU time (cpu only; with --threads 1 it "
                             "ignores time lost to other processes on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("scm-ray bench step: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process" and device.type != "cpu":
        print("scm-ray bench step: --clock process is for --device cpu", file=sys.stderr)
        return 2
    batch = args.batch or (128 if device.type == "cuda" else 8)
    steps = args.steps or (10 if device.type == "cuda" else 1)
    gpu = device.type == "cuda"
    args.repeats = args.repeats or (5 if gpu else 3)  # the CPU defaults finish within a minute
    args.warmup = args.warmup if args.warmup is not None else (2 if gpu else 1)
    compiled = args.compile if args.compile is not None else device.type == "cuda"
    modes = [m for m, on in (("eager", args.eager), ("compiled", compiled)) if on]
    if not modes:
        print("scm-ray bench step: --no-eager and --no-compile leave nothing to measure", file=sys.stderr)
        return 2
    where = describe_device(device)
    print(f"device: {where}; torch {torch.__version__}, timm {_timm_version()}, "
          f"python {platform.python_version()}")
    print(f"model: {args.model} {args.img_size}px/{args.patch_size}, classes {args.num_classes}, "
          f"batch {batch}, {args.precision}; SCM {len(args.iterations)} ADBs, "
          f"iterations {'/'.join(map(str, args.iterations))}")
    print(f"timing: {args.clock} clock, median of {args.repeats} repeats x {steps} steps, interleaved; "
          f"{args.warmup} warm-up steps excluded. peak = live torch tensor bytes "
          f"({'max_memory_allocated' if device.type == 'cuda' else 'profiler alloc/free replay'})")
    images, labels = synthetic_batch(batch, args.img_size, args.num_classes, device, args.seed)
    worst = (float("inf"), 0.0)
    for mode in modes:
        backend = args.backend if mode == "compiled" else None
        print(f"{mode}: building plain and scm" + (f" (compiling with {backend}: the first steps are slow)"
                                                   if backend else ""), flush=True)
        variants = build_variants(args, device, images, labels, backend)
        results = measure(variants, mode, args.repeats, steps, args.warmup, device, images, args.clock,
                          say=lambda line: print(f"{mode}: {line}", flush=True))
        print_results(results)
        plain, scm = results[0], results[1]
        thr, mem = plain.ms / scm.ms, scm.peak_bytes / plain.peak_bytes
        print(f"{mode}: scm/plain throughput {thr:.2f}, peak memory {mem:.2f}")
        worst = (min(worst[0], thr), max(worst[1], mem))
        del variants
    if len(modes) > 1:
        print(f"worst over modes {', '.join(modes)}:")
    print(f"step ratio scm/plain {worst[0]:.2f} (throughput), {worst[1]:.2f} (peak memory) on {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python jobs/benchmark_step.py ...` (no scm-ray dispatcher needed)."""
    parser = argparse.ArgumentParser(prog="benchmark_step", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def synthetic_batch(
    batch: int, img_size: int, num_classes: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 3, S, S) and labels (B,), fixed by the seed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, img_size, img_size, generator=g)  # (B, 3, S, S)
    labels = torch.randint(0, num_classes, (batch,), generator=g)  # (B,)
    return images.to(device), labels.to(device)


def build_variants(
    args: argparse.Namespace,
    device: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
    backend: str | None,
) -> list[Variant]:
    """plain, scm (and scm-dense): same seed, so the backbones start from the same weights;
    compiled with `backend` unless it is None."""
    model_cfg = ModelConfig(
        name=args.model, num_classes=args.num_classes, img_size=args.img_size,
        patch_size=args.patch_size, embed_dim=args.embed_dim, depth=args.depth,
        num_heads=args.num_heads,
    )
    specs: list[tuple[str, SCMConfig | None]] = [("plain", None)]
    its = list(args.iterations)
    specs.append(("scm", SCMConfig(num_blocks=len(its), iterations=its, implementation="fast")))
    if args.dense:
        specs.append(
            ("scm-dense", SCMConfig(num_blocks=len(its), iterations=its, implementation="dense"))
        )
    autocast = torch.bfloat16 if args.precision == "bf16" else None
    variants = []
    for name, scm_cfg in specs:
        torch.manual_seed(args.seed)
        model = build_model(model_cfg, scm_cfg).to(device).train()
        optimizer = make_optimizer(model, device)
        forward = torch.compile(model, backend=backend) if backend else model
        step = make_step(forward, optimizer, images, labels, device, autocast)
        variants.append(Variant(name, model, optimizer, step))
    return variants


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the reference parameter groups; the fused kernel keeps the optimizer's own
    temporaries out of the peak-memory comparison as far as the device allows."""
    groups = param_groups(model, weight_decay=0.05)
    try:
        return torch.optim.AdamW(groups, lr=1e-4, fused=True)
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return torch.optim.AdamW(groups, lr=1e-4)


def make_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    autocast: torch.dtype | None,
) -> Callable[[], None]:
    """A full training step on the fixed synthetic batch; gradients are dropped after the
    optimizer step so nothing but weights and optimizer state survives between steps."""

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = forward(images)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(
    variants: list[Variant],
    mode: str,
    repeats: int,
    steps: int,
    warmup: int,
    device: torch.device,
    images: torch.Tensor,
    clock: str = "wall",
    say: Callable[[str], None] = lambda line: None,
) -> list[Result]:
    """Warm up every variant, time interleaved repeats, then measure each one's peak memory;
    `say` hears one line per stage (a CPU run takes a while and should not look stuck)."""
    for v in variants:
        say(f"warm-up {v.name} ({warmup} steps)")
        for _ in range(warmup):
            v.step()
    synchronize(device)
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(repeats):
        say(f"timed repeat {r + 1}/{repeats}")
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:  # rotate the order every repeat
            seconds[v.name].append(time_steps(v.step, steps, device, clock))
    results = []
    say("peak memory")
    for v in variants:
        peak = resident_bytes(v, images) + step_growth_bytes(v.step, device)
        results.append(Result(v.name, mode, seconds[v.name], peak, images.shape[0]))
    return results


def time_steps(step: Callable[[], None], steps: int, device: torch.device, clock: str = "wall") -> float:
    """Seconds per step, averaged over `steps` back-to-back steps."""
    now = time.process_time if clock == "process" else time.perf_counter
    synchronize(device)
    start = now()
    for _ in range(steps):
        step()
    synchronize(device)
    return (now() - start) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_bytes(variant: Variant, images: torch.Tensor) -> int:
    """Bytes of the variant's tensors alive between steps: weights, buffers, optimizer state,
    and the input batch (counted once per variant so the comparison is like for like)."""
    seen: set[int] = set()
    total = 0
    tensors = list(variant.model.parameters()) + list(variant.model.buffers()) + [images]
    for state in variant.optimizer.state.values():
        tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def step_growth_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Highest live-tensor growth above the pre-step level during one (untimed) step."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    return cpu_step_growth_bytes(step)


def cpu_step_growth_bytes(step: Callable[[], None]) -> int:
    """Replay the CPU allocator's alloc/free events recorded by the profiler, in time order."""
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name == "CPU"
    ]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence file descriptor 2 while the profiler runs: its C++ side (Kineto) writes
    "USDT: profiler_start/stop" and, on a machine without a GPU, an error-level
    "gpuGetDeviceCount failed" line there, bypassing Python. Exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def print_results(results: list[Result]) -> None:
    print(f"{'mode':9s}{'model':11s}{'ms/step':>10s}{'(min)':>10s}{'img/s':>10s}{'peak MiB':>11s}")
    for r in results:
        print(f"{r.mode:9s}{r.name:11s}{r.ms:10.1f}{r.ms_min:10.1f}{r.img_per_s:10.1f}"
              f"{r.peak_bytes / MIB:11.1f}")


def describe_device(device: torch.device) -> str:
    """Card name on GPU; CPU model and thread count on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({name}, {torch.get_num_threads()} threads)"


def _timm_version() -> str:
    import timm

    return timm.__version__
