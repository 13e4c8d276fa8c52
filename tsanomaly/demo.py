"""`tsanomaly demo`: a security panel with injected attacks, fitted, scored and checked.

It generates hourly login, failed-login and registration counts for many
(country, ASN) contexts, fits one detector per metric on all but the last
week (three weeks of the default four), scores the last week, prints the top
alerts and the alert-level precision and recall against the injected attacks.

Alerts are matched against the labels, bucket by bucket: an alert is a true
positive when its span covers a bucket that an attack changed on that context
and metric, and an attack is found when some alert covers one of its labelled
buckets. A ``night_bot`` attack changes only the night hours of the nights it
spans; an alert in the daytime between two attacked nights is a false alarm.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsanomaly.datasets.synthetic import METRICS, make_security_panel
from tsanomaly.detectors import make_detector
from tsanomaly.panel import Panel

__all__ = ["DemoResult", "run_demo", "match_alerts", "SCORED_DAYS"]

#: Days at the end of the demo panel that are scored by default; the days before are history.
SCORED_DAYS = 7


@dataclass
class DemoResult:
    """What :func:`run_demo` found.

    Attributes
    ----------
    alerts : pandas.DataFrame
        Every metric's alerts, one row each, highest ``peak_score`` first, with a ``metric``
        column and an ``attack`` column (True where the alert overlaps an attack on its metric).
    attacks : pandas.DataFrame
        The attacks injected into the scored days, with a ``found`` column (some alert on one
        of its metrics overlaps it).
    precision : float
        Share of alerts that overlap an attack (NaN without alerts).
    recall : float
        Share of attacks that some alert overlaps (NaN without attacks).
    seconds : float
        Wall time of the whole run: data, fits and scoring.
    """

    alerts: pd.DataFrame
    attacks: pd.DataFrame
    precision: float
    recall: float
    seconds: float


def match_alerts(
    alerts: pd.DataFrame, attacks: pd.DataFrame, context_columns, labels: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which alerts overlap an attack, and which attacks some alert overlaps.

    Both tables carry the context columns and inclusive ``start``/``end``;
    ``alerts`` has a ``metric`` column and ``attacks`` a comma-separated
    ``metrics`` column: an alert on a metric the attack did not change does
    not count.

    With ``labels`` (metric name to a boolean Panel whose contexts are the
    context columns, as ``SecurityPanel.labels``), an alert and an attack only
    match where a labelled bucket of that context and metric lies in both
    spans: an attack's ``[start, end]`` may hold buckets it did not change
    (a ``night_bot``'s days between its nights). Without ``labels`` any overlap
    of the two spans counts.

    Returns
    -------
    alert_hit : numpy.ndarray of bool, shape (n_alerts,)
    attack_found : numpy.ndarray of bool, shape (n_attacks,)
    """
    alert_hit = np.zeros(len(alerts), dtype=bool)
    attack_found = np.zeros(len(attacks), dtype=bool)
    if len(alerts) == 0 or len(attacks) == 0:
        return alert_hit, attack_found
    pairs = alerts.reset_index(names="alert_row").merge(
        attacks.reset_index(names="attack_row"), on=list(context_columns), suffixes=("", "_attack")
    )
    overlap = (pairs["start"] <= pairs["end_attack"]) & (pairs["end"] >= pairs["start_attack"])
    same_metric = [m in ms.split(",") for m, ms in zip(pairs["metric"], pairs["metrics"])]
    hits = pairs[overlap & np.asarray(same_metric, dtype=bool)]
    if labels is not None and len(hits):
        hits = hits[[_labelled_between(labels[row.metric], row, context_columns) for row in hits.itertuples()]]
    alert_hit[hits["alert_row"].to_numpy()] = True
    attack_found[hits["attack_row"].to_numpy()] = True
    return alert_hit, attack_found


