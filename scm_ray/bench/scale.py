"""Scale benchmark: how each job's cost and memory grow with its work, on ImageNet-shaped data.

For each N of a geometric series it generates an ILSVRC-layout tree of N images (data/
imagenet_like.py; 80 % train, 20 % val; generation is not part of any figure), reads its files
once (see read_once: prepare and the bare loop then both read from the page cache) and times,
each as its own process whose whole process tree is watched for memory:

  prepare   `scm-ray prepare imagenet` (parse, check, decode/resize/encode, .beton write)
  bare      a plain loop over the same JPEGs, decode -> resize to the same stored sizes (the
            same OpenCV area resize) -> JPEG encode at the same quality, on the same number of
            processes: the ceiling prepare is compared with
  loader    one epoch of the FFCV training loader over train.beton (resize 256, crop 224)
  evaluate  `scm-ray evaluate` of one checkpoint (a small ViT with ImageNet's 1,000 classes,
            saved in the project's checkpoint format) on the val split, one actor

Cost per image is the stage's own time per image, not the process's: `prepare` as the command
reports it ("prepared in"), `bare` and `loader` as the loop's time, `evaluate` as the actor's
steady rate (first batch left out: it pays FFCV's compilation). Interpreter start, imports, Ray
start and actor start are fixed costs; the wall column shows them. Peak memory is the largest
sum over the process tree (the command and every descendant: writer processes, Ray's processes
and actors) of each process's proportional set size (PSS: shared pages split among the processes
sharing them, so forked workers are not counted twice), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SIZES = (2000, 8000, 32000)
# evaluate's batch (the evaluate config's data.batch_size default) and FFCV's buffer slots per
# loader on a CPU (batches_ahead 1 + 2, data/loaders.py): a split shorter than that never fills them.
EVAL_BATCH, PREFETCH_SLOTS = 64, 3
RESIZE, CROP = 256, 224  # the training loader's settings (data.resize_size, data.crop_size)
# Stage name -> what its images are: prepare and bare count every image of the tree.
STAGES = ("prepare", "bare", "loader", "evaluate")


@dataclass
class StageResult:
    stage: str
    size: int  # N, images in the tree
    images: int  # images the stage processed
    wall_s: float  # the whole process, start to exit
    work_s: float  # the stage's own timed part (see the module docstring)
    steady_images_per_s: float
    peak_mib: float
    cores: int
    # prepare only: the parts one process does, which more cores do not shorten (README
    # "Capacity planning"): reading and checking the source, and packing while the files are written
    source_s: float | None = None
    packing_cpu_s: float | None = None

    @property
    def cost_per_image(self) -> float:
        return 1.0 / self.steady_images_per_s


# ----------------------------------------------------------------------------------------------
# Memory of a process tree
# ----------------------------------------------------------------------------------------------


def _pss_kib(pid: int) -> int:
    """PSS of one process in KiB (RSS where smaps_rollup cannot be read); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


