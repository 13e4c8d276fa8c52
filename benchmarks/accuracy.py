"""Accuracy report on the labelled NAB and UCR data: every detector, one protocol (tsanomaly.evaluation).

    python benchmarks/accuracy.py [--data ../shared/data] [--detectors baseline,stl,mp,mp-multi,lstm,ensemble]

Prints a table per data set and writes it, with the command that made it, to
benchmarks/results/accuracy.md. Progress goes to stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tsanomaly.cli import main as cli_main
from tsanomaly.evaluation import BENCHMARK_DETECTORS

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--data" not in argv:
        argv += ["--data", str(ROOT.parent / "shared" / "data")]
    if "--detectors" not in argv:
        argv += ["--detectors", ",".join(BENCHMARK_DETECTORS)]
    if "--out" not in argv:
        argv += ["--out", str(ROOT / "benchmarks" / "results" / "accuracy.md")]
    return cli_main(["evaluate", *argv])


if __name__ == "__main__":
    sys.exit(main())
