"""`scm-ray` command line: prepare | train | tune | evaluate | bench | cluster | localize | demo.

Each sub-command lives next to the code it drives, in a module exposing
`add_arguments(parser)` and `run(args) -> int`; this file only wires them up, importing a module
when its command runs (so `scm-ray prepare` never imports Ray).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("scm_ray.data.cli", "convert a dataset (CUB, ILSVRC, wsol metadata, synthetic) to records + FFCV"),
    "train": ("scm_ray.train.cli", "train DeiT+SCM with Ray Train"),
    "tune": ("scm_ray.tune.cli", "hyperparameter search with Ray Tune"),
    "evaluate": ("scm_ray.evaluate.cli", "evaluate checkpoints in parallel, SCM-free"),
    "bench": ("scm_ray.bench.cli", "benchmarks: step, boxes, loader, scale"),
    "config": ("scm_ray.config_cli", "show a job's resolved config with help, or its lr per epoch"),
    "cluster": ("scm_ray.cluster.cli", "cluster helpers: check a cluster YAML"),
    "localize": ("scm_ray.localize", "classes, CAMs and boxes of new images from a checkpoint"),
    "demo": ("scm_ray.demo.cli", "the whole pipeline on a synthetic dataset and a local Ray"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="scm-ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser, module


DEBUG_FLAG = "--debug"  # anywhere on the command line (or SCM_RAY_DEBUG=1): full tracebacks


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("SCM_RAY_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 2
    from scm_ray.config import ConfigError
    from scm_ray.interrupts import EXIT_CODE, Interrupted

    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        if debug:
            raise
        print(f"scm-ray {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if debug:
            raise
        hint = exc.hint if isinstance(exc, Interrupted) else "the same command"
        print(f"\nscm-ray {args.command}: interrupted; resume with {hint}", file=sys.stderr, flush=True)
        return EXIT_CODE
    except Exception as exc:  # a failure no command expected: one paragraph, the traceback on --debug
        if debug:
            raise
        print(f"scm-ray {args.command}: error: {type(exc).__name__}: {exc}\n(run again with {DEBUG_FLAG} "
              "for the traceback)", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
