"""`scm-ray bench <benchmark>`: one sub-command per benchmark module.

Each benchmark module exposes `add_arguments(parser)` and `run(args) -> int`, like the top-level
commands. A module is imported only when its benchmark is chosen (or its help is asked for), so
`scm-ray bench step` never imports what the loader benchmark needs (FFCV, Ray) and vice versa.
Adding a benchmark is one line in BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# benchmark -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "step": ("scm_ray.bench.step", "training-step speed and peak memory: plain backbone vs SCM"),
    "adb": ("scm_ray.bench.adb", "the ADB stack alone, forward + backward: fast vs dense"),
    "boxes": ("scm_ray.bench.boxes", "box extraction maps/s: reference vs fast extractor"),
    "loader": ("scm_ray.bench.loader", "loader images/s: FFCV vs torchvision ImageFolder"),
    "scale": ("scm_ray.bench.scale", "cost per image and peak memory vs N on ImageNet-shaped data"),
}


class _LazyParser(argparse.ArgumentParser):
    """A sub-parser that imports its benchmark module and lets it add its arguments the first
    time it parses or prints help, i.e. only when that benchmark was named."""

    def __init__(self, *args: Any, module: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module_name = module
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._module_name).add_arguments(self)
            self.set_defaults(bench_module=self._module_name)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", parser_class=_LazyParser)
    for name, (module, help_text) in BENCHMARKS.items():
        sub.add_parser(name, help=help_text, description=help_text, module=module)


def run(args: argparse.Namespace) -> int:
    module_name = getattr(args, "bench_module", None)
    if module_name is None:
        print(f"scm-ray bench: name a benchmark: {', '.join(BENCHMARKS)}")
        return 2
    return int(importlib.import_module(module_name).run(args) or 0)
