"""`scm-ray prepare synthetic|cub|imagenet|wsol-metadata --out DIR ...` (and jobs/prepare_data.py).

Every source ends in the same layout: DIR/records.parquet, DIR/<split>.beton, DIR/dataset.json.
Exit status: 0 done (skipped records are listed in the summary; --strict makes them an error),
1 the source or the writer failed, with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time

from scm_ray.data.ffcv_io import WriteOptions, WriterError
from scm_ray.data.report import SourceError


def _image_size(text: str) -> int | tuple[int, int]:
    """"64" -> 64, "96x64" -> (96, 64) (width x height)."""
    try:
        if "x" in text:
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None


def _common(p: argparse.ArgumentParser, eval_default: int | None) -> None:
    p.add_argument("--out", required=True, help="output folder (records.parquet, <split>.beton, dataset.json)")
    p.add_argument("--eval-size", type=int, default=eval_default,
                   help="side evaluation splits are stored at (boxes scaled to match)"
                   + (f"; default {eval_default}" if eval_default else "; default: the image's longest side"))
    p.add_argument("--max-side", type=int, default=512, help="training splits: longest side cap, aspect kept")
    p.add_argument("--short-side", type=int, default=None,
                   help="training splits: also cap the shortest side (e.g. the training resize size: faster loading)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--write-mode", choices=("jpg", "raw"), default="jpg", help="how images are stored in .beton")
    p.add_argument("--max-boxes", type=int, default=None, help="box slots per image (default: the most on any image)")
    p.add_argument("--train-splits", default="train", help="comma-separated splits stored for training")
    p.add_argument("--num-workers", type=int, default=4, help="processes/threads for checking and writing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="dataset folder in the source's official layout")
    p.add_argument("--verify", choices=("decode", "header"), default="decode",
                   help="decode: every image decoded whole and strictly, so truncated or corrupt files are "
                        "skipped and reported (JPEGs once, by the writer); header: headers only")
    p.add_argument("--strict", action="store_true", help="exit 1 when any record was skipped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    p = sub.add_parser("synthetic", help="generate the synthetic WSOL dataset")
    p.add_argument("--num-train", type=int, default=3000)
    p.add_argument("--num-val", type=int, default=400)
    p.add_argument("--num-test", type=int, default=400)
    p.add_argument("--image-size", type=_image_size, default=64, help="N or WxH pixels")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--max-objects", type=int, default=1, help="objects per image: 1..this many")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even when the folder is already complete")
    _common(p, None)

    p = sub.add_parser("cub", help="CUB-200-2011 official layout (images.txt, bounding_boxes.txt, ...)")
    _source_args(p)
    _common(p, 224)

    p = sub.add_parser("imagenet", help="ILSVRC 2012: train/<wnid>/*.JPEG, val + VOC XML or LOC_val_solution.csv")
    _source_args(p)
    p.add_argument("--class-index", default=None, help="LOC_synset_mapping.txt or imagenet_class_index.json")
    p.add_argument("--val-boxes", default=None, help="LOC_val_solution.csv or a folder of per-image XML")
    p.add_argument("--val-split-name", default="test", help="split name for the official val set (WSOL: test)")
    _common(p, 224)

    p = sub.add_parser("wsol-metadata", help="wsolevaluation metadata folders (image_ids.txt, class_labels.txt, ...)")
    _source_args(p)
    p.add_argument("--metadata", required=True, help="a split folder, or a folder of train/val/test folders")
    p.add_argument("--num-classes", type=int, default=None, help="default: largest label + 1")
    p.add_argument("--class-names", default=None, help="text file, one class name per line")
    _common(p, 224)


def _options(args: argparse.Namespace, eval_size: int) -> WriteOptions:
    return WriteOptions(
        train_splits=tuple(s for s in args.train_splits.split(",") if s), max_side=args.max_side,
        short_side=args.short_side,
        eval_size=eval_size, jpeg_quality=args.jpeg_quality, write_mode=args.write_mode,
        max_boxes=args.max_boxes, num_workers=args.num_workers,
    )


def _convert(args: argparse.Namespace):
    from scm_ray.data import sources

    # "write": a JPEG's strict decode is the writer's own (one decode per image; images.Verify)
    verify = "write" if args.verify == "decode" else args.verify
    common = dict(verify=verify, num_workers=args.num_workers, progress=not args.no_progress)
    if args.source == "cub":
        return sources.convert_cub(args.root, **common)
    if args.source == "imagenet":
        return sources.convert_imagenet(args.root, class_index=args.class_index, val_boxes=args.val_boxes,
                                        val_split=args.val_split_name, **common)
    names = None
    if args.class_names:
        from pathlib import Path

        names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
    return sources.convert_wsol_metadata(args.root, args.metadata, num_classes=args.num_classes,
                                         class_names=names, **common)


def run(args: argparse.Namespace) -> int:
    from scm_ray.config import ConfigError
    from scm_ray.data.ffcv_io import Encoders
    from scm_ray.data.prepare import prepare_synthetic, write_prepared
    from scm_ray.paths import output_folder

    progress = not args.no_progress
    try:
        output_folder("out", args.out)
    except ConfigError as exc:
        print(f"prepare {args.source}: error: --{exc}", file=sys.stderr)
        return 2
    try:
        if args.source == "synthetic":
            if args.write_mode != "jpg" or args.max_boxes or args.train_splits != "train":
                print("prepare synthetic: --write-mode/--max-boxes/--train-splits are fixed for synthetic data",
                      file=sys.stderr)
                return 2
            summary = prepare_synthetic(
                args.out, num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
                image_size=args.image_size, num_classes=args.num_classes, seed=args.seed,
                max_objects=args.max_objects, eval_size=args.eval_size, max_side=args.max_side,
                short_side=args.short_side,
                jpeg_quality=args.jpeg_quality, num_workers=args.num_workers, progress=progress, force=args.force,
            )
        else:
            started = time.perf_counter()
            with Encoders(args.num_workers) as encoders:  # they start while the source is read
                conversion = _convert(args)
                summary = write_prepared(conversion, args.out, _options(args, args.eval_size),
                                         progress=progress, started=started, encoders=encoders,
                                         source_seconds=time.perf_counter() - started)
    except (SourceError, WriterError, ValueError, FileNotFoundError) as exc:
        print(f"prepare {args.source}: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    if getattr(args, "strict", False) and summary.report.num_skipped:
        print(f"prepare {args.source}: --strict: {summary.report.num_skipped} records skipped", file=sys.stderr)
        return 1
    return 0
