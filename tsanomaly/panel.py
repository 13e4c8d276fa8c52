"""Panel: many contexts on one regular time grid.

A security scoring job reads counts in long format — one row per (context,
time bucket) — and every detector wants a dense matrix: one row per context,
one column per time bucket, NaN where nothing was observed.  :class:`Panel`
is that matrix together with its two axes.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from tsanomaly import backend
from tsanomaly.io import _first_line
from tsanomaly.validation import is_int

__all__ = ["Panel"]

# Nanoseconds in a day: an inferred step that is a whole number of days follows the wall clock in a zone.
_DAY_NS = 86_400 * 10**9
# The largest daylight-saving shift in use (2 h, Antarctica/Troll): a daily grid an hour or two off.
_DST_SHIFT = pd.Timedelta("2h")
# The end of ISO 8601 text that carries a UTC offset ("Z", "+02:00", "-0530").
_UTC_OFFSET_TEXT = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")
#: A grid is refused when its span holds more than ``_MAX_STEPS_PER_TIMESTAMP`` steps per distinct
#: timestamp and more than ``_MIN_GUARDED_STEPS`` steps (:func:`too_sparse`): one row with a wrong
#: clock (a null written as epoch 0, the year 2034) would otherwise stretch every context's row of
#: the panel over the whole span (an hourly grid back to 1970: 473,856 steps, 3.8 MB per context),
#: and the process would run out of memory without a word. Shared with ``tsanomaly.spark``'s score.
_MAX_STEPS_PER_TIMESTAMP = 100
_MIN_GUARDED_STEPS = 10_000


class Panel:
    """Many contexts on one regular time grid.

    Parameters
    ----------
    values : array_like, shape (n_contexts, n_times)
        Observations as float64, NumPy (host) or CuPy (device). NaN marks a
        missing observation (so does ``pd.NA`` from pandas' nullable types, as
        in a pivot of an ``Int64`` column); infinities are rejected. A boolean array is kept
        boolean (flags from ``predict``).
    contexts : pandas.Index or sequence, length n_contexts
        One label per row; a ``MultiIndex`` when a context is several columns
        (for example country and ASN). Labels must be unique.
    index : pandas.DatetimeIndex, pandas.RangeIndex or sequence, length n_times
        The time grid. A DatetimeIndex must increase and be regular: without ``freq`` set,
        it is inferred (from the one step between them for two timestamps,
        read on the wall clock with a time zone: two local midnights are
        ``"D"`` apart even across a daylight-saving switch; a single
        timestamp gives no step, so it needs ``freq`` set, e.g.
        ``pd.date_range(ts, periods=1, freq="h")``). A RangeIndex must have
        step 1. Any other index or sequence of integers must be consecutive
        (``[5, 6, 7]`` becomes ``RangeIndex(5, 8)``); anything else is read as
        timestamps by ``pandas.DatetimeIndex``.

    Raises
    ------
    ValueError
        For values that are not 2-D or do not match the axes' lengths,
        duplicate contexts, non-numeric or infinite values (timestamps, durations and
        complex numbers included: they are not counts), and a time grid
        that is not one of the above (integers that are not consecutive, a
        RangeIndex whose step is not 1, a missing timestamp (NaT), timestamps
        that do not increase (whatever their number, ``freq`` set or not),
        irregular timestamps, a single timestamp without ``freq``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"asn": ["a", "a", "b"], "ts": pd.to_datetime(
    ...     ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:00"]), "n": [3, 4, 5]})
    >>> panel = Panel.from_frame(df, context="asn", time="ts", value="n")
    >>> panel.shape
    (2, 2)
    """

    def __init__(self, values, contexts, index):
        xp = backend.array_module(values)
        values = xp.asarray(values)
        _check_value_dtype(values.dtype, "Panel values hold")
        not_numeric = None
        if values.dtype == object:  # host only: CuPy has no object arrays
            values, not_numeric = _object_values_as_float(values)
        if values.dtype != xp.bool_:  # boolean Panels hold flags (predict); the rest is float64
            values = values.astype(xp.float64, copy=False)
        if values.ndim != 2:
            raise ValueError(f"Panel values must be 2-D (n_contexts, n_times), got shape {values.shape}")
        contexts = contexts if isinstance(contexts, pd.Index) else pd.Index(contexts)
        index = _time_grid(index)
        if values.shape != (len(contexts), len(index)):
            raise ValueError(
                f"Panel values have shape {values.shape} but there are {len(contexts)} contexts "
                f"and {len(index)} time points"
            )
        if not contexts.is_unique:
            duplicated = contexts[contexts.duplicated()][0]
            raise ValueError(f"Panel contexts must be unique; context {duplicated!r} appears more than once")
        if not_numeric is not None:
            (row, col), value = not_numeric
            raise ValueError(
                f"Panel values hold a non-numeric value {value!r} for context {contexts[row]!r} at {index[col]}"
            )
        if values.dtype != xp.bool_ and bool(xp.isinf(values).any()):
            row, col = (int(v) for v in xp.argwhere(xp.isinf(values))[0])
            raise ValueError(
                f"Panel values hold an infinite value {float(values[row, col])} "
                f"for context {contexts[row]!r} at {index[col]}"
            )
        self.values = values
        self.contexts = contexts
        self.index = index

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_array(cls, x, contexts=None, index=None) -> "Panel":
        """Build a Panel from a 1-D (one context) or 2-D (contexts x times) array.

        Parameters
        ----------
        x : array_like, shape (n_times,) or (n_contexts, n_times)
        contexts : sequence, optional
            Row labels; defaults to ``0 .. n_contexts-1``.
        index : pandas.Index, optional
            The time grid; defaults to ``RangeIndex(n_times)``.
        """
        xp = backend.array_module(x)
        arr = xp.asarray(x, dtype=xp.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"from_array expects a 1-D or 2-D array, got shape {arr.shape}")
        if contexts is None:
            contexts = pd.RangeIndex(arr.shape[0], name="context")
        if index is None:
            index = pd.RangeIndex(arr.shape[1], name="time")
        return cls(arr, contexts, index)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        context: str | Sequence[str],
        time: str,
        value: str,
        freq: str | pd.Timedelta | None = None,
        fill: str = "nan",
    ) -> "Panel":
        """Build a Panel from a long DataFrame with one row per (context, time).

        Every context is put on one regular grid spanning the earliest to the
        latest timestamp of the frame, so contexts that start late or have
        gaps line up.

        Parameters
        ----------
        df : pandas.DataFrame
            Long format.
        context : str or list of str
            Column(s) naming the context; several give a MultiIndex. Every row needs
            a label: a null one is refused, not made a context ``nan`` of its own.
        time : str
            Timestamp column: datetimes, or ISO 8601 text (its forms may mix:
            ``2024-03-30``, ``2024-03-30 15:00``, ``2024-03-30T15:00:00.000Z``;
            offsets give the UTC instant, text without one is kept as written);
            not numbers (convert epochs with ``pd.to_datetime(..., unit=)``).
            The grid is naive, in UTC where the timestamps name instants, except
            for a column of zone-aware timestamps (a zone other than UTC in its
            dtype) on a grid of days or weeks (an inferred step of whole days, or
            ``freq="D"``, ``"7D"``, ``"W"``): that grid keeps the zone and follows the
            wall clock across daylight-saving switches, as ``pd.date_range(...,
            tz=zone)`` does. Text with UTC offsets names no zone: days written in
            local time are refused across a switch (23 or 25 h apart in UTC), with
            a message that says to give the zone.
        value : str
            Numeric value column (a count, for example), or text that reads as numbers;
            not timestamps, durations or complex numbers.
        freq : str or pandas.Timedelta, optional
            Grid frequency: a fixed step (``"15min"``, ``"1h"``, ``"D"``, ``"7D"``, ``pd.Timedelta(hours=1)``...)
            or a week anchored on a weekday (``"W"``, which pandas reads as
            ``"W-SUN"``, ``"W-MON"`` ... ``"W-SAT"``, ``"2W-MON"``): a step of 7 days
            whose timestamps must all fall on that weekday (on the wall clock of a
            zoned grid, else in the grid's naive or UTC time), each at the first
            one's time of day, as ``pd.date_range(..., freq="W-SUN")`` gives them;
            the Panel's ``freq`` is then that week (``W-SUN`` for ``"W"``). Calendar
            steps (months ``"MS"``, business days ``"B"``) are refused. Inferred as
            the most common step between distinct timestamps when omitted (a
            weekly grid is then ``168h``, or ``7D`` in a zone, not anchored).
        fill : {"nan", "zero"}
            What absent buckets hold: NaN (missing) or 0 (counts: no event
            recorded means zero events).

        Returns
        -------
        Panel

        Raises
        ------
        ValueError
            Naming the column, the context and the value for: an empty frame, a
            missing column, one column named for two roles (``context="ts", time="ts"``),
            rows without a context label (their number, and how to drop or label them),
            duplicate (context, time) rows, non-numeric or infinite values (a value column
            of timestamps, durations, complex numbers, periods or intervals
            included), numbers in the time column (epochs: their unit is
            not guessed), text that is not ISO 8601 (naming the first such
            value), missing timestamps, timestamps that fit no
            regular frequency or are off the grid of ``freq`` (for an anchored
            week, naming the first timestamp on another weekday), a ``freq`` that
            is no frequency (a number, unknown text), no fixed step or week, or is not
            positive, and a grid far longer than the data: more than 10,000 points
            and more than 100 per distinct timestamp (:func:`too_sparse`), which a
            row with a wrong clock gives (a null written as epoch 0 stretches an
            hourly grid back to 1970), naming the earliest and latest timestamps
            and a context of each, before any of it is allocated.
        """
        if fill not in ("nan", "zero"):
            raise ValueError(f"fill must be 'nan' or 'zero', got {fill!r}")
        context_cols = [context] if isinstance(context, str) else list(context)
        if not context_cols:
            raise ValueError("context must name at least one column")
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"from_frame expects a pandas DataFrame, got {type(df).__name__}")
        for col in context_cols + [time, value]:
            if col not in df.columns:
                raise ValueError(f"column {col!r} is missing; the frame has columns {list(df.columns)}")
            if (df.columns == col).sum() > 1:  # df[col] would be a frame of them
                raise ValueError(f"the frame has {int((df.columns == col).sum())} columns named {col!r}; "
                                 "rename all but one")
        # One column for two roles: context="ts", time="ts" reported duplicate rows for a context
        # Timestamp(...), and value=time a grid of the values' own times.
        if len(set(context_cols)) < len(context_cols):
            raise ValueError(f"context={context!r} names a column more than once; name each once")
        roles = [(f"context={context!r}", col) for col in context_cols]
        roles += [(f"time={time!r}", time), (f"value={value!r}", value)]
        for k, (role, col) in enumerate(roles):
            other = next((r for r, c in roles[:k] if c == col), None)
            if other is not None:
                raise ValueError(f"from_frame: {other} and {role} name one column, {col!r}; a context, the time "
                                 "and the value are each a column of their own")
        if len(df) == 0:
            raise ValueError("the frame is empty: no rows to build a Panel from")
        # A missing label became a context of its own (NaN), all such rows merged, as the jobs and Spark
        # do not: the jobs refuse such rows and Spark drops them with a warning.
        for col in context_cols:
            missing = df[col].isna().to_numpy()
            if missing.any():
                raise ValueError(
                    f"column {col!r} has {int(missing.sum())} rows without a context label (null); drop them "
                    f"(df.dropna(subset=[{col!r}])) or give them a label (df[{col!r}].fillna('unknown'))"
                )

        def context_of(row_position: int):
            labels = tuple(df[c].iloc[row_position] for c in context_cols)
            return labels[0] if len(labels) == 1 else labels

        # Values: numeric and finite.
        raw_values = df[value]
        _check_value_dtype(raw_values.dtype, f"column {value!r} holds")
        if isinstance(raw_values.dtype, np.dtype) and raw_values.dtype.kind in "fiu":
            # Numbers already (the usual Parquet or CSV column): nothing to coerce, and a float64
            # column is used as it is rather than copied and compared with its copy.
            numeric = raw_values.to_numpy(dtype=np.float64)
        else:
            numeric = pd.to_numeric(raw_values, errors="coerce")
            bad = numeric.isna() & raw_values.notna()
            if bad.any():
                pos = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"column {value!r} holds a non-numeric value {raw_values.iloc[pos]!r} "
                    f"for context {context_of(pos)!r}"
                )
            _check_value_dtype(numeric.dtype, f"column {value!r} holds")  # complex numbers in an object column
            numeric = numeric.astype(np.float64).to_numpy()
        infinite = np.isinf(numeric)
        if infinite.any():
            pos = int(np.flatnonzero(infinite)[0])
            raise ValueError(
                f"column {value!r} holds an infinite value {numeric[pos]} for context {context_of(pos)!r}"
            )

        check_time_not_numeric(df[time], time, f"convert it first, e.g. df[{time!r}] = pd.to_datetime(df[{time!r}], unit=\"s\")")

        # Timestamps: parseable (text as ISO 8601), then one regular grid. Read as UTC: timestamps
        # with offsets become the instants they name (local time that changes offset at a
        # daylight-saving switch, which pandas refuses to parse otherwise), and naive ones are
        # kept as written.
        stamps = _parse_timestamps(df[time], time, context_of)
        if stamps.isna().any():
            pos = int(np.flatnonzero(stamps.isna().to_numpy())[0])
            raise ValueError(
                f"column {time!r} holds a missing or unparseable timestamp {df[time].iloc[pos]!r} "
                f"for context {context_of(pos)!r}"
            )
        # One unit for the integer arithmetic of the grid (pandas may parse to us or s).
        stamps = stamps.dt.as_unit("ns")

        zone = _column_zone(df[time])
        grid = _regular_grid(stamps, freq, time, context_of, zone=zone, raw=df[time])
        # The rows on the grid's clock: its zone's (days or weeks in a column's zone), else naive UTC.
        stamps = stamps.dt.tz_localize(None) if grid.tz is None else stamps.dt.tz_convert(grid.tz)
        # Each row's time bucket, int32 where the grid is shorter than 2**31 points (held while the
        # contexts are coded below); the timestamps are freed then (a duplicate's time is read back
        # from the grid). Every per-row array here is 4 or 8 bytes a row (8: 350 MB at 200,000
        # contexts x 14 days hourly, beside the frame), so each is dropped as soon as it has been used.
        time_codes = grid.get_indexer(stamps).astype(_code_dtype(len(grid)), copy=False)
        del stamps

        # Integer codes of each row's context (contexts sorted, so that the same data always
        # gives the same row order). Codes rather than labels: hashing and looking up millions of
        # string labels took most of the time and memory here.
        context_codes, contexts = _context_codes(df, context_cols)

        # Each row's cell of the panel (its flat position), made in place in the context codes
        # (int64: the cells number up to the panel's size; the int32 codes are copied once).
        cells = context_codes.astype(np.int64, copy=False)
        del context_codes
        cells *= len(grid)
        cells += time_codes
        del time_codes

        # The same (context, bucket) twice: fewer distinct cells than rows. Marked in one byte per
        # cell of the panel; the rows' counts (8 bytes per cell, then per row: 0.9 GB at 200,000
        # contexts x 14 days hourly) only once some cell has two rows, to name the first.
        filled = np.zeros(len(contexts) * len(grid), dtype=bool)
        filled[cells] = True
        if np.count_nonzero(filled) < len(cells):
            dup = np.bincount(cells, minlength=len(contexts) * len(grid))[cells] > 1
            pos = int(np.flatnonzero(dup)[0])
            when = grid[int(cells[pos]) % len(grid)]
            if grid.tz is None and zone is not None:  # a zoned column's hours, held in UTC: on its own clock
                when = when.tz_localize("UTC").tz_convert(zone)
            raise ValueError(
                f"duplicate rows for context {context_of(pos)!r} at {when} "
                f"(columns {context_cols + [time]}); aggregate them first, e.g. df.groupby(...).sum()"
            )
        del filled

        values = np.full((len(contexts), len(grid)), 0.0 if fill == "zero" else np.nan)
        values.reshape(-1)[cells] = numeric  # the cells' flat positions: one index, not two
        del cells, numeric  # before the checks of Panel.__init__, which allocate a flag per cell
        return cls(values, contexts, grid)

    # ------------------------------------------------------------------ shape and axes
    @property
    def shape(self) -> tuple[int, int]:
        """(n_contexts, n_times)."""
        return tuple(self.values.shape)

    @property
    def n_contexts(self) -> int:
        """Number of contexts (rows of ``values``)."""
        return self.values.shape[0]

    @property
    def n_times(self) -> int:
        """Number of time steps on the grid (columns of ``values``)."""
        return self.values.shape[1]

    @property
    def freq(self):
        """The grid's step: a pandas offset for a DatetimeIndex, 1 for a RangeIndex."""
        if isinstance(self.index, pd.DatetimeIndex):
            return self.index.freq
        return self.index.step

    @property
    def device(self) -> str:
        """``"cuda"`` when the values live on the GPU, else ``"cpu"``."""
        return "cuda" if backend.is_device_array(self.values) else "cpu"

    def __len__(self) -> int:
        return self.n_contexts

    def __repr__(self) -> str:
        span = f"{self.index[0]} .. {self.index[-1]}" if len(self.index) else "empty"
        return (
            f"Panel({self.n_contexts} contexts x {self.n_times} times, {span}, "
            f"freq={self.freq}, device={self.device})"
        )

    # ------------------------------------------------------------------ selection
    def with_values(self, values) -> "Panel":
        """A Panel with the same contexts and time grid holding ``values`` (same shape)."""
        return Panel(values, self.contexts, self.index)

    def take(self, rows) -> "Panel":
        """Select contexts by row position (int array or slice)."""
        rows_np = np.arange(self.n_contexts)[rows]
        rows_np = np.atleast_1d(rows_np)
        xp = backend.array_module(self.values)
        return Panel(self.values[xp.asarray(rows_np)], self.contexts[rows_np], self.index)

    def select(self, labels) -> "Panel":
        """Select contexts by label, in the order given.

        Parameters
        ----------
        labels : label or iterable of labels
            One context label (a tuple is one label of a MultiIndex), or any
            iterable of them: list, tuple, pandas Series or Index, array.
            Each label at most once, since a Panel's contexts are unique.

        Raises
        ------
        KeyError
            Naming the labels that are not contexts of this panel.
        ValueError
            When a label is given more than once.
        """
        one_label = isinstance(labels, tuple) and isinstance(self.contexts, pd.MultiIndex)
        if one_label or isinstance(labels, (str, bytes)) or not pd.api.types.is_list_like(labels):
            labels = [labels]
        # A plain list of labels: pandas reads a Series or an Index passed to get_indexer on
        # a MultiIndex as an index to align (NotImplementedError, "fillna is not defined").
        # Rows of a 2-D array (df[["country", "asn"]].to_numpy()) or lists are labels of a MultiIndex.
        labels = [tuple(label) if pd.api.types.is_list_like(label) and not isinstance(label, tuple) else label
                  for label in labels]
        counts: dict = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        repeated = next(((label, n) for label, n in counts.items() if n > 1), None)
        if repeated is not None:
            raise ValueError(
                f"select: the label {repeated[0]!r} is given {repeated[1]} times; a Panel's contexts are unique, "
                "so give each label once"
            )
        positions = self.contexts.get_indexer(labels)
        if (positions < 0).any():
            missing = [lab for lab, p in zip(labels, positions) if p < 0]
            raise KeyError(f"contexts not in this panel: {missing}")
        return self.take(positions)

    @property
    def loc(self) -> "_TimeLocator":
        """Slice by time: ``panel.loc["2024-03-01":"2024-03-07"]`` (both ends included)."""
        return _TimeLocator(self)

    def time_slice(self, start=None, end=None) -> "Panel":
        """Points with ``start <= time <= end`` (labels of the index).

        Raises
        ------
        ValueError
            When a bound cannot be compared with the index (a time-zone-aware
            bound on a naive grid, or the reverse), where pandas raises a TypeError,
            or is not an integer position on a RangeIndex grid.
        """
        if not isinstance(self.index, pd.DatetimeIndex):
            # A RangeIndex compares text bounds as text ("5" sorts after "49"): time_slice("5", "7")
            # gave positions 50-69, and dates an empty slice, without a word.
            for bound in (start, end):
                if bound is not None and not is_int(bound):
                    raise ValueError(f"time_slice({start!r}, {end!r}): a grid of positions (RangeIndex) is sliced "
                                     "by integer positions, not by times or text")
        try:
            positions = self.index.slice_indexer(start, end)
        except TypeError as exc:
            raise ValueError(
                f"time_slice({start!r}, {end!r}) on a time grid from {self.index[0] if len(self.index) else None} "
                f"({'with' if getattr(self.index, 'tz', None) is not None else 'without'} a time zone): {exc}"
            ) from exc
        return Panel(self.values[:, positions], self.contexts, self.index[positions])

    # ------------------------------------------------------------------ conversion
    def to(self, device: str) -> "Panel":
        """A Panel on ``"cpu"`` or ``"cuda"`` (``"auto"`` picks the GPU when present)."""
        target = backend.resolve_device(device)
        if target == self.device:
            return self
        return Panel(backend.to_device(self.values, target), self.contexts, self.index)

    def to_numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.values)

    def to_frame(self, value: str = "value", time: str = "time", dropna: bool = True) -> pd.DataFrame:
        """Long format: one row per (context, time), the inverse of :meth:`from_frame`.

        Parameters
        ----------
        value, time : str
            Names of the value and time columns.
        dropna : bool
            Drop missing observations (NaN). :meth:`from_frame` rebuilds a
            DatetimeIndex panel from this frame (same contexts, grid and values)
            only where nothing it needs was dropped or reordered: it sorts the
            contexts, keeps only the contexts with a row, spans the grid from the
            first to the last timestamp present, and reads a grid with a time zone
            in UTC unless its step is days or weeks. With ``dropna=False`` every
            context and time keeps its row (NaN values), so a naive panel with
            sorted contexts round trips; with ``dropna=True`` it does when, in
            addition, every context holds a value and the first and last times
            too. A RangeIndex panel's time column holds integers, which
            ``from_frame`` refuses (it does not guess an epoch's unit), so it does
            not round trip that way.

        Raises
        ------
        ValueError
            When ``value`` and ``time`` are the same name, or either is the name of a
            context column (``"context"`` for an unnamed one): the frame would hold one
            column where two are meant, the context labels overwritten without a word.
        """
        context_frame = self.contexts.to_frame(index=False)
        if context_frame.columns.tolist() == [None] or context_frame.columns.tolist() == [0]:
            context_frame.columns = ["context"]
        if value == time:
            raise ValueError(f"to_frame: value and time are both named {value!r}; give them different names")
        for option, name in (("value", value), ("time", time)):
            if name in context_frame.columns:
                raise ValueError(
                    f"to_frame: {option}={name!r} is also the name of a context column "
                    f"(context columns: {context_frame.columns.tolist()}); pass another {option}= name"
                )
        values = self.to_numpy()
        n_ctx, n_time = values.shape
        frame = context_frame.loc[np.repeat(np.arange(n_ctx), n_time)].reset_index(drop=True)
        # take keeps the index's type: np.asarray of a zoned index is an object array of Timestamps,
        # tiled per context (2,000 contexts x 365 days: 5.2 s against 0.05 s without a zone).
        frame[time] = self.index.take(np.tile(np.arange(n_time), n_ctx))
        frame[value] = values.reshape(-1)
        if dropna:
            frame = frame[~np.isnan(frame[value].to_numpy())].reset_index(drop=True)
        return frame

    def equals(self, other: "Panel") -> bool:
        """Same axes and the same values (NaN equal to NaN)."""
        return (
            isinstance(other, Panel)
            and self.contexts.equals(other.contexts)
            and self.index.equals(other.index)
            and np.array_equal(self.to_numpy(), other.to_numpy(), equal_nan=True)
        )


def _check_value_dtype(dtype, what: str) -> None:
    """Refuse values of a dtype that NumPy or pandas would turn into numbers that count nothing.

    Times would become nanoseconds since 1970 (1.7e18) and durations nanoseconds; complex
    numbers would lose their imaginary part with a mere ``ComplexWarning``. Text, booleans and
    numbers (objects holding them included) are read as before.

    Parameters
    ----------
    dtype : numpy or pandas dtype
    what : str
        The values and their verb, to start the message (``"column 'n' holds"``, ``"Panel values hold"``).
    """
    types = pd.api.types
    kind = None
    if types.is_datetime64_any_dtype(dtype):
        kind = "timestamps"
    elif types.is_timedelta64_dtype(dtype):
        kind = "durations"
    elif types.is_complex_dtype(dtype):
        kind = "complex numbers"
    elif isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)):
        kind = "periods" if isinstance(dtype, pd.PeriodDtype) else "intervals"
    if kind is not None:
        fix = "; for durations in seconds, .dt.total_seconds()" if kind == "durations" else ""
        raise ValueError(f"{what} {kind} ({dtype}), not numbers; pass numbers (a count or a measurement){fix}")


