"""Time zones: the rules for reading and showing times in a zone, shared by the jobs and Spark.

A zone is given as ``tsanomaly fit --tz`` (:mod:`tsanomaly.jobs`) or as ``tz=`` of
:func:`tsanomaly.spark.fit` and :func:`tsanomaly.spark.from_detector`; both check and read it
by the rules held here, so that one zone reads the same times alike on one machine and on Spark:

- :func:`check_time_zone`: the zone must be an IANA name, kept in the database's spelling;
- :func:`check_not_a_fixed_abbreviation`: ``EST``, ``MST`` and ``HST``, fixed all year, are
  refused where a zone is first given;
- :data:`UTC_NAMES`: UTC under every name the database gives it, which reads naive times as
  a model without a zone reads them;
- :func:`localize_wall_clock` and :func:`times_in_zone`: wall-clock times become instants in the
  zone, and a time that a daylight-saving switch skips or repeats is refused, never guessed;
- :func:`local_time`: a naive UTC time of a job's grid shown on the zone's clock.

:mod:`tsanomaly.jobs` re-exports :func:`check_time_zone`, :func:`times_in_zone` and
:func:`local_time` (``tsanomaly.jobs.local_time`` is documented in the README). This module
imports neither :mod:`tsanomaly.jobs` nor :mod:`tsanomaly.spark`, which both import it.
"""
from __future__ import annotations

import difflib
import re
import zoneinfo

import numpy as np
import pandas as pd

from tsanomaly.io import _first_line
from tsanomaly.panel import _parse_timestamps

__all__ = [
    "UTC_NAMES",
    "check_time_zone",
    "check_not_a_fixed_abbreviation",
    "localize_wall_clock",
    "times_in_zone",
    "local_time",
]


#: ISO 8601 text whose time of day ends in a UTC offset ("...T02:00:00+02:00", "... 02:00Z"): the
#: time follows a "T" or a space, and only the offset holds "Z", "+" or "-" after it. A bare date
#: ("2026-03-29") has no time, hence no offset, however it ends.
_TEXT_WITH_OFFSET = re.compile(r"^[^T\s]+[T\s].*[Z+-]", re.IGNORECASE)


#: The IANA database's names of UTC (its "backward" links of Etc/UTC and Etc/GMT): offset 0 all year,
#: so a zone that reads naive times as a model fitted without --tz reads them (as UTC), and that
#: tsanomaly.spark keeps as no zone.
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu",
                       "GMT", "Etc/GMT", "GMT0", "Etc/GMT0", "GMT+0", "Etc/GMT+0", "GMT-0", "Etc/GMT-0",
                       "Greenwich", "Etc/Greenwich"})

#: Zones named like the standard time of a region whose clocks change, but fixed all year (no daylight
#: saving): name -> (offset, the zones of the places that use it, the Etc zone of that fixed offset).
_FIXED_ABBREVIATIONS = {
    "EST": ("UTC-05:00", "America/New_York (EST, and EDT in summer) or America/Panama (EST all year)", "Etc/GMT+5"),
    "MST": ("UTC-07:00", "America/Denver (MST, and MDT in summer) or America/Phoenix (MST all year)", "Etc/GMT+7"),
    "HST": ("UTC-10:00", "Pacific/Honolulu (HST all year) or America/Adak (HST, and HDT in summer)", "Etc/GMT+10"),
}


