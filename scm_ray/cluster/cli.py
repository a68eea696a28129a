"""`scm-ray cluster check FILE...`: validate cluster launcher YAMLs, KubeRay manifests and
runtime envs before they reach a cluster (the checks live in scm_ray/cluster/check.py)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate cluster YAMLs against Ray's schema and scm-ray's needs")
    check.add_argument("files", nargs="+", metavar="FILE",
                       help="cluster launcher YAML, KubeRay manifest or runtime env; a folder means its YAMLs")


def run(args: argparse.Namespace) -> int:
    """Print one block per file, in order; exit 1 when any file has a problem."""
    from scm_ray.cluster.check import check_file, expand

    reports = [check_file(path) for path in expand(args.files)]
    if not reports:
        print(f"scm-ray cluster check: no YAML files in {' '.join(args.files)}", file=sys.stderr)
        return 1
    for report in reports:
        print("\n".join(report.lines()), flush=True)
    failed = sum(not r.ok for r in reports)
    if failed:
        print(f"scm-ray cluster check: {failed} of {len(reports)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0
