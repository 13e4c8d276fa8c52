"""Accuracy report on the labelled NAB and UCR data: every detector, one protocol (tsanomaly.evaluation).

    python benchmarks/accuracy.py [--data ../shared/data] [--detectors baseline,stl,mp,mp-multi,lstm,ensemble]
                                  [--out benchmarks/results/accuracy.md] [other options of `tsanomaly evaluate`]

Prints a table per data set and writes it, with the command that made it, to
benchmarks/results/accuracy.md. Progress goes to stderr. Options are written
``--data PATH`` or ``--data=PATH``; any other option goes to ``tsanomaly evaluate``
as it is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tsanomaly.cli import main as cli_main
from tsanomaly.evaluation import BENCHMARK_DETECTORS

ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an abbreviation such as --det is left to `tsanomaly evaluate`, which
    # knows all its options (here --dat would be taken for --data, there it is ambiguous with
    # --datasets); it comes after the defaults below, so it still overrides them.
    parser = argparse.ArgumentParser(
        description="Accuracy report of every benchmark detector on the labelled NAB and UCR data.",
        epilog="Other options (--datasets, --limit, --max-points, --device) are those of `tsanomaly evaluate`.",
        allow_abbrev=False,
    )
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding nab/ and ucr/")
    parser.add_argument("--detectors", default=",".join(BENCHMARK_DETECTORS), help="comma-separated short names")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "accuracy.md"), help="Markdown file to write"
    )
    return parser


def main(argv=None) -> int:
    # The options are parsed, not looked up in argv: a check such as `"--data" not in argv`
    # missed `--data=PATH` and appended the default after it, which then won.
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    return cli_main(["evaluate", "--data", args.data, "--detectors", args.detectors, "--out", args.out, *rest])


if __name__ == "__main__":
    sys.exit(main())
