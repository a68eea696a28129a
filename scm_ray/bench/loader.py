"""Loader benchmark: images/s through the FFCV training loader vs a torchvision ImageFolder +
DataLoader with the same augmentation (resize short side -> random crop -> flip -> normalise),
the same worker count and batch size, on the same synthetic JPEGs, in one run.

The first epoch of each is reported apart (FFCV compiles its pipeline with numba then; the
DataLoader starts its worker processes); the rate compared is the mean over the later epochs.
Epochs of the two loaders alternate, so load from other processes on a shared machine affects
both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch


@dataclass
class LoaderTiming:
    name: str
    first_epoch_s: float
    images_per_s: float  # mean over epochs after the first
    epochs: int
    images_per_epoch: int


def _epoch(loader: Iterable) -> tuple[float, int]:
    """Seconds and images of one epoch. Each batch's images are touched (a reduction) so
    lazily produced data is really produced."""
    start, count = time.perf_counter(), 0
    for images, labels in loader:
        images.sum()
        count += labels.shape[0]
    return time.perf_counter() - start, count


def _interleaved(loaders: dict[str, Iterable], epochs: int) -> dict[str, tuple[float, list[float], int]]:
    """name -> (first epoch s, later epochs' s, images per epoch), running the loaders' epochs
    alternately so a busy (shared) machine slows both alike."""
    times: dict[str, list[float]] = {name: [] for name in loaders}
    counts: dict[str, int] = {}
    for _ in range(epochs):
        for name, loader in loaders.items():
            seconds, counts[name] = _epoch(loader)
            times[name].append(seconds)
    return {name: (t[0], t[1:], counts[name]) for name, t in times.items()}


def torchvision_loader(image_folder: Path, batch_size: int, num_workers: int, resize_size: int,
                       crop_size: int, seed: int) -> torch.utils.data.DataLoader:
    """The reference pipeline: PIL decode, Resize(short side), RandomCrop, flip, ToTensor,
    Normalize; shuffled; persistent workers so later epochs don't pay process start-up."""
    from torchvision import datasets, transforms

    from scm_ray.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

    transform = transforms.Compose([
        transforms.Resize(resize_size),
        transforms.RandomCrop(crop_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    dataset = datasets.ImageFolder(str(image_folder), transform=transform)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
        persistent_workers=num_workers > 0, generator=generator,
    )


def run_benchmark(
    data_dir: str | Path,
    *,
    num_images: int = 2048,
    image_size: int = 256,
    batch_size: int = 64,
    num_workers: int = 2,
    resize_size: int = 256,
    crop_size: int = 224,
    epochs: int = 3,
    seed: int = 0,
    max_side: int = 512,
    short_side: int | None = None,
    write_mode: str = "jpg",
    progress: bool = True,
) -> dict:
    """Prepare (or reuse) a synthetic set in `data_dir` and time both loaders; returns the
    figures (and prints them).

    The torchvision loader reads the original JPEGs (image_size px); the FFCV loader reads the
    .beton, whose training images are stored with their longest side capped at `max_side` and
    their shortest at `short_side` (default: resize_size, i.e. stored at the resolution training
    resizes to -- FFCV's write-time preprocessing; pass a large value to store the originals) as
    JPEG or, with write_mode="raw", uncompressed.
    """
    from scm_ray.data.loaders import train_loader
    from scm_ray.data.prepare import prepare_synthetic

    if epochs < 2:
        raise ValueError("epochs must be >= 2 (the first epoch is reported apart)")
    data_dir = Path(data_dir)
    short_side = short_side or resize_size
    prepared = prepare_synthetic(data_dir, num_train=num_images, num_val=0, num_test=0, image_size=image_size,
                                 max_side=max_side, short_side=short_side, write_mode=write_mode,
                                 num_workers=num_workers,
                                 progress=progress)
    # torchvision first: its worker processes are forked before FFCV starts numba's threads.
    loaders = {
        "torchvision": torchvision_loader(data_dir / "images" / "train", batch_size, num_workers, resize_size,
                                          crop_size, seed),
        "ffcv": train_loader(data_dir / "train.beton", batch_size, num_workers, resize_size, crop_size, seed,
                             square=False),  # like torchvision's Resize(resize_size)
    }
    timings = {
        name: LoaderTiming(name, first, n * len(later) / sum(later), epochs, n)
        for name, (first, later, n) in _interleaved(loaders, epochs).items()
    }
    ffcv_timing, tv_timing = timings["ffcv"], timings["torchvision"]
    result = {
        "machine": f"{platform.machine()}, {_cpu_count()} cores, {platform.processor() or platform.system()}",
        "dataset": str(data_dir),
        "images": num_images, "image_size": image_size, "resize_size": resize_size, "crop_size": crop_size,
        "batch_size": batch_size, "num_workers": num_workers, "epochs": epochs,
        "beton_max_side": max_side, "beton_short_side": short_side, "beton_write_mode": write_mode,
        "beton_stored_max_size": prepared.info["splits"]["train"]["stored_max_size"],
        "beton_bytes": prepared.info["splits"]["train"]["bytes"],
        "ffcv": asdict(ffcv_timing), "torchvision": asdict(tv_timing),
        "ratio": ffcv_timing.images_per_s / tv_timing.images_per_s,
    }
    print(format_result(result))
    return result


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_result(r: dict) -> str:
    f, t = r["ffcv"], r["torchvision"]
    return "\n".join([
        f"loader benchmark on {r['machine']}",
        f"  {r['images']} synthetic JPEGs of {r['image_size']} px, resize {r['resize_size']} -> crop "
        f"{r['crop_size']} -> flip -> normalise; batch {r['batch_size']}, {r['num_workers']} workers, "
        f"{r['epochs']} epochs; .beton: {r['beton_write_mode']}, stored at "
        f"{'x'.join(map(str, r['beton_stored_max_size']))} (short side <= {r['beton_short_side']}, "
        f"long side <= {r['beton_max_side']})",
        f"  ffcv         {f['images_per_s']:9.0f} img/s  (first epoch {f['first_epoch_s']:.1f} s, incl. numba compile)",
        f"  torchvision  {t['images_per_s']:9.0f} img/s  (first epoch {t['first_epoch_s']:.1f} s, incl. worker start)",
        f"  ratio ffcv / torchvision: {r['ratio']:.2f}x (goal >= 3x)",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/bench_loader", help="synthetic dataset folder (created if needed)")
    parser.add_argument("--num-images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--resize-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-side", type=int, default=512, help=".beton training images: longest side cap")
    parser.add_argument("--short-side", type=int, default=None,
                        help=".beton training images: shortest side cap (default: --resize-size)")
    parser.add_argument("--write-mode", choices=("jpg", "raw"), default="jpg", help=".beton image storage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(
        args.data, num_images=args.num_images, image_size=args.image_size, batch_size=args.batch_size,
        num_workers=args.num_workers, resize_size=args.resize_size, crop_size=args.crop_size,
        epochs=args.epochs, seed=args.seed, max_side=args.max_side, short_side=args.short_side,
        write_mode=args.write_mode,
        progress=not args.no_progress,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_loader", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
