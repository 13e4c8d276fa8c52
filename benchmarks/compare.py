"""Side-by-side throughput of tsanomaly and the reference implementations, in one process.

    python benchmarks/compare.py stl     # tsanomaly.decompose vs statsmodels STL / MSTL
    python benchmarks/compare.py mp      # tsanomaly.matrix_profile vs stumpy.stump (and gpu_stump)
    python benchmarks/compare.py lstm    # one global LSTM autoencoder vs one model per context

Each sub-command lives in ``benchmarks/compare_<name>.py`` as ``main(argv)``;
extra arguments are passed on (``--help`` lists them).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

COMMANDS = ("stl", "mp", "lstm")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: compare.py {{{','.join(COMMANDS)}}} [options]"
    if argv and argv[0] in ("-h", "--help"):  # asked for: help on stdout, success
        print(__doc__)
        print(usage)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        print(usage, file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(f"benchmarks.compare_{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