class TreeMemory:
    """Samples the summed PSS of a process and all its descendants in a thread; `peak_mib`."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            pids = [self.root.pid] + [p.pid for p in self.root.children(recursive=True)]
        except psutil.Error:
            return
        self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_watched(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Run a command with its output in `log`; (wall s, peak tree MiB, its stdout). A failure
    raises with the log's last lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        memory = TreeMemory(proc.pid)
        rc = proc.wait()
    peak = memory.stop()
    wall = time.perf_counter() - start
    text = log.read_text()
    if rc != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {rc}); log {log}:\n{tail}")
    return wall, peak, text


# ----------------------------------------------------------------------------------------------
# Child stages (run as `python -m scm_ray.bench.scale CHILD ...`)
# ----------------------------------------------------------------------------------------------


def _bare_one(job: tuple) -> int:
    import cv2
    import numpy as np

    path, size, quality = job
    rgb = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if (rgb.shape[1], rgb.shape[0]) != size else rgb
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return len(data)


def _bare_init(*_: object) -> None:
    import cv2

    cv2.setNumThreads(1)


def bare_loop(prepared: Path, workers: int, quality: int = 90) -> dict:
    """Decode -> resize -> encode every image of a prepared dataset's records, at the size the
    .beton stores it, on `workers` processes; nothing is written."""
    import multiprocessing

    from scm_ray.data.ffcv_io import read_info, stored_size
    from scm_ray.data.records import RecordTable

    table, info = RecordTable.read(prepared), read_info(prepared)
    jobs = []
    for split in table.splits:
        entry = info["splits"][split]
        for r in table.rows(split):
            size = stored_size(entry["kind"], r.width, r.height, entry.get("max_side", 512),
                               entry.get("image_size", 224), entry.get("short_side"))
            jobs.append((str(table.image_path(r)), size, quality))
    # spawn (see data/imagenet_like.py); the workers start before the clock does.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_bare_init) as pool:
        pool.map(_bare_init, range(workers))
        start = time.perf_counter()
        encoded = sum(pool.imap_unordered(_bare_one, jobs, chunksize=16))
        seconds = time.perf_counter() - start
    return {"images": len(jobs), "seconds": seconds, "bytes": encoded}


def loader_epoch(beton: Path, workers: int, batch_size: int = 64) -> dict:
    """One epoch of the training loader; the first batch (numba compilation) timed apart."""
    from scm_ray.data.loaders import train_loader

    loader = train_loader(beton, batch_size, workers, RESIZE, CROP, seed=0)
    start = time.perf_counter()
    first = count = 0
    for images, labels in loader:
        images.sum()
        count += labels.shape[0]
        if not first:
            first, warm = count, time.perf_counter()
    end = time.perf_counter()
    return {"images": count, "seconds": end - start, "steady_images": count - first, "steady_seconds": end - warm}


def _child(argv: list[str]) -> int:
    kind, path, workers = argv[0], Path(argv[1]), int(argv[2])
    result = bare_loop(path, workers) if kind == "bare" else loader_epoch(path, workers, int(argv[3]))
    print("RESULT " + json.dumps(result))
    return 0


def _child_result(text: str) -> dict:
    return json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------


def make_checkpoint(folder: Path) -> Path:
    """A small ViT with ImageNet's 1,000 classes at 224 px, in the project's checkpoint format;
    its weights do not change evaluation's cost."""
    import torch

    from scm_ray.checkpoint import save_checkpoint
    from scm_ray.config import TrainJobConfig, load_config, to_dict
    from scm_ray.model import build_model

    cfg = load_config(TrainJobConfig, None, [
        "model.name=vit_tiny_patch16_224", "model.num_classes=1000", "model.embed_dim=96", "model.depth=4",
        "model.num_heads=3", "scm.num_blocks=0",
    ])
    torch.manual_seed(0)
    path = folder / "checkpoint_epoch0000"
    return save_checkpoint(path, build_model(cfg.model, cfg.scm), to_dict(cfg), epoch=0, global_step=0, metrics={})


def _python() -> list[str]:
    return [sys.executable]


@dataclass
class Preparation:
    """What a size's tree cost before any stage was timed (part of no figure)."""

    generate_s: float  # generating the tree (~0 when it is reused)
    read_bytes: int  # the tree's files, read once
    read_s: float

    def line(self, n: int) -> str:
        return (f"N={n}: generated in {self.generate_s:.1f} s, its files read once in {self.read_s:.1f} s "
                f"({self.read_bytes / 2**20:.0f} MiB; not part of any figure)")


def read_once(root: Path, chunk: int = 1 << 20) -> tuple[int, float]:
    """Read every file under root once; (bytes, seconds). Why: prepare and the bare loop read
    the same files one after the other, and whichever runs first would pay for reading them from
    disk (a tree not read for a while has left the page cache) while the second reads memory:
    measured here, a cold cache took prepare from 0.88-0.97 of the bare loop to 0.78. Read once
    beforehand, both stages read from memory and the ratio compares their CPU work."""
    t0, total = time.perf_counter(), 0
    buffer = bytearray(chunk)
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb", buffering=0) as f:
                while read := f.readinto(buffer):
                    total += read
    return total, time.perf_counter() - t0


