"""Detection quality of the LSTM autoencoder on synthetic security panels, beside STL, the baseline
and the default ensemble (of those two).

    python benchmarks/lstm_quality.py [--contexts 200] [--days 28] [--seed 0] [--device auto]
                                      [--max-train-windows N|all] [--only lstm,stl,...]

Protocol (issue 4): ``make_security_panel`` data; for each metric (logins,
failed logins, registrations) a detector is fitted on the first three weeks
(attack-free) and scores the rest; the point scores are compared with the
injected attacks' labels by AUC-ROC (``tsanomaly.metrics.auc_roc``: NaN scores
count as the lowest).  Reported per metric, pooled over the three metrics
(scores are robust z-scores, comparable across contexts and metrics), and per
attack kind (its labelled points against the normal points of the metrics it changes).  Target: LSTM
pooled AUC-ROC >= 0.9 and not below STL's by more than 0.05.  A metric whose
scored weeks hold no attack (a few small panels) has no AUC-ROC: it is NaN in the
tables, with a note.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from tsanomaly import metrics
from tsanomaly.datasets import METRICS, make_security_panel

#: Detectors compared, by the name their column has here.
NAMES = ("lstm_ae", "stl", "baseline", "ensemble")
#: Other names --only accepts: the library's short names (tsanomaly.detectors.DETECTOR_CLASSES).
ALIASES = {"lstm": "lstm_ae"}


def _detectors(device: str, lstm_params: dict | None = None) -> dict:
    """Factories of the detectors compared, by name; a detector whose module is missing is left out.
    ``lstm_params`` are passed to the LSTM (none: its defaults)."""
    from tsanomaly.detectors import RollingZScoreDetector

    factories = {"lstm_ae": None, "stl": None, "baseline": lambda: RollingZScoreDetector(device=device)}
    try:
        from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector

        factories["lstm_ae"] = lambda: LSTMAutoencoderDetector(device=device, seed=0, **(lstm_params or {}))
    except ImportError as exc:
        print(f"lstm_ae left out: {exc}", file=sys.stderr)
    try:
        from tsanomaly.detectors.ensemble import EnsembleDetector
        from tsanomaly.detectors.stl import STLDetector

        factories["stl"] = lambda: STLDetector(periods=24, device=device)
        factories["ensemble"] = lambda: EnsembleDetector(device=device)  # its defaults: baseline and STL
    except ImportError as exc:
        print(f"stl and ensemble left out: {exc}", file=sys.stderr)
    return {name: f for name, f in factories.items() if f is not None}


def _only(parser: argparse.ArgumentParser, only: str | None) -> list[str] | None:
    """The detectors --only names (their column names here), or None for all; parser.error (exit 2)
    for an unknown name."""
    if only is None:
        return None
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in NAMES and name not in ALIASES]
    known = ", ".join(sorted(NAMES + tuple(ALIASES)))
    if unknown:
        parser.error(f"--only: unknown detector {', '.join(map(repr, unknown))}; choose from {known}")
    if not names:
        parser.error(f"--only names no detector; choose from {known}")
    return [ALIASES.get(name, name) for name in names]


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC-ROC, or NaN when the labels hold no positive (or no negative) point."""
    if not labels.any() or labels.all():
        return float("nan")
    return metrics.auc_roc(labels, scores)


