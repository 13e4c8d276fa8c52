"""Peak memory of the LSTM autoencoder's fit on a large panel, on the CPU.

Reports the process's peak resident memory (MiB) at two points of a fit of
``--contexts`` hourly series of 30 days (Poisson counts with a daily cycle, 0.2% of
buckets missing), with the detector's defaults and one epoch:

- ``--stage windows`` (default): up to the moment the first network starts
  training, i.e. through scaling, clustering and the choice and copy of the
  training windows. The training itself is not run, so this takes seconds even
  for 100,000 contexts.
- ``--stage fit``: the whole fit, including the forward passes that score every
  window of the history (linear in contexts: minutes at 20,000 contexts).

Run one size per process, since peak memory only grows:

    python benchmarks/lstm_memory.py --contexts 100000
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

import tsanomaly
from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector
from tsanomaly.kernels import lstm_torch

N_TIMES = 24 * 30


def peak_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _TrainingReached(Exception):
    """Raised in place of the first network's training, carrying its windows' shape."""


def _stop_at_training(model, windows, **kwargs):
    raise _TrainingReached(tuple(windows.shape))


def make_panel(n_contexts: int, seed: int = 0) -> tsanomaly.Panel:
    rng = np.random.default_rng(seed)
    hours = np.arange(N_TIMES)
    rate = 50 * (1 + 0.8 * np.sin(2 * np.pi * hours / 24))
    values = rng.poisson(rate, size=(n_contexts, N_TIMES)).astype(float)
    values[rng.random(values.shape) < 0.002] = np.nan
    contexts = pd.Index([f"c{i:07d}" for i in range(n_contexts)], name="context")
    index = pd.date_range("2024-01-01", periods=N_TIMES, freq="1h", name="ts")
    return tsanomaly.Panel(values, contexts, index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=20_000)
    parser.add_argument("--stage", choices=["windows", "fit"], default="windows")
    parser.add_argument("--max-train-windows", default=None,
                        help="the LSTM's max_train_windows: a number, or 'all' (default: its default)")
    args = parser.parse_args()

    params = dict(device="cpu", epochs=1)
    if args.max_train_windows is not None:
        params["max_train_windows"] = None if args.max_train_windows == "all" else int(args.max_train_windows)
    panel = make_panel(args.contexts)
    before = peak_mib()
    if args.stage == "windows":
        lstm_torch.train_model = _stop_at_training
    start = time.perf_counter()
    try:
        LSTMAutoencoderDetector(**params).fit(panel)
        reached = "whole fit"
    except _TrainingReached as stop:
        reached = f"first network's training, on windows of shape {stop.args[0]}"
    print(
        f"{args.contexts:,} contexts x {N_TIMES} h: peak RSS {before:,.0f} MiB with the panel, "
        f"{peak_mib():,.0f} MiB up to the {reached} ({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
