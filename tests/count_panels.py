"""Synthetic count panels shared by the detectors' tests."""
from __future__ import annotations

import numpy as np


def busy_and_sparse_counts(n_times: int, seed: int = 0) -> np.ndarray:
    """Hourly counts of 16 busy contexts (about 50 events, a daily cycle) then 4 sparse ones (0.03 an hour).

    The mix with which a sparse context's single events could set one global threshold for all
    (see ``tsanomaly.scaling.COUNT_SCALE_FLOOR``).

    Returns
    -------
    numpy.ndarray, shape (20, n_times), float64
        Rows 0-15 busy, rows 16-19 sparse.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_times)
    busy = rng.poisson(50 * (1 + 0.5 * np.sin(2 * np.pi * t / 24)), size=(16, n_times)).astype(float)
    sparse = rng.poisson(0.03, size=(4, n_times)).astype(float)
    return np.vstack([busy, sparse])
