"""The published isolation-forest anchor on NAB, reproduced with tsanomaly's reader and metric.

    python benchmarks/nab_isolation_forest.py [--data ../shared/data] [--seed 0]

The issue's NAB anchors (mean per-file AUC-ROC: matrix profile 0.49, LSTM 0.50, isolation
forest 0.70) come from TSB-UAD, which scores subsequences offline. This script runs
scikit-learn's ``IsolationForest`` (its defaults: 100 trees, 256 samples per tree) the way
TSB-UAD does -- each window of ``m`` consecutive values is one sample, ``m`` the period that
:func:`tsanomaly.periods.estimate_period` finds in the probationary part -- and scores it
with the report's protocol (:mod:`tsanomaly.evaluation`: the probationary 15% unscored, AUC
over the rest, mean over the files with a window there). It is a reference, not a detector
of the package: it checks that this package's NAB AUC figures sit on the anchors' scale,
and it measures how much of the anchor comes from reading windows offline.

Two choices, each reported:

- ``fit``: ``history`` fits the forest on the probationary part's windows only (the report's
  protocol); ``all`` fits it on every window of the file (TSB-UAD's unsupervised protocol).
- ``stamp``: ``end`` gives each point the score of the window that ends there (what a job
  that sees only past data could report); ``centre`` gives each point the mean score of the
  ``m`` windows that cover it (TSB-UAD's offline convention, which looks ``m - 1`` points ahead).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tsanomaly import metrics
from tsanomaly.datasets import read_nab
from tsanomaly.evaluation import benchmark_window
from tsanomaly.periods import estimate_period

ROOT = Path(__file__).resolve().parents[1]


def covering_mean(window_scores: np.ndarray, n_points: int, window: int) -> np.ndarray:
    """Per-point mean of the scores of the windows that cover each point.

    Parameters
    ----------
    window_scores : numpy.ndarray, shape (n_points - window + 1,)
        Score of the window starting at each position.
    n_points : int
        Length of the series.
    window : int
        Window length in points.

    Returns
    -------
    numpy.ndarray, shape (n_points,)
        Point ``t`` gets the mean of windows ``max(0, t - window + 1) .. min(t, n_windows - 1)``.
    """
    starts = np.arange(window_scores.size)
    # Difference arrays: each window adds its score on [start, start + window).
    total = np.zeros(n_points + 1)
    count = np.zeros(n_points + 1)
    np.add.at(total, starts, window_scores)
    np.add.at(total, starts + window, -window_scores)
    np.add.at(count, starts, 1.0)
    np.add.at(count, starts + window, -1.0)
    return np.cumsum(total)[:n_points] / np.cumsum(count)[:n_points]


def end_stamped(window_scores: np.ndarray, window: int) -> np.ndarray:
    """Each window's score placed at its last point; the first ``window - 1`` points get NaN."""
    return np.concatenate([np.full(window - 1, np.nan), window_scores])


def isolation_forest_aucs(nab_path, seed: int = 0) -> dict:
    """Mean per-file AUC-ROC of the four (fit, stamp) variants (see the module docstring).

    Returns
    -------
    dict
        ``{(fit, stamp): mean AUC-ROC}`` for ``fit`` in ``("history", "all")`` and ``stamp`` in
        ``("end", "centre")``, plus ``"files"``: how many files were averaged.
    """
    from sklearn.ensemble import IsolationForest

    aucs = {(fit, stamp): [] for fit in ("history", "all") for stamp in ("end", "centre")}
    n_files = 0
    for record in read_nab(Path(nab_path), grid="rows"):
        train_end = int(record.train_end)
        labels = record.labels[train_end:]
        if not labels.any() or labels.all():
            continue
        values = np.asarray(record.values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{record.name}: missing values; this reference expects complete NAB files")
        window = benchmark_window(estimate_period(values[:train_end]), train_end)
        windows = sliding_window_view(values, window)
        n_history_windows = train_end - window + 1
        n_files += 1
        for fit in ("history", "all"):
            samples = windows[:n_history_windows] if fit == "history" else windows
            forest = IsolationForest(random_state=seed).fit(samples)
            window_scores = -forest.score_samples(windows)  # higher = more anomalous
            stamped = {
                "end": end_stamped(window_scores, window),
                "centre": covering_mean(window_scores, values.size, window),
            }
            for stamp, scores in stamped.items():
                aucs[(fit, stamp)].append(metrics.auc_roc(labels, scores[train_end:]))
    return {key: float(np.mean(values)) for key, values in aucs.items()} | {"files": n_files}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0, help="the forests' random_state")
    args = parser.parse_args(argv)
    result = isolation_forest_aucs(Path(args.data) / "nab", seed=args.seed)
    print(f"NAB, {result['files']} files with a window after the probationary period, "
          "isolation forest on windows of one period: mean AUC-ROC")
    print("| fit on | end-stamped | centred (offline) |")
    print("|---|---|---|")
    for fit in ("history", "all"):
        print(f"| {fit} | {result[(fit, 'end')]:.3f} | {result[(fit, 'centre')]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
