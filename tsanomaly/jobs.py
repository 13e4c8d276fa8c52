"""Scoring jobs on files: the fit / score / report logic behind ``tsanomaly fit|score|report``.

A scheduled job (cron, Airflow, one Spark task) does two things:

1. ``fit``: read history in long format (one row per context and time bucket),
   build a :class:`~tsanomaly.Panel`, fit a detector and save it. The model
   file also remembers *how the table maps to a panel* — the context, time
   and value column names, the fill rule and the grid's frequency — as the
   JSON-able fitted attribute ``job_columns_``, so that
2. ``score`` needs only the model and the new rows: it rebuilds the panel the
   same way, scores it in chunks of contexts (scores of a context never
   depend on other contexts, so chunking changes nothing but memory), and
   writes the alerts (and optionally every point's score).

Conventions a job can rely on:

- **Context labels are strings.** The context columns are read as text
  (a CSV's ``0123`` keeps its leading zero and ``NA``, Namibia, is a label,
  not a missing value; an empty cell is a missing label and an error) and
  converted by :func:`tsanomaly.io.labels_as_text` at fit and at score time,
  so an ASN read as the integer ``13335`` from Parquet, as the float
  ``13335.0`` from a Parquet column that held a null, and as the text
  ``"13335"`` from JSON lines or CSV is the same context, and the model file
  stores labels without guessing types.
- **Contexts unseen at fit** (a new ASN) are never a crash. The detector
  scores them from a cold start where it can; those that get no finite score
  at all are *skipped*. Both are stated in the output: the alerts carry a
  boolean ``cold_start`` column, the job logs a warning naming them, the
  one-line summary counts them, and ``score --unseen PATH`` writes one row per
  unseen context with ``status`` = ``"cold_start"`` or ``"skipped"``.
- **Fitted contexts with no row in the new file** are not scored (a sharded
  job scores a subset of contexts on each worker); the summary counts them.
  ``absent="zero"`` (``score --absent zero``) scores them as zero events
  instead, for a file that holds every context and omits those with no event
  (an hourly counts file): with ``--update``, their history then moves on too.
- **Fitted contexts without any finite score** (new data that starts after a
  gap longer than the detector can bridge, or whose values are all missing)
  cannot alert: the job logs a warning and the summary counts them, rather
  than reporting "0 alerts" as if all were quiet.
- **A model that could never alert is not saved**: ``fit`` refuses a
  history too short for the detector's window or period (no finite training
  score, so no finite alert threshold).
- **Atomic output.** Every file is written through :mod:`tsanomaly.io`: a job
  killed half-way leaves the previous output or none, never a truncated one.
- **The user's columns keep their names and their values.** The outputs hold
  them beside the columns tsanomaly computes (:func:`output_columns`), so a
  context column named like one of those (``start``, ``metric``,
  ``cold_start``...), or a time or value column named like a column of the
  scores table (``score``, ``threshold``, ``flag``), is refused: by ``fit``
  before it reads the history, and by ``score`` and ``report``, for the
  tables they write, when they load a model fitted before the check existed.
  The message names the column.
- **User errors** (bad arguments, unreadable files, missing columns, a data
  grid that does not follow the fitted one) raise ``ValueError`` or
  ``FileNotFoundError`` with a one-line message; the CLI maps them to exit 2.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time as _time
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tsanomaly import io as tsio
from tsanomaly import thresholds
from tsanomaly.base import BaseDetector, CalibrationWarning, HistoryGapWarning, _grid_description, check_column_names
from tsanomaly.base import load as load_detector
from tsanomaly.panel import Panel, check_time_not_numeric, step_duration, steps_by_wall_clock
from tsanomaly.timezones import (  # the last three are part of this module's API too
    UTC_NAMES,
    check_not_a_fixed_abbreviation,
    check_time_zone,
    local_time,
    times_in_zone,
)

__all__ = [
    "JOB_ATTRIBUTE",
    "JOB_ALERT_COLUMNS",
    "DEFAULT_CHUNK_SIZE",
    "JobColumns",
    "Progress",
    "ScoreResult",
    "output_columns",
    "parse_params",
    "check_time_zone",
    "times_in_zone",
    "check_model_zone",
    "local_time",
    "frame_to_panel",
    "check_history_length",
    "check_distinct_paths",
    "count_absent",
    "check_absent_rule",
    "fit_frame",
    "fit_file",
    "load_model",
    "score_panel",
    "score_frame",
    "score_file",
    "scores_frame",
    "check_can_update",
    "update_model",
    "report_file",
]

log = logging.getLogger("tsanomaly.jobs")

#: Fitted attribute holding the table-to-panel mapping in a model file (see :class:`JobColumns`).
JOB_ATTRIBUTE = "job_columns_"

#: Contexts scored per chunk: bounds the memory of the score and alert tables, and drives the progress bar.
DEFAULT_CHUNK_SIZE = 100_000

FILL_RULES = ("zero", "nan")

#: What a fitted context with no row in the input gets (``score --absent``): not scored, or zeros.
ABSENT_RULES = ("skip", "zero")

#: Columns a job adds to a detector's alerts (:meth:`BaseDetector.alert_columns`): the metric
#: (the value column's name) after the context columns, and whether the context was unseen at fit.
JOB_ALERT_COLUMNS = ("metric", "cold_start")


def output_columns(detector) -> dict[str, tuple[str, ...]]:
    """Every column a job writes beside the user's own, per table it writes.

    The one list of reserved names: the user's columns in a table must take
    none of them (:meth:`JobColumns.check_names`). The alerts hold the context
    columns; the scores table (``--scores``) the context, time and value
    columns; the unseen-context table (``--unseen``) the context columns.

    Parameters
    ----------
    detector : BaseDetector or BaseDetector subclass
        Its ``explanation_columns`` are part of the alerts.

    Returns
    -------
    dict
        ``{"alerts": ..., "scores": ..., "unseen": ...}``, each a tuple of
        column names (see :func:`score_frame` and :func:`scores_frame`).

    Examples
    --------
    >>> from tsanomaly.detectors import RollingZScoreDetector
    >>> output_columns(RollingZScoreDetector)["scores"]
    ('score', 'threshold', 'flag')
    """
    return {
        "alerts": detector.alert_columns() + JOB_ALERT_COLUMNS,
        "scores": ("score", "threshold", "flag"),
        "unseen": ("status", "n_points"),
    }


# How messages name the tables of output_columns.
_TABLE_NAMES = {"alerts": "the alerts", "scores": "the scores table of --scores",
                "unseen": "the table of unseen contexts of --unseen"}


# ---------------------------------------------------------------------- progress bar
class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    A job under cron or Airflow writes to a file or a pipe, where carriage
    returns only clutter the log, so the bar switches itself off there
    (``enabled=None``). tqdm is not needed.

    Parameters
    ----------
    total : int
        Number of steps.
    desc : str
        Label shown before the bar.
    enabled : bool, optional
        Force the bar on or off; by default on exactly when ``stream`` is a TTY.
    stream : file, optional
        Where to draw; ``sys.stderr`` by default.

    Examples
    --------
    >>> with Progress(3, "scoring", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    """

    width = 30

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, stream=None):
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.done = 0
        self._started = _time.perf_counter()
        self._last_draw = 0.0
        self._drawn = -1  # the step count last drawn

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps and redraw (at most ten times a second, and always at the end)."""
        self.done = min(self.total, self.done + n)
        now = _time.perf_counter()
        if self.enabled and (now - self._last_draw >= 0.1 or self.done == self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        share = self.done / self.total if self.total else 1.0
        filled = int(round(self.width * share))
        bar = "#" * filled + "." * (self.width - filled)
        self._drawn = self.done
        self.stream.write(
            f"\r{self.desc} [{bar}] {self.done}/{self.total} ({100 * share:3.0f}%) {now - self._started:6.1f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        """End the line the bar was drawn on."""
        if self.enabled:
            if self._drawn != self.done:
                self._draw(_time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------- table <-> panel
@dataclass
class JobColumns:
    """How a long table maps to a Panel; saved in the model file as ``job_columns_``.

    Attributes
    ----------
    context : list of str
        Context column(s), e.g. ``["country", "asn"]``.
    time : str
        Timestamp column.
    value : str
        Numeric value column (the metric), e.g. ``"failed_logins"``.
    fill : {"zero", "nan"}
        What an absent (context, time) row means: zero events (counts) or a
        missing observation.
    freq : str or None
        The grid's step; set from the fitted panel, so that a score file with
        a single timestamp still lands on the right grid.
    detector : str or None
        Short name the model was built with (``"stl"``...), for the report.
    tz : str or None
        The time zone (an IANA name, ``"Europe/Paris"``) in which the time
        column's timestamps are read (:func:`times_in_zone`), given at fit
        (``fit --tz``) and kept for every later read of the model's inputs;
        None reads them as written (naive times as UTC).
    """

    context: list
    time: str
    value: str
    fill: str = "zero"
    freq: str | None = None
    detector: str | None = None
    tz: str | None = None

    def columns(self) -> list[str]:
        """Every column the table needs, context columns first."""
        return list(self.context) + [self.time, self.value]

    def to_json(self) -> dict:
        return {
            "context": list(self.context),
            "time": self.time,
            "value": self.value,
            "fill": self.fill,
            "freq": self.freq,
            "detector": self.detector,
            "tz": self.tz,
        }

    @classmethod
    def from_json(cls, data: dict, source="the model") -> "JobColumns":
        # Checked here: a damaged entry ("context": "country" read as the columns c, o, u...) was
        # otherwise blamed on the input file ("column 'c' is missing").
        malformed = ValueError(f"{source} has a malformed {JOB_ATTRIBUTE} entry: {data!r}")
        if not isinstance(data, dict):
            raise malformed
        context = data.get("context")
        if (not isinstance(context, list) or not context or not all(isinstance(c, str) for c in context)
                or not isinstance(data.get("time"), str) or not isinstance(data.get("value"), str)
                or data.get("fill", "zero") not in FILL_RULES
                or not isinstance(data.get("tz"), (str, type(None)))):
            raise malformed
        tz = data.get("tz")  # absent from models saved before fit --tz existed: times read as written
        if tz is not None:
            try:
                check_time_zone(tz)
            except ValueError as exc:  # a zone this machine's time-zone database lacks (or a damaged entry)
                raise ValueError(f"{source} was fitted with --tz {tz}, which is no time zone here: "
                                 f"{tsio._first_line(exc)}") from exc
        try:
            return cls(
                context=list(data["context"]),
                time=str(data["time"]),
                value=str(data["value"]),
                fill=str(data.get("fill", "zero")),
                freq=data.get("freq"),
                detector=data.get("detector"),
                tz=tz,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source} has a malformed {JOB_ATTRIBUTE} entry: {data!r}") from exc

    @classmethod
    def parse(cls, context, time: str, value: str, fill: str = "zero", tz: str | None = None) -> "JobColumns":
        """Validate column arguments as a user gives them (``context`` may be ``"country,asn"``;
        ``tz`` is checked by :func:`check_time_zone`)."""
        if isinstance(context, str):
            context = [c.strip() for c in context.split(",")]
        context = [c for c in context if c]
        if not context:
            raise ValueError("--context must name at least one column, e.g. --context country,asn")
        if len(set(context)) != len(context):
            raise ValueError(f"--context names a column twice: {context}")
        for name, col in (("--time", time), ("--value", value)):
            if not col:
                raise ValueError(f"{name} must name a column")
            if col in context:
                raise ValueError(f"column {col!r} is given both as a context column and as {name}")
        if time == value:
            raise ValueError(f"--time and --value both name column {time!r}")
        if fill not in FILL_RULES:
            raise ValueError(f"fill must be one of {FILL_RULES}, got {fill!r}")
        if tz is not None:
            tz = check_time_zone(tz)
            check_not_a_fixed_abbreviation(tz)
        return cls(context=context, time=time, value=value, fill=fill, tz=tz)

    def check_names(self, detector, fix: str = "rename the column in the data", source: str | None = None,
                    tables=None) -> None:
        """Raise ValueError when one of these columns has the name of a column the job writes beside it.

        Called before the work that would end in a broken table: by a fit before
        it reads the history (every table: the model must serve every output),
        and when a model is loaded to write some of them (it may have been
        fitted before this check existed).

        Parameters
        ----------
        detector : BaseDetector or BaseDetector subclass
            The model's detector (its explanation columns are in the alerts).
        fix : str
            What to do, ending the message.
        source : str, optional
            Prefixed to the message (the input file or the model file).
        tables : iterable of str, optional
            Keys of :func:`output_columns` to check; all of them by default.

        Raises
        ------
        ValueError
            Naming the first colliding column and the table (see :func:`output_columns`).
        """
        reserved = output_columns(detector)
        for table in reserved if tables is None else tables:
            added = reserved[table]
            own = {"context column": self.context}
            if table == "scores":  # the only table that carries the time and value columns
                own.update({"time column": self.time, "value column": self.value})
            check_column_names(own, added, _TABLE_NAMES[table], fix, source)


def parse_params(items: Sequence[str] | None) -> dict:
    """Turn ``["window=24", "direction=up", "periods=[24,168]"]`` into constructor parameters.

    Each value is read as JSON when it parses (numbers, ``true``/``false``,
    ``null``, lists) and kept as text otherwise; Python's spellings are accepted
    too: ``None`` for ``null``, ``True``/``False`` (any case) for the booleans.

    Raises
    ------
    ValueError
        For an item without ``=`` or with an empty name, or a name given twice.
    """
    params: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {item!r}")
        if key in params:
            raise ValueError(f"--param {key} is given twice")
        raw = raw.strip()
        if raw in ("None", "none"):
            params[key] = None
            continue
        # `per_context=True` stayed the text 'True', refused as "must be True or False, got 'True'".
        if raw.lower() in ("true", "false"):
            params[key] = raw.lower() == "true"
            continue
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def frame_to_panel(frame: pd.DataFrame, columns: JobColumns, freq: str | None = None, source="the input",
                   naive_utc: bool = False) -> Panel:
    """Build the Panel a job scores from a long table, the same way at fit and at score time.

    Context labels become text (:func:`tsanomaly.io.labels_as_text`), timestamps are parsed by
    :meth:`Panel.from_frame` (after :func:`times_in_zone` when ``columns.tz`` is set), absent
    buckets follow ``columns.fill``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long format, holding ``columns.columns()``.
    columns : JobColumns
    freq : str, optional
        Grid step; ``columns.freq`` when omitted, inferred when both are None.
    naive_utc : bool, default False
        Read zone-aware timestamps (a zoned column, or any column read in ``columns.tz``) as
        naive UTC instants, for a model fitted on such a grid
        (:func:`fitted_in_utc`): ``Panel.from_frame`` keeps a zone on grids of days or weeks
        since 2026-12-07, and a model fitted before on the same column has a naive grid.
    source : str
        Named in error messages (the file's path).

    Raises
    ------
    ValueError
        A missing column, a row without a context label, numeric timestamps,
        a time that ``columns.tz`` skips or repeats (:func:`times_in_zone`),
        and everything :meth:`Panel.from_frame` rejects (duplicate rows,
        non-numeric values, an irregular grid...).
    """
    for col in columns.columns():
        if col not in frame.columns:
            raise ValueError(f"{source}: column {col!r} is missing; it has columns {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"{source} has no rows")
    # A shallow copy: the context columns are replaced below, never written into, so the caller's
    # frame stays as it was without a deep copy of millions of rows (pandas 3 copies on write;
    # pandas 2 already copied in the selection, and the copy keeps it from warning).
    frame = frame[columns.columns()].copy(deep=False)
    for col in columns.context:
        missing = frame[col].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"{source}: column {col!r} has {int(missing.sum())} rows without a context label "
                f"(first at row {int(np.flatnonzero(missing)[0])})"
            )
        # The same rule as the reader's (a frame passed to fit_frame has not been through it):
        # 13335, 13335.0 and "13335" are one label.
        frame[col] = tsio.labels_as_text(frame[col])
    try:
        # Before from_frame, which refuses numbers too, but with a fix for Python users.
        check_time_not_numeric(
            frame[columns.time], columns.time, "write ISO 8601 text (2024-03-30T15:00:00) or a Parquet timestamp column"
        )
        if columns.tz is not None:
            def context_of(pos):
                labels = tuple(frame[col].iloc[pos] for col in columns.context)
                return labels[0] if len(labels) == 1 else labels

            frame = frame.assign(**{columns.time: times_in_zone(frame[columns.time], columns.tz, columns.time,
                                                                 context_of)})
        step = freq if freq is not None else columns.freq
        # Only where the grid would keep the zone (days, weeks): a grid of hours is naive UTC either
        # way, and the zone kept lets Panel.from_frame name a row's time on its clock in a refusal.
        if (naive_utc and getattr(frame[columns.time].dtype, "tz", None) is not None
                and (step is None or steps_by_wall_clock(step))):
            frame = frame.assign(**{columns.time: frame[columns.time].dt.tz_convert(None)})
        return Panel.from_frame(
            frame,
            context=columns.context[0] if len(columns.context) == 1 else columns.context,
            time=columns.time,
            value=columns.value,
            freq=step,
            fill=columns.fill,
        )
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


def fitted_in_utc(det: BaseDetector) -> bool:
    """Whether ``det`` was fitted on a grid of naive timestamps, which a zoned column of new data
    must be read onto as UTC instants (:func:`frame_to_panel`'s ``naive_utc``)."""
    return isinstance(det.fit_end_, str) and pd.Timestamp(det.fit_end_).tz is None


def count_absent(det: BaseDetector, rows: np.ndarray) -> int:
    """Fitted contexts of ``det`` that a panel does not hold (``rows``: its :meth:`BaseDetector.context_rows`)."""
    return int(len(det.contexts_) - np.unique(rows[rows >= 0]).size)


def check_distinct_paths(inputs: Sequence[tuple[str, object]], outputs: Sequence[tuple[str, object]],
                         may_replace: Sequence[tuple[str, str]] = ()) -> None:
    """Refuse an output path that is an input's file or another output's, before any work.

    ``fit --input h.csv --save h.csv`` replaced the history with the model, ``report --input
    n.parquet --out n.parquet`` the data with the page, and ``score --output a.csv --scores
    a.csv`` wrote two tables to one file (the second one won) while the summary said the alerts
    were written there. Paths are compared resolved (``./a.csv``, ``dir/../a.csv`` and a
    symbolic link name one file), and by :func:`os.path.samefile` where both exist (a hard link).

    Parameters
    ----------
    inputs, outputs : sequence of (option, path)
        The option that named each path (``"--input"``), for the message; ``None`` paths are
        skipped.
    may_replace : sequence of (output option, input option)
        Pairs that may name one file: ``score --update`` may write the updated model over
        ``--model`` (the model is read before it is replaced, atomically).

    Raises
    ------
    ValueError
        Naming both options and the path.
    """

    def same(a: Path, b: Path) -> bool:
        if a.resolve() == b.resolve():
            return True
        try:
            return os.path.samefile(a, b)
        except OSError:  # one of them does not exist yet: not the same file
            return False

    # (option, path, what writing over it would destroy), inputs first, then each output in turn.
    seen = [(option, Path(path), "that input") for option, path in inputs if path is not None and str(path).strip()]
    for option, path in outputs:
        if path is None or not str(path).strip():
            continue  # an empty name is each command's own error, with its own advice
        path = Path(path)
        for other_option, other, lost in seen:
            if (option, other_option) not in may_replace and same(path, other):
                raise ValueError(
                    f"{option} {path} is the same file as {other_option} {other}: writing it would replace "
                    f"{lost}; name another file"
                )
        seen.append((option, path, "the other output"))


def _release_table_memory() -> None:
    """Hand the memory of tables freed since back to the system, once a job no longer needs its input.

    Arrow, which reads Parquet (and backs the text columns), keeps freed memory in its pool for
    its next allocations: the 2.3 GB of a table of 43M rows stayed resident through the fit that
    followed, whose NumPy arrays never use that pool.
    """
    pyarrow = sys.modules.get("pyarrow")  # not imported: no Arrow memory to hand back
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()


def _read(path, columns: JobColumns) -> pd.DataFrame:
    started = _time.perf_counter()
    # Context columns read as text: a CSV's "0123" stays "0123" and its "NA" (Namibia) is a label.
    frame = tsio.read_table(path, columns=columns.columns(), text_columns=columns.context)
    # The Arrow table the frame came from, and the numbers of context columns made text, are freed
    # by now but kept in Arrow's pool (0.27 GB of a 43M-row Parquet table), which building the
    # panel next, in NumPy, never reuses.
    _release_table_memory()
    log.info("read %d rows from %s in %.2f s", len(frame), path, _time.perf_counter() - started)
    return frame


# ---------------------------------------------------------------------- fit
def fit_frame(
    frame: pd.DataFrame,
    context,
    time: str,
    value: str,
    detector: str | BaseDetector = "stl",
    params: dict | None = None,
    fill: str = "zero",
    freq: str | None = None,
    device: str | None = None,
    source: str = "the input",
    require_alerts: bool = False,
    tz: str | None = None,
) -> BaseDetector:
    """Fit a detector on a long table and attach the table mapping (``job_columns_``).

    Parameters
    ----------
    frame : pandas.DataFrame
        History in long format.
    context : str or list of str
        Context column(s); ``"country,asn"`` is split on commas.
    time, value : str
        Timestamp and value columns.
    detector : str or BaseDetector, default "stl"
        A short name for :func:`tsanomaly.detectors.make_detector`
        (``"baseline"``, ``"stl"``, ``"mp"``, ``"lstm"``) or an unfitted instance.
    params : dict, optional
        Constructor parameters set with ``set_params`` (unknown names raise
        ValueError listing the valid ones).
    fill : {"zero", "nan"}, default "zero"
        An absent row means zero events (counts) or a missing observation.
    freq : str, optional
        Grid step; inferred from the timestamps when omitted.
    device : {"auto", "cpu", "cuda"}, optional
        Overrides the detector's ``device`` parameter.
    source : str, default "the input"
        How error messages name the table.
    require_alerts : bool, default False
        Raise ValueError when the fitted model could never alert: before the fit when the
        history is shorter than the detector's :meth:`~BaseDetector.min_fit_times`, after it
        when no training score is finite (the threshold is then infinite). Without it such a
        fit only warns (:class:`~tsanomaly.base.CalibrationWarning`).
    tz : str, optional
        The time zone of the time column (an IANA name, ``"Europe/Paris"``): naive
        timestamps (text without a UTC offset) are read as its wall clock, others
        converted to it (:func:`times_in_zone`); a grid of days or weeks then follows its
        wall clock. The model keeps it (``job_columns_["tz"]``): :func:`score_frame` reads
        new data in it. By default timestamps are read as written (naive ones as UTC).

    Returns
    -------
    BaseDetector
        Fitted, with ``job_columns_`` set; ``save`` it for :func:`score_file`.

    Examples
    --------
    >>> from tsanomaly.datasets import make_security_panel
    >>> data = make_security_panel(n_contexts=10, n_days=21, seed=0)
    >>> history, new = data.split("2024-01-18")
    >>> frame = history.panels["failed_logins"].to_frame(value="failed_logins", time="ts")
    >>> det = fit_frame(frame, "country,asn", "ts", "failed_logins", detector="baseline", params={"window": 7})
    >>> det.job_columns_["context"]
    ['country', 'asn']
    >>> today = new.panels["failed_logins"].to_frame(value="failed_logins", time="ts")
    >>> result = score_frame(det, today)
    >>> result.panel.shape
    (10, 96)
    """
    columns, det, name = _detector_to_fit(context, time, value, detector, params, fill, device, source, tz)
    panel = frame_to_panel(frame, columns, freq=freq, source=source)
    return _fit_panel(det, name, columns, panel, require_alerts)


def _detector_to_fit(context, time, value, detector, params, fill, device, source, tz):
    """:func:`fit_frame`'s table mapping, detector (parameters set, output names checked) and
    the detector's short name, before the table is turned into a panel."""
    from tsanomaly.detectors import DETECTOR_CLASSES, make_detector

    columns = JobColumns.parse(context, time, value, fill, tz)
    if isinstance(detector, str):
        name, det = detector, make_detector(detector)
    else:
        names = {cls: short for short, (_, cls) in DETECTOR_CLASSES.items()}
        name, det = names.get(type(detector).__name__), detector
    if params:
        det.set_params(**params)
    if device is not None:
        det.set_params(device=device)
    columns.check_names(det, source=source)  # before the fit: its model could not write its outputs
    return columns, det, name


def _fit_panel(det: BaseDetector, name, columns: JobColumns, panel: Panel, require_alerts: bool) -> BaseDetector:
    """:func:`fit_frame` once the table is a panel: fit ``det`` and attach the table mapping."""
    log.info(
        "history: %d contexts x %d times (%s .. %s)", panel.n_contexts, panel.n_times,
        local_time(panel.index[0], columns.tz), local_time(panel.index[-1], columns.tz),
    )
    started = _time.perf_counter()
    with warnings.catch_warnings():
        if require_alerts:
            check_history_length(det, panel.n_times, _grid_description(panel.index)[0])  # the fit's freq_
            # _check_can_alert below turns the uncalibrated case into one error; the
            # library's warning would print the same news twice. Other calibration
            # warnings (STL calibrated in sample on a short history) still reach the user.
            warnings.filterwarnings("ignore", message=".*no training score was finite", category=CalibrationWarning)
        det.fit(panel)
    if require_alerts:
        _check_can_alert(det)
    log.info("fitted %r in %.2f s; global threshold %.4g", det, _time.perf_counter() - started, det.global_threshold_)
    columns.freq = det.freq_
    columns.detector = name
    setattr(det, JOB_ATTRIBUTE, columns.to_json())
    return det


def fit_file(
    input, save, context, time: str, value: str, detector="stl", params=None, fill="zero", freq=None, device=None,
    tz=None,
):
    """Read ``input``, fit (see :func:`fit_frame`, ``tz`` included) and save the model to ``save`` atomically.

    Returns
    -------
    BaseDetector
        The fitted detector that was saved.

    Raises
    ------
    ValueError
        Besides what :func:`fit_frame` raises: ``save`` is empty or names a
        folder, or the history is too short for the detector (no finite
        training score, hence no finite alert threshold: the model could
        never alert, so it is not saved). A column named like an output
        column (:meth:`JobColumns.check_names`) is refused before the input is read,
        and so is ``save`` naming the input's file (:func:`check_distinct_paths`).
    """
    from tsanomaly.detectors import detector_class

    check_distinct_paths([("--input", input)], [("--save", save)])
    columns = JobColumns.parse(context, time, value, fill, tz)  # an unknown zone is refused before the read
    # The detector's class is enough to know its alert columns: refuse a colliding name before the
    # (long) read; fit_frame checks again, for its callers from Python.
    columns.check_names(detector_class(detector) if isinstance(detector, str) else detector, source=str(input))
    # Checked before the (long) fit. Path("") is Path("."), a folder, so the empty name is caught first.
    if not str(save).strip():
        raise ValueError("--save needs a model file name, e.g. --save model.tsa")
    tsio.check_output_path(save, "--save", what="a model file", example="model.tsa")
    frame = _read(input, columns)
    columns, det, name = _detector_to_fit(columns.context, time, value, detector, params, fill, device, str(input), tz)
    panel = frame_to_panel(frame, columns, freq=freq, source=str(input))
    # The table is no longer needed: dropped before the fit rather than held through it and the
    # save (40 bytes a row read from Parquet with two text contexts, a time and a value, where
    # the panel takes 8 a grid cell).
    del frame
    _release_table_memory()
    det = _fit_panel(det, name, columns, panel, require_alerts=True)
    det.save(save)  # BaseDetector.save writes a temporary file and renames it: atomic too
    log.info("saved the model to %s", save)
    return det


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun that fits it: "1 context", "2 contexts" (``plural`` where not ``singular + "s"``)."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _history_description(n_times: int, freq: str | None) -> str:
    """``n_times`` points of history, with their span where the grid has a fixed step ``freq``."""
    length = _count(n_times, "point")
    if freq is None:  # a grid of positions: the count alone says it
        return length
    step = step_duration(freq)  # a week anchored on a weekday is 7 days
    if step is None:
        return length  # no fixed step (months) to turn into a duration
    return f"{length} ({_duration_text(step * n_times)} on the {freq!r} grid)"


def _duration_text(duration: pd.Timedelta) -> str:
    """``duration`` in words, "1 day 2 hours", "2 hours 30 minutes": pandas writes "1 days 02:00:00",
    and "01:00:00" alone (one hour) reads as a clock time in a message about times."""
    parts = duration.components
    units = [(parts.days, "day"), (parts.hours, "hour"), (parts.minutes, "minute"), (parts.seconds, "second")]
    words = [_count(n, unit) for n, unit in units if n]
    return " ".join(words) if words else str(duration)  # under a second: pandas' own spelling


def _too_short(det: BaseDetector, problem: str, how: str | None = "set with --param") -> ValueError:
    """The job's error for a history too short for ``det``: ``problem``, then what to change
    (``how``: where the parameters are set)."""
    params = det.get_params()
    knobs = ("window", "period", "periods", "seasonal_period", "min_periods", "history", "min_history",
             "validation_fraction")
    sizes = ", ".join(f"{k}={params[k]!r}" for k in knobs if k in params)
    now = f" (now {sizes}; {how})" if how else f" (now {sizes})"
    return ValueError(f"{problem}; fit on a longer history or use a shorter window or period" + (now if sizes else ""))


def check_history_length(det: BaseDetector, n_times: int, freq: str | None, how: str | None = "set with --param") -> None:
    """Raise ValueError, before a fit, when a history of ``n_times`` steps of ``freq`` (None: a grid
    of positions) is shorter than ``det`` needs for any finite training score
    (:meth:`BaseDetector.min_fit_times`): the fit, which can take minutes on many contexts (or a
    cluster's time, :func:`tsanomaly.spark.fit`), would give a model whose threshold, calibrated
    on those scores, can never be reached, or (STL, the LSTM) would raise. A fixed threshold
    (a number) needs no training score, so a detector whose fit runs on a shorter history is
    let through: it may score, and alert, once new data extends what it has seen. ``how`` ends
    the message: where the detector's parameters are set."""
    need = det.min_fit_times()
    if need is None or n_times >= need:
        return
    if not isinstance(det.threshold, str) and not det._fit_raises_when_short:
        return
    raise _too_short(det, (
        f"{det!r} needs a history of at least {need} points to score anything, and this one has "
        f"{_history_description(n_times, freq)}, so the model could never alert"), how)


def _check_can_alert(det: BaseDetector) -> None:
    """Raise ValueError when ``det``'s global alert threshold is not finite.

    Calibration takes the threshold from the training scores; a history no
    longer than the detector's window or period gives none that is finite, and
    no score ever reaches an infinite (or NaN) threshold, so a job would run
    every day and report "0 alerts" from a model that cannot alert.
    """
    threshold = float(det.global_threshold_)
    if np.isfinite(threshold):
        return
    raise _too_short(det, (
        f"{det!r} gets no finite score from a history of {_history_description(det.n_fit_times_, det.freq_)}, "
        f"so its alert threshold is {threshold} and the model could never alert"))


# ---------------------------------------------------------------------- score
@dataclass
class ScoreResult:
    """What a scoring job produced.

    Attributes
    ----------
    alerts : pandas.DataFrame
        One row per run of flagged points (see :meth:`BaseDetector.alerts`),
        most anomalous first, with ``metric`` (the value column) and
        ``cold_start`` (the context was unseen at fit) added.
    panel, scores : Panel
        The scored data and its scores (host arrays).
    unseen : pandas.DataFrame
        One row per context unseen at fit: the context columns, ``status``
        (``"cold_start"`` when it got finite scores, ``"skipped"`` when none)
        and ``n_points`` (its points with a value on the panel's grid: with
        ``fill="zero"`` the buckets without a row, filled with 0, count too).
    n_absent : int
        Fitted contexts with no row in the new data, not scored (with
        ``absent="skip"``, the default).
    detector : BaseDetector
    columns : JobColumns
    seconds : float
        Wall time of scoring (reading and writing excluded).
    n_unscored : int
        Fitted contexts in the new data that got no finite score at all (so
        could not alert): the new data starts after a gap longer than the
        detector can bridge, or their values are all missing.
    n_zero_filled : int
        Fitted contexts with no row in the new data that were scored as zero
        events over its span (``absent="zero"``); they are in ``panel`` and
        not in ``n_absent``.
    """

    alerts: pd.DataFrame
    panel: Panel
    scores: Panel
    unseen: pd.DataFrame
    n_absent: int
    detector: BaseDetector
    columns: JobColumns
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    n_unscored: int = 0
    n_zero_filled: int = 0

    def summary(self) -> str:
        """One line for the job's log: what was scored, how many alerts, what was unseen, unscored or absent."""
        n_skipped = int((self.unseen["status"] == "skipped").sum())
        n_cold = len(self.unseen) - n_skipped
        span = "no times"
        if self.panel.n_times:  # on the clock of the model's zone, as the outputs are written
            span = " .. ".join(str(local_time(self.panel.index[k], self.columns.tz)) for k in (0, -1))
        n_alerting = self.alerts[self.columns.context].drop_duplicates().shape[0] if len(self.alerts) else 0
        return (
            f"scored {_count(self.panel.n_contexts, 'context')} x {_count(self.panel.n_times, 'time')} ({span}) of "
            f"{self.columns.value!r} with {type(self.detector).__name__}: {_count(len(self.alerts), 'alert')} on "
            f"{_count(n_alerting, 'context')}; "
            f"{_count(len(self.unseen), 'context')} unseen at fit ({n_cold} scored from a cold start, {n_skipped} skipped); "
            f"{_count(self.n_unscored, 'fitted context')} got no finite score (they could not alert); "
            f"{_count(self.n_absent + self.n_zero_filled, 'fitted context')} absent from the input"
            + (f" ({self.n_zero_filled} scored as zero events, --absent zero)" if self.n_zero_filled else "")
        )


def load_model(path, device: str | None = None, outputs=None) -> tuple[BaseDetector, JobColumns]:
    """Load a model written by :func:`fit_file` and its table mapping.

    Parameters
    ----------
    path : str or Path
    device : {"auto", "cpu", "cuda"}, optional
        Overrides the saved device.
    outputs : iterable of str, optional
        The tables the caller will write with the model (keys of
        :func:`output_columns`: ``"alerts"``, ``"scores"``, ``"unseen"``); all
        of them by default. A model fitted before ``fit`` refused colliding
        names is refused only for the tables it would break, so a job that
        does not ask for ``--scores`` keeps working with a value column named
        ``score``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a tsanomaly model, or was saved without
        ``job_columns_`` (fitted from Python on a Panel rather than by a job),
        or a column it names has the name of a column of one of the
        ``outputs`` (a model fitted before ``fit`` refused those).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        det = load_detector(path, device=device)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, IsADirectoryError) as exc:
        raise ValueError(f"{path} is not a tsanomaly model file ({tsio._first_line(exc)})") from exc
    except OSError as exc:
        raise ValueError(f"cannot read the model {path}: {tsio._first_line(exc)}") from exc
    data = getattr(det, JOB_ATTRIBUTE, None)
    if data is None:
        raise ValueError(
            f"{path} holds a {type(det).__name__} fitted without column names; fit it with "
            "`tsanomaly fit` (or set det.job_columns_ via tsanomaly.jobs.fit_frame) to score files"
        )
    columns = JobColumns.from_json(data, source=str(path))
    # Before the input is read and scored: such a model would write a broken table at the end.
    columns.check_names(det, fix="rename the column in the history and the new data, and fit the model again",
                        source=str(path), tables=outputs)
    return det, columns


def score_panel(
    det: BaseDetector, panel: Panel, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool | None = None
) -> tuple[Panel, pd.DataFrame]:
    """Score ``panel`` chunk by chunk of contexts and collect the alerts.

    Scores of a context depend only on that context and its fitted state, so
    the result equals one ``det.score(panel)`` call; chunks bound memory (on
    a GPU too) and drive the progress bar.

    Returns
    -------
    scores : Panel
        Same axes as ``panel`` (host array).
    alerts : pandas.DataFrame
        As :meth:`BaseDetector.alerts`, most anomalous first.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk size must be a positive number of contexts, got {chunk_size}")
    n = panel.n_contexts
    scores = np.full(panel.shape, np.nan)
    tables = []
    with Progress((n + chunk_size - 1) // chunk_size, "scoring", enabled=progress) as bar:
        for lo in range(0, n, chunk_size):
            chunk = panel.take(slice(lo, min(n, lo + chunk_size)))
            chunk_scores = det.score(chunk)
            scores[lo : lo + chunk.n_contexts] = chunk_scores.to_numpy()
            tables.append(det.alerts(chunk, scores=chunk_scores))
            bar.update()
    alerts = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    alerts = alerts.sort_values("peak_score", ascending=False, kind="stable").reset_index(drop=True)
    return panel.with_values(scores), alerts


def score_frame(
    det: BaseDetector,
    frame: pd.DataFrame,
    columns: JobColumns | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    source: str = "the input",
    absent: str = "skip",
    tz: str | None = None,
) -> ScoreResult:
    """Score a long table with a fitted detector; see :class:`ScoreResult` for what comes back.

    Parameters
    ----------
    det : BaseDetector
        A fitted model (from :func:`load_model` or :func:`fit_frame`).
    frame : pandas.DataFrame
        New rows in long format, with the model's columns.
    columns : JobColumns, optional
        The table mapping; by default the model's own (``job_columns_``).
    chunk_size : int
        Contexts scored at a time.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    source : str
        How messages name the input.
    absent : {"skip", "zero"}, default "skip"
        What a fitted context with no row in ``frame`` gets. ``"skip"``: it is
        not scored, only counted (``n_absent``), as an input may hold only some
        contexts (a file per region scored with one global model), where
        reading absence as zero events would flag every other context.
        ``"zero"``: it is scored as zero events over the input's grid span, as
        an absent row inside the span of a context that has rows is (so it can
        alert on an outage, counts as seen, and an update rolls its history
        forward): for an input that holds every context but omits those with
        no event, such as an hourly counts file. Refused for a model whose
        fill rule is ``"nan"``, where an absent row is a missing observation.
    tz : str, optional
        The zone of ``frame``'s times, which must be the model's (``columns.tz``, from
        :func:`fit_frame`'s ``tz``; :func:`check_model_zone`). Left out, ``frame`` is read
        in the model's zone, if it has one (:func:`times_in_zone`). The panel, scores and
        alerts keep the grid's times: on the zone's wall clock for days and weeks, naive
        UTC for shorter steps (:func:`score_file` writes those in the zone).

    Raises
    ------
    ValueError
        An unknown ``absent``, ``absent="zero"`` with ``fill="nan"``, a ``tz`` that is
        not the model's, and everything :func:`frame_to_panel` raises.
    """
    columns, panel = _panel_to_score(det, frame, columns, source, absent, tz)
    return _score_job_panel(det, panel, columns, chunk_size, progress, source, absent)


def _panel_to_score(det: BaseDetector, frame: pd.DataFrame, columns: JobColumns | None, source: str, absent: str,
                    tz: str | None) -> tuple[JobColumns, Panel]:
    """:func:`score_frame`'s checks and the panel it scores, on the host; returns the table mapping too."""
    if columns is None:
        columns = JobColumns.from_json(getattr(det, JOB_ATTRIBUTE))
    det.check_fitted()
    check_absent_rule(absent, columns, source="the model")
    check_model_zone(tz, columns, source="the model")
    # Columns given by hand were never checked. The alerts alone: they are always built, and a model
    # loaded for a job that writes no --unseen table need not avoid that table's names.
    columns.check_names(det, source=source, tables=("alerts",))
    if absent == "zero" and len(frame) == 0:
        # The span to score comes from the input's times: a file without rows has none. (An hour in
        # which no context had an event, the global outage --absent zero is for, gives one.)
        raise ValueError(
            f"{source} has no rows, so it names no time span to score its absent contexts over as zero "
            "events (--absent zero): for a span in which no context had an event, write a row of 0 for "
            "any fitted context at its first and at its last time (one row for one time step)"
        )
    panel = frame_to_panel(frame, columns, freq=det.freq_ or columns.freq, source=source,
                           naive_utc=fitted_in_utc(det)).to("cpu")
    return columns, panel


def _score_job_panel(det: BaseDetector, panel: Panel, columns: JobColumns, chunk_size: int, progress: bool | None,
                     source: str, absent: str) -> ScoreResult:
    """:func:`score_frame` once the table is a panel."""
    n_zero_filled = 0
    if absent == "zero":
        panel, n_zero_filled = _with_absent_as_zero(det, panel)
        if n_zero_filled:
            log.info("%s no row in %s and %s scored as zero events over its span (--absent zero)",
                     _count(n_zero_filled, "fitted context has", "fitted contexts have"), source,
                     "was" if n_zero_filled == 1 else "were")
    started = _time.perf_counter()
    try:
        gap = det.steps_after_fit(panel) - 1  # grid steps between the fitted history and the new data
        with warnings.catch_warnings():
            # The job says it below, with its input's name and what absent rows mean (_warn_gap_before).
            warnings.simplefilter("ignore", HistoryGapWarning)
            scores, alerts = score_panel(det, panel, chunk_size=chunk_size, progress=progress)
    except ValueError as exc:
        _raise_on_model_clock(exc, det, panel, columns, source)
        raise
    seconds = _time.perf_counter() - started
    rows = det.context_rows(panel)
    unseen_rows = np.flatnonzero(rows < 0)
    score_values = scores.to_numpy()
    has_score = np.isfinite(score_values[unseen_rows]).any(axis=1) if len(unseen_rows) else np.zeros(0, bool)
    unseen = _context_table(panel.contexts, unseen_rows, columns)
    unseen["status"] = np.where(has_score, "cold_start", "skipped")
    unseen["n_points"] = np.isfinite(panel.to_numpy()[unseen_rows]).sum(axis=1).astype(np.int64)
    n_absent = count_absent(det, rows)

    # Context columns come back as the model stored them; make them strings like the panel's.
    alerts.insert(len(columns.context), "metric", columns.value)
    unseen_set = set(panel.contexts[unseen_rows])
    alert_keys = _context_keys(alerts, columns)
    alerts["cold_start"] = np.fromiter((k in unseen_set for k in alert_keys), dtype=bool, count=len(alerts))
    if len(unseen):
        n_skipped = int((unseen["status"] == "skipped").sum())
        examples = ", ".join(str(c) for c in panel.contexts[unseen_rows][:5])
        log.warning(
            "%s not in the fitted history (%d scored from a cold start, %d skipped: no score), e.g. %s%s",
            _count(len(unseen), "context was", "contexts were"),
            len(unseen) - n_skipped,
            n_skipped,
            examples,
            _float_spelling_hint(panel.contexts[unseen_rows], det.contexts_),
        )
    _warn_gap_before(det, panel, gap, columns, source)
    n_unscored = _warn_unscored(det, panel, gap, score_values, rows)
    if n_absent:
        log.info("%d fitted contexts have no row in %s and were not scored", n_absent, source)
    return ScoreResult(alerts, panel, scores, unseen, n_absent, det, columns, seconds, n_unscored=n_unscored,
                       n_zero_filled=n_zero_filled)


def _check_absent_value(absent: str) -> None:
    if absent not in ABSENT_RULES:
        raise ValueError(f"--absent must be one of {', '.join(ABSENT_RULES)}, got {absent!r}")


def check_absent_rule(absent: str, columns: JobColumns, source: str = "the model") -> None:
    """Raise ValueError (one line) for an unknown ``absent`` rule, or ``"zero"`` with a model whose
    fill rule is ``"nan"`` (there an absent row is a missing observation, not zero events)."""
    _check_absent_value(absent)
    if absent == "zero" and columns.fill != "zero":
        raise ValueError(
            f"--absent zero: {source} was fitted with --fill {columns.fill}, where an absent row is a missing "
            "observation, not zero events; drop --absent zero, or fit the model again with --fill zero"
        )


def check_model_zone(tz: str | None, columns: JobColumns, source: str = "the model") -> None:
    """Raise ValueError (one line) when ``tz`` (``score --tz``) is not the zone the model reads its inputs in.

    The zone is the model's, set by ``fit --tz`` like its columns, so that a job that leaves
    ``--tz`` out of its ``score`` line still reads local times as the fit did (read as UTC,
    hourly local times would be scored an hour or two away from their history without a
    word). Given at score time, it must be that zone: the model's grid of days follows its
    wall clock and its outputs are written in it. A model fitted without a zone refuses one
    too, but UTC (:data:`tsanomaly.timezones.UTC_NAMES`), which reads every time as it does: its history's naive
    times were read as UTC, and may have been local times read so.

    Parameters
    ----------
    tz : str or None
        The zone given; None accepts the model's.
    columns : JobColumns
        The model's table mapping (``columns.tz``: its zone, or None).
    source : str
        How the message names the model.
    """
    if tz is None:
        return
    tz = check_time_zone(tz)
    if tz == columns.tz or (tz in UTC_NAMES and (columns.tz is None or columns.tz in UTC_NAMES)):
        return  # the model's zone, or UTC by any name for a model in UTC or without a zone (naive times as UTC)
    if columns.tz is None:
        raise ValueError(
            f"--tz {tz}: {source} was fitted without --tz, so it reads times as written (naive times as UTC), "
            f"as it read its history; fit it again with --tz {tz} to read local times"
        )
    raise ValueError(
        f"--tz {tz}: {source} was fitted with --tz {columns.tz} and reads every input in that zone; drop "
        f"--tz, or fit again with --tz {tz} (times written with their UTC offset are read exactly in any zone)"
    )


def _in_zone(table: pd.DataFrame, tz: str | None) -> pd.DataFrame:
    """``table`` with its naive time columns, naive UTC times of a grid finer than a day, in ``tz``.

    A grid of hours stays in UTC whatever the input's zone (:meth:`Panel.from_frame`), and so do the
    times of the alerts and scores built on it: a job fitted with ``--tz`` writes them on that zone's
    clock with their offset (``2026-03-29 03:00:00+02:00``), as it writes a grid of days in a zone.
    """
    if tz is None:
        return table
    naive = [col for col in table.columns if pd.api.types.is_datetime64_dtype(table[col].dtype)]
    if not naive:
        return table
    return table.assign(**{col: table[col].dt.tz_localize("UTC").dt.tz_convert(tz) for col in naive})


def _with_absent_as_zero(det: BaseDetector, panel: Panel) -> tuple[Panel, int]:
    """``panel`` with a row of zeros over its grid for each fitted context it does not hold, and their number.

    The added labels are the fitted ones as text (:func:`tsanomaly.io.labels_as_text`), as a job's
    panel holds them, so that they match the model's contexts as the input's labels do; the rows
    are sorted as :meth:`Panel.from_frame` sorts them, so the panel is the one that a file with
    zero rows for those contexts would give. A merged model's placeholder label
    (:class:`~tsanomaly.base.Unmatched`, which names no context) and a missing label get none.
    """
    from tsanomaly.base import Unmatched

    fitted = det.contexts_
    present = np.zeros(len(fitted), dtype=bool)
    rows = det.context_rows(panel)
    present[rows[rows >= 0]] = True
    absent = np.flatnonzero(~present)
    if len(absent) == 0:
        return panel, 0
    levels = [fitted.get_level_values(k)[absent] for k in range(fitted.nlevels)]
    keep = np.ones(len(absent), dtype=bool)
    arrays = []
    for labels in levels:
        keep &= ~np.fromiter((isinstance(label, Unmatched) for label in labels), dtype=bool, count=len(labels))
        text = tsio.labels_as_text(pd.Series(np.asarray(labels, dtype=object), dtype=object))
        keep &= text.notna().to_numpy()
        arrays.append(text.to_numpy(dtype=object))
    arrays = [array[keep] for array in arrays]
    names = list(panel.contexts.names)
    added = (pd.MultiIndex.from_arrays(arrays, names=names) if isinstance(panel.contexts, pd.MultiIndex)
             else pd.Index(arrays[0], name=names[0], dtype=object))
    # A fitted label whose text the input already holds (a model fitted on both 1 and "1") is not added twice.
    added = added[~np.asarray(added.isin(panel.contexts), dtype=bool)]
    if len(added) == 0:
        return panel, 0
    contexts = panel.contexts.append(added)
    values = np.concatenate([panel.to_numpy(), np.zeros((len(added), panel.n_times))])
    # Lexicographic order of the labels, level by level, as Panel.from_frame sorts contexts.
    codes = [pd.factorize(np.asarray(contexts.get_level_values(k), dtype=object), sort=True)[0]
             for k in range(contexts.nlevels)]
    order = np.lexsort(codes[::-1])
    return Panel(values[order], contexts[order], panel.index), len(added)


def _warn_gap_before(det: BaseDetector, panel: Panel, gap: int, columns: JobColumns, source: str) -> None:
    """Log a warning when the new data starts ``gap`` > 0 grid steps after the step following the
    fitted history.

    The grid of a table runs from its own first row, so the steps between the fit's end and
    that row are not scored, and the detector looks back on them as missing. With
    ``fill="zero"`` an absent row inside the table's span counts as zero events, but an
    absent row before its first one cannot: an outage at the start of a batch (no row for
    any context in its first hours) would otherwise go unscored without a word.
    """
    if gap <= 0:
        return
    zero_rows = (
        "; rows absent inside its span count as zero events, but not those before its first row: to score "
        "those steps, give them rows (zero counts included)"
        if columns.fill == "zero" else ""
    )
    log.warning(
        "%s starts %s after the fitted history ends (%s; its first row is at %s): those steps are not scored, "
        "and the detector sees them as missing%s",
        source, _history_description(gap, det.freq_), local_time(det.fit_end_, columns.tz),
        local_time(panel.index[0], columns.tz), zero_rows,
    )


def _raise_on_model_clock(exc: ValueError, det: BaseDetector, panel: Panel, columns: JobColumns, source: str) -> None:
    """Raise ``exc`` followed by the fitted history's end and ``panel``'s start on the clock of the
    model's zone, when ``exc`` names that end as an hourly grid of a ``--tz`` model holds it.

    The detector's refusals (new data before the history's end, a grid that is not the fitted
    one) name times as the grid holds them, and an hourly grid is naive UTC whatever the zone
    (:meth:`Panel.from_frame`): ``2026-03-27 22:00:00`` would read as a Paris hour. Returns
    without raising for any other error, which the caller re-raises as it is.
    """
    if (columns.tz is None or panel.n_times == 0 or getattr(panel.index, "tz", None) is not None
            or str(det.fit_end_) not in str(exc)):
        return
    raise ValueError(
        f"{exc} (the grid's times, in UTC; on the clock of {columns.tz} the fitted history ends at "
        f"{local_time(det.fit_end_, columns.tz)} and {source} starts at {local_time(panel.index[0], columns.tz)})"
    ) from exc


_WHOLE_FLOAT = re.compile(r"^(-?\d+)\.0+$")


def _float_spelling_hint(unseen: pd.Index, fitted: pd.Index) -> str:
    """A hint when unseen labels are fitted ones spelled as floats (``13335.0`` for ``13335``), else "".

    A CSV keeps labels as written, and pandas writes a column of whole numbers that once
    held a null as floats: every context of such a file then reads as new, and is missed.
    """
    def whole(label):
        if isinstance(label, tuple):
            return tuple(_WHOLE_FLOAT.sub(r"\1", str(part)) for part in label)
        return _WHOLE_FLOAT.sub(r"\1", str(label))

    # Only the unseen labels are rewritten (there are few; a model may hold millions of contexts).
    rewritten = [(label, whole(label)) for label in unseen]
    rewritten = [(label, key) for label, key in rewritten if key != label]
    if not rewritten:
        return ""
    candidates = [key for _, key in rewritten]
    index = pd.MultiIndex.from_tuples(candidates) if isinstance(fitted, pd.MultiIndex) else pd.Index(candidates)
    found = np.asarray(index.isin(fitted), dtype=bool)
    matches = [label for (label, _), hit in zip(rewritten, found) if hit]
    if not matches:
        return ""
    return (f"; {len(matches)} of them match a fitted context once a trailing '.0' is dropped (e.g. {matches[0]}): "
            "whole numbers written as floats, as pandas writes an integer column that holds a null? "
            "Write them as integers")


def _warn_unscored(det: BaseDetector, panel: Panel, gap: int, score_values: np.ndarray, rows: np.ndarray) -> int:
    """Count the fitted contexts of ``panel`` without any finite score, and log a warning naming them
    (``gap``: grid steps between the fitted history and the new data, one likely cause).

    Such a context cannot alert, so "0 alerts" would read as "all quiet" when
    nothing was measured. Unseen contexts are counted apart (``unseen``).
    """
    seen_rows = np.flatnonzero(rows >= 0)
    unscored = seen_rows[~np.isfinite(score_values[seen_rows]).any(axis=1)]
    if len(unscored) == 0:
        return 0
    causes = []
    if gap > 0:
        causes.append(
            f"the new data starts {gap} grid steps after the end of the fitted history, a longer gap than "
            "the detector can bridge (score data that follows the history, or fit again on recent data)"
        )
    all_missing = int((~np.isfinite(panel.to_numpy()[unscored]).any(axis=1)).sum())
    if all_missing:
        causes.append(f"{all_missing} of them have only missing values in the new data")
    no_history = int(det.fitted_without_data()[rows[unscored]].sum())
    if no_history:
        causes.append(
            f"{no_history} of them had no observed value in the fitted history that the model keeps to score "
            "new data (fit on a history in which they were observed)"
        )
    if not causes:
        # Which of the two the jobs cannot tell: a history with a few observed points (a context
        # first seen hours before the fit's end) looks like one without enough new data.
        causes.append("too few observed points for the detector's window, in the new data or in the part of "
                      "the fitted history the model keeps (a context first seen shortly before the fit's end)")
    examples = ", ".join(str(c) for c in panel.contexts[unscored][:5])
    log.warning(
        "%d of %d fitted contexts got no finite score, so they could not alert (e.g. %s); likely cause: %s",
        len(unscored),
        len(seen_rows),
        examples,
        "; ".join(causes),
    )
    return len(unscored)


def _context_table(contexts: pd.Index, rows: np.ndarray, columns: JobColumns) -> pd.DataFrame:
    frame = contexts.to_frame(index=False)
    frame.columns = list(columns.context)
    return frame.iloc[rows].reset_index(drop=True)


def _context_keys(table: pd.DataFrame, columns: JobColumns) -> list:
    """Context labels of each row of ``table`` as the panel spells them (a string or a tuple)."""
    if len(columns.context) == 1:
        return list(table[columns.context[0]])
    return list(zip(*(table[c] for c in columns.context)))


def scores_frame(result: ScoreResult) -> pd.DataFrame:
    """Every scored point in long format: context columns, time, value, ``score``, ``threshold``, ``flag``.

    Points with neither an observation nor a score are left out.
    """
    cols = result.columns
    cols.check_names(result.detector, tables=("scores",))  # the values would be overwritten by the scores
    frame = result.panel.to_frame(value=cols.value, time=cols.time, dropna=False)
    frame.columns = list(cols.context) + [cols.time, cols.value]
    scores = result.scores.to_numpy().reshape(-1)
    context_thresholds = result.detector._thresholds_for(result.detector.context_rows(result.panel))
    frame["score"] = scores
    frame["threshold"] = np.repeat(context_thresholds, result.panel.n_times)
    frame["flag"] = thresholds.above_threshold(scores, frame["threshold"].to_numpy())
    keep = np.isfinite(frame[cols.value].to_numpy()) | np.isfinite(scores)
    return frame[keep].reset_index(drop=True)


def score_file(
    model,
    input,
    output,
    scores=None,
    unseen=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | None = None,
    progress: bool | None = None,
    update=None,
    absent: str = "skip",
    tz: str | None = None,
) -> ScoreResult:
    """Score a file with a saved model and write the alerts (and optionally scores and unseen contexts).

    Parameters
    ----------
    model : str or Path
        Written by :func:`fit_file` / ``tsanomaly fit``.
    input : str or Path
        New rows (CSV, Parquet or JSON lines) with the model's columns, on the
        fitted time grid and after the fitted history.
    output : str or Path
        Alerts table; the format follows the extension.
    scores : str or Path, optional
        Also write every point's score (see :func:`scores_frame`).
    unseen : str or Path, optional
        Also write the contexts unseen at fit with their status.
    chunk_size : int
        Contexts scored at a time.
    device : {"auto", "cpu", "cuda"}, optional
        Override the saved device (a model fitted on a GPU scores on a CPU). With
        ``update``, the updated model is saved with this device.
    update : str or Path, optional
        After the outputs are written, roll the model forward over the scored input
        (:func:`update_model`, :meth:`BaseDetector.update`) and save it here, atomically;
        ``model`` itself is allowed (an hourly job then scores each hour with the model
        updated by the hour before, without refitting). ``result.detector`` is then the
        updated model.
    absent : {"skip", "zero"}, default "skip"
        What a fitted context with no row in ``input`` gets: not scored (``"skip"``), or
        scored as zero events over the input's span (``"zero"``), as :func:`score_frame`
        states; with ``update``, ``"zero"`` also rolls their history forward over zeros, so
        hour files that omit contexts with no event score as one file of the day with their
        zero rows would. Refused before any work for a model fitted with ``fill="nan"``.
    tz : str, optional
        The zone of the input's times; it must be the model's (``fit --tz``,
        :func:`check_model_zone`), in which the input is read when it is left out. With a
        zone, the outputs' times are written on its clock with their UTC offset
        (``2026-03-29 03:00:00+02:00``), for an hourly grid too, which the panel holds in UTC.

    Returns
    -------
    ScoreResult

    Raises
    ------
    ValueError
        Before any work, when an output path is the model's or the input's file, or another
        output's (:func:`check_distinct_paths`; ``update`` may be the model's), has an
        unsupported extension, or is a folder, and when ``chunk_size`` is less than 1; before
        any output is written, when the model has no update (:func:`check_can_update`) or
        the input does not start after its history; before the input is read, for an unknown
        ``absent``, ``absent="zero"`` with a model fitted with ``fill="nan"``, or a ``tz`` that
        is not the model's; besides what :func:`score_frame` raises.
    FileNotFoundError
        Before any work, when the folder of an output does not exist.
    """
    if chunk_size < 1:  # score_panel refuses it too, but only once the model is loaded and the input read
        raise ValueError(f"--chunk-size must be a positive number of contexts, got {chunk_size}")
    _check_absent_value(absent)  # before any work; against the model's fill rule once it is loaded
    if tz is not None:
        check_time_zone(tz)  # before any work; against the model's zone once it is loaded
    check_distinct_paths(
        [("--model", model), ("--input", input)],
        [("--output", output), ("--scores", scores), ("--unseen", unseen), ("--update", update)],
        may_replace=[("--update", "--model")],
    )
    # Every output is checked before the (long) work, and before the first one is written: a typo in
    # an extension, or a folder given as --scores, found when its turn came left the alerts replaced.
    for option, path, example in (("--output", output, "alerts.csv"), ("--scores", scores, "scores.csv"),
                                  ("--unseen", unseen, "unseen.csv")):
        if path is not None:
            tsio.table_format(path)
            tsio.check_output_path(path, option, example=example)
    if update is not None:
        tsio.check_output_path(update, "--update", what="a model file", example="model.tsa")
    # Only the tables asked for: a model fitted before fit refused colliding names may still serve the others.
    written = [table for table, path in (("alerts", output), ("scores", scores), ("unseen", unseen)) if path is not None]
    det, columns = load_model(model, device=device, outputs=written)
    check_absent_rule(absent, columns, source=f"the model {model}")  # before the input is read, too
    check_model_zone(tz, columns, source=f"the model {model}")
    if update is not None:
        check_can_update(det, source=str(model))  # before the input is read: no output, no half-done job
    frame = _read(input, columns)
    columns, panel = _panel_to_score(det, frame, columns, str(input), absent, None)
    # As in fit_file: the table is not needed once it is a panel, and its Arrow memory goes back.
    del frame
    _release_table_memory()
    result = _score_job_panel(det, panel, columns, chunk_size, progress, str(input), absent)
    if update is not None:
        # score refuses data before the fitted history, update also data on its last time; caught here,
        # before the first output is written (the summary of a refused update would follow written alerts).
        try:
            det.steps_after_fit(result.panel, require_new=True)
        except ValueError as exc:
            _raise_on_model_clock(exc, det, result.panel, columns, str(input))
            raise
    tsio.write_table(_in_zone(result.alerts, columns.tz), output)
    log.info("wrote %d alerts to %s", len(result.alerts), output)
    if scores is not None:
        tsio.write_table(_in_zone(scores_frame(result), columns.tz), scores)
        log.info("wrote the scores to %s", scores)
    if unseen is not None:
        tsio.write_table(result.unseen, unseen)
        log.info("wrote %d unseen contexts to %s", len(result.unseen), unseen)
    if update is not None:
        update_model(det, result.panel, update, columns=columns, source=str(input))
        result.extra["updated"] = str(update)
    return result


def check_can_update(det: BaseDetector, source: str = "the model") -> None:
    """Raise ValueError (one line) when ``det`` cannot :meth:`~BaseDetector.update`, before any work.

    A detector class without the ``_update`` hook, and an ensemble with ``combine="peak"``
    (an offline rule) or with such a member, has no update (``BaseDetector._why_no_update``):
    ``score --update`` found it only after the alerts were written. Called on the loaded model
    before the input is read.
    """
    why = det._why_no_update()
    if why is not None:
        raise ValueError(
            f"--update: the model {source} ({type(det).__name__}) cannot be updated ({why}); "
            "drop --update and fit again on a recent history instead"
        )


def update_model(det: BaseDetector, panel: Panel, path, columns: JobColumns | None = None,
                 source: str = "the input") -> BaseDetector:
    """Roll a job's model forward over the panel it scored and save it to ``path``, atomically.

    ``det.update(panel)`` (:meth:`BaseDetector.update`) then ``det.save(path)``: the next
    ``tsanomaly score --model path`` scores data that follows ``panel`` as one score of both
    would. The model keeps its job columns (``job_columns_``), so the saved file is a model
    ``score`` loads as it loaded this one. ``path`` may be the file ``det`` was loaded from:
    it is replaced only once the new model is complete, and not at all when the update fails
    (``det`` is then left as it was, as :meth:`BaseDetector.update` leaves it).

    Parameters
    ----------
    det : BaseDetector
        A fitted model from :func:`load_model`, after scoring ``panel``.
    panel : Panel
        The data it scored (:attr:`ScoreResult.panel`), starting after its history.
    path : str or Path
        The model file to write.
    columns : JobColumns, optional
        The table mapping to keep; by default the model's own.
    source : str
        How messages name the data.

    Returns
    -------
    BaseDetector
        ``det``, updated.

    Raises
    ------
    ValueError
        When the model cannot be updated (no update, data that does not follow its history);
        one line that names ``path`` as not written.
    """
    if columns is None:
        columns = JobColumns.from_json(getattr(det, JOB_ATTRIBUTE))
    started = _time.perf_counter()
    try:
        with warnings.catch_warnings():
            # score_frame has said it, naming the input and what absent rows mean (_warn_gap_before).
            warnings.simplefilter("ignore", HistoryGapWarning)
            try:
                det.update(panel)
            except ValueError as exc:
                _raise_on_model_clock(exc, det, panel, columns, source)
                raise
    except (NotImplementedError, ValueError) as exc:
        raise ValueError(
            f"--update: the outputs were written but the model could not be updated over {source}, "
            f"so {path} was not written: {tsio._first_line(exc)}"
        ) from exc
    setattr(det, JOB_ATTRIBUTE, columns.to_json())
    det.save(path)
    log.info("updated the model through %s in %.2f s and saved it to %s", local_time(det.fit_end_, columns.tz),
             _time.perf_counter() - started, path)
    return det


# ---------------------------------------------------------------------- report
def report_file(
    models: Sequence,
    input,
    out,
    top: int = 10,
    history=None,
    title: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
    absent: str = "skip",
    tz: str | None = None,
) -> list[ScoreResult]:
    """Score ``input`` with one or more saved models and write a self-contained HTML report.

    Parameters
    ----------
    models : sequence of str or Path
        Model files; each may use its own columns of ``input`` (one metric per model).
    input : str or Path
        New rows, as for :func:`score_file`.
    out : str or Path
        The HTML file, written atomically.
    top : int, default 10
        Alerts plotted per model, at least 1: the most anomalous alert of each of the
        ``top`` most anomalous contexts (see :func:`tsanomaly.report.top_alerts`).
    history : str or Path, optional
        The history the models were fitted on (or its recent part): plotted in
        grey before the scored data, so an analyst sees what "normal" looked
        like, and where a matrix-profile alert's nearest neighbour lies.
    absent : {"skip", "zero"}, default "skip"
        What a fitted context without a row in ``input`` gets, as for :func:`score_frame`
        (``tsanomaly score --absent``): the report of an hour shows the alerts its score gave.
    tz : str, optional
        The zone of the times of ``input`` and ``history``, as for :func:`score_file`: it must
        be every model's (:func:`check_model_zone`); left out, each model reads them in its own.

    Returns
    -------
    list of ScoreResult
        One per model.

    Raises
    ------
    ValueError
        Before any work, when ``top`` is less than 1, or ``out`` is the file of a model, of
        ``input`` or of ``history`` (:func:`check_distinct_paths`), or a folder; besides what
        :func:`score_frame` raises.
    FileNotFoundError
        Before any work, when the folder of ``out`` does not exist.
    """
    from tsanomaly import report

    if top < 1:
        # --top 0 wrote a page that said "No alerts" above a table of alerts it did not plot.
        raise ValueError(f"--top must be at least 1 (contexts plotted per model), got {top}")
    if tz is not None:
        check_time_zone(tz)
    check_distinct_paths([*(("--model", m) for m in models), ("--input", input), ("--history", history)], [("--out", out)])
    if not str(out).strip():  # Path("") is Path("."), a folder
        raise ValueError("--out needs a file name, e.g. --out report.html")
    tsio.check_output_path(out, "--out", what="an HTML file", example="report.html")
    # The report shows the alerts (and counts the unseen contexts, under their own column names).
    loaded = [(path, *load_model(path, device=device, outputs=("alerts",))) for path in models]
    for path, _, columns in loaded:  # before the input is read
        check_absent_rule(absent, columns, source=str(path))
        check_model_zone(tz, columns, source=f"the model {path}")
    needed = list(dict.fromkeys(c for _, _, cols in loaded for c in cols.columns()))
    labels = list(dict.fromkeys(c for _, _, cols in loaded for c in cols.context))
    frame = tsio.read_table(input, columns=needed, text_columns=labels)
    history_frame = (
        tsio.read_table(history, columns=needed, text_columns=labels) if history is not None else None
    )
    results, sections = [], []
    for path, det, columns in loaded:
        result = score_frame(det, frame, columns, progress=progress, source=str(input), absent=absent)
        history_panel = None
        if history_frame is not None:
            history_panel = frame_to_panel(history_frame, columns, freq=det.freq_, source=str(history),
                                           naive_utc=fitted_in_utc(det))
        if columns.tz is not None and result.panel.index.tz is None:
            # An hourly grid read in the model's zone is naive UTC: drawn and written on the zone's
            # clock, as score writes its alerts, and not in UTC, which 17:00 for Paris's 19:00 was.
            section = report.ReportSection.from_result(replace(result, alerts=_in_zone(result.alerts, columns.tz)),
                                                       name=Path(path).name, history=history_panel, clock=columns.tz)
        else:
            # An hourly column with a time zone (or UTC offsets) is scored on a naive UTC grid: the
            # page must say its times are in UTC, or 22:00 reads as the analyst's own.
            in_utc = report.times_in_utc(frame[columns.time], result.panel.index)
            section = report.ReportSection.from_result(result, name=Path(path).name, history=history_panel,
                                                       times_in="UTC" if in_utc else None)
        result.extra["plotted"] = len(report.top_alerts(section, top))
        results.append(result)
        sections.append(section)
    html = report.render_report(sections, top=top, title=title, source=str(input), progress=progress)
    tsio.write_text(html, out)
    log.info("wrote the report to %s", out)
    return results