def _object_values_as_float(values: np.ndarray):
    """An object array as float64 (missing values NaN), and the first value that is no number.

    pandas' nullable columns (``Int64``, ``Float64``, ``boolean``) come out of a pivot or
    ``to_numpy`` as objects holding ``pd.NA`` where a value is absent, which NumPy cannot turn
    into a float. Missing values (``pd.NA``, None, NaN) become NaN; numbers, and text that
    reads as one, become floats, as :meth:`Panel.from_frame` reads its value column.

    Returns
    -------
    values : float64 array, same shape
    not_numeric : ((row, col), value) or None
        The position and value of the first element that is neither missing nor a number
        (the caller names its context and time), NaN in ``values``.
    """
    flat = values.ravel()
    missing = pd.isna(flat)
    numbers = pd.to_numeric(pd.Series(flat, dtype=object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(numbers) & ~missing
    not_numeric = None
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        not_numeric = (tuple(int(i) for i in np.unravel_index(pos, values.shape)), flat[pos])
    return numbers.reshape(values.shape), not_numeric


class _TimeLocator:
    def __init__(self, panel: Panel):
        self._panel = panel

    def __getitem__(self, key) -> Panel:
        if not isinstance(key, slice) or key.step is not None:
            raise TypeError("panel.loc takes a time slice, e.g. panel.loc['2024-03-01':'2024-03-07']")
        return self._panel.time_slice(key.start, key.stop)


def steps_by_wall_clock(freq) -> bool:
    """Whether a grid of step ``freq`` in a time zone steps by the wall clock, not by a fixed duration.

    A step of hours or less is a fixed duration. Days, weeks and months are not: in a zone
    with daylight saving a day lasts 23 or 25 h once a year, and a daily or weekly grid
    (pandas' ``date_range`` in that zone) keeps the wall-clock time instead.

    Parameters
    ----------
    freq : str or pandas.DateOffset
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    return not (isinstance(offset, pd.offsets.Tick) and not isinstance(offset, pd.offsets.Day))


def step_duration(freq) -> pd.Timedelta | None:
    """A grid step's length: a week is 7 days whatever weekday anchors it, a day 24 h (however
    long a zoned day across a switch lasts); None for calendar steps (months...) and for None.

    Parameters
    ----------
    freq : str or pandas.DateOffset or None
    """
    if freq is None:
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Week):
        return pd.Timedelta(days=7 * offset.n)
    # pandas 3.0 made Day a calendar day (no longer a Tick) and pd.Timedelta(Day()) raises there
    # (3.1 accepts it again): read its length from n, or 'D' and '7D' would pass for calendar steps.
    if isinstance(offset, pd.offsets.Day):
        return pd.Timedelta(days=offset.n)
    try:
        return pd.Timedelta(offset)
    except (TypeError, ValueError):
        return None


def grid_step(freq) -> tuple[pd.DateOffset, pd.Timedelta]:
    """The offset and the length of a regular grid's step given as ``freq``, or a ValueError.

    The one reading of a step that a caller gives (``Panel.from_frame``'s ``freq=``, the
    command line's ``--freq``, ``tsanomaly.spark``'s fit): a fixed step (``"15min"``, ``"1h"``,
    ``"D"``, ``"7D"``) or a week anchored on a weekday (``"W"``, which pandas reads as
    ``"W-SUN"``, ``"W-MON"`` ... ``"W-SAT"``, ``"2W-MON"``): a step of 7 days per week, whose
    points fall on that weekday (checked against the data by :func:`_regular_grid`). Calendar steps
    (months, quarters, business days) have no length and are refused. A week without a
    weekday (``pd.offsets.Week()``, whose text ``"W"`` pandas would read back as ``"W-SUN"``)
    is the plain step of 7 days, ``"7D"``.

    Parameters
    ----------
    freq : str or pandas.DateOffset or pandas.Timedelta
        Not a number: its unit is not guessed (``3600`` is refused, not read as seconds).
    """
    # pandas' own refusals say neither which option nor what it takes ("Invalid frequency: bogus"; for
    # a number, a TypeError from offsets.pyx). A number is not read as seconds: its unit is not guessed.
    examples = "a frequency such as 'h', '15min', '1D' or 'W-MON', or a pd.Timedelta such as pd.Timedelta(hours=1)"
    if isinstance(freq, (bool, int, float, np.number)):
        raise ValueError(f"freq={freq!r} is a number, whose unit is not guessed; give {examples}")
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"freq={freq!r} is not a frequency pandas reads; give {examples}") from exc
    if isinstance(offset, pd.offsets.Week) and offset.weekday is None:
        offset = pd.offsets.Day(7 * offset.n)
    step = step_duration(offset)
    if step is None:
        raise ValueError(
            f"freq {freq!r} is not a fixed step (calendar offsets such as 'MS' are not supported; "
            "a fixed step such as '1h' or '7D', or a week anchored on a weekday such as 'W' or 'W-MON', is)"
        )
    # A zero step divides by zero in _regular_grid and a negative one builds an empty grid: refuse both.
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq {freq!r} must be a positive step, such as '1h' or '15min'")
    return offset, step


def too_sparse(n_steps: int, n_stamps: int) -> bool:
    """Whether a grid of ``n_steps`` points is too long for the ``n_stamps`` distinct timestamps it holds.

    More than ``_MIN_GUARDED_STEPS`` points and more than ``_MAX_STEPS_PER_TIMESTAMP`` per distinct
    timestamp: the span of a few rows with a wrong clock rather than of the data (504 hourly
    timestamps and one row at epoch 0 span 473,856 hours). Short grids pass however sparse (a week
    of two readings), as do long ones that the data fills (two years of hours: 17,520 points).

    Parameters
    ----------
    n_steps : int
        Points of the grid, from the earliest timestamp to the latest.
    n_stamps : int
        Distinct timestamps of the data on it.
    """
    return n_steps > _MIN_GUARDED_STEPS and n_steps > _MAX_STEPS_PER_TIMESTAMP * n_stamps


def _anchor_weekday(offset) -> int | None:
    """The weekday (Monday 0) a grid of step ``offset`` falls on: a week's anchor, else None."""
    return offset.weekday if isinstance(offset, pd.offsets.Week) else None


def same_step(freq, other, zoned: bool) -> bool:
    """Whether two frequencies step one grid the same way, however each was written.

    One grid gets several names: pandas infers ``"D"`` or ``"W-SUN"`` from three or more
    timestamps, two timestamps give their difference (``"24h"``, ``"168h"``), a step given as
    a duration stays one (``"7D"``). On a naive grid these are durations and compare as such
    (a week anchored on a weekday is 7 days: the grid's points then fall on that weekday). On a
    grid with a time zone, days and weeks follow the wall clock (:func:`steps_by_wall_clock`)
    and a duration does not, so ``"D"`` and ``"24h"`` are two grids there, and never equal.

    Parameters
    ----------
    freq, other : str or pandas.DateOffset or None
        None for a RangeIndex grid (equal only to None).
    zoned : bool
        Whether the grids have a time zone.
    """
    if freq is None or other is None:
        return freq is None and other is None

    def key(f):
        offset = pd.tseries.frequencies.to_offset(f)
        duration = step_duration(offset)
        if duration is None:
            return ("calendar", offset)  # months, quarters...: no duration, compared as offsets
        return ("wall clock" if zoned and steps_by_wall_clock(offset) else "duration", duration)

    return key(freq) == key(other)


def _step_offset(step_ns: int, zoned: bool) -> pd.DateOffset:
    """The offset of a step inferred from timestamps (``step_ns`` on the wall clock of their zone).

    In a time zone a whole number of days is a step of calendar days (``"D"``, ``"7D"``), which
    ``date_range`` keeps on the wall clock across daylight-saving switches, as ``pd.infer_freq``
    names such a grid; anything else is the fixed duration (``"24h"`` on a naive grid, as before).
    """
    if zoned and step_ns > 0 and step_ns % _DAY_NS == 0:
        return pd.offsets.Day(step_ns // _DAY_NS)
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step_ns, unit="ns"))


