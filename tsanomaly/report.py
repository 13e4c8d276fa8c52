"""A self-contained HTML report of alerts, for the analyst who must see why an alert fired.

One page, no external resources (styles inline, plots embedded as base64 PNG),
so it can be mailed, attached to a ticket or opened offline:

- a summary: per model, the metric, the detector, contexts scored (those with
  at least one finite score), alerts, contexts unseen at fit; totals across models;
- a table of the top alerts;
- for each top alert, a plot of the context's series (with the recent history
  in grey when it is given) and, under it, its scores against the threshold.
  The plot shows the **expected value band** — the detector's own expected
  value where it explains one (``expected``; for the STL detector
  ``expected`` or ``trend + seasonal``; for an ensemble, its first member's),
  else the median of the same time of day in the preceding days (or a rolling
  median of the preceding points, whichever fits the series better) — widened
  by three robust standard deviations of the residual (of the history's, when the
  scored span has too few points: a daily job's one new day); the **anomalous span**
  shaded in red; and, for the matrix-profile detector, the alert's **nearest-neighbour window** shaded in purple (the
  most similar earlier stretch: a large distance to it is what made the alert).

Rendering uses matplotlib's Agg canvas directly, never pyplot, so building a
report does not change the backend of a notebook that imports tsanomaly.
Every label that comes from data is HTML-escaped: context names are attacker
controlled (a user agent, an app version) and the report must not run them.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _io
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsanomaly.base import ALERT_COLUMNS, _context_names, check_column_names
from tsanomaly.jobs import JOB_ALERT_COLUMNS, count_absent
from tsanomaly.panel import Panel, step_duration
from tsanomaly.scaling import MAD_TO_SIGMA

__all__ = [
    "BAND_SIGMAS",
    "ReportSection",
    "expected_values",
    "neighbour_column",
    "plot_alert",
    "render_report",
    "times_in_utc",
    "top_alerts",
]

#: Cycles whose same phase gives the expected value of a detector that explains none.
SEASONAL_CYCLES = 7
#: Half-width of the expected-value band, in robust standard deviations of the residual.
BAND_SIGMAS = 3.0

#: Columns of an alert that are not explanations (shown in their own places).
_ALERT_BASE_COLUMNS = ALERT_COLUMNS + JOB_ALERT_COLUMNS

# Points of recent history drawn before the scored data, at most.
_MAX_HISTORY_POINTS = 24 * 14
# Points of the scored data drawn around an alert, at least this many when there are more.
_MAX_PLOT_POINTS = 24 * 10
# Series of at most this many points are drawn with a marker at every point.
_MARKED_POINTS = 60
# Residuals the band's σ needs from the scored span before the history's are used instead.
_MIN_BAND_POINTS = 8


@dataclass
class ReportSection:
    """Everything the report needs about one model's scoring of one input.

    Attributes
    ----------
    detector : BaseDetector
        Fitted.
    panel, scores : Panel
        The scored data and its scores (host arrays, same axes).
    alerts : pandas.DataFrame
        ``detector.alerts(panel)``, most anomalous first, with the boolean ``cold_start``
        column of the scoring jobs (the alert's context was unseen at fit: tagged "new context").
    context_columns : list
        Names of the context columns of ``alerts``: the context levels' names, ``"context"``
        for a single unnamed level, the level's position for an unnamed level of a MultiIndex
        (as :meth:`BaseDetector.alerts` names them).
    value : str
        The metric's name (the value column).
    name : str
        How the report names this model (its file name).
    unseen : pandas.DataFrame
        Contexts unseen at fit with a ``status`` column (may be empty).
    n_absent : int
        Fitted contexts with no data in the input.
    history : Panel, optional
        Data before ``panel`` (the history the model was fitted on), drawn in grey.
    times_in : str, optional
        The zone the times of a naive grid are in, when known, stated on the page: ``"UTC"``
        where the input's time column had a time zone or UTC offsets, which ``Panel.from_frame``
        reads as naive UTC instants on grids finer than a day (:func:`times_in_utc` tells).
        A zoned grid names its own zone; a naive one without it is shown as written.
    clock : str, optional
        The zone whose clock shows the times of a naive UTC grid: the hourly grid of a job
        fitted with ``--tz`` (``tsanomaly.jobs.JobColumns.tz``), whose alerts (``alerts``,
        zone-aware) and files are on that clock. Its plots, notes and span are then drawn and
        written on it as a zoned grid's are, and the page names it.
    """

    detector: object
    panel: Panel
    scores: Panel
    alerts: pd.DataFrame
    context_columns: list
    value: str = "value"
    name: str = "model"
    unseen: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"status": []}))
    n_absent: int = 0
    history: Panel | None = None
    times_in: str | None = None
    clock: str | None = None

    @classmethod
    def from_result(cls, result, name: str = "model", history: Panel | None = None,
                    times_in: str | None = None, clock: str | None = None) -> "ReportSection":
        """Build from a :class:`tsanomaly.jobs.ScoreResult`."""
        return cls(
            detector=result.detector,
            panel=result.panel,
            scores=result.scores,
            alerts=result.alerts,
            context_columns=list(result.columns.context),
            value=result.columns.value,
            name=name,
            unseen=result.unseen,
            n_absent=result.n_absent,
            history=history,
            times_in=times_in,
            clock=clock,
        )

    @classmethod
    def from_detector(cls, detector, panel: Panel, name: str | None = None, value: str = "value", history=None):
        """Score ``panel`` with a fitted detector and build the section (for notebooks and examples).

        Parameters
        ----------
        detector : BaseDetector
            Fitted.
        panel : Panel
            The data to score, on a time axis of timestamps.
        name : str, optional
            How the report names this model; the detector's class name by default.
        value : str, default "value"
            The metric's name.
        history : Panel, optional
            Data before ``panel``, drawn in grey; on a time axis of timestamps too.

        Raises
        ------
        ValueError
            When ``panel`` or ``history`` has no time axis of timestamps (a Panel built by
            ``Panel.from_array`` counts its steps 0, 1, 2...): the report draws and names
            times. When a context column is named ``cold_start``, the column added to the
            alerts (see ``alerts`` above). Both checked before scoring.
        """
        _check_time_axis(panel, "the scored panel")
        if history is not None:
            _check_time_axis(history, "the history")
        # The names alerts() gives its context columns (one rule, written once): an unnamed level of
        # a MultiIndex is named by its position there, and guessing "context" for it made the
        # report look up a column the alerts do not have (KeyError).
        columns = _context_names(panel.contexts)
        # The alerts get a cold_start column below, as the scoring jobs write it: a context column
        # of that name would be overwritten. Refused before the scoring, which can take long.
        check_column_names({"context column": columns}, ("cold_start",), "the report's alerts",
                           "rename it before building the Panel")
        scores = detector.score(panel)
        alerts = detector.alerts(panel, scores=scores)
        rows = detector.context_rows(panel)
        unseen_rows = rows < 0
        unseen = panel.contexts[unseen_rows].to_frame(index=False)
        unseen.columns = columns
        has = np.isfinite(scores.to_numpy()[unseen_rows]).any(axis=1) if unseen_rows.any() else np.zeros(0, bool)
        unseen["status"] = np.where(has, "cold_start", "skipped")
        # What the report reads to tag an alert "new context" (the scoring jobs' column): without
        # it, an alert of a context unseen at fit looked like any other.
        alerts["cold_start"] = unseen_rows[panel.contexts.get_indexer(_alert_contexts(alerts, columns))]
        n_absent = count_absent(detector, rows)  # the scoring jobs' count, ScoreResult.n_absent
        return cls(
            detector=detector,
            panel=panel.to("cpu"),
            scores=scores.to("cpu"),
            alerts=alerts,
            context_columns=columns,
            value=value,
            name=name or type(detector).__name__,
            unseen=unseen,
            n_absent=n_absent,
            history=history,
        )

    @property
    def detector_name(self) -> str:
        return type(self.detector).__name__

    @property
    def zone_shown(self) -> str | None:
        """The zone of the times this section shows: its grid's, else :attr:`clock`, else :attr:`times_in`
        (None: unknown)."""
        zone = getattr(self.panel.index, "tz", None)
        return str(zone) if zone is not None else self.clock or self.times_in


def times_in_utc(column: pd.Series, index: pd.Index) -> bool:
    """Whether a grid built from time ``column`` shows its times in UTC without saying so.

    ``Panel.from_frame`` reads a column with a time zone or text with UTC offsets as UTC
    instants, and keeps them naive UTC unless the grid is of days or weeks in a zone: an hourly
    column in America/New_York is shown as naive UTC times, which the page must then name.
    True when ``index`` is naive and ``column`` has a zone (UTC included) or its first value is
    text ending in a UTC offset.
    """
    if getattr(index, "tz", None) is not None:
        return False
    if getattr(column.dtype, "tz", None) is not None:
        return True
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        from tsanomaly.panel import _UTC_OFFSET_TEXT

        first = column.dropna()
        if len(first):
            value = first.iloc[0]
            return isinstance(value, str) and bool(_UTC_OFFSET_TEXT.search(value.strip()))
        return False
    # Timestamps that are not text nor datetimes (datetime.datetime objects): aware ones are instants.
    first = column.dropna()
    return bool(len(first)) and isinstance(first.iloc[0], _dt.datetime) and first.iloc[0].tzinfo is not None


def _check_time_axis(panel: Panel, what: str) -> None:
    """Raise ValueError unless ``panel``'s time axis is made of timestamps.

    The report is about *when* an alert fired: it plots against dates and writes
    spans, peaks and neighbour windows as timestamps. A Panel on a time axis of
    positions (``Panel.from_array``'s ``RangeIndex``) failed deep inside the
    plotting ("Converting an integer to a NumPy datetime requires a specified
    unit"), after the scoring, so it is refused up front instead.
    """
    if not isinstance(panel.index, pd.DatetimeIndex):
        raise ValueError(
            f"the report needs a time axis of timestamps, but {what} has a {type(panel.index).__name__} "
            f"(time steps {panel.index[:3].tolist()}...); build the Panel on a pandas.DatetimeIndex, e.g. "
            "Panel(values, contexts, pd.date_range(start, periods=n_times, freq='h')) or Panel.from_frame "
            "with a time column of timestamps"
        )


# ---------------------------------------------------------------------- expected values
def expected_values(detector, panel: Panel, scores: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The detector's expected value at every point of a one-context panel, and how it was obtained.

    Detectors explain an alert with columns computed at its peak
    (``_explain(panel, scores, ctx_rows, peak_pos)``, see ``docs/CONTRACT.md``);
    asking for every position as a "peak" gives the whole expected curve.
    ``expected`` is used when the detector explains it, else ``trend +
    seasonal`` (STL). Detectors without either (the matrix profile compares
    shapes, it has no expected value) give ``(None, reason)``.

    Parameters
    ----------
    detector : BaseDetector
        Fitted.
    panel : Panel
        One context (host), following the fitted history.
    scores : numpy.ndarray, shape (1, n_times)

    Returns
    -------
    expected : numpy.ndarray of shape (n_times,) or None
    how : str
        A short description for the plot's legend.
    """
    names = set(getattr(type(detector), "explanation_columns", ()))
    if "expected" not in names and not {"trend", "seasonal"} <= names:
        # An ensemble explains its members' scores, not an expected value; its first member that
        # has one gives the band (the default ensemble's baseline and STL both do).
        for member, label in _fitted_members(detector):
            expected, how = expected_values(member, panel, scores)
            if expected is not None:
                return expected, f"{label}'s expected value" if how == "detector's expected value" else f"{label}'s {how}"
        return None, f"{type(detector).__name__} explains no expected value"
    n = panel.n_times
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            columns = detector._explain(panel, scores, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    except Exception as exc:  # noqa: BLE001 - a detector's explanation must never break the report
        return None, f"the detector's explanation failed ({type(exc).__name__})"
    if "expected" in columns:
        expected, how = columns["expected"], "detector's expected value"
    elif "trend" in columns and "seasonal" in columns:
        expected, how = np.asarray(columns["trend"], float) + np.asarray(columns["seasonal"], float), "trend + seasonal"
    else:
        return None, "the detector's explanation has no expected value"
    expected = np.asarray(expected, dtype=np.float64).reshape(-1)
    if expected.shape != (n,) or not np.isfinite(expected).any():
        return None, "the detector's expected value is unusable"
    return expected, how


def _fitted_members(detector) -> list:
    """``(member, label)`` of a fitted ensemble's members, in order; ``[]`` for other detectors."""
    members = getattr(detector, "members_", None)
    if not isinstance(members, list):
        return []
    from tsanomaly.detectors.ensemble import _member_labels

    return list(zip(members, _member_labels(members)))


def _seasonal_expected(series: np.ndarray, n_new: int, period: int) -> np.ndarray:
    """Median of the points one to :data:`SEASONAL_CYCLES` periods before each of the last ``n_new`` points.

    Causal and NaN-aware; NaN where fewer than two of those points are observed.
    """
    n = len(series)
    lagged = np.full((SEASONAL_CYCLES, n_new), np.nan)
    for k in range(1, SEASONAL_CYCLES + 1):
        positions = np.arange(n - n_new, n) - k * period
        ok = positions >= 0
        lagged[k - 1, ok] = series[positions[ok]]
    enough = np.isfinite(lagged).sum(axis=0) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: not enough, NaN anyway
        return np.where(enough, np.nanmedian(lagged, axis=0), np.nan)


def _calendar_period(step) -> int:
    """Steps in a day for a grid finer than a day that divides it, 7 for a daily grid, else 0.

    The calendar, not an estimate: a period estimated from a few weeks of small counts came
    out at 23 or 25 hours for one hourly series in four, and seven cycles of 25 hours put
    the "same phase" seven hours off.
    """
    if step is None or pd.Timedelta(step) <= pd.Timedelta(0):
        return 0
    step, day = pd.Timedelta(step), pd.Timedelta(days=1)
    if step < day and day % step == pd.Timedelta(0):
        return int(day // step)
    return 7 if step == day else 0


def _robust_spread(series: np.ndarray, expected: np.ndarray) -> float:
    """Robust σ of ``series - expected`` on the band's scale (:func:`_band_scale`); inf with too few points."""
    _, forward, _, centre = _band_scale(series, expected)
    with np.errstate(invalid="ignore"):
        residual = forward(series) - centre
    residual = residual[np.isfinite(residual)]
    return _mad_sigma(residual) if residual.size >= 8 else np.inf


def _band_scale(observed: np.ndarray, expected: np.ndarray):
    """``(counts, forward, inverse, centre)``: the scale a band is drawn on, and its centre there.

    Counts (no negative value, expected value included) get their band on the log(1 + x)
    scale: their noise grows with their level, so a band as wide at 3 am as at the daily peak
    would be too wide at night and too narrow by day. Other data get a band of constant width.
    """
    counts = np.nanmin(observed, initial=0.0) >= 0 and np.nanmin(expected, initial=0.0) > -0.5
    forward, inverse = (np.log1p, np.expm1) if counts else (_same, _same)
    return counts, forward, inverse, forward(np.maximum(expected, 0.0) if counts else expected)


def _same(values):
    return values


def _mad_sigma(values: np.ndarray) -> float:
    """1.4826 x the MAD of finite ``values`` (at least one)."""
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def _fallback_expected(series: np.ndarray, n_new: int, step) -> tuple[np.ndarray, str]:
    """Expected values for a detector that explains none, from the series alone (causal).

    The median of the same time of day in the preceding days (of the same weekday, for a
    daily grid), or a rolling median of the preceding points, whichever leaves the smaller
    robust spread over the whole series: hourly counts have a daily cycle, and a median of
    the last hours puts 3 am and the daily peak in one band. The first one or two cycles,
    which have too few earlier ones, take the rolling median.

    Parameters
    ----------
    series : numpy.ndarray, shape (n,)
        The context's history, then its scored points.
    n_new : int
        Scored points, at the end of ``series``.
    step : pandas.Timedelta or None
        The grid's step.

    Returns
    -------
    expected : numpy.ndarray, shape (n_new,)
    how : str
        The rule used, for the plot's legend.
    """
    window = int(min(48, max(5, len(series) // 6)))
    rolling = _rolling_expected(series, len(series), window)
    candidates = [(rolling, f"rolling median of the {window} preceding points")]
    period = _calendar_period(step)
    seasonal = _seasonal_expected(series, len(series), period) if period > 1 else np.full(len(series), np.nan)
    if np.isfinite(seasonal[len(series) - n_new:]).any():
        same = "weekday in up to {} preceding weeks" if period == 7 else "time of day in up to {} preceding days"
        # Filled with the rolling median where fewer than two earlier cycles are observed.
        seasonal = np.where(np.isfinite(seasonal), seasonal, rolling)
        candidates.append((seasonal, "median of the same " + same.format(SEASONAL_CYCLES)))
    spreads = [_robust_spread(series, expected) for expected, _ in candidates]
    expected, how = candidates[int(np.argmin(spreads))]  # a tie keeps the rolling median
    return expected[len(series) - n_new:], how


def _history_on_the_grid(values: np.ndarray, index: pd.DatetimeIndex, first_scored, freq) -> np.ndarray:
    """A context's history followed by NaN for the steps missing before the first scored time.

    The fallback's expected values count steps back from the scored points, so a gap between
    the history and the scored data must be kept as missing points; a history off the scored
    grid (``first_scored`` not a whole number of steps ``freq`` after it, counted on the grid,
    so on the wall clock for days in a time zone) is left out.
    """
    if not len(index) or freq is None:
        return values
    last, first = pd.Timestamp(index[-1]), pd.Timestamp(first_scored)
    # A gap longer than the fallback ever reaches back (7 days of 5-minute steps) leaves it out too;
    # a calendar step (months) has no fixed duration to bound it by, but few steps fit in a span.
    reach = SEASONAL_CYCLES * 288
    step = step_duration(freq)
    if not last < first or (step is not None and (first - last) > (reach + 1) * step + pd.Timedelta(hours=2)):
        return values[:0]
    between = pd.date_range(last, first, freq=freq)
    # Both ends on the grid: date_range rolls a start off an anchored grid (a Wednesday, weeks on Sunday).
    if len(between) < 2 or between[0] != last or between[-1] != first or len(between) - 2 > reach:
        return values[:0]
    return np.concatenate([values, np.full(len(between) - 2, np.nan)])


def _drawn_times(index: pd.DatetimeIndex) -> np.ndarray:
    """The grid's times as naive UTC datetime64, as NumPy compares them and matplotlib draws them."""
    return np.asarray(index.tz_convert(None) if index.tz is not None else index)


def _rolling_expected(series: np.ndarray, n_new: int, window: int) -> np.ndarray:
    """Median of the ``window`` points before each of the last ``n_new`` points (causal, NaN-aware)."""
    s = pd.Series(series)
    med = s.rolling(window, min_periods=max(3, window // 3)).median().shift(1)
    return med.to_numpy()[-n_new:]


def _span(alert, half) -> tuple[pd.Timestamp, pd.Timestamp]:
    """An alert's span widened by half a step on each side, so a one-point alert is a visible band."""
    return pd.Timestamp(alert["start"]) - half, pd.Timestamp(alert["end"]) + half


def _x_limits(t_hist: np.ndarray, t_new: np.ndarray, half: pd.Timedelta) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The plot's x range: from the first drawn point (history, else scored) to the last, half a step beyond each."""
    first = pd.Timestamp(t_hist[0] if len(t_hist) else t_new[0])
    last = pd.Timestamp(t_new[-1])
    pad = half if half > pd.Timedelta(0) else pd.Timedelta(hours=1)  # one point and no step: still a range
    return first - pad, last + pad


def _plot_window(n: int, start: int, end: int, width: int) -> tuple[int, int]:
    """[lo, hi) of at most ``width`` points (more if the alert is longer) centred on positions start..end."""
    width = max(width, end - start + 1 + 48)
    if n <= width:
        return 0, n
    lo = max(0, (start + end) // 2 - width // 2)
    hi = min(n, lo + width)
    return max(0, hi - width), hi


def _history_sigma(history: np.ndarray, step, counts: bool, forward) -> tuple[float, str]:
    """Robust σ of a context's history about the fallback's causal median of it, on the band's scale.

    ``(nan, how)`` with fewer than :data:`_MIN_BAND_POINTS` residuals.
    """
    expected, how = _fallback_expected(history, len(history), step)
    with np.errstate(invalid="ignore"):
        residual = forward(history) - forward(np.maximum(expected, 0.0) if counts else expected)
    if np.isfinite(residual).sum() < _MIN_BAND_POINTS:
        return float("nan"), how
    return _robust_sigma(residual), how


def _isolated(values: np.ndarray) -> np.ndarray:
    """Finite points whose neighbours on both sides are missing (or absent): a line draws nothing there."""
    finite = np.isfinite(values)
    before = np.concatenate([[False], finite[:-1]])
    after = np.concatenate([finite[1:], [False]])
    return finite & ~before & ~after


def _markers(values: np.ndarray) -> dict:
    """Marker keywords for ``ax.plot``: every point of a short series, only the isolated ones of a long one."""
    if len(values) <= _MARKED_POINTS:
        return {"marker": "o", "ms": 3.0}
    alone = _isolated(values)
    return {"marker": "o", "ms": 3.0, "markevery": alone} if alone.any() else {}


def _robust_sigma(residual: np.ndarray) -> float:
    """1.4826 x MAD of the finite residuals; the standard deviation when the MAD is 0 (sparse counts)."""
    r = residual[np.isfinite(residual)]
    if r.size < 2:
        return float("nan")
    sigma = _mad_sigma(r)
    if sigma == 0.0:
        sigma = float(np.std(r))
    return sigma


# ---------------------------------------------------------------------- matrix-profile neighbour
def neighbour_column(detector) -> str | None:
    """Name of the explanation column that gives an alert's nearest-neighbour (start) time, or None.

    The matrix-profile detector explains an alert by the earlier window most
    similar to it (``neighbour_start`` / ``neighbour_time``: its first and last
    points). A column counts when its name contains "neighbo" (neighbour or
    neighbor), starts with "nn" or contains "match"; among several, the one
    naming the start. Detectors without one give None.
    """
    names = _neighbour_columns(detector)
    starts = [n for n in names if "start" in n.lower()]
    return (starts or names or [None])[0]


def _neighbour_columns(detector) -> list[str]:
    found = []
    for name in getattr(type(detector), "explanation_columns", ()):
        low = name.lower()
        if "neighbo" in low or low.startswith("nn") or "match" in low:
            found.append(name)
    return found


def _neighbour_end_column(detector, start_column: str) -> str | None:
    """The column naming the neighbour window's last point, when the detector gives one."""
    others = [n for n in _neighbour_columns(detector) if n != start_column]
    ends = [n for n in others if "end" in n.lower() or "time" in n.lower()]
    return ends[0] if ends else None


def _naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index.tz_convert(None) if index.tz is not None else index


def _alert_in_utc(alert):
    """An alert (Series) or alerts table (DataFrame) with every zoned time as a naive UTC one."""
    alert = alert.copy()
    if isinstance(alert, pd.DataFrame):
        for name in alert.columns:
            if isinstance(alert[name].dtype, pd.DatetimeTZDtype):
                alert[name] = alert[name].dt.tz_convert(None)
        return alert
    for name, value in alert.items():
        if isinstance(value, pd.Timestamp) and value.tz is not None:
            alert[name] = value.tz_convert(None)
    return alert


def _in_zone(stamp, zone) -> pd.Timestamp:
    """A naive UTC time (as drawn) in ``zone``'s wall clock; as it is without a zone or when already zoned."""
    stamp = pd.Timestamp(stamp)
    return stamp.tz_localize("UTC").tz_convert(zone) if zone is not None and stamp.tz is None else stamp


def _as_timestamp(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64, _dt.datetime, str)):
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            return None
        return None if pd.isna(stamp) else stamp
    return None


def _window_length(detector) -> int | None:
    params = detector.get_params()
    for key in ("window", "m", "window_size"):
        value = params.get(key)
        if isinstance(value, (int, np.integer)) and value > 0:
            return int(value)
    return None


# ---------------------------------------------------------------------- plotting
def _literal(text) -> str:
    """``text`` for a matplotlib label, shown as it is.

    Matplotlib reads the part of a label between two dollar signs as mathtext: a value column
    named ``a$^$b`` or ``$x_{$`` made the plot fail with a parse error, and ``$x$`` came
    out as an italic x. An escaped dollar sign (``\\$``) is drawn as a plain one.

    Matplotlib also leaves out of the legend every artist whose label starts with an
    underscore (its mark for "no label"): a value column named ``_fails`` lost the series'
    entry. Such a label is prefixed with a zero-width space, which draws nothing.
    """
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _alert_contexts(alerts: pd.DataFrame, columns) -> pd.Index:
    """The context of each alert (one row each) as an index comparable with the panel's contexts."""
    if len(columns) == 1:
        return pd.Index(alerts[columns[0]])
    return pd.MultiIndex.from_frame(alerts[list(columns)])


def _context_key(alert: pd.Series, columns) -> object:
    values = tuple(alert[c] for c in columns)
    return values[0] if len(values) == 1 else values


def _same_context(alerts: pd.DataFrame, alert: pd.Series, columns) -> np.ndarray:
    """Which rows of ``alerts`` are of ``alert``'s context, a missing label (NaN, None) equal to itself.

    ``==`` never matches NaN: the other alerts of a context whose label is missing were neither
    shaded nor counted, and they widened its band.
    """
    mask = np.ones(len(alerts), dtype=bool)
    for col in columns:
        value, column = alert[col], alerts[col]
        if pd.api.types.is_scalar(value) and pd.isna(value):
            mask &= column.isna().to_numpy()
        else:
            mask &= (column == value).fillna(False).to_numpy(dtype=bool)
    return mask


def _context_label(key) -> str:
    return " / ".join(str(v) for v in key) if isinstance(key, tuple) else str(key)


def plot_alert(section: ReportSection, alert: pd.Series) -> tuple[bytes, dict]:
    """PNG of one alert's context: series, expected band, anomalous span, neighbour window, scores.

    Returns
    -------
    png : bytes
    notes : dict
        What the plot shows, for its caption (band method, neighbour time...).

    Raises
    ------
    ValueError
        When the section's panel or history has no time axis of timestamps.
    KeyError
        When the alert's context is not in the section's panel.
    """
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_time_axis(section.panel, "the scored panel")
    if section.history is not None:
        _check_time_axis(section.history, "the history")
    notes = {}
    key = _context_key(alert, section.context_columns)
    row = int(section.panel.contexts.get_indexer([key])[0])
    if row < 0:
        raise KeyError(f"context {key!r} of an alert is not in the scored panel")
    one = section.panel.take([row])  # on the fitted grid, for the detector's own expected values
    # A zoned grid is drawn in UTC instants (NumPy and matplotlib compare naive times), labelled
    # in its zone's wall clock below; the panels stay on their grid (in UTC a zoned day grid
    # steps 23 or 25 h at a switch, no Panel's grid).
    zone = section.panel.index.tz
    if zone is None and section.clock is not None:  # a naive UTC grid shown on a zone's clock
        import zoneinfo

        zone = zoneinfo.ZoneInfo(section.clock)
    alerts = section.alerts
    if zone is not None:
        alert, alerts = _alert_in_utc(alert), _alert_in_utc(alerts)
        notes["times"] = f"in {zone} (axis, facts and notes)"
    elif section.times_in is not None:
        notes["times"] = f"in {section.times_in} (axis, facts and notes)"

    def when(stamp) -> pd.Timestamp:
        # A time drawn (naive UTC on a zoned grid) as the notes write it: in the grid's zone, as the
        # alert's own facts beside them are. The notes were in UTC, the facts in the zone, in one table.
        return _in_zone(stamp, zone)
    x_new = one.to_numpy()[0]
    s_new = section.scores.to_numpy()[row]
    t_new = _drawn_times(section.panel.index)
    freq = section.panel.index.freq
    step = step_duration(freq)
    if step is None and section.panel.n_times > 1:
        step = section.panel.index[1] - section.panel.index[0]

    # Recent history of the same context, if given: grey, before the scored data.
    x_hist = np.zeros(0)
    x_before = x_hist  # all of the context's history, which may reach further back than the plot
    t_hist = np.zeros(0, dtype="datetime64[ns]")
    neighbour_col = neighbour_column(section.detector)
    neighbour = _as_timestamp(alert.get(neighbour_col)) if neighbour_col else None
    window = _window_length(section.detector) if neighbour_col else None
    end_col = _neighbour_end_column(section.detector, neighbour_col) if neighbour_col else None
    neighbour_end = _as_timestamp(alert.get(end_col)) if end_col else None
    if section.history is not None:
        hrow = int(section.history.contexts.get_indexer([key])[0])
        if hrow >= 0:
            hist = section.history.time_slice(end=section.panel.index[0] - (step or pd.Timedelta(0)) / 2)
            # As much history as scored data (at least two days of hourly points, at most two weeks):
            # enough to see what normal looked like without squeezing the scored part.
            n_show = min(_MAX_HISTORY_POINTS, max(48, section.panel.n_times))
            start_pos = max(0, hist.n_times - n_show)
            hist_times = _drawn_times(hist.index)
            if neighbour is not None and len(hist_times) and np.datetime64(neighbour) < hist_times[start_pos]:
                # Reach back to show the nearest neighbour, which is what explains the alert.
                start_pos = int(max(0, np.searchsorted(hist_times, np.datetime64(neighbour)) - 12))
            x_hist = hist.to_numpy()[hrow, start_pos:]
            x_before = _history_on_the_grid(hist.to_numpy()[hrow], hist.index, section.panel.index[0], freq)
            t_hist = hist_times[start_pos:]

    # Expected values: the detector's own, else a rolling median of the preceding points.
    expected, how = expected_values(section.detector, one, s_new[None, :])
    if expected is None:
        expected, fallback = _fallback_expected(np.concatenate([x_before, x_new]), len(x_new), step)
        how = f"{fallback} ({how})"
    # The band's width comes from the residual outside every alert of this context: the
    # anomalies themselves must not widen the band that is meant to show what is normal.
    same = alerts[_same_context(alerts, alert, section.context_columns)]
    in_alerts = np.zeros(len(t_new), dtype=bool)
    for start, end in zip(same["start"], same["end"]):
        in_alerts |= (t_new >= np.datetime64(start)) & (t_new <= np.datetime64(end))
    counts, forward, inverse, centre = _band_scale(np.concatenate([x_hist, x_new]), expected)
    with np.errstate(invalid="ignore"):
        residual = np.where(in_alerts, np.nan, forward(x_new) - centre)
    sigma = _robust_sigma(residual)
    sigma_from = "the residual outside alerts"
    if np.isfinite(residual).sum() < _MIN_BAND_POINTS and len(x_before):
        # A daily job's one new day, or a few points: too few residuals for a robust σ (none at all
        # with fewer than two; the caption said "σ = nan"). The history's residual about a causal
        # median of itself gives the scale of the context's noise instead.
        hist_sigma, hist_how = _history_sigma(x_before, step, counts, forward)
        if np.isfinite(hist_sigma):
            sigma = hist_sigma
            sigma_from = f"the history's residual about its {hist_how} (too few scored points outside alerts)"

    # Weeks of scored points would squeeze the alert into a few pixels: show a window around it
    # (the band above was still estimated on the whole scored span).
    span_pos = np.flatnonzero((t_new >= np.datetime64(alert["start"])) & (t_new <= np.datetime64(alert["end"])))
    lo, hi = _plot_window(len(t_new), int(span_pos[0]), int(span_pos[-1]), _MAX_PLOT_POINTS)
    if lo > 0 or hi < len(t_new):
        notes["shown"] = f"{when(t_new[lo])} – {when(t_new[hi - 1])} of the scored span"
        if lo > 0:  # the history no longer touches the plotted part
            x_hist, t_hist = x_hist[:0], t_hist[:0]
        x_new, s_new, t_new = x_new[lo:hi], s_new[lo:hi], t_new[lo:hi]
        expected, centre = expected[lo:hi], centre[lo:hi]
    scale = " on the log(1 + x) scale" if counts else ""
    if np.isfinite(sigma):
        notes["band"] = f"{how} ± {BAND_SIGMAS:g} robust σ of {sigma_from}{scale} (σ = {sigma:.3g})"
    else:
        notes["band"] = f"{how}; no band: too few points to estimate its width"

    fig = Figure(figsize=(10.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax_s = fig.add_subplot(grid[1], sharex=ax)
    half = (step or pd.Timedelta(0)) / 2
    # The x axis is the plotted points (history, then the scored window) and half a step on each
    # side, set below: shading reaching out of it (another alert of the context weeks away, a long
    # alerted window) stretched the autoscaled axis far past the window the notes say is shown.
    left, right = _x_limits(t_hist, t_new, half)

    # Lines draw nothing for a point without a finite neighbour (one new day, a point between gaps):
    # markers show it (every point of a short series, the isolated ones of a long one).
    if len(x_hist):
        ax.plot(t_hist, x_hist, color="#9a9a9a", lw=1.0, label="history", **_markers(x_hist))
        ax.axvline(t_new[0] - half, color="#666666", ls=":", lw=1.0)
    ax.plot(t_new, x_new, color="#1f4e79", lw=1.4, label=_literal(section.value), **_markers(x_new))
    if np.isfinite(expected).any():
        ax.plot(t_new, expected, color="#e07b00", lw=1.2, ls="--", label="expected", **_markers(expected))
        if np.isfinite(sigma):
            lower = inverse(centre - BAND_SIGMAS * sigma)
            lower = np.maximum(lower, 0.0) if counts else lower
            upper = inverse(centre + BAND_SIGMAS * sigma)
            ax.fill_between(t_new, lower, upper, color="#e07b00", alpha=0.18, lw=0,
                            label=f"expected ± {BAND_SIGMAS:g}σ")
            # fill_between has no width at an isolated point: a bar there.
            alone = _isolated(upper - lower)
            if alone.any():
                ax.vlines(t_new[alone], lower[alone], upper[alone], color="#e07b00", alpha=0.35, lw=6)
    # Other alerts of the same context, lightly (those in the plotted range); this one clearly.
    n_other = n_other_shown = 0
    for _, other in same.iterrows():
        if other["start"] == alert["start"]:
            continue
        n_other += 1
        other_from, other_to = _span(other, half)
        if other_to >= left and other_from <= right:
            n_other_shown += 1
            ax.axvspan(max(other_from, left), min(other_to, right), color="#c00000", alpha=0.06, lw=0)
    if n_other:
        notes["other alerts"] = f"{n_other} more on this context" + (
            ", shaded lightly" if n_other_shown == n_other
            else f", {n_other_shown} of them in the plotted range, shaded lightly"
        )
    ax.axvspan(*_span(alert, half), color="#c00000", alpha=0.18, lw=0, label="alert span")
    peak = np.datetime64(alert["peak_time"])
    peak_pos = int(np.searchsorted(t_new, peak))
    if 0 <= peak_pos < len(x_new) and np.isfinite(x_new[peak_pos]):
        ax.plot([t_new[peak_pos]], [x_new[peak_pos]], "o", color="#c00000", ms=5, label="peak")

    if neighbour is not None:
        if neighbour_end is not None:
            end = neighbour_end
        else:
            end = neighbour + (window - 1) * step if (window and step is not None) else neighbour
        shown_from = t_hist[0] if len(t_hist) else t_new[0]
        notes["neighbour"] = f"nearest neighbour window starts {when(neighbour)}, ends {when(end)}"
        if np.datetime64(end) >= shown_from:
            ax.axvspan(max(neighbour - half, left), end + half, color="#7b2cbf", alpha=0.2, lw=0,
                       label="nearest neighbour")
            if neighbour - half < left:
                notes["neighbour"] += f" — it starts before the plotted window, which starts {when(shown_from)}"
        elif section.history is None and lo == 0:
            # The plot starts where the scored data starts, so the neighbour lies before it, in
            # the history: passing the history is what would show it.
            notes["neighbour"] += " — before the plotted span (pass the history to see it)"
        else:
            # The history was passed (and did not reach the neighbour, or the window around the
            # alert left it out), or the neighbour lies in the scored span before the window:
            # passing the history would not help, so the note must not ask for it.
            notes["neighbour"] += f" — before the plotted window, which starts {when(shown_from)}"
        if window and step is not None:
            # The alerted window itself (scores are stamped at a window's last point), outlined in
            # the neighbour's colour so the two shapes can be compared by eye.
            peak_stamp = pd.Timestamp(alert["peak_time"])
            window_from = peak_stamp - (window - 1) * step
            ax.axvspan(
                max(window_from - half, left), peak_stamp + half,
                facecolor="none", edgecolor="#7b2cbf", lw=1.2, ls="--", label="alerted window",
            )
            if window_from - half < left:
                notes["alerted window"] = (
                    f"{window} points from {when(window_from)} to the peak; it starts before the plotted window"
                )
    elif neighbour_col:
        notes["neighbour"] = f"no nearest-neighbour time in column {neighbour_col!r} for this alert"

    ax.set_ylabel(_literal(section.value))
    # Above the axes, so that it never hides a spike at the left edge.
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, ncol=8, frameon=False, borderaxespad=0.2)
    ax.grid(alpha=0.25)
    ax.tick_params(labelbottom=False)

    ax_s.plot(t_new, s_new, color="#444444", lw=1.0, **_markers(s_new))
    ax_s.axhline(float(alert["threshold"]), color="#c00000", ls="--", lw=1.0)
    ax_s.axvspan(*_span(alert, half), color="#c00000", alpha=0.18, lw=0)
    ax_s.set_ylabel("score", fontsize=9)
    ax.set_xlim(left, right)  # shared with the scores' axes
    ax_s.grid(alpha=0.25)
    locator = mdates.AutoDateLocator(tz=zone)
    ax_s.xaxis.set_major_locator(locator)
    ax_s.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    ax_s.text(0.995, 0.92, "threshold", transform=ax_s.transAxes, ha="right", va="top", fontsize=8, color="#c00000")
    fig.subplots_adjust(left=0.07, right=0.99, top=0.93, bottom=0.1)

    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue(), notes


# ---------------------------------------------------------------------- HTML
_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1120px; color: #222; line-height: 1.4; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 0 0 6px; }
.muted { color: #666; font-size: 13px; }
.totals { display: flex; gap: 16px; margin: 14px 0; }
.totals div { background: #f4f6f8; border-radius: 6px; padding: 8px 14px; }
.totals b { display: block; font-size: 22px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.alert { margin: 22px 0; padding: 12px; border: 1px solid #e3e3e3; border-radius: 6px; }
section.alert img { width: 100%; max-width: 1050px; display: block; }
.cold { color: #a15c00; font-weight: 600; }
"""


#: How the report writes a missing value (NaN, NaT, None, pd.NA).
MISSING = "—"
# Significant digits of a number that is not whole.
_DIGITS = 6


def _zone_line(sections) -> list[str]:
    """The page's line saying which zone its times are in, where it is known ([] where it is not)."""
    zones = [(s.name, s.zone_shown, s.times_in is not None and s.panel.index.tz is None) for s in sections]
    known = [(name, zone, utc) for name, zone, utc in zones if zone is not None]
    if not known:
        return []
    why = (" The input's time column has a time zone or UTC offsets: times on a grid finer than a day are "
           "kept in UTC.") if any(utc for _, _, utc in known) else ""
    if len({zone for _, zone, _ in known}) == 1 and len(known) == len(zones):
        text = f"Times on this page are in {known[0][1]}."
    else:
        text = "Times are " + "; ".join(f"in {zone} for {name}" for name, zone, _ in known) + "."
    return [f'<p class="muted" id="times-zone">{html.escape(text + why)}</p>']


def _fmt(value, digits: int = _DIGITS) -> str:
    """A value as the report's tables and notes write it.

    Whole numbers in full with thousands separators (2,000,000 failed logins, not ``2e+06``),
    other numbers to ``digits`` significant digits (without trailing zeros), missing values
    (NaN, NaT, None, pd.NA) as :data:`MISSING`, booleans as yes/no, timestamps as pandas writes them.
    """
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if pd.api.types.is_scalar(value) and not isinstance(value, str) and pd.isna(value):
        return MISSING
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return _fmt_float(float(value), digits)
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return str(pd.Timestamp(value))
    return str(value)


def _fmt_float(value: float, digits: int) -> str:
    if not np.isfinite(value):
        return str(value)  # inf, -inf
    size = abs(value)
    if value.is_integer() and size < 1e15:
        return f"{value:,.0f}"
    if size >= 1e15 or size < 1e-4:
        return f"{value:.{digits}g}"
    decimals = max(0, digits - (int(np.floor(np.log10(size))) + 1))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fmt_score(score, threshold) -> tuple[str, str]:
    """``score`` and ``threshold`` formatted with enough digits to tell them apart when they differ.

    An alert's peak score is above its threshold: written to the same six digits, a score a hair
    above it read as equal to it.
    """
    for digits in range(_DIGITS, 18):
        a, b = _fmt(score, digits), _fmt(threshold, digits)
        if a != b or not _is_number(score) or not _is_number(threshold) or float(score) == float(threshold):
            return a, b
    return a, b


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and np.isfinite(value)


def _points(n) -> str:
    return f"{int(n):,} point" + ("" if int(n) == 1 else "s")


def _e(value) -> str:
    return html.escape(_fmt(value))


def _explanation_columns(section: ReportSection) -> list[str]:
    return [c for c in section.alerts.columns if c not in _ALERT_BASE_COLUMNS and c not in section.context_columns]


def _scored_contexts(section: ReportSection) -> pd.Index:
    """The contexts of ``section`` with at least one finite score: the report's "contexts scored".

    A context unseen at fit that the detector cannot score from a cold start ("skipped"), or
    one whose data are all missing, is in the panel but got no score: counting the panel's
    contexts put it among the contexts scored.
    """
    return section.panel.contexts[np.isfinite(section.scores.to_numpy()).any(axis=1)]


def top_alerts(section: ReportSection, top: int) -> pd.DataFrame:
    """The alerts a report plots: the most anomalous alert of each of the ``top`` most anomalous contexts.

    One per context, because a context with many alerts (a sustained attack
    cut into runs by a few quiet points) would otherwise fill the report with
    near-identical plots; its other alerts are shaded in its one plot.
    """
    alerts = section.alerts  # sorted most anomalous first by BaseDetector.alerts
    if len(alerts) == 0 or top <= 0:
        return alerts.head(0)
    return alerts.drop_duplicates(subset=list(section.context_columns), keep="first").head(top)


def render_report(
    sections,
    top: int = 10,
    title: str | None = None,
    source: str | None = None,
    progress: bool | None = None,
) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    sections : sequence of ReportSection
        One per model (metric or detector).
    top : int, default 10
        Alerts plotted per section, most anomalous first, one per context; at least 1.
    title : str, optional
    source : str, optional
        Where the scored data came from (shown under the title).

    Returns
    -------
    str
        HTML with one ``<img>`` per plotted alert (see :func:`top_alerts`:
        ``min(top, contexts with alerts)`` per section) and the summary numbers in elements with ids
        ``total-contexts`` (contexts with at least one finite score, in any section: a context
        skipped as unseen at fit is not counted) and ``total-alerts``.

    Raises
    ------
    ValueError
        When ``top`` is less than 1: the page would say "No alerts" about alerts it left out.
        When a section's panel or history has no time axis of timestamps (checked before any
        plotting; see :meth:`ReportSection.from_detector`).
    """
    from tsanomaly.jobs import Progress

    if top < 1:
        raise ValueError(f"top must be at least 1 (alerts plotted per section), got {top}")
    sections = list(sections)
    for k, s in enumerate(sections):
        _check_time_axis(s.panel, f"the scored panel of section {k} ({s.name!r})")
        if s.history is not None:
            _check_time_axis(s.history, f"the history of section {k} ({s.name!r})")
    title = title or "tsanomaly alert report"
    scored = [_scored_contexts(s) for s in sections]
    contexts = set()
    for labels in scored:
        contexts.update(labels.tolist())
    total_alerts = sum(len(s.alerts) for s in sections)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="muted">generated {generated}' + (f" from {html.escape(source)}" if source else "") + "</div>",
        *_zone_line(sections),
        '<div class="totals">',
        f'<div>contexts scored<b id="total-contexts">{len(contexts)}</b></div>',
        f'<div>alerts<b id="total-alerts">{total_alerts}</b></div>',
        f'<div>models<b id="total-models">{len(sections)}</b></div>',
        "</div>",
        "<h2>Summary by model</h2>",
        "<table><tr><th>model</th><th>detector</th><th>metric</th><th>contexts scored</th><th>times</th>"
        "<th>span</th><th>alerts</th><th>contexts with alerts</th><th>unseen at fit (cold start / skipped)</th>"
        "<th>fitted, absent</th><th>threshold</th></tr>",
    ]
    for k, s in enumerate(sections):
        n_cold = int((s.unseen["status"] == "cold_start").sum()) if len(s.unseen) else 0
        n_skip = int((s.unseen["status"] == "skipped").sum()) if len(s.unseen) else 0
        with_alerts = len(s.alerts[s.context_columns].drop_duplicates()) if len(s.alerts) else 0
        span = ""
        if s.panel.n_times:  # an hourly grid of a --tz job on its zone's clock (s.clock), as the plots are
            span = f"{_in_zone(s.panel.index[0], s.clock)} – {_in_zone(s.panel.index[-1], s.clock)}"
        thr = getattr(s.detector, "global_threshold_", float("nan"))
        per_ctx = " (per context)" if getattr(s.detector, "per_context", False) else ""
        out.append(
            f'<tr id="summary-{k}"><td>{_e(s.name)}</td><td>{_e(s.detector_name)}</td><td>{_e(s.value)}</td>'
            f'<td class="num contexts">{len(scored[k])}</td><td class="num">{s.panel.n_times}</td>'
            f'<td>{html.escape(span)}</td><td class="num alerts">{len(s.alerts)}</td><td class="num">{with_alerts}</td>'
            f'<td class="num">{n_cold} / {n_skip}</td><td class="num">{s.n_absent}</td>'
            f"<td>{_e(thr)}{per_ctx}</td></tr>"
        )
    out.append("</table>")
    by_detector = {}
    for s in sections:
        by_detector[s.detector_name] = by_detector.get(s.detector_name, 0) + len(s.alerts)
    out.append(
        '<p class="muted">alerts by detector: '
        + ", ".join(f"{html.escape(name)} {count}" for name, count in by_detector.items())
        + ". Scores are higher = more anomalous; an alert is a run of consecutive points above the "
        "threshold.</p>"
    )

    # Top alerts: a table, then one plot per alert.
    chosen = [(s, top_alerts(s, top)) for s in sections]
    n_plots = sum(len(a) for _, a in chosen)
    out.append(f"<h2>Top alerts ({n_plots} of {total_alerts})</h2>")
    out.append(
        '<p class="muted">Per model, the most anomalous alert of each of the top contexts (a context with '
        "several alerts gets one plot, its other alerts shaded lightly).</p>"
    )
    if n_plots == 0:
        out.append("<p>No alerts: every scored point stayed at or under its threshold.</p>")
    else:
        out.append(
            "<table><tr><th>#</th><th>context</th><th>metric</th><th>detector</th><th>start</th><th>end</th>"
            "<th>points</th><th>peak score</th><th>threshold</th><th>explanation</th></tr>"
        )
        rank = 0
        for s, alerts in chosen:
            expl = _explanation_columns(s)
            for _, a in alerts.iterrows():
                rank += 1
                key = _context_key(a, s.context_columns)
                cold = ' <span class="cold">new context</span>' if bool(a.get("cold_start", False)) else ""
                detail = ", ".join(f"{html.escape(c)}={_e(a[c])}" for c in expl)
                peak_score, threshold = _fmt_score(a["peak_score"], a["threshold"])
                out.append(
                    f'<tr><td><a href="#alert-{rank}">{rank}</a></td><td>{html.escape(_context_label(key))}{cold}</td>'
                    f"<td>{_e(s.value)}</td><td>{_e(s.detector_name)}</td>"
                    f"<td>{_e(a['start'])}</td><td>{_e(a['end'])}</td>"
                    f'<td class="num">{_e(a["n_points"])}</td><td class="num">{html.escape(peak_score)}</td>'
                    f'<td class="num">{html.escape(threshold)}</td><td>{detail}</td></tr>'
                )
        out.append("</table>")
        rank = 0
        with Progress(n_plots, "plotting", enabled=progress) as bar:
            for s, alerts in chosen:
                expl = _explanation_columns(s)
                for _, a in alerts.iterrows():
                    rank += 1
                    key = _context_key(a, s.context_columns)
                    png, notes = plot_alert(s, a)
                    label = html.escape(_context_label(key))
                    encoded = base64.b64encode(png).decode("ascii")
                    out.append(f'<section class="alert" id="alert-{rank}">')
                    out.append(f"<h3>#{rank} {label} — {_e(s.value)} — {_e(s.detector_name)}</h3>")
                    out.append(
                        f'<img alt="alert {rank}: {label}, {_e(a["start"])} to {_e(a["end"])}" '
                        f'src="data:image/png;base64,{encoded}">'
                    )
                    peak_score, threshold = _fmt_score(a["peak_score"], a["threshold"])
                    facts = [
                        ("span", f"{_fmt(a['start'])} – {_fmt(a['end'])} ({_points(a['n_points'])})"),
                        ("peak", f"{_fmt(a['peak_time'])}: score {peak_score} (threshold {threshold})"),
                    ]
                    facts += [(c, _fmt(a[c])) for c in expl]
                    if bool(a.get("cold_start", False)):
                        facts.append(("context", "new since the fit: scored from a cold start"))
                    facts += list(notes.items())
                    out.append(
                        "<table>"
                        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
                        + "</table>"
                    )
                    out.append("</section>")
                    bar.update()
    out.append("</body></html>")
    return "\n".join(out) + "\n"
