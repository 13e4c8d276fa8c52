"""Command line: ``tsanomaly demo | fit | score | report | evaluate``.

Each sub-command lives in its own ``_cmd_*`` function and registers its
arguments in ``_build_parser``. User errors (bad arguments, unreadable or
malformed input) exit with status 2 and a one-line reason, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]

log = logging.getLogger("tsanomaly")


class UserError(Exception):
    """An error in the user's arguments or input: reported in one line, exit status 2."""


def _cmd_demo(args) -> int:
    from tsanomaly.demo import print_demo, run_demo

    result = run_demo(
        detector=args.detector,
        n_contexts=args.contexts,
        n_days=args.days,
        device=args.device,
        seed=args.seed,
    )
    print_demo(result, top=args.top)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsanomaly", description="GPU-accelerated anomaly detection for per-context security time series."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="score a synthetic security panel with injected attacks")
    demo.add_argument("--detector", default="stl", help="baseline | stl | mp | lstm (default: stl)")
    demo.add_argument("--contexts", type=int, default=200, help="number of (country, ASN) contexts")
    demo.add_argument("--days", type=int, default=28, help="days of hourly data (the last week is scored)")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--top", type=int, default=15, help="alerts to print")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``tsanomaly`` console script; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        if args.verbose:
            log.exception("failed")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tsanomaly {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
