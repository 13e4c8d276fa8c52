"""AUC-ROC per attack kind on a synthetic security panel: re-decomposed remainder vs STLDetector.

Two ways to score new hours with STL:

* **re-decomposed remainder** -- decompose history + new points together and
  take the robust z-score of the remainder (median / MAD of the history's
  remainder per context).  This is what a naive pipeline does, and it lets an
  attack leak into the components: a slow rise moves into the trend, a bot's
  nightly activity into the seasonal shape.
* **STLDetector** -- fit on the history, then score each new point against the
  expectation carried from the fit (fitted seasonal shape + a slowly, robustly
  moving level), plus the two windowed scores (level shift and low variance).
  Shown part by part and combined (the detector's score, the largest part).

Every scorer works on the same log1p-transformed counts and scores both
directions.  For each attack kind the positives are the labelled points of the
metric it changes (all three for an outage), the negatives every unlabelled
point of that metric in the scored period, pooled over contexts (scores are
comparable across contexts).

Usage::

    python benchmarks/stl_attack_auc.py [--contexts 300] [--days 28] [--seed 0]
        [--split 2024-01-22] [--periods 24]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd

from tsanomaly.datasets import ATTACK_KINDS, make_security_panel
from tsanomaly.datasets.synthetic import ATTACK_METRICS
from tsanomaly.detectors.stl import STLDetector, decompose
from tsanomaly.metrics import auc_roc


def redecomposed_remainder_scores(history, new, periods):
    """|robust z| of the remainder of one decomposition of history + new (log1p counts)."""
    values = np.log1p(np.concatenate([history.to_numpy(), new.to_numpy()], axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = decompose(values, periods=periods, robust=True, device="cpu")
    n_hist = history.n_times
    rem = res.remainder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(rem[:, :n_hist], axis=1, keepdims=True)
        mad = 1.4826 * np.nanmedian(np.abs(rem[:, :n_hist] - med), axis=1, keepdims=True)
    z = (rem[:, n_hist:] - med) / np.maximum(mad, 1e-9)
    return np.abs(z)


PARTS = {
    "STL deviation": "deviation",
    "STL level shift": "level_shift",
    "STL low variance": "low_variance",
}


def detector_scores(history, new, periods):
    """The STLDetector's score of ``new`` and its three parts, by column name."""
    det = STLDetector(periods=periods, direction="both", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        det.fit(history)
    parts = det._track(new.to_numpy(), new, det.context_rows(new))
    out = {name: parts[part] for name, part in PARTS.items()}
    out["STLDetector (combined)"] = det.score(new).to_numpy()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=300)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="2024-01-22", help="first scored timestamp (attacks start after day 21)")
    parser.add_argument("--periods", default="24", help="comma-separated, e.g. 24 or 24,168")
    args = parser.parse_args(argv)
    periods = tuple(int(p) for p in args.periods.split(","))
    periods = periods[0] if len(periods) == 1 else periods

    data = make_security_panel(n_contexts=args.contexts, n_days=args.days, seed=args.seed)
    history, new = data.split(args.split)
    scores = {"re-decomposed remainder": {}}
    t0 = time.perf_counter()
    for m in history.panels:
        scores["re-decomposed remainder"][m] = redecomposed_remainder_scores(history.panels[m], new.panels[m], periods)
        for name, values in detector_scores(history.panels[m], new.panels[m], periods).items():
            scores.setdefault(name, {})[m] = values
    elapsed = time.perf_counter() - t0
    scorers = list(scores)

    rows = []
    for kind in ATTACK_KINDS:
        metrics = ATTACK_METRICS[kind]
        attacked = new.attacks[new.attacks["kind"] == kind]
        if attacked.empty:
            continue
        row = {"attack": kind, "metric": ",".join(metrics), "attacks": len(attacked)}
        for name in scorers:
            labels, values = [], []
            for m in metrics:
                lab = new.labels[m].to_numpy()
                other_kind = np.zeros_like(lab)
                # points of other attack kinds on this metric are neither positive nor negative
                for _, a in new.attacks[(new.attacks["kind"] != kind)].iterrows():
                    if m in a["metrics"].split(","):
                        r = new.labels[m].contexts.get_loc((a["country"], a["asn"]))
                        span = (new.index >= a["start"]) & (new.index <= a["end"])
                        other_kind[r] |= span & lab[r]
                positives = np.zeros_like(lab)
                for _, a in attacked.iterrows():
                    r = new.labels[m].contexts.get_loc((a["country"], a["asn"]))
                    span = (new.index >= a["start"]) & (new.index <= a["end"])
                    positives[r] |= span & lab[r]
                observed = ~np.isnan(new.panels[m].to_numpy())
                keep = observed & ~other_kind
                labels.append(positives[keep])
                values.append(scores[name][m][keep])
            row[name] = auc_roc(np.concatenate(labels), np.concatenate(values))
        rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.precision", 3):
        print(f"make_security_panel(n_contexts={args.contexts}, n_days={args.days}, seed={args.seed}), "
              f"fit before {args.split}, periods={periods}, log1p counts; AUC-ROC per attack kind")
        print(table.to_string(index=False))
        print(f"(scoring took {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