def _is_unit_step(index: pd.Index) -> bool:
    return len(index) < 2 or bool(np.all(np.diff(np.asarray(index)) == 1))


def _time_grid(index) -> pd.Index:
    """``index`` as a regular DatetimeIndex with ``freq`` set, or a RangeIndex of step 1.

    Detectors count grid steps from the fitted history (``BaseDetector.steps_after_fit``):
    one step is ``freq`` on a DatetimeIndex and 1 on a RangeIndex, so any other grid is
    refused here rather than mis-counted there.
    """
    if isinstance(index, pd.RangeIndex):
        if index.step != 1:
            raise ValueError(
                f"Panel index: a RangeIndex must have step 1 (one grid step per time point), got {index!r}"
            )
        return index
    if not isinstance(index, pd.DatetimeIndex):
        # Wrapped first: pd.DatetimeIndex would read a plain list of integers as nanoseconds since 1970.
        index = index if isinstance(index, pd.Index) else pd.Index(index)
        if pd.api.types.is_numeric_dtype(index):
            if len(index) == 0:
                return pd.RangeIndex(0, name=index.name)
            if not (pd.api.types.is_integer_dtype(index) and _is_unit_step(index)):
                shown = index[:5].tolist()
                raise ValueError(
                    f"Panel index: numeric time points must be consecutive integers (step 1, such as "
                    f"[0, 1, 2]), got {shown}{' ...' if len(index) > 5 else ''} ({index.dtype}); "
                    "pass a DatetimeIndex for timestamps"
                )
            return pd.RangeIndex(int(index[0]), int(index[0]) + len(index), name=index.name)
        index = pd.DatetimeIndex(index)
    if index.hasnans:
        # Before the checks below, which would compare NaT (its integer is the smallest) or
        # infer a step from it (a TypeError deep in pandas).
        pos = int(np.flatnonzero(index.isna())[0])
        raise ValueError(
            f"Panel index: time point {pos} of {len(index)} is missing (NaT); every time point needs a timestamp"
        )
    if len(index) >= 2:
        # Checked for every length, with or without freq: pd.infer_freq reads three or more
        # decreasing timestamps as a regular grid of negative step ("-1h"), and a reversed
        # date_range keeps such a freq, which steps_after_fit would count backwards.
        steps = np.diff(index.asi8)
        if not (steps > 0).all():
            pos = int(np.flatnonzero(steps <= 0)[0])
            raise ValueError(
                f"Panel index: the timestamps must increase, got {index[pos]} then {index[pos + 1]}"
            )
    if index.freq is not None or len(index) == 0:
        return index
    if len(index) == 1:
        raise ValueError(
            f"Panel index: one timestamp ({index[0]}) does not give the grid's step; pass an index with "
            f"freq set, e.g. pd.date_range(ts, periods=1, freq=\"h\")"
        )
    if len(index) == 2:
        # The difference on the wall clock where it is whole days: two local midnights 23 h apart
        # across a daylight-saving switch are one day, the step pd.infer_freq gives three of them.
        # Any other step is the instants' difference: 01:00+01 then 03:00+02 are one hour apart,
        # not the two the wall clock shows (which pandas then refused as the index's freq).
        wall = index.tz_localize(None) if index.tz is not None else index
        step = (wall[1] - wall[0]).as_unit("ns").value
        if index.tz is not None and (step <= 0 or step % _DAY_NS):
            step = (index[1] - index[0]).as_unit("ns").value
        freq = _step_offset(step, zoned=index.tz is not None)
    else:
        freq = pd.infer_freq(index)
        if freq is None:
            raise ValueError("Panel index: the timestamps fit no regular frequency")
    return pd.DatetimeIndex(index, freq=freq)


