"""`arkq bench`'s command-line options, apart from the benchmark itself so that building the `arkq`
parser does not import it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where to write results")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it all runs")
    parser.add_argument("--only", nargs="+", metavar="SCENARIO", help="run only these scenarios")
