"""ASV time and peak memory of building a Panel from a long table (the first step of every job).

A scoring job with a million contexts reads tens of millions of (context, hour, count) rows;
building the panel must not cost more than the scoring. CPU only: the table is pandas.
"""
import numpy as np
import pandas as pd

import tsanomaly


def _long_frame(n_contexts: int, n_hours: int = 168) -> pd.DataFrame:
    """One row per (context, hour), contexts as text labels, rows shuffled as a query returns them."""
    rng = np.random.default_rng(0)
    hours = pd.date_range("2024-01-01", periods=n_hours, freq="h")
    labels = np.char.add("asn", rng.permutation(n_contexts).astype(str))
    frame = pd.DataFrame({
        "asn": np.repeat(labels, n_hours),
        "ts": np.tile(hours, n_contexts),
        "logins": rng.poisson(20, n_contexts * n_hours).astype(np.float64),
    })
    return frame.sample(frac=1.0, random_state=0, ignore_index=True)


class PanelFromFrame:
    """Panel.from_frame on a week of hourly counts per context (168 rows per context)."""

    params = [[10_000, 100_000]]
    param_names = ["n_contexts"]
    timeout = 600

    def setup(self, n_contexts):
        self.frame = _long_frame(n_contexts)

    def _build(self):
        return tsanomaly.Panel.from_frame(self.frame, context="asn", time="ts", value="logins", fill="zero")

    def time_from_frame(self, n_contexts):
        self._build()

    def peakmem_from_frame(self, n_contexts):
        self._build()
