"""Reader for the Numenta Anomaly Benchmark (NAB) and the labelled-series record shared with UCR.

NAB: Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms -- the Numenta Anomaly
Benchmark", ICMLA 2015; data and labels from github.com/numenta/NAB (MIT licence). The folder
layout expected is NAB's own::

    <path>/data/<category>/<name>.csv          columns timestamp,value
    <path>/labels/combined_windows.json        {"<category>/<name>.csv": [[start, end], ...]}

NAB and UCR series have different lengths and time grids, so a reader returns a **list of
records, one single-context Panel each** (:class:`LabelledSeries`), rather than one Panel.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from tsanomaly.io import _first_line
from tsanomaly.panel import Panel

__all__ = ["LabelledSeries", "read_nab"]

NAB_PROBATIONARY_PERCENT = 0.15


@dataclass(frozen=True, eq=False)
class LabelledSeries:
    """One labelled benchmark series: a single-context Panel and its ground truth.

    Attributes
    ----------
    name : str
        The series' name, also the Panel's only context label (NAB: ``"<category>/<file>"``
        without ``.csv``; UCR: the file name without ``.txt.gz``).
    panel : Panel
        Shape (1, n_times), on the host. NaN marks grid points with no observation.
    labels : ndarray of bool, shape (n_times,)
        True inside the anomaly windows.
    windows : list of (int, int)
        Anomaly windows as inclusive 0-based positions on the Panel's grid.
    train_end : int
        Grid positions ``< train_end`` are the training part: UCR's anomaly-free prefix, NAB's
        probationary period (the first 15% of the file's rows, at most 750). Fit on
        ``panel.values[:, :train_end]``, score the rest.
    rows : ndarray of int, shape (n_rows,)
        Grid position of each row of the source file (the identity when the grid is the
        file's rows). Several rows can share a grid point when their timestamps round to it.
    row_windows : list of (int, int)
        The windows as inclusive row numbers of the source file -- the frame NAB scores in.
    """

    name: str
    panel: Panel
    labels: np.ndarray
    windows: list
    train_end: int
    rows: np.ndarray
    row_windows: list

    @property
    def values(self) -> np.ndarray:
        """The series as a 1-D float array, shape (n_times,)."""
        return np.asarray(self.panel.values[0])

    def nab_file(self, scores, probationary_percent: float = NAB_PROBATIONARY_PERCENT):
        """Prepare this series' scores for :func:`tsanomaly.metrics.nab_corpus_score`.

        NAB scores the rows of the source file, so grid scores are read back at each row's
        grid point (``scores[rows]``) and scored against ``row_windows``.

        Parameters
        ----------
        scores : array-like, shape (n_times,) or (1, n_times), or a one-context Panel
            Scores on this record's grid, higher = more anomalous.
        probationary_percent : float, default 0.15

        Returns
        -------
        tsanomaly.metrics.NABFile
        """
        from tsanomaly.metrics import nab_file

        if isinstance(scores, Panel):
            scores = scores.to("cpu").values
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim == 2 and s.shape[0] == 1:
            s = s[0]
        if s.shape != (self.panel.n_times,):
            raise ValueError(
                f"scores of {self.name!r} must have shape ({self.panel.n_times},), got {s.shape}"
            )
        return nab_file(s[self.rows], self.row_windows, probationary_percent=probationary_percent)


def _select(keys: list[str], files, limit, aliases) -> list[str]:
    """Keys picked by ``files`` (names resolved through ``aliases``) then cut to ``limit``."""
    if files is not None:
        if isinstance(files, (str, bytes, int)):
            files = [files]
        chosen = []
        for item in files:
            key = aliases(str(item))
            if key is None:
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                raise ValueError(f"no file named {item!r} in the data set (available: {shown})")
            chosen.append(key)
        keys = list(dict.fromkeys(chosen))
    if limit is not None:
        if int(limit) != limit or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        keys = keys[: int(limit)]
    return keys


def _row_windows(ts: pd.DatetimeIndex, windows, key: str, labels_name: str) -> list[tuple[int, int]]:
    """The windows of ``key`` in the labels file as inclusive row ranges of the file's timestamps ``ts``."""
    where = f"{key}: in {labels_name},"
    if not isinstance(windows, list):
        raise ValueError(f"{where} the windows must be a list of [start, end] pairs, got {windows!r}")
    aware = ts.tz is not None
    out = []
    for pair in windows:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{where} a window must be [start, end], got {pair!r}")
        stamps = []
        for text in pair:
            try:
                stamp = pd.Timestamp(text)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{where} window {pair!r}: {text!r} is not a timestamp ({_first_line(exc)})") from exc
            if pd.isna(stamp):
                raise ValueError(f"{where} window {pair!r}: {text!r} is not a timestamp")
            # pandas cannot compare a timestamp with a timezone to one without (a TypeError): which
            # clock a naive one reads is for the user to say, not for the reader to guess.
            if (stamp.tz is not None) != aware:
                raise ValueError(
                    f"{where} window {pair!r} is {'in ' + str(stamp.tz) if stamp.tz is not None else 'without a timezone'} "
                    f"but the file's timestamps are {'in ' + str(ts.tz) if aware else 'without a timezone'}; "
                    f"write both with a timezone or both without"
                )
            stamps.append(stamp)
        start, end = stamps
        if end < start:
            raise ValueError(f"{where} window {pair!r} ends before it starts")
        i = int(ts.searchsorted(start, side="left"))
        j = int(ts.searchsorted(end, side="right")) - 1
        if j < i:
            raise ValueError(f"{key}: window [{pair[0]}, {pair[1]}] covers no row of the file")
        out.append((i, j))
    order = sorted(range(len(out)), key=out.__getitem__)
    for a, b in zip(order, order[1:]):
        if out[b][0] <= out[a][1]:
            raise ValueError(f"{where} anomaly windows {windows[a]!r} and {windows[b]!r} overlap; merge them into one")
    return sorted(out)


def _timestamps(column: pd.Series, key: str) -> pd.DatetimeIndex:
    """The ``timestamp`` column as a sorted DatetimeIndex; a ValueError naming the file and the row otherwise."""
    try:
        ts = pd.DatetimeIndex(pd.to_datetime(column))
    except (ValueError, TypeError) as exc:
        # pandas names the value but not its row, and mixed UTC offsets are a ValueError too.
        parsed = pd.to_datetime(column, errors="coerce", utc=True)
        bad = np.flatnonzero(parsed.isna().to_numpy() & column.notna().to_numpy())
        if bad.size:
            row = int(bad[0])
            # pandas reads every row in the format it infers from the first one.
            format_note = " in the format of row 0" if row else ""
            raise ValueError(f"{key}: timestamp at row {row} is not a date{format_note}: {column.iloc[row]!r}") from exc
        raise ValueError(
            f"{key}: timestamps mix timezones or UTC offsets ({_first_line(exc)}); write them all in one timezone"
        ) from exc
    missing = np.flatnonzero(ts.isna())
    if missing.size:
        raise ValueError(f"{key}: row {int(missing[0])} has no timestamp")
    if not ts.is_monotonic_increasing:
        row = int(np.flatnonzero(np.diff(ts.asi8) < 0)[0]) + 1
        raise ValueError(
            f"{key}: timestamps are not sorted: row {row} ({ts[row]}) comes before row {row - 1} ({ts[row - 1]}); "
            "sort the file by time"
        )
    return ts.as_unit("ns")


def _numeric_values(column: pd.Series, key: str) -> np.ndarray:
    """The ``value`` column as float64; blank cells are NaN, any other text is an error."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    # errors="coerce" turns text into NaN as well; only cells that read_csv already left empty
    # (or that hold only spaces) are missing values, anything else would be silently dropped.
    text = column.astype("string").str.strip()
    bad = np.isnan(values) & column.notna().to_numpy() & (text != "").fillna(False).to_numpy(dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{key}: value at row {row} is not a number: {column.iloc[row]!r}")
    return values


def _time_grid(ts: pd.DatetimeIndex, values: np.ndarray, key: str):
    """Values on the regular grid of the file's most common step (nearest grid point)."""
    ts = ts.as_unit("ns")
    steps = np.diff(ts.asi8)
    steps = steps[steps > 0]
    if steps.shape[0] == 0:
        raise ValueError(f"{key}: needs at least two distinct timestamps to find the grid step")
    uniq, counts = np.unique(steps, return_counts=True)
    step = int(uniq[np.argmax(counts)])  # most common step; the smallest on ties
    offsets = ts.asi8 - ts.asi8[0]
    rows = np.floor(offsets / step + 0.5).astype(np.int64)
    n_grid = int(rows[-1]) + 1
    total = np.bincount(rows, weights=np.nan_to_num(values), minlength=n_grid)
    count = np.bincount(rows, weights=~np.isnan(values), minlength=n_grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid_values = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)
    index = pd.date_range(ts[0], periods=n_grid, freq=pd.Timedelta(step, unit="ns"), unit="ns")
    return grid_values, index, rows


def _each_file(keys, read_one, on_error) -> list:
    """``read_one(key)`` for each key; with ``on_error``, a file that fails is handed to it and left out."""
    out = []
    for key in keys:
        try:
            out.append(read_one(key))
        except Exception as exc:  # noqa: BLE001 - with on_error, no file's failure ends the reading
            if on_error is None:
                raise
            on_error(key, exc)
    return out


def read_nab(
    path, files: Iterable[str] | None = None, limit: int | None = None, grid: str = "time", on_error=None
) -> list[LabelledSeries]:
    """Read NAB series with their anomaly windows.

    Returns one :class:`LabelledSeries` per data file (series differ in length and step, so
    they are not stacked into one Panel), in sorted order of ``"<category>/<file>"``.

    Parameters
    ----------
    path : str or Path
        The NAB folder holding ``data/`` and ``labels/combined_windows.json``.
    files : iterable of str, optional
        Subset to read, each ``"<category>/<file>.csv"``, the same without ``.csv``, or a bare
        file name when it is unique.
    limit : int, optional
        Read at most this many files (after ``files``).
    grid : {"time", "rows"}, default "time"
        ``"time"``: a regular DatetimeIndex whose step is the file's most common timestamp
        difference; each row goes to the nearest grid point, rows sharing a point are
        averaged, grid points without rows are NaN (NAB's real-traffic files have many gaps
        and jittered timestamps, so their grid can be several times longer than the file).
        ``"rows"``: a RangeIndex over the file's rows, as NAB's own detectors see the data.
    on_error : callable, optional
        Called as ``on_error(file, exception)`` for a data file that cannot be read (its CSV,
        values, timestamps or windows); the file is then left out and the others are read.
        By default the first such error is raised. Errors of the data set as a whole (no
        ``data/`` folder, an unreadable labels file) are always raised.

    Returns
    -------
    list of LabelledSeries
        ``windows`` and ``labels`` on the grid, ``row_windows`` on the file's rows (NAB's
        scoring frame, see :meth:`LabelledSeries.nab_file`), ``train_end`` the end of the
        probationary period: ``min(floor(0.15 * n_rows), 750)`` rows, as a grid position.

    Raises
    ------
    FileNotFoundError
        When ``path`` lacks ``data/`` or the labels file.
    ValueError
        When ``data/`` holds no data file or the labels file is not a JSON object; on an
        unknown file name, a file missing from the labels, a file that is not CSV, bad columns,
        a ``value`` that is not a number (a blank cell is read as missing, NaN), a timestamp
        that is missing or not a date, unsorted timestamps, infinite values, or a window that
        is not a pair of timestamps, has a timezone where the file has none (or the reverse),
        covers no row or overlaps another. Each message names the file.

    Examples
    --------
    >>> series = read_nab("../shared/data/nab", files=["realAdExchange/exchange-2_cpc_results"])  # doctest: +SKIP
    >>> series[0].panel.shape, series[0].windows, series[0].train_end                          # doctest: +SKIP
    """
    if grid not in ("time", "rows"):
        raise ValueError(f"grid must be 'time' or 'rows', got {grid!r}")
    root = Path(path)
    data_dir = root / "data"
    labels_path = root / "labels" / "combined_windows.json"
    layout = "NAB's layout: <path>/data/<category>/<name>.csv and <path>/labels/combined_windows.json"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no NAB data folder at {data_dir} ({layout})")
    if not labels_path.is_file():
        raise FileNotFoundError(f"no NAB labels file at {labels_path} ({layout})")
    try:
        with open(labels_path, encoding="utf-8") as fh:
            all_windows = json.load(fh)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{labels_path}: not valid JSON ({_first_line(exc)})") from exc
    if not isinstance(all_windows, dict):
        raise ValueError(
            f'{labels_path}: expected a JSON object {{"<category>/<name>.csv": [[start, end], ...]}}, '
            f"got a {type(all_windows).__name__}"
        )
    keys = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.csv"))
    if not keys:
        # An empty list would reach the caller as an empty report (or a KeyError in its summary).
        raise ValueError(f"no NAB data file in {data_dir}: expected <category>/<name>.csv files in it")
    by_base: dict[str, list[str]] = {}
    for k in keys:
        by_base.setdefault(k.rsplit("/", 1)[-1], []).append(k)

    def alias(item: str):
        item = item if item.endswith(".csv") else item + ".csv"
        if item in keys:
            return item
        matches = by_base.get(item, [])
        return matches[0] if len(matches) == 1 else None

    def read_one(key):
        if key not in all_windows:
            raise ValueError(f'{key} has no entry in {labels_path}; add "{key}": [] (no anomaly) or its windows')
        try:
            frame = pd.read_csv(data_dir / key)
        except ValueError as exc:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{key}: not a readable CSV file ({_first_line(exc)}); NAB files have timestamp,value rows") from exc
        missing = {"timestamp", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"{key}: missing column(s) {sorted(missing)}; NAB files have timestamp,value")
        if frame.shape[0] == 0:
            raise ValueError(f"{key}: the file has no rows")
        ts = _timestamps(frame["timestamp"], key)
        values = _numeric_values(frame["value"], key)
        if np.isinf(values).any():
            raise ValueError(f"{key}: infinite value at row {int(np.flatnonzero(np.isinf(values))[0])}")
        row_windows = _row_windows(ts, all_windows[key], key, labels_path.name)
        n_rows = ts.shape[0]
        if grid == "time":
            grid_values, index, rows = _time_grid(ts, values, key)
        else:
            grid_values, index, rows = values, pd.RangeIndex(n_rows), np.arange(n_rows)
        windows = [(int(rows[i]), int(rows[j])) for i, j in row_windows]
        labels = np.zeros(index.shape[0], dtype=bool)
        for a, b in windows:
            labels[a : b + 1] = True
        probation = int(min(np.floor(NAB_PROBATIONARY_PERCENT * n_rows), NAB_PROBATIONARY_PERCENT * 5000))
        train_end = int(rows[probation]) if probation < n_rows else index.shape[0]
        name = key[: -len(".csv")]
        panel = Panel(grid_values[None, :], pd.Index([name]), index)
        return LabelledSeries(name, panel, labels, windows, train_end, rows, row_windows)

    return _each_file(_select(keys, files, limit, alias), read_one, on_error)
