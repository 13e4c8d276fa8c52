"""Accuracy of the detectors on labelled benchmark data (NAB, UCR), one protocol for all.

Protocol, the same for every detector and file (defaults are chosen from
principles, never per file):

1. the series' dominant period ``p`` is estimated from its training part
   (:func:`tsanomaly.periods.estimate_period`);
2. a long series is averaged in blocks of ``f`` points so that a period keeps
   at least ``MIN_POINTS_PER_PERIOD`` points and the series at most
   ``max_points`` (UCR's tolerance of 100 points leaves room for this); scores
   are repeated back to full resolution;
3. each detector is built with defaults derived from ``p`` (:func:`make_benchmark_detector`),
   fitted on the training part (UCR: ``train_end``; NAB: the probationary 15%),
   and scores the rest; the training part is never scored;
4. metrics on the scored part: AUC-ROC, AUC-PR, VUS-PR and range-based F1
   (of the detector's own calibrated flags) per file, averaged over files;
   NAB's standard score over the corpus (threshold swept, as NAB does); UCR's
   top-1 accuracy.
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsanomaly import metrics
from tsanomaly.panel import Panel
from tsanomaly.periods import estimate_period

__all__ = [
    "BENCHMARK_DETECTORS",
    "PUBLISHED_ANCHORS",
    "make_benchmark_detector",
    "score_series",
    "evaluate",
    "format_markdown",
]

#: Detectors the report runs, by short name (see tsanomaly.detectors.make_detector).
BENCHMARK_DETECTORS = ("baseline", "stl", "mp", "lstm", "ensemble")

#: Fewest points per period after block averaging.
MIN_POINTS_PER_PERIOD = 16

#: Published figures quoted in ../shared/data/README.md, shown beside ours.
PUBLISHED_ANCHORS = {
    "nab": "NAB standard score (58 series): HTM 70.5, CAD OSE 69.9, Skyline 58.2, Twitter ADVec 47.1, "
    "Windowed Gaussian 39.6, Random 11.0; per-file mean AUC-ROC (TSB-UAD): matrix profile 0.49, LSTM 0.50, "
    "isolation forest 0.70",
    "ucr": "UCR top-1 accuracy (full 250 files): multi-window matrix profile 52.8%, DeepSAD 64.8%, "
    "KDD Cup 2021 5th place 83.6%; matrix-profile discord AUC-ROC 0.867 (TSB-UAD)",
}


def make_benchmark_detector(name: str, period: int, n_train: int, device: str = "auto"):
    """A detector with defaults derived from the series' period (the same rule on every file).

    Parameters
    ----------
    name : str
        ``"baseline"``, ``"stl"``, ``"mp"``, ``"lstm"`` or ``"ensemble"`` (of the other four).
    period : int
        Dominant period in samples (after block averaging).
    n_train : int
        Length of the training part; windows never exceed a third of it.
    """
    from tsanomaly.detectors import make_detector

    window = int(max(4, min(period, n_train // 3)))
    if name == "baseline":
        return make_detector("baseline", window=5, seasonal_period=window, min_periods=2, device=device)
    if name == "stl":
        return make_detector("stl", periods=max(2, window), device=device)
    if name == "mp":
        return make_detector("mp", window=window, device=device)
    if name == "lstm":
        return make_detector("lstm", window=min(window, 64), device=device, seed=0)
    if name == "ensemble":
        members = [make_benchmark_detector(m, period, n_train, device) for m in ("baseline", "stl", "mp")]
        return make_detector("ensemble", detectors=members, device=device)
    raise ValueError(f"unknown detector {name!r}; choose from {BENCHMARK_DETECTORS}")


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return x
    n_blocks = math.ceil(x.size / factor)
    padded = np.full(n_blocks * factor, np.nan)
    padded[: x.size] = x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block stays NaN
        return np.nanmean(padded.reshape(n_blocks, factor), axis=1)


@dataclass
class SeriesScores:
    """One detector's scores on one labelled series (full resolution, NaN in the training part)."""

    scores: np.ndarray
    flags: np.ndarray
    period: int
    factor: int
    seconds: float