def check_time_zone(tz, given_as: str | None = None) -> str:
    """Return the IANA database's spelling of the time zone ``tz`` names, else raise ValueError.

    The rule for a zone wherever one is given: ``fit --tz`` and the other jobs, and ``tz=`` of
    :func:`tsanomaly.spark.fit` and :func:`tsanomaly.spark.from_detector`.

    Parameters
    ----------
    tz : str
        An IANA name: ``"Europe/Paris"``, ``"America/New_York"``, ``"UTC"``.
    given_as : str, optional
        How the messages name the value; default ``--tz 'value'`` (Spark's: ``tz='value'``).

    Raises
    ------
    ValueError
        One line naming the value, the closest known names (whatever their case: ``utc`` ->
        ``UTC``) and an example; on a machine without a time-zone database (no system zone
        files, as in slim container images and on Windows, and no ``tzdata`` package), one
        that says to install ``tzdata``.

    Examples
    --------
    >>> check_time_zone("Europe/Paris")
    'Europe/Paris'
    """
    given_as = given_as or f"--tz {tz!r}"
    names = sorted(zoneinfo.available_timezones())
    if isinstance(tz, str) and tz:
        try:
            zoneinfo.ZoneInfo(tz)
            # The database's spelling: on a file system that ignores case (macOS, Windows) ZoneInfo
            # also reads "europe/paris", which a model would keep and Linux would not read back.
            return tz if tz in names else next((name for name in names if name.lower() == tz.lower()), tz)
        # ZoneInfoNotFoundError (a KeyError) for an unknown name, ValueError for a path-like one.
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    if not names:
        # No zone at all, not an unknown name: the database is missing, not the user's spelling.
        raise ValueError(
            f"{given_as}: this machine has no time-zone database (no zone files in {list(zoneinfo.TZPATH)} "
            "and no tzdata package), so no zone can be read; install it: pip install tzdata"
        )
    # Compared in lower case: "utc" is UTC, "europe/paris" Europe/Paris (names are case-sensitive).
    by_lower = {name.lower(): name for name in names}
    if str(tz).lower() in by_lower:  # the name in another case: that one, not two more close ones
        raise ValueError(f"{given_as} is not a time zone (did you mean {by_lower[str(tz).lower()]}? zone names "
                         "are case-sensitive); give an IANA name such as Europe/Paris, America/New_York or UTC")
    close = [by_lower[name] for name in difflib.get_close_matches(str(tz).lower(), list(by_lower), n=3)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"{given_as} is not a time zone{hint}; give an IANA name such as Europe/Paris, America/New_York or UTC"
    )


def check_not_a_fixed_abbreviation(tz: str, given_as: str | None = None) -> None:
    """Refuse ``fit --tz EST`` (MST, HST): zones fixed all year, which read a log written on the clock
    of a place with daylight saving (New York's) an hour off all summer, without a word.

    A clock that is fixed is still given, as the Etc zone of its offset (``Etc/GMT+5``). Checked
    where a zone is first given (``fit --tz``, Spark's ``fit`` and ``from_detector``), not on a
    saved model's zone, so models that hold one keep working.

    Parameters
    ----------
    tz : str
        A zone name, as :func:`check_time_zone` returns it.
    given_as : str, optional
        How the message names the value, as in :func:`check_time_zone`; default ``--tz value``.

    Raises
    ------
    ValueError
        For ``EST``, ``MST`` or ``HST``: one line naming the offset, the zones of the places that
        use the abbreviation, and the Etc zone of a clock fixed at that offset.
    """
    if tz in _FIXED_ABBREVIATIONS:
        offset, places, fixed = _FIXED_ABBREVIATIONS[tz]
        given_as = given_as or f"--tz {tz}"
        raise ValueError(
            f"{given_as} is {offset} all year, without daylight saving, so times written on the clock of a place "
            f"that changes to summer time would be read an hour off for months: give the zone of the place the "
            f"times were written in, {places}, or {fixed} for a clock that stays at {offset} all year"
        )


