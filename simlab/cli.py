"""The ``simlab`` command line (also ``python -m simlab``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .config import ConfigError
from .data import DatasetNotFound


def _demo(args: argparse.Namespace) -> int:
    from . import demo
    demo.run(args.out, data_root=args.data_root)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simlab", description="Siamese Image Modeling workbench")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the main job on the embedded dataset: figures of SiM's two views")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files, if not installed")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatasetNotFound) as e:
        print(f"simlab {args.command}: error: {e}", file=sys.stderr)
        return 2
