"""How high a causal detector's per-file AUC-ROC can go on NAB's anomaly windows.

    python benchmarks/nab_auc_bound.py [--data ../shared/data]

NAB labels a window (10% of a file, split among its anomalies) centred on each labelled
anomaly point. A detector that sees only past and present data cannot rise before the
anomaly, so the window's first half is lost to it whatever it does. This script scores
two label-derived references (bounds, not detectors) with the report's protocol (the
probationary 15% unscored, AUC over the rest, mean over files with a window there):

- ``point``: 1 at each labelled anomaly point, 0 elsewhere;
- ``hold``: 1 from each labelled anomaly point to its window's end, 0 elsewhere -- the
  best a causal detector can do (a perfect alarm that stays up until the window closes).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tsanomaly import metrics
from tsanomaly.datasets import read_nab

ROOT = Path(__file__).resolve().parents[1]


def reference_aucs(nab_path) -> dict:
    """Mean per-file AUC-ROC of the ``point`` and ``hold`` references (see the module docstring)."""
    nab_path = Path(nab_path)
    labelled_points = json.loads((nab_path / "labels" / "combined_labels.json").read_text())
    aucs = {"point": [], "hold": []}
    for record in read_nab(nab_path, grid="rows"):
        scored = slice(int(record.train_end), None)
        labels = record.labels[scored]
        if not labels.any() or labels.all():
            continue
        # grid="rows": position i is the file's row i.
        times = pd.read_csv(nab_path / "data" / f"{record.name}.csv", parse_dates=["timestamp"])["timestamp"].to_numpy()
        point, hold = np.zeros(times.size), np.zeros(times.size)
        for stamp in labelled_points[record.name + ".csv"]:
            at = int(np.searchsorted(times, np.datetime64(stamp)))
            # NAB scores windows only; one labelled point of iio_us-east-1_i-a2eb1cd9_NetworkIn lies
            # outside its file's windows (a point no window rewards: both references skip it).
            ends = [end for start, end in record.windows if start <= at <= end]
            if ends:
                point[at] = 1.0
                hold[at : ends[0] + 1] = 1.0
        aucs["point"].append(metrics.auc_roc(labels, point[scored]))
        aucs["hold"].append(metrics.auc_roc(labels, hold[scored]))
    return {name: float(np.mean(values)) for name, values in aucs.items()} | {"files": len(aucs["hold"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    result = reference_aucs(Path(args.data) / "nab")
    print(f"NAB, {result['files']} files with a window after the probationary period: mean AUC-ROC "
          f"point {result['point']:.3f}, hold to the window's end {result['hold']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