def score_series(record, name: str, max_points: int = 50_000, device: str = "auto") -> SeriesScores:
    """Fit ``name`` on a labelled series' training part and score the rest (see the module protocol).

    Parameters
    ----------
    record : tsanomaly.datasets.LabelledSeries
    name : str
        Detector short name.
    max_points : int
        Longest series a detector sees; longer ones are block-averaged.
    """
    started = time.perf_counter()
    values = np.asarray(record.values, dtype=np.float64)
    n, train_end = values.size, int(record.train_end)
    full_period = estimate_period(values[:train_end])
    factor = max(1, min(full_period // MIN_POINTS_PER_PERIOD, math.ceil(n / max_points)))
    if math.ceil(n / factor) > max_points:
        factor = math.ceil(n / max_points)
    reduced = _block_mean(values, factor)
    reduced_train = max(1, train_end // factor)
    period = max(2, int(round(full_period / factor)))
    history = Panel.from_array(reduced[:reduced_train], contexts=[record.name])
    new = Panel.from_array(reduced[reduced_train:], contexts=[record.name])
    new = Panel(new.values, new.contexts, pd.RangeIndex(reduced_train, reduced.size))
    detector = make_benchmark_detector(name, period, reduced_train, device)
    detector.fit(history)
    new_scores = np.asarray(detector.score(new).to_numpy()[0], dtype=np.float64)
    new_flags = np.asarray(detector.predict(new).to_numpy()[0], dtype=bool)
    reduced_scores = np.concatenate([np.full(reduced_train, np.nan), new_scores])
    reduced_flags = np.concatenate([np.zeros(reduced_train, dtype=bool), new_flags])
    scores = np.repeat(reduced_scores, factor)[:n]
    flags = np.repeat(reduced_flags, factor)[:n]
    scores[:train_end] = np.nan  # the training part is never scored, whatever the block edges
    flags[:train_end] = False
    return SeriesScores(scores, flags, period, factor, time.perf_counter() - started)


def _point_metrics(record, result: SeriesScores) -> dict:
    part = slice(int(record.train_end), None)
    labels, scores, flags = record.labels[part], result.scores[part], result.flags[part]
    row = {"auc_roc": np.nan, "auc_pr": np.nan, "vus_pr": np.nan, "range_f1": np.nan}
    if labels.any() and not labels.all():
        row["auc_roc"] = metrics.auc_roc(labels, scores)
        row["auc_pr"] = metrics.auc_pr(labels, scores)
        row["vus_pr"] = metrics.vus_pr(labels, scores)
        row["range_f1"] = metrics.range_f1(labels, flags)
    return row


@dataclass
class Evaluation:
    """Per-file rows and the per-detector summary of one data set."""

    dataset: str
    per_file: pd.DataFrame
    summary: pd.DataFrame
    notes: list = field(default_factory=list)


def evaluate(records, dataset: str, detectors=BENCHMARK_DETECTORS, max_points: int = 50_000, device: str = "auto", progress=True) -> Evaluation:
    """Run each detector on each labelled series and summarise the metrics.

    Parameters
    ----------
    records : list of tsanomaly.datasets.LabelledSeries
    dataset : {"nab", "ucr"}
        Which extra metric to compute: the NAB score or UCR top-1 accuracy.
    detectors : sequence of str
        Detector short names.
    progress : bool
        Print one line per (detector, file) to stderr.

    Returns
    -------
    Evaluation
    """
    if dataset not in ("nab", "ucr"):
        raise ValueError(f"dataset must be 'nab' or 'ucr', got {dataset!r}")
    rows, nab_files, notes = [], {name: [] for name in detectors}, []
    total = len(records) * len(detectors)
    done = 0
    for name in detectors:
        for record in records:
            done += 1
            try:
                result = score_series(record, name, max_points=max_points, device=device)
            except ImportError as exc:
                notes.append(f"{name}: not run ({exc})")
                break
            row = {"detector": name, "file": record.name, "period": result.period, "factor": result.factor, "seconds": result.seconds}
            row.update(_point_metrics(record, result))
            if dataset == "ucr":
                (start, end), = record.windows
                row["ucr_correct"] = metrics.ucr_correct(np.nan_to_num(result.scores, nan=-np.inf), record.train_end, start, end)
            else:
                nab_files[name].append(record.nab_file(np.nan_to_num(result.scores, nan=-np.inf)))
            rows.append(row)
            if progress:
                print(f"[{done}/{total}] {dataset} {name:9s} {record.name[:48]:48s} {result.seconds:6.1f}s", file=sys.stderr, flush=True)
    per_file = pd.DataFrame(rows)
    summary = per_file.groupby("detector", sort=False).agg(
        files=("file", "count"),
        auc_roc=("auc_roc", "mean"),
        auc_pr=("auc_pr", "mean"),
        vus_pr=("vus_pr", "mean"),
        range_f1=("range_f1", "mean"),
        seconds=("seconds", "sum"),
    )
    if dataset == "ucr":
        summary["top1_accuracy"] = per_file.groupby("detector", sort=False)["ucr_correct"].mean()
    else:
        # NAB's normalisation needs at least one anomaly window in the corpus.
        has_windows = any(len(record.windows) for record in records)
        summary["nab_standard"] = [
            metrics.nab_corpus_score(nab_files[name], profile="standard").score if nab_files[name] and has_windows else np.nan
            for name in summary.index
        ]
    return Evaluation(dataset, per_file, summary.reset_index(), notes)


def format_markdown(evaluations, command: str) -> str:
    """The accuracy report as Markdown: one table per data set, anchors beside, and the command."""
    lines = ["# Accuracy on labelled benchmark data", "", f"Made with: `{command}`", ""]
    for ev in evaluations:
        lines += [f"## {ev.dataset.upper()} ({ev.summary['files'].max() if len(ev.summary) else 0} files)", ""]
        table = ev.summary.copy()
        for column in table.columns:
            if table[column].dtype.kind == "f":
                table[column] = table[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        header = "| " + " | ".join(table.columns) + " |"
        lines += [header, "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        lines += ["", f"Published anchors: {PUBLISHED_ANCHORS[ev.dataset]}.", ""]
        lines += [f"- {note}" for note in ev.notes]
        lines.append("")
    return "\n".join(lines)