def run_size(n: int, work: Path, checkpoint: Path, cores: int, seed: int) -> tuple[list[StageResult], Preparation]:
    """Every stage at one size; also what the tree cost before them (generation, one read)."""
    from scm_ray.data.imagenet_like import ImageNetLikeSpec, generate

    tree, prepared, logs = work / f"tree_{n}", work / f"prepared_{n}", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts = generate(tree, ImageNetLikeSpec(n, seed=seed), num_workers=cores)["images"]
    generated = time.perf_counter() - t0
    shutil.rmtree(prepared, ignore_errors=True)
    before = Preparation(generated, *read_once(tree))
    out = []

    wall, peak, text = run_watched(_python() + ["-m", "scm_ray.cli", "prepare", "imagenet", "--root", str(tree),
                                                "--out", str(prepared), "--num-workers", str(cores), "--no-progress"],
                                   logs / f"prepare_{n}.log")
    seconds = float(re.search(r"prepared in ([0-9.]+) s", text).group(1))
    serial = re.search(r"source read and checked in ([0-9.]+) s, .*this process: ([0-9.]+) CPU-s", text)
    out.append(StageResult("prepare", n, n, wall, seconds, n / seconds, peak, cores,
                           *(map(float, serial.groups()) if serial else ())))

    wall, peak, text = run_watched(_python() + ["-m", "scm_ray.bench.scale", "bare", str(prepared), str(cores)],
                                   logs / f"bare_{n}.log")
    r = _child_result(text)
    out.append(StageResult("bare", n, r["images"], wall, r["seconds"], r["images"] / r["seconds"], peak, cores))

    batch = min(64, max(1, counts["train"] // 4))  # 64, or several batches on a tiny tree
    wall, peak, text = run_watched(_python() + ["-m", "scm_ray.bench.scale", "loader", str(prepared / "train.beton"),
                                                str(cores), str(batch)], logs / f"loader_{n}.log")
    r = _child_result(text)
    steady = r["steady_images"] / r["steady_seconds"] if r["steady_images"] else r["images"] / r["seconds"]
    out.append(StageResult("loader", n, r["images"], wall, r["seconds"], steady, peak, cores))

    results = work / f"evaluate_{n}"
    shutil.rmtree(results, ignore_errors=True)
    wall, peak, _ = run_watched(_python() + [
        "-m", "scm_ray.cli", "evaluate", "--checkpoints", str(checkpoint), "--out", str(results), "--data",
        str(prepared), "--protocol", "paper", "--num-actors", "1", "--force", "--set", f"ray.cpus_per_actor={cores}",
        "--set", f"data.num_workers={cores}", "--set", "report.plots=false",
    ], logs / f"evaluate_{n}.log")
    import pyarrow.parquet as pq

    row = pq.read_table(results / "results.parquet").to_pylist()[0]
    if row.get("status") != "ok":
        raise RuntimeError(f"evaluate at N={n} failed: {row.get('error')}")
    out.append(StageResult("evaluate", n, counts["val"], wall, float(row["eval_s"]), float(row["images_per_s"]),
                           peak, cores))
    return out, before


def _machine(cores: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {cores} cores ({os.cpu_count()} online), {platform.system()}; "
            f"load average {load:.1f} at the start")


def format_table(results: list[StageResult]) -> list[str]:
    lines = [f"{'N':>7} {'stage':<9} {'images':>7} {'wall s':>8} {'work s':>8} {'img/s':>8} {'img/s/core':>10} "
             f"{'ms/img':>8} {'peak MiB':>9}"]
    for r in results:
        lines.append(f"{r.size:>7} {r.stage:<9} {r.images:>7} {r.wall_s:>8.1f} {r.work_s:>8.1f} "
                     f"{r.steady_images_per_s:>8.1f} {r.steady_images_per_s / r.cores:>10.1f} "
                     f"{1000 * r.cost_per_image:>8.2f} {r.peak_mib:>9.0f}")
    return lines


def serial_line(prepare: StageResult) -> str:
    """prepare's one-process parts at one N, per image: the floor under its time on any number
    of cores (the encoding processes are the part that spreads)."""
    if prepare.source_s is None or prepare.packing_cpu_s is None:
        return f"N={prepare.size}: prepare printed no time line"
    n = prepare.images
    return (f"N={n}: prepare's one-process parts: source {prepare.source_s:.1f} s "
            f"({1e6 * prepare.source_s / n:.0f} us/image), packing {prepare.packing_cpu_s:.1f} CPU-s "
            f"({1e6 * prepare.packing_cpu_s / n:.0f} us/image)")


def summary_line(results: list[StageResult]) -> str:
    """The last line: growth from the smallest to the largest N, and prepare against the bare
    loop at the largest N."""
    def at(stage: str, n: int) -> StageResult:
        return next(r for r in results if r.stage == stage and r.size == n)

    sizes = sorted({r.size for r in results})
    lo, hi = sizes[0], sizes[-1]
    cost = {s: at(s, hi).cost_per_image / at(s, lo).cost_per_image for s in ("prepare", "evaluate")}
    grow = {s: at(s, hi).peak_mib - at(s, lo).peak_mib for s in ("prepare", "evaluate")}
    bare = at("prepare", hi).steady_images_per_s / at("bare", hi).steady_images_per_s
    # "+N MiB" is the line's fixed form; a fall in memory prints as "+-N MiB", still one number
    return (f"scale: cost per image x{cost['prepare']:.2f} at {hi} vs {lo} images (prepare), "
            f"x{cost['evaluate']:.2f} (evaluate); peak RSS +{grow['prepare']:.0f} MiB (prepare), "
            f"+{grow['evaluate']:.0f} MiB (evaluate); prepare at {bare:.2f} of the bare loop")


def run_benchmark(sizes: list[int], work: Path, cores: int, seed: int = 0, keep: bool = False) -> list[StageResult]:
    work.mkdir(parents=True, exist_ok=True)
    print(f"scale benchmark on {_machine(cores)}; every stage on {cores} processes/threads; "
          f"sizes {', '.join(map(str, sizes))} (80 % train / 20 % val)", flush=True)
    checkpoint = make_checkpoint(work / "checkpoint")
    batches = sizes[0] // 5 // EVAL_BATCH  # the val split is a fifth of the tree
    if batches < PREFETCH_SLOTS:
        print(f"note: at N={sizes[0]} the val split is {batches} evaluation batches, fewer than FFCV's "
              f"{PREFETCH_SLOTS} buffer slots: evaluate's memory there is below its steady state, so "
              f"its growth to larger N overstates (use a smallest N of {5 * EVAL_BATCH * PREFETCH_SLOTS} "
              "or more)", flush=True)
    results: list[StageResult] = []
    for n in sizes:
        rows, before = run_size(n, work, checkpoint, cores, seed)
        results += rows
        print(before.line(n), flush=True)
        print("\n".join(format_table(rows)[1:]), flush=True)
        print(serial_line(rows[0]), flush=True)
        if not keep:
            shutil.rmtree(work / f"prepared_{n}", ignore_errors=True)
    print("\n".join(format_table(results)))
    return results


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated image counts, got {text!r}") from None
    if len(sizes) < 2 or any(s < 10 for s in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"need two or more increasing sizes of >= 10 images, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                        help="images per tree, increasing (default 2000,8000,32000)")
    parser.add_argument("--work", default="data/bench_scale",
                        help="folder for the generated trees (kept and reused) and the prepared sets")
    parser.add_argument("--cores", type=int, default=0, help="processes per stage (default: the cores this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the prepared datasets")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    cores = args.cores or len(os.sched_getaffinity(0))
    try:
        results = run_benchmark(args.sizes, Path(args.work), cores, args.seed, args.keep)
    except RuntimeError as exc:
        print(f"bench scale: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        from dataclasses import asdict

        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(summary_line(results))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
