"""Box-extraction benchmark: maps/s of the per-threshold reference vs the fast extractor.

Both run on the same realistic maps, one CPU core, at each threshold count (README, "Box extraction speed":
the goal is >= 10x the reference with identical boxes; identity is checked here too).
A realistic map is what the model's inference path produces: a 14 x 14 patch-grid map (a few
Gaussian blobs over a weak random background), bilinearly upsampled with cv2.resize and
min-max normalised to [0, 1].
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from scm_ray.metrics.boxes import boxes_from_scoremap, thresholds_for
from scm_ray.metrics.reference import reference_boxes


def realistic_maps(n: int, size: int = 224, grid: int = 14, seed: int = 0) -> list[np.ndarray]:
    """n float64 (size, size) maps in [0, 1]: 1-3 blobs on a 14 x 14 grid, upsampled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:grid, 0:grid]  # (grid, grid)
    maps = []
    for _ in range(n):
        small = rng.uniform(0, 0.15, (grid, grid))  # weak background activation
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, grid, 2)
            sigma = rng.uniform(0.8, 3.5)
            small += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        big = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)  # (size, size)
        big = (big - big.min()) / (big.max() - big.min())
        maps.append(big)
    return maps


@dataclass
class BoxTiming:
    thresholds: int
    multi_contour: bool
    reference_maps_per_s: float
    fast_maps_per_s: float
    ratio: float
    identical: bool


def _rate(extract: Callable, maps: list[np.ndarray], thresholds: np.ndarray, multi: bool, min_seconds: float):
    """Maps per second (CPU time of this process, so other load on the machine counts less),
    repeating the map list until min_seconds have passed; also returns the last outputs."""
    outputs, done, start = [], 0, time.process_time()
    while True:
        outputs = [extract(m, thresholds, multi) for m in maps]
        done += len(maps)
        spent = time.process_time() - start
        if spent >= min_seconds:
            return done / spent, outputs


def _same(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return all(len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y)) for x, y in zip(a, b))


def run_benchmark(
    n_maps: int = 40,
    size: int = 224,
    threshold_counts: tuple[int, ...] = (100, 1000),
    modes: tuple[bool, ...] = (False, True),
    min_seconds: float = 1.0,
    seed: int = 0,
) -> list[BoxTiming]:
    """One row per (threshold count, mode). The reference gets fewer maps at 1,000 thresholds
    (it is slow); the fast extractor is warmed up (numba compiles on first use) before timing."""
    maps = realistic_maps(n_maps, size, seed=seed)
    for multi in modes:  # compile / load numba's cache outside the timing
        boxes_from_scoremap(maps[0], thresholds_for(0.01), multi)
    rows = []
    for count in threshold_counts:
        thresholds = thresholds_for(1.0 / count)
        ref_maps = maps[: max(1, n_maps * 100 // max(count, 100))]
        for multi in modes:
            ref_rate, ref_out = _rate(reference_boxes, ref_maps, thresholds, multi, min_seconds)
            fast_rate, fast_out = _rate(boxes_from_scoremap, maps, thresholds, multi, min_seconds)
            identical = _same(ref_out, fast_out[: len(ref_maps)])
            rows.append(BoxTiming(len(thresholds), multi, ref_rate, fast_rate, fast_rate / ref_rate, identical))
    return rows


def format_rows(rows: list[BoxTiming], size: int) -> str:
    lines = [
        f"box extraction, {size}x{size} maps, one core ({platform.machine()}, {platform.processor() or 'cpu'})",
        f"{'thresholds':>10} {'mode':>8} {'reference maps/s':>17} {'fast maps/s':>12} {'ratio':>7} identical",
    ]
    for r in rows:
        mode = "all" if r.multi_contour else "largest"
        lines.append(
            f"{r.thresholds:>10} {mode:>8} {r.reference_maps_per_s:>17.1f} {r.fast_maps_per_s:>12.1f}"
            f" {r.ratio:>6.1f}x {r.identical}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maps", type=int, default=40, help="distinct maps timed (default 40)")
    parser.add_argument("--size", type=int, default=224, help="map side in pixels (default 224)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[100, 1000], help="threshold counts")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum CPU seconds per timing")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = run_benchmark(args.maps, args.size, tuple(args.thresholds), min_seconds=args.seconds)
    print(json.dumps([asdict(r) for r in rows]) if args.json else format_rows(rows, args.size))
    return 0 if all(r.identical for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