def _parse_timestamps(column: pd.Series, name: str, context_of) -> pd.Series:
    """The time column as UTC-aware timestamps (NaT where missing), or a ValueError naming a bad value.

    Text is read as ISO 8601 (``format="ISO8601"``): without it pandas infers one layout from
    the first value and refuses every other valid form, such as ``...T01:00:00.000Z`` after
    ``...T00:00:00Z``, or a date alone beside datetimes, with a message that ends in "You
    might want to try:" and nothing after it. Other columns (datetimes, Timestamps mixed
    with text) are left to pandas' own reading.

    Parameters
    ----------
    column : pandas.Series
    name : str
        The column's name, for the messages.
    context_of : callable
        Row position -> context label, for the messages.

    Raises
    ------
    ValueError
        Naming the column, the first value that is not an ISO 8601 timestamp and its context.
    """
    text = pd.api.types.is_string_dtype(column.dtype) or (
        column.dtype == object and pd.api.types.is_string_dtype(column)  # scans the values: all text
    )
    if not text:
        try:
            return pd.to_datetime(column, utc=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {name!r} holds values that are not timestamps: {_first_line(exc)}") from exc
    try:
        return pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        # pandas names the value but not its row: find the first that fails on its own. Only
        # the values that coerce to NaT are tried ("", "NaT" and None among them, which parse
        # as missing and are reported as such after this function).
        coerced = pd.to_datetime(column, utc=True, format="ISO8601", errors="coerce")
        for pos in np.flatnonzero(coerced.isna().to_numpy() & column.notna().to_numpy()):
            raw = column.iloc[pos]
            try:
                pd.to_datetime(pd.Series([raw], dtype=object), utc=True, format="ISO8601")
            except (ValueError, TypeError) as bad:
                raise ValueError(
                    f"column {name!r} holds {raw!r} for context {context_of(int(pos))!r}, which is not an "
                    "ISO 8601 timestamp (such as 2024-03-30T15:00:00, 2024-03-30 15:00 or "
                    "2024-03-30T15:00:00+02:00)"
                ) from bad
        raise ValueError(f"column {name!r} holds values that are not timestamps: {_first_line(exc)}") from exc


def check_time_not_numeric(column: pd.Series, name: str, fix: str) -> None:
    """Refuse a time column of numbers: pandas would read them as nanoseconds since 1970.

    An epoch in seconds (1710806400) then becomes a 1970 timestamp and an hourly grid a step
    of 3600 ns, without a word; the unit is the caller's to say, so it is refused rather than
    guessed. :meth:`Panel.from_frame` and the jobs' reader (:func:`tsanomaly.jobs.frame_to_panel`)
    both call it, each with its own way to fix it.

    Parameters
    ----------
    column : pandas.Series
        The time column.
    name : str
        Its name, for the message.
    fix : str
        What to do instead, appended to the message.

    Raises
    ------
    ValueError
        When the column's dtype is numeric (booleans aside: pandas refuses those itself), or it
        is an object column whose values are all numbers, or a categorical column whose
        categories are either.
    """
    if len(column) and column.isna().all():
        return  # no value at all (an empty CSV column reads as float NaN): not numbers; said elsewhere
    if isinstance(column.dtype, pd.CategoricalDtype):
        # pandas reads the categories, so they are what must not be numbers.
        column = column.cat.categories.to_series()
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return
    numeric = pd.api.types.is_numeric_dtype(dtype)
    if not numeric and dtype == object:
        # Python ints in an object column are read as nanoseconds too.
        numeric = pd.api.types.infer_dtype(column, skipna=True) in ("integer", "floating", "mixed-integer-float", "decimal")
    if numeric:
        raise ValueError(f"column {name!r} holds numbers, not timestamps; {fix}")


def _code_dtype(n: int):
    """int32 for codes below ``n`` where it holds them (4 bytes a row, not 8), else int64."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


def _context_codes(df: pd.DataFrame, context_cols: list) -> tuple[np.ndarray, pd.Index]:
    """Each row's position among the sorted distinct contexts, and those contexts.

    Returns
    -------
    codes : int64 array (one column: factorize's), or int32 where the combinations of several
        columns allow (:func:`_code_dtype`), shape (n_rows,)
    contexts : pandas.Index (one column) or MultiIndex (several), sorted; a missing label
        (which :meth:`Panel.from_frame` refuses first) would be a context of its own, sorted last.
    """
    if len(context_cols) == 1:
        codes, labels = pd.factorize(df[context_cols[0]], sort=True, use_na_sentinel=False)
        return codes, pd.Index(labels, name=context_cols[0])
    # Several columns: combine the codes column by column, renumbering the distinct pairs at
    # each step (sorted, so the order is lexicographic), which keeps the numbers below n_rows.
    # One column is factorized at a time and its codes freed once combined, and each
    # combination's code in every column is carried along per distinct combination (not per
    # row): at 43M rows every per-row array is 350 MB in int64, and all of them alive at once
    # set the peak memory of building a Panel.
    combined, n_combined = None, 1
    levels, level_codes = [], []
    for col in context_cols:
        codes, labels = pd.factorize(df[col], sort=True, use_na_sentinel=False)
        n_keys = n_combined * len(labels)
        # The pairs' keys (combined code, this column's code) as one integer below n_keys, in the
        # narrowest type that holds them; the product is taken in that type, not in the codes'.
        if combined is None:
            keys = codes.astype(_code_dtype(n_keys), copy=False)
        else:
            keys = np.multiply(combined, len(labels), dtype=_code_dtype(n_keys))
            keys += codes  # in place: int64 codes below len(labels) fit the keys' type
        del codes, combined
        combined, distinct = _renumber(keys, n_keys)
        del keys
        previous, own = np.divmod(distinct, len(labels))
        level_codes = [level[previous] for level in level_codes] + [own]
        levels.append(labels)
        n_combined = len(distinct)
    contexts = pd.MultiIndex(levels=levels, codes=level_codes, names=context_cols, verify_integrity=False)
    return combined, contexts


def _renumber(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Each key's rank among the distinct keys (``pd.factorize(keys, sort=True)``'s codes), and those keys, sorted.

    ``keys`` are integers in ``[0, n_keys)``. Where that range is not larger than the keys
    themselves, the distinct keys are marked in an array of ``n_keys`` flags and ranked by a
    running count, with no hashing or sorting of the rows (the (country, ASN) pairs of 13M rows:
    0.38 s, against 1.34 s for factorize). The running count holds a number per possible key, so
    the range is bounded by the rows: at 4 possible keys per row (the first bound) it added 32
    bytes a row to the peak (3M rows: 219 MB -> 312 MB). The ranks have the keys' type (they are
    smaller): int32 ranks of int32 keys halve the per-row array.
    """
    if n_keys > len(keys) + 1024:
        codes, distinct = pd.factorize(keys, sort=True)
        return codes.astype(keys.dtype, copy=False), distinct
    present = np.zeros(n_keys, dtype=bool)
    present[keys] = True
    rank = np.cumsum(present, dtype=keys.dtype)
    rank -= 1
    return rank[keys], np.flatnonzero(present)


def _column_zone(column: pd.Series):
    """The time zone of a time column's dtype, or None for naive timestamps, text and UTC.

    UTC has no daylight saving, so its grids stay naive UTC as they always were; a zone whose
    offset changes keeps its wall clock on a grid of days or weeks (see :func:`_regular_grid`).
    """
    zone = getattr(column.dtype, "tz", None)
    return None if zone is None or str(zone) in ("UTC", "Etc/UTC") else zone


def _most_common_step(stamps: pd.Series, time_col: str) -> int:
    """The most common step (ns) between the distinct timestamps (ties: the smaller): the grid's step.

    Gaps are whole multiples of it (missing buckets); anything else fits no grid.
    """
    unique = pd.DatetimeIndex(np.sort(stamps.unique())).as_unit("ns")
    if len(unique) < 2:
        raise ValueError(
            f"column {time_col!r} has a single distinct timestamp {unique[0]}; pass freq= "
            "(--freq on the command line) to say the grid's step"
        )
    values, counts = np.unique(np.diff(unique.asi8), return_counts=True)
    return int(values[np.argmax(counts)])


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _check_weekday(stamps: pd.Series, weekday: int, freq, offset, time_col: str, context_of, zone, raw) -> None:
    """Raise a ValueError naming the first timestamp (in row order) that is not on the anchor ``weekday``.

    The grid of an anchored week is what ``pd.date_range(first, last, freq="W-SUN")`` builds:
    its points fall on that weekday, each at the first point's time of day. pandas does not
    require midnight (``date_range("2026-01-04 10:00", periods=3, freq="W-SUN")`` gives Sundays
    at 10:00), so neither does this: the time of day is free, and one for every point, which
    the step check of :func:`_regular_grid` enforces (points 7 days apart share it). The
    weekday is read on the grid's clock: the zone's wall clock for a zoned column, else the
    naive (UTC) timestamps the grid is built from.
    """
    days = stamps.dt.day_of_week.to_numpy()
    wrong = days != weekday
    if not wrong.any():
        return
    pos = int(np.flatnonzero(wrong)[0])
    found = int(days[pos])
    anchor = offset.freqstr.split("-")[-1]
    alike = f"{offset.n}W-{_WEEKDAYS[found][:3].upper()}" if offset.n != 1 else f"W-{_WEEKDAYS[found][:3].upper()}"
    written = raw.iloc[pos] if raw is not None else None
    if zone is not None:
        clock = f" on the wall clock of {zone}"
    else:  # a column in UTC, or instants named with UTC offsets, is on a naive UTC grid
        clock = " in UTC" if raw is not None and getattr(raw.dtype, "tz", None) is not None else ""
    why = ""
    if zone is None and isinstance(written, str) and _UTC_OFFSET_TEXT.search(written.strip()):
        why = (
            f" (written {written!r}: text with a UTC offset is read as the UTC instant it names, and the "
            "grid's weekdays are those of UTC; to keep local weekdays give the time zone instead, "
            f"e.g. df[{time_col!r}] = pd.to_datetime(df[{time_col!r}], utc=True).dt.tz_convert('Europe/Berlin'))"
        )
    raise ValueError(
        f"column {time_col!r}: timestamp {stamps.iloc[pos]} for context {context_of(pos)!r} is a "
        f"{_WEEKDAYS[found]}{clock}, but freq={freq!r} is a week anchored on {_WEEKDAYS[weekday]} ({anchor}): "
        f"its points fall on {_WEEKDAYS[weekday]}s{why}; pass freq={alike!r} for weeks on {_WEEKDAYS[found]}s, "
        "or '7D' for 7-day steps from the first timestamp, or resample the data to the anchored weeks first"
    )


def _regular_grid(instants: pd.Series, freq, time_col: str, context_of, zone=None, raw=None) -> pd.DatetimeIndex:
    """One regular DatetimeIndex covering every timestamp, or a ValueError saying which one fits none.

    Parameters
    ----------
    instants : pandas.Series
        The timestamps: UTC-aware datetimes (from_frame), or naive ones taken as written.
    freq : str or None
        The step given (read by :func:`grid_step`: a fixed step, or a week anchored on a weekday,
        whose timestamps must then all fall on that weekday), or None to infer the most common step.
    time_col : str
        The column's name, for the messages.
    context_of : callable
        Row position -> context label, for the messages.
    zone : tzinfo, optional
        The column's own time zone (:func:`_column_zone`). A grid whose step follows the wall
        clock (days, weeks: :func:`steps_by_wall_clock`; an inferred step that is a whole number
        of days) is then built in that zone, as ``pd.date_range(..., tz=zone)`` builds it, since
        in UTC such a step lasts 23 or 25 h across a daylight-saving switch. Any other grid is
        naive UTC.
    raw : pandas.Series, optional
        The column as given, to say in the message when text with UTC offsets is the cause.
    """
    instants = instants.dt.as_unit("ns")  # one unit for the integer arithmetic below
    utc = instants.dt.tz_localize(None)  # a no-op on naive timestamps (tsanomaly.spark's)
    # The wall clock of the column's zone: the inferred step is that of the data as written locally.
    wall = utc if zone is None else instants.dt.tz_convert(zone).dt.tz_localize(None)
    if freq is None:
        step_ns = _most_common_step(utc, time_col)
        if zone is not None and step_ns >= _DAY_NS - _DST_SHIFT.value:
            # Days or more: measured on the zone's wall clock, where a day across a switch is still
            # one (23 or 25 h in UTC). Shorter steps are durations: in UTC, as the grid is built, so
            # that two hours either side of a switch are not taken for 0 or 2 h apart.
            step_ns = _most_common_step(wall, time_col)
        offset = _step_offset(step_ns, zoned=zone is not None)
    else:
        offset, step = grid_step(freq)
        step_ns = int(step.as_unit("ns").value)
    by_wall_clock = zone is not None and steps_by_wall_clock(offset)
    stamps = wall if by_wall_clock else utc
    weekday = _anchor_weekday(offset)
    if weekday is not None:
        _check_weekday(stamps, weekday, freq, offset, time_col, context_of, zone if by_wall_clock else None, raw)
    start, end = stamps.min(), stamps.max()

    def shown(stamp):  # a zoned column's time on its own clock, not as the naive UTC grid holds it
        return stamp.tz_localize("UTC").tz_convert(zone) if zone is not None and not by_wall_clock else stamp

    ints = stamps.astype("int64").to_numpy()
    # Before the grid is built (pd.date_range holds 8 bytes a point, the panel 8 per point and context):
    # a row with a wrong clock would make it as long as the span to that row, not to the data.
    n_steps = (end.value - start.value) // step_ns + 1
    if n_steps > _MIN_GUARDED_STEPS:  # the distinct timestamps (a hash of every row) are counted only then
        n_stamps = len(pd.unique(ints))
        if too_sparse(n_steps, n_stamps):
            first, last = int(np.argmin(ints)), int(np.argmax(ints))
            raise ValueError(
                f"column {time_col!r}: the grid of freq {offset.freqstr!r} from {shown(start)} (context "
                f"{context_of(first)!r}) to {shown(end)} (context {context_of(last)!r}) would hold {n_steps:,} "
                f"time points for {n_stamps:,} distinct timestamps, every context a row over all of them "
                f"({n_steps * 8 / 1e6:,.1f} MB per context). The earliest or the latest row likely has a wrong clock "
                "(a missing time written as 0 reads as 1970-01-01): drop or mend the rows with a wrong clock; for "
                "a log that is truly this sparse, pass a coarser freq= (--freq on the command line), such as '1D'"
            )
    # The rows' offsets from the start, reduced modulo the step in place: one per-row array, not two.
    remainder = ints - start.value
    remainder %= step_ns
    off_grid = remainder != 0
    del remainder
    if off_grid.any():
        pos = int(np.flatnonzero(off_grid)[0])

        where = f"column {time_col!r}: timestamp {shown(stamps.iloc[pos])} for context {context_of(pos)!r}"
        step = pd.Timedelta(step_ns, unit="ns")
        shift = pd.Timedelta((int(stamps.iloc[pos].value) - start.value) % step_ns, unit="ns")
        written = raw.iloc[pos] if raw is not None else None
        if (
            step_ns % _DAY_NS == 0
            and min(shift, step - shift) <= _DST_SHIFT
            and isinstance(written, str)
            and _UTC_OFFSET_TEXT.search(written.strip())
        ):
            # Neither freq= nor resampling helps: the zone is what is missing.
            raise ValueError(
                f"{where} (written {written!r}) is {min(shift, step - shift)} off the grid of step {step} "
                f"starting at {start} (UTC). Text with a UTC offset is read as the UTC instant it names, "
                "and a step of a day or more in local time lasts 23 or 25 h in UTC across a daylight-saving "
                "switch, so it fits no grid in UTC. Give the time zone instead: zone-aware "
                f"timestamps, e.g. df[{time_col!r}] = pd.to_datetime(df[{time_col!r}], utc=True)"
                ".dt.tz_convert('Europe/Berlin') (on the command line, a Parquet timestamp column with its "
                "zone), whose days and weeks follow the wall clock"
            )
        utc_days = by_wall_clock and not ((utc.astype("int64").to_numpy() - utc.min().value) % step_ns).any()
        if utc_days and zone is not None:
            # Every instant on a grid of this step in UTC: days of UTC's clock (midnights in UTC, a Parquet
            # column in UTC read in a zone), which the zone's clock shows an hour apart across a switch.
            raise ValueError(
                f"{where} is off the grid of step {step} on the clock of its time zone, {zone}, starting at "
                f"{start}: every time is {utc.min().time()} in UTC, so these are steps of UTC's clock, not of "
                f"{zone}'s, whose UTC offset changes at a daylight-saving switch. Read them in UTC (a job fitted "
                "without --tz or with --tz UTC; .dt.tz_convert('UTC') in Python), or write them as times of "
                f"{zone}'s clock (its midnights for days)"
            )
        local_steps = not by_wall_clock and not ((wall.astype("int64").to_numpy() - wall.min().value) % step_ns).any()
        if local_steps and zone is not None:
            # The reverse: steps of the zone's clock (6-hour buckets counted in Paris, Lord Howe's hours) on
            # a grid of fixed durations in UTC, which that clock leaves by its shift at a switch.
            raise ValueError(
                f"{where} is off the grid of step {step} starting at {shown(start)}: a step under a day is a fixed "
                f"duration, counted in UTC, and these times are steps of {zone}'s clock, which moves against UTC "
                f"at a daylight-saving switch. Count the buckets on UTC's clock and write their times in UTC or "
                "with their offset"
            )
        if freq is None:
            raise ValueError(
                f"{where} fits no regular grid of step {step} (the most common step between the timestamps) "
                f"starting at {shown(start)}; pass freq= (--freq on the command line) to give the step, or resample "
                "first"
            )
        # The step was given: asking for freq= again would not help, the data's timestamps are off it.
        same_time = ""
        if weekday is not None and shift % pd.Timedelta(days=1) != pd.Timedelta(0):  # on the weekday (checked above)
            same_time = (f" (a week anchored on {_WEEKDAYS[weekday]} keeps the first point's time of day, "
                         "as pd.date_range does)")
        raise ValueError(
            f"{where} is off the grid of step {step} (freq={freq!r}) starting at {shown(start)}{same_time}: the data's "
            "timestamps do not follow that step; resample the data to it first (one row per context and bucket)"
        )
    if by_wall_clock:
        # Between the first and last instants on the zone's clock: date_range keeps the wall-clock time.
        first, last = instants.min().tz_convert(zone), instants.max().tz_convert(zone)
        try:
            return pd.date_range(first, last, freq=offset, name=time_col, unit="ns")
        # A point at a wall-clock time that a switch skips or repeats: ValueError from pandas'
        # own zones, pytz's NonExistentTimeError / AmbiguousTimeError (no ValueErrors) from its.
        except Exception as exc:  # noqa: BLE001 - re-raised as the ValueError the callers report
            raise ValueError(
                f"column {time_col!r}: the grid of step {offset.freqstr} from {first} to {last} in its time zone "
                f"has no single instant for every point: {_first_line(exc)}"
            ) from exc
    return pd.date_range(start, end, freq=offset, name=time_col, unit="ns")