def localize_wall_clock(wall: pd.DatetimeIndex, tz: str) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Naive wall-clock times ``wall`` as instants in ``tz``, and where they name no single instant.

    A wall-clock time that a daylight-saving switch of ``tz`` skips or repeats is NaT in the
    result and True in the mask, never shifted nor guessed: the caller refuses it in its own
    words (:func:`times_in_zone` for ``fit --tz``, ``tsanomaly.spark`` for a ``TIMESTAMP_NTZ``
    column read in ``tz=``). Asking pandas for NaT rather than an error also spares the caller
    its exceptions, which differ between pandas' own zones and pytz's.

    Parameters
    ----------
    wall : pandas.DatetimeIndex
        Naive timestamps, NaT where missing.
    tz : str
        An IANA zone name (:func:`check_time_zone`).

    Returns
    -------
    local : pandas.DatetimeIndex
        Zone-aware in ``tz``, same length; NaT where ``wall`` is NaT or names no single instant.
    no_instant : numpy.ndarray of bool
        True where ``wall`` holds a time (not NaT) that ``tz`` skips or repeats.

    Examples
    --------
    >>> wall = pd.DatetimeIndex(["2026-03-29 01:00", "2026-03-29 02:30", "2026-10-25 02:30"])
    >>> local, no_instant = localize_wall_clock(wall, "Europe/Paris")
    >>> no_instant.tolist()
    [False, True, True]
    """
    local = wall.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return local, np.asarray(local.isna() & wall.notna())


def times_in_zone(column: pd.Series, tz: str, name: str = "time", context_of=None) -> pd.Series:
    """Timestamps as instants in time zone ``tz``: naive ones are its wall clock, others are converted.

    What ``fit --tz`` (``JobColumns.tz``) does to the time column before the panel is built:

    - text without a UTC offset (``2026-03-29 01:00:00``), and naive datetimes (a Parquet
      timestamp column without a zone), are wall-clock times in ``tz``
      (``pandas.Series.dt.tz_localize``);
    - text with an offset (``2026-03-29T03:00:00+02:00``, ``...Z``), offsets that change at a
      daylight-saving switch included, and zone-aware datetimes name instants, converted to ``tz``.
      The two kinds of text may mix in one column.

    A wall-clock time that a daylight-saving switch skips (02:30 on the spring day in
    Europe/Paris) or repeats (02:30 on the autumn day) names no single instant: it is refused,
    never shifted nor guessed from the rows' order (an export sorted on the text, whose order
    among equal texts is arbitrary, would swap the two hours without a word).

    Parameters
    ----------
    column : pandas.Series
        The time column: ISO 8601 text or datetimes.
    tz : str
        An IANA zone name (:func:`check_time_zone`).
    name : str
        The column's name, for messages.
    context_of : callable, optional
        Row position -> context label, for messages.

    Returns
    -------
    pandas.Series
        Zone-aware datetimes in ``tz`` (NaT where the input is missing), same index and name.

    Raises
    ------
    ValueError
        For a time skipped or repeated by a switch, naming the value, its row and context, and
        the text with offsets to write instead; for text that is not ISO 8601, naming the first
        such value (as :meth:`Panel.from_frame` does).

    Examples
    --------
    >>> times = pd.Series(["2026-03-29 01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T02:00:00Z"])
    >>> times_in_zone(times, "Europe/Paris").dt.strftime("%H:%M%z").tolist()
    ['01:00+0100', '03:00+0200', '04:00+0200']
    """
    context_of = context_of or (lambda pos: None)
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(column.cat.categories.dtype)
    if column.dtype == object and not pd.api.types.is_string_dtype(column):
        # Python datetimes (or dates) as objects: pandas reads them, naive or aware (not both).
        try:
            column = pd.to_datetime(column)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {name!r} holds values that are not timestamps of one kind (naive, or "
                             f"with a zone): {_first_line(exc)}") from exc
    if getattr(column.dtype, "tz", None) is not None:
        return column.dt.tz_convert(tz)
    # Each distinct time parsed and localised once: it repeats for every context.
    codes, uniques = pd.factorize(column)
    if pd.api.types.is_datetime64_dtype(column.dtype):
        with_offset = np.zeros(len(uniques), dtype=bool)
        naive, aware = pd.DatetimeIndex(uniques), pd.DatetimeIndex([], tz="UTC")
    else:
        uniques = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
        with_offset = uniques.str.strip().str.contains(_TEXT_WITH_OFFSET).to_numpy(dtype=bool)
        try:
            naive = pd.DatetimeIndex(pd.to_datetime(uniques[~with_offset], format="ISO8601"))
            aware = pd.DatetimeIndex(pd.to_datetime(uniques[with_offset], format="ISO8601", utc=True))
        except (ValueError, TypeError):
            naive = None
        if naive is None or naive.tz is not None:
            # Panel.from_frame's reader names the first value that is no ISO 8601 timestamp, and
            # its context. Should it read them all, the split into text with and without an offset
            # failed: said, rather than the column read in UTC.
            _parse_timestamps(column, name, context_of)
            raise ValueError(f"column {name!r}: cannot tell which of its times carry a UTC offset, to read the "
                             f"others in {tz}; write them all as ISO 8601 text, each with or without one")
    naive = naive.as_unit("ns")
    local, no_instant = localize_wall_clock(naive, tz)
    if no_instant.any():
        row = int(np.flatnonzero(np.isin(codes, np.flatnonzero(~with_offset)[no_instant]))[0])  # the first in the file
        raise _no_single_instant(column.iloc[row], naive[no_instant][0], tz, name, row, context_of(row))
    instants = np.empty(len(with_offset), dtype="datetime64[ns]")
    instants[~with_offset] = local.tz_convert("UTC").tz_localize(None).to_numpy()
    instants[with_offset] = aware.as_unit("ns").tz_localize(None).to_numpy()
    by_row = instants.take(np.maximum(codes, 0)) if len(instants) else np.full(len(codes), np.datetime64("NaT", "ns"))
    by_row[codes < 0] = np.datetime64("NaT")  # a missing time: reported by Panel.from_frame
    return pd.Series(pd.DatetimeIndex(by_row).tz_localize("UTC").tz_convert(tz), index=column.index, name=column.name)


def _no_single_instant(written, wall: pd.Timestamp, tz: str, name: str, row: int, context) -> ValueError:
    """The error for a wall-clock time ``wall`` that a daylight-saving switch of ``tz`` skips or repeats."""
    where = f"column {name!r} holds {written!r} at row {row} (context {context!r})"
    either = pd.DatetimeIndex([wall, wall])
    earlier, later = either.tz_localize(tz, ambiguous=np.array([True, False]), nonexistent="NaT")
    # Text can carry an offset; a naive timestamp column (Parquet) cannot: it must hold a zone, or UTC.
    is_text = isinstance(written, str)
    if pd.isna(earlier):  # skipped: no instant has this wall-clock time
        fix = "write them with their UTC offset or in UTC" if is_text else (
            "store them as timestamps with their zone (zone-aware) or in UTC")
        return ValueError(
            f"{where}, a time that {tz} skips at a daylight-saving switch (its clocks jump forward), so it names "
            f"no instant: times written on that zone's clock never show it. Check that --tz names the zone they "
            f"were written in, or {fix}"
        )
    if is_text:
        fix = (f"write the times with their UTC offset ({earlier.isoformat()} for the first, {later.isoformat()} "
               "for the second) or in UTC")
    else:
        fix = (f"store the times as timestamps with their zone, zone-aware ({earlier} for the first, {later} for "
               "the second), or in UTC: a naive timestamp column cannot tell the two apart")
    return ValueError(
        f"{where}, a time that {tz} repeats at a daylight-saving switch (its clocks go back), so it names two "
        f"instants and which one is not guessed: {fix}"
    )


def local_time(stamp, tz: str | None):
    """A time of a job's grid as its user reads it: a naive one (UTC, on a grid finer than a day)
    on the clock of ``tz``, the model's zone; any other as it is (``fit_end_`` text included)."""
    if tz is None or isinstance(stamp, (int, np.integer)) or stamp is None:
        return stamp
    stamp = pd.Timestamp(stamp)
    return stamp.tz_localize("UTC").tz_convert(tz) if stamp.tz is None else stamp.tz_convert(tz)