def _labelled_between(label: Panel, pair, context_columns) -> bool:
    """Whether a labelled bucket of the pair's context lies in both its alert's and its attack's span."""
    key = tuple(getattr(pair, c) for c in context_columns)
    row = label.contexts.get_loc(key if len(key) > 1 else key[0])
    index = label.index
    lo = index.searchsorted(max(pair.start, pair.start_attack), side="left")
    hi = index.searchsorted(min(pair.end, pair.end_attack), side="right")
    return bool(np.asarray(label.values[row, lo:hi]).any())


def run_demo(
    detector: str = "stl",
    n_contexts: int = 200,
    n_days: int = 28,
    history_days: int | None = None,
    device: str = "auto",
    seed: int = 7,
    contamination: float = 0.001,
) -> DemoResult:
    """Generate, fit on the first ``history_days``, score the rest, and compare alerts with the attacks.

    ``history_days`` defaults to ``n_days - SCORED_DAYS``, so the last week is scored whatever
    ``n_days`` is (21 days of history for the default 28). Attacks only start after the history.

    Raises
    ------
    ValueError
        When ``history_days`` leaves no day to fit on or none to score.
    """
    if history_days is None:
        history_days = n_days - SCORED_DAYS
    if not 1 <= history_days < n_days:
        raise ValueError(
            f"need 1 <= history_days < n_days (a day to fit on and one to score), "
            f"got history_days={history_days} and n_days={n_days}"
        )
    started = time.perf_counter()
    data = make_security_panel(n_contexts=n_contexts, n_days=n_days, seed=seed, clean_days=history_days)
    split_at = data.index[0] + pd.Timedelta(days=history_days)
    history, new = data.split(split_at)
    tables = []
    for metric in METRICS:
        det = make_detector(detector, device=device, contamination=contamination)
        det.fit(history.panels[metric])
        alerts = det.alerts(new.panels[metric])
        alerts.insert(2, "metric", metric)
        tables.append(alerts)
    alerts = pd.concat(tables, ignore_index=True).sort_values("peak_score", ascending=False, kind="stable")
    alerts = alerts.reset_index(drop=True)
    attacks = new.attacks.reset_index(drop=True)
    alert_hit, attack_found = match_alerts(alerts, attacks, ["country", "asn"], labels=new.labels)
    alerts["attack"] = alert_hit
    precision = float(alert_hit.mean()) if len(alerts) else float("nan")
    recall = float(attack_found.mean()) if len(attacks) else float("nan")
    attacks = attacks.assign(found=attack_found)
    return DemoResult(alerts, attacks, precision, recall, time.perf_counter() - started)


def print_demo(result: DemoResult, top: int = 15) -> None:
    """Print the top alerts, the attacks found per kind, and precision/recall."""
    columns = ["country", "asn", "metric", "start", "end", "peak_score", "attack"]
    extra = [c for c in ("expected", "observed", "score_kind") if c in result.alerts.columns]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 2):
        print(f"Top {min(top, len(result.alerts))} of {len(result.alerts)} alerts:")
        print(result.alerts[columns + extra].head(top).to_string(index=False))
        print()
        if len(result.attacks):
            per_kind = result.attacks.groupby("kind")["found"].agg(["sum", "count"])
            per_kind.columns = ["found", "injected"]
            print("Injected attacks found, by kind:")
            print(per_kind.to_string())
        else:
            # About 15% of the contexts receive an attack: a handful of contexts may get none.
            print("No attack was injected into so few contexts: run with more --contexts (10 or more).")
    print()
    print(
        f"precision {_share(result.precision)} (alerts that cover a bucket an injected attack changed), "
        f"recall {_share(result.recall)} (attacks with an alert on a bucket they changed); {result.seconds:.1f} s"
    )


def _share(value: float) -> str:
    """A precision or recall for the console: "n/a" where nothing was there to count (NaN)."""
    return "n/a" if np.isnan(value) else f"{value:.2f}"
