"""One global LSTM autoencoder against the naive alternative: one model per context, in a Python loop.

    python benchmarks/compare.py lstm [--contexts 20] [--days 28] [--epochs 12] [--device auto]
    python benchmarks/compare_lstm.py --contexts 20

Both sides run the same detector code on the same data (the ``failed_logins``
panel of ``make_security_panel``, fitted on all but the last week, scoring the
last week) with the same settings; the naive side fits one
``LSTMAutoencoderDetector`` per context — one network, one training loop, one
calibration each — as a per-context model would, and scores each context with
its own model.  Prints the wall times and their ratio, on the CPU and, with
``--device auto`` (the default), on the GPU too when CuPy and PyTorch see one.
The ratio grows with the number of contexts: per-context training pays the
Python and launch overhead of every small batch once per context, and small
contexts give small batches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compare_devices  # noqa: E402
from tsanomaly.datasets import make_security_panel  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py lstm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=20, help="number of contexts (default 20)")
    parser.add_argument("--days", type=int, default=28, help="days of hourly data; the last 7 are scored")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the detector's)")
    parser.add_argument("--window", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the CPU, and the GPU too when CuPy and PyTorch see one")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _timed(fn, device):
    import torch

    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def _check(parser: argparse.ArgumentParser, args) -> None:
    """parser.error (exit 2) for settings the comparison cannot run with."""
    from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

    if args.contexts < 1:
        parser.error(f"--contexts must be at least 1, not {args.contexts}")
    try:
        epochs = {} if args.epochs is None else {"epochs": args.epochs}
        need = LSTMAutoencoderDetector(window=args.window, hidden=args.hidden, **epochs).min_fit_times()
    except ValueError as exc:
        parser.error(str(exc))
    min_days = 7 + -(-need // 24)  # a scored week after at least `need` hourly points of history
    if args.days < min_days:
        parser.error(
            f"--days must be at least {min_days} with --window {args.window}: the last 7 days are scored "
            f"and the detector needs {need} hourly points of history before them (got --days {args.days})"
        )


def compare(args, device: str) -> None:
    """Time the global model and the per-context models on ``device`` and print the table."""
    from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

    data = make_security_panel(n_contexts=args.contexts, n_days=args.days, seed=args.seed)
    cut = data.index[-24 * 7]
    history, new = data.split(cut)
    history, new = history.panels["failed_logins"], new.panels["failed_logins"]
    params = dict(window=args.window, hidden=args.hidden, device=device, seed=args.seed)
    if args.epochs is not None:
        params["epochs"] = args.epochs

    print(
        f"LSTM autoencoder, {history.n_contexts} contexts x {history.n_times} hourly points fitted, "
        f"{new.n_times} scored; window {args.window}, hidden {args.hidden}, device {device}"
    )
    # Warm-up (untimed): the first fit of a process pays for torch's lazy initialisation.
    LSTMAutoencoderDetector(**{**params, "epochs": 1}).fit(history.take([0])).score(new.take([0]))
    detector, global_fit = _timed(lambda: LSTMAutoencoderDetector(**params).fit(history), device)
    _, global_score = _timed(lambda: detector.score(new), device)

    def naive_fit():
        return [LSTMAutoencoderDetector(**params).fit(history.take([row])) for row in range(history.n_contexts)]

    models, naive_fit_s = _timed(naive_fit, device)
    _, naive_score_s = _timed(lambda: [m.score(new.take([row])) for row, m in enumerate(models)], device)

    rows = [
        ("fit", global_fit, naive_fit_s),
        ("score", global_score, naive_score_s),
        ("fit + score", global_fit + global_score, naive_fit_s + naive_score_s),
    ]
    print(f"{'':12s} {'global model':>14s} {'per context':>14s} {'ratio':>8s}")
    for name, g, n in rows:
        print(f"{name:12s} {g:13.2f}s {n:13.2f}s {n / g:7.1f}x")
    print(f"(ratio = per-context time / global time; {len(models)} per-context models)\n")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    for device in compare_devices(args.device, torch=True):
        compare(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