def _kind_masks(data, new, metric: str) -> dict:
    """Boolean (n_contexts, n_new) mask of the labelled points of each attack kind, for one metric."""
    labels = new.labels[metric].to_numpy()
    contexts = new.panels[metric].contexts
    index = new.panels[metric].index
    masks = {}
    for attack in data.attacks.itertuples():
        if metric not in attack.metrics.split(","):
            continue
        row = contexts.get_loc((attack.country, attack.asn))
        span = (index >= attack.start) & (index <= attack.end)
        mask = masks.setdefault(attack.kind, np.zeros_like(labels))
        mask[row] |= span & labels[row]
    return masks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=200)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-train-windows", default=None,
                        help="the LSTM's max_train_windows: a number, or 'all' for every window (default: its default)")
    parser.add_argument("--only", default=None, help="comma-separated detectors to run, of lstm (or lstm_ae), stl, baseline, ensemble (default: all)")
    args = parser.parse_args(argv)
    only = _only(parser, args.only)
    if args.days < 22:
        # The detectors fit on the first 21 (attack-free) days and score the rest: with fewer days
        # the fit held attacks, nothing was scored, and every AUC came out NaN without an error.
        parser.error(f"--days must be at least 22 (21 attack-free days to fit on, then days to score), got {args.days}")

    data = make_security_panel(n_contexts=args.contexts, n_days=args.days, seed=args.seed)
    split_at = data.index[0] + pd.Timedelta(days=21)
    history, new = data.split(split_at)
    lstm_params = {}
    if args.max_train_windows is not None:
        lstm_params["max_train_windows"] = None if args.max_train_windows == "all" else int(args.max_train_windows)
    factories = _detectors(args.device, lstm_params)
    if only is not None:
        factories = {name: f for name, f in factories.items() if name in only}
    if not factories:
        print("none of the detectors asked for can run here (see above)", file=sys.stderr)
        return 2
    print(
        f"make_security_panel(n_contexts={args.contexts}, n_days={args.days}, seed={args.seed}); "
        f"fit before {split_at.date()}, score the rest; AUC-ROC of point scores (NaN = lowest)\n"
    )
    for metric in METRICS:
        labels = new.labels[metric].to_numpy()
        if not labels.any() or labels.all():
            print(f"note: {metric} has {'no' if not labels.any() else 'only'} attacked points in the scored "
                  "weeks: no AUC-ROC for it (NaN); more --contexts give more attacks")

    rows, by_kind = [], {}
    for name, factory in factories.items():
        pooled_scores, pooled_labels = [], []
        kind_scores: dict = {}
        for metric in METRICS:
            start = time.perf_counter()
            detector = factory().fit(history.panels[metric])
            fit_s = time.perf_counter() - start
            scores = detector.score(new.panels[metric]).to_numpy()
            labels = new.labels[metric].to_numpy()
            auc = _auc(labels.ravel(), scores.ravel())
            rows.append(dict(detector=name, metric=metric, auc_roc=auc, nan_share=np.isnan(scores).mean(), fit_s=fit_s))
            pooled_scores.append(scores.ravel())
            pooled_labels.append(labels.ravel())
            normal = scores[~labels]
            for kind, mask in _kind_masks(data, new, metric).items():
                got = kind_scores.setdefault(kind, ([], []))
                got[0].append(scores[mask])
                got[1].append(normal)
        all_scores, all_labels = np.concatenate(pooled_scores), np.concatenate(pooled_labels)
        rows.append(
            dict(
                detector=name,
                metric="pooled",
                auc_roc=_auc(all_labels, all_scores),
                nan_share=np.isnan(all_scores).mean(),
                fit_s=sum(r["fit_s"] for r in rows if r["detector"] == name),
            )
        )
        for kind, (pos, neg) in kind_scores.items():
            pos, neg = np.concatenate(pos), np.concatenate(neg)
            labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
            by_kind[(name, kind)] = _auc(labels, np.concatenate([pos, neg]))

    table = pd.DataFrame(rows).pivot(index="metric", columns="detector", values="auc_roc")
    table = table.reindex(list(METRICS) + ["pooled"])
    print("AUC-ROC per metric")
    print(table.round(4).to_string())
    print("\nAUC-ROC per attack kind (its points against the normal points of the metrics it changes, pooled over those)")
    if by_kind:
        print(pd.Series(by_kind).unstack(0).round(4).to_string())
    else:
        print("(no attack in the scored weeks)")
    print("\nshare of NaN scores, fit seconds (pooled: all three metrics)")
    print(pd.DataFrame(rows).set_index(["detector", "metric"])[["nan_share", "fit_s"]].round(3).to_string())

    if "lstm_ae" in factories:
        lstm = table.loc["pooled", "lstm_ae"]
        if np.isnan(lstm):  # no attacked (or no normal) point was scored: nothing to judge
            print("\nLSTM pooled AUC-ROC not measured (no attacked point scored): targets not judged")
            return 0
        verdict = f"\nLSTM pooled AUC-ROC {lstm:.4f} (target >= 0.9: {'met' if lstm >= 0.9 else 'NOT met'})"
        if "stl" in factories:
            stl = table.loc["pooled", "stl"]
            met = "met" if lstm >= stl - 0.05 else "NOT met"
            verdict += f"; STL {stl:.4f}, difference {lstm - stl:+.4f} (target >= -0.05: {met})"
        print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
