"""Reading and writing tables for scoring jobs: CSV, Parquet and JSON lines, chosen by extension.

A scheduled job reads yesterday's counts and writes alerts that another job
picks up, so two properties matter more than speed:

- **Clear errors.** A missing file, an unknown extension, a file that is not
  what its extension says, or a missing column raise ``FileNotFoundError`` or
  ``ValueError`` with a one-line message naming the path — the CLI turns them
  into exit status 2, never a traceback.
- **Atomic writes.** Every writer writes a hidden temporary file in the
  destination folder and moves it into place with :func:`os.replace`, which
  is atomic on POSIX and Windows for two paths on one file system. A reader
  therefore sees either the previous file or the complete new one, never a
  half-written one; a job that fails while writing removes its temporary
  file, and a job killed outright (SIGKILL, power loss) leaves at most a
  hidden ``.<name>.<random>.tmp`` file beside the output, never a truncated
  output.

Supported extensions (case-insensitive): ``.csv``, ``.csv.gz``, ``.parquet``,
``.pq``, ``.jsonl``, ``.ndjson``, ``.jsonl.gz``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["FORMATS", "table_format", "read_table", "labels_as_text", "check_output_path", "write_table", "write_text",
           "atomic_path"]

#: Extension -> format name. Longest suffixes first so ".csv.gz" wins over ".gz".
FORMATS = {
    ".csv.gz": "csv",
    ".jsonl.gz": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def table_format(path) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from the extension of ``path``.

    Raises
    ------
    ValueError
        For any other extension, listing the supported ones.
    """
    name = Path(path).name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"{path}: unsupported file extension; use one of {', '.join(FORMATS)} "
        "(CSV, Parquet or JSON lines, chosen by extension)"
    )


# ---------------------------------------------------------------------- reading
def _columns_in_file(path: Path, fmt: str) -> list[str] | None:
    """Column names read from the header alone, or None where the format has no cheap header."""
    if fmt == "csv":
        return list(pd.read_csv(path, nrows=0).columns)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return None  # JSON lines: every line may have its own keys; checked after reading


def read_table(
    path, columns: Sequence[str] | None = None, text_columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON lines file into a DataFrame.

    Parameters
    ----------
    path : str or Path
        The file; its extension picks the format (see :data:`FORMATS`).
    columns : sequence of str, optional
        Read only these columns (cheaper for wide Parquet files). A column
        absent from the file raises ValueError naming it and the columns
        the file has. A Parquet file's named index levels (pandas writes a
        DataFrame's index there) are columns like the others.
    text_columns : sequence of str, optional
        Columns holding labels (a job's context columns), returned as text
        exactly as written: in CSV no number parsing (the ASN ``0123`` stays
        ``"0123"``) and none of pandas' NA strings (``NA`` is Namibia, not a
        missing value); only an empty cell is missing. Numbers in JSON lines
        and typed Parquet columns become their text by :func:`labels_as_text`
        (``123`` and ``123.0`` -> ``"123"``). A missing value stays missing
        (NaN), for the caller to report.

    Returns
    -------
    pandas.DataFrame
        Values as the format stores them: CSV and JSON lines give timestamps
        as strings, which :meth:`tsanomaly.Panel.from_frame` parses.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unsupported extension, unreadable or malformed content, a missing column.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a {fmt} file")
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    text = list(dict.fromkeys(text_columns or ()))
    try:
        present = _columns_in_file(path, fmt) if wanted is not None or text else None
        if wanted is not None and present is not None:
            _check_columns(path, wanted, present)
        if fmt == "csv":
            names = wanted if wanted is not None else present
            frame = pd.read_csv(path, usecols=wanted, **_csv_text_options(names, text))
        elif fmt == "parquet":
            frame = _index_as_columns(pd.read_parquet(path, columns=wanted))
        else:
            # dtype=False: no guessing from column names or contents (read_json would turn a column
            # named "timestamp" into dates and "0123" into 123); timestamps stay text and are parsed
            # once, by Panel.from_frame, the same way for every format. precise_float: pandas' fast
            # parser misses some numbers by one unit in the last place (96.6538079735436), so a
            # value read from JSON lines differed from the same value read from CSV or Parquet.
            # utf-8-sig: a byte-order mark (PowerShell's Out-File writes one) is skipped, as for CSV.
            frame = pd.read_json(path, lines=True, dtype=False, precise_float=True, encoding="utf-8-sig")
            if frame.shape == (0, 0) and wanted is not None:
                # An empty (or blank-lines) file has no line to name its keys, unlike a CSV header or a
                # Parquet schema: read it as the wanted columns with no rows, so that the caller says
                # "has no rows" as for the other formats, not that every column is missing.
                frame = pd.DataFrame({col: pd.Series([], dtype=object) for col in wanted})
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from exc
    except ImportError as exc:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow ({_first_line(exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow/parser errors that are not ValueErrors
        raise ValueError(f"cannot read {path} as {fmt}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if wanted is not None:
        _check_columns(path, wanted, list(frame.columns))
        frame = frame[wanted]
    for col in text:
        if col in frame.columns:
            frame[col] = labels_as_text(frame[col])
    return frame


def _index_as_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its named index levels as columns (those a column does not already name).

    pandas writes a DataFrame's index to Parquet as columns, and reads them back as the index
    (also when ``columns=`` names them): ``counts.groupby(["country", "asn", "ts"]).sum()
    .to_parquet(path)`` holds its keys there, where a job looked for its columns in vain
    although the file's schema lists them. Unnamed levels (row numbers) stay the index.
    """
    names = [name for name in frame.index.names if name is not None and name not in frame.columns]
    return frame.reset_index(level=names) if names else frame


def _csv_text_options(names: Sequence[str], text: Sequence[str]) -> dict:
    """``read_csv`` options that read the ``text`` columns verbatim and the others as pandas does.

    pandas' NA strings ("NA", "null", "None"...) can be applied per column only by
    switching the defaults off and listing them again for every other column, so the
    column names must be known here.
    """
    text = [c for c in text if c in names]
    if not text:
        return {}
    from pandas._libs.parsers import STR_NA_VALUES  # the list read_csv applies by default

    defaults = sorted(STR_NA_VALUES)
    na_values = {col: ([""] if col in text else defaults) for col in names}
    return {"dtype": {col: str for col in text}, "keep_default_na": False, "na_values": na_values}


def labels_as_text(column: pd.Series) -> pd.Series:
    """Context labels as text: the one rule by which a job's labels match across files and formats.

    Text is kept verbatim. A float whose value is a whole number becomes the
    integer's text (``13335.0`` -> ``"13335"``): an integer column that held a
    null anywhere is stored as float64 in Parquet and read as float64 from JSON
    lines, and its ``13335.0`` must name the same context as the integer
    ``13335`` or the text ``"13335"`` read from another file. Any other value
    becomes ``str(value)`` (``2.5`` -> ``"2.5"``, ``True`` -> ``"True"``).

    Parameters
    ----------
    column : pandas.Series
        One context column, of any dtype (object columns may mix types).

    Returns
    -------
    pandas.Series
        Text labels, same index and name; missing values (None, NaN, NA) stay
        missing (NaN), for the caller to report (``astype(str)`` alone writes
        "nan" in pandas 2).

    Notes
    -----
    The rule holds per value, never per column: ``13335.0`` becomes ``"13335"``
    whatever else its column holds, so a label's text does not depend on the
    other rows of the file it came in (history and new data differ). A float
    that is not a whole number keeps pandas' text (the shortest that reads back
    as the same float), which equals a CSV's text for it as written by pandas
    or Python. Whole numbers of 2**53 or more read from a float column are the
    float's value, which may differ from the integer written originally (floats
    cannot hold every such integer).

    Examples
    --------
    >>> labels_as_text(pd.Series([13335.0, 2.5, None])).tolist()
    ['13335', '2.5', nan]
    >>> labels_as_text(pd.Series([13335, "13335", 13335.0], dtype=object)).tolist()
    ['13335', '13335', '13335']
    """
    missing = column.isna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        # The text of each category, taken by code: a dictionary-encoded Parquet column
        # of floats follows the same rule as a plain float column.
        categories = labels_as_text(pd.Series(column.cat.categories)).to_numpy(dtype=object)
        text = _by_code(categories, column.cat.codes.to_numpy(), column)
    elif pd.api.types.is_float_dtype(column.dtype):
        text = _float_labels_as_text(column)
    elif pd.api.types.is_integer_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        # str() of each distinct value, not of each row: labels repeat once per time (an ASN
        # column of a 20,000-context Parquet history: 0.41 s -> 0.15 s for 6.7M rows).
        codes, uniques = pd.factorize(column)
        text = _by_code(pd.Series(uniques).astype(str), codes, column)
    elif column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
        # Mixed values (JSON lines with numbers and text in one column): value by value.
        text = column.map(_label_as_text, na_action="ignore")
    else:
        text = column
    return text.astype(str).where(~missing)


def _float_labels_as_text(column: pd.Series) -> pd.Series:
    """:func:`labels_as_text` of a float column, computed once per distinct value (labels repeat per time)."""
    codes, uniques = pd.factorize(column)  # missing values get code -1
    uniques = pd.Series(uniques)
    text = uniques.astype(str).to_numpy(dtype=object)  # pandas' text, kept for non-whole values
    values = uniques.to_numpy(dtype=np.float64, na_value=np.nan)
    whole = np.isfinite(values) & (np.trunc(values) == values)
    fits = whole & (np.abs(values) < 2.0**63)  # int64 holds them; larger ones through Python's int
    text[fits] = values[fits].astype(np.int64).astype(str).tolist()
    text[whole & ~fits] = [str(int(v)) for v in values[whole & ~fits]]
    return _by_code(text, codes, column)


def _by_code(text, codes: np.ndarray, column: pd.Series) -> pd.Series:
    """``text[codes]`` as a Series of text like ``column``; code -1 (a missing value) gives a missing
    value, masked by the caller.

    The distinct texts are made pandas' text type first and taken by code in it: making one
    Python string per row into that type, after the take, cost more than the text itself.
    """
    labels = pd.Series(text, dtype=object).astype(str).array.take(codes, allow_fill=True)
    return pd.Series(labels, index=column.index, name=column.name)


def _label_as_text(value) -> str:
    """One label's text under :func:`labels_as_text`'s rule."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _check_columns(path, wanted, present) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} is missing; the file has columns {list(present)}")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without pandas' "You might want to try:" hint,
    whose advice (pass ``format=``) follows on lines a one-line message drops."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". You might want to try:")[0].removesuffix("You might want to try:").strip()


# ---------------------------------------------------------------------- writing
def _write_csv(frame: pd.DataFrame, handle) -> None:
    _with_times_of_day(frame).to_csv(handle, index=False)


def _with_times_of_day(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each naive datetime column whose times are all midnight as text with the time of day.

    pandas' ``to_csv`` writes such a column as bare dates (``2024-03-15``) and any other with
    the time (``2024-03-15 01:00:00``): the 00:00 file of an hourly job differed in format from
    every other hour's, and from JSON lines. Only those columns are rewritten (as
    ``2024-03-15 00:00:00``, missing times left empty), so every other column is written by
    pandas as before: one with a time of day other than midnight keeps its sub-second digits,
    and pyarrow timestamp columns already carry the time (and the offset). Zone-aware columns
    become text too: the text pandas writes for them, faster (:func:`_zoned_text`).
    """
    replaced = None
    for k in range(len(frame.columns)):
        column = frame.iloc[:, k]
        text = _midnight_text(column)
        if text is None:
            text = _zoned_text(column)
        if text is not None:
            if replaced is None:
                replaced = frame.copy(deep=False)  # the caller's frame stays as it was
            replaced.isetitem(k, text)
    return frame if replaced is None else replaced


def _midnight_text(column: pd.Series) -> pd.Series | None:
    """A naive datetime column (or a categorical one of such times) whose known values are all at
    midnight, as ``YYYY-MM-DD 00:00:00`` text with missing values as NaN; None for any other column."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return _categories_as_text(column, _midnight_text)
    if not (isinstance(column.dtype, np.dtype) and column.dtype.kind == "M"):
        return None
    values = column.to_numpy()
    known = ~np.isnat(values)
    if not known.any() or (values[known] != values[known].astype("datetime64[D]")).any():
        return None  # no time to lose, or pandas writes the time of day
    # The date as NumPy writes it (pandas writes the same for years 1 to 9999), then midnight.
    texts = (np.datetime_as_string(values, unit="D").astype(object) + " 00:00:00")
    texts[~known] = np.nan
    return pd.Series(texts, index=column.index, dtype=object)


def _categories_as_text(column: pd.Series, text_of: Callable[[pd.Series], pd.Series | None]) -> pd.Series | None:
    """A categorical column as ``text_of`` writes its categories, each row its category's text and
    missing values as NaN; None where ``text_of`` leaves the categories to pandas."""
    categories = text_of(pd.Series(column.cat.categories))
    if categories is None:
        return None
    texts = np.append(categories.to_numpy(dtype=object), np.nan)  # code -1, a missing value
    return pd.Series(texts.take(column.cat.codes.to_numpy()), index=column.index, dtype=object)


def _zoned_text(column: pd.Series) -> pd.Series | None:
    """A zone-aware datetime column (or a categorical one of such times) as the text pandas' ``to_csv``
    writes for it, missing values as NaN; None for any other column.

    The text is the local clock, with the fractional digits the column needs (none, 3, 6 or 9, the
    same for every row, as for a naive column), and its UTC offset as ``isoformat()`` writes it:
    ``2026-03-29 03:00:00+02:00``, ``2026-03-29 05:30:00.500+05:30``. pandas formats such a column
    time by time through Python objects, 20 s for the million scores of an hourly job against 0.8 s
    for naive times; here each distinct time (an hour repeats for every context) is formatted once,
    by NumPy, with the offsets of the JSON lines writer (:func:`_local_clocks`). Local years outside
    1 to 9999, which NumPy and pandas write differently, are left to pandas (None).
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        return _categories_as_text(column, _zoned_text)
    if not isinstance(column.dtype, pd.DatetimeTZDtype):
        return None
    codes, instants = pd.factorize(column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())  # NaT: code -1
    if len(instants) == 0:
        return None  # no time at all: pandas writes empty cells
    try:
        local, offsets = _local_clocks(instants, column.dt.tz)
    except pd.errors.OutOfBoundsDatetime:
        return None  # a local clock past pandas' last nanosecond
    years = local.astype("datetime64[Y]").astype(np.int64) + 1970
    if years.min() < 1 or years.max() > 9999:
        return None
    # The coarsest unit that holds every time exactly, as pandas picks the digits of a whole column.
    unit = next(unit for unit in ("s", "ms", "us", "ns") if (local == local.astype(f"datetime64[{unit}]")).all())
    dates, times = np.char.partition(np.datetime_as_string(local, unit=unit), "T")[:, ::2].T
    texts = (dates.astype(object) + " " + times.astype(object)) + np.array(offsets, dtype=object)
    return pd.Series(np.append(texts, np.nan).take(codes), index=column.index, dtype=object)


def _local_clocks(instants: np.ndarray, zone) -> tuple[np.ndarray, list]:
    """Naive UTC times as the naive local clock of ``zone`` and the text of each one's UTC offset
    (``+02:00``, ``-03:30``; :func:`_offset_text`), missing times with an empty offset."""
    local = pd.DatetimeIndex(instants).tz_localize("UTC").tz_convert(zone).tz_localize(None).to_numpy()
    shifts = (local - instants).astype("timedelta64[us]").astype(np.int64)
    missing = np.isnat(instants)
    texts = {shift: _offset_text(shift) for shift in set(shifts[~missing].tolist())}
    return local, ["" if gone else texts[shift] for shift, gone in zip(shifts.tolist(), missing.tolist())]


def _write_parquet(frame: pd.DataFrame, handle) -> None:
    frame.to_parquet(handle, index=False)


def _write_jsonl(frame: pd.DataFrame, handle) -> None:
    # One JSON object per row. A chunk of rows at a time, each column becomes a list of JSON texts
    # (each distinct value formatted once where values repeat: labels, times, thresholds), and the
    # lines one join of keys and texts. json.dumps per value and a join per row took 3x as long as
    # this; pandas' to_json, about as fast, rounds floats.
    if not frame.columns.is_unique:
        raise ValueError(f"JSON lines need unique column names, got {list(frame.columns)}")
    if len(frame.columns) == 0:
        return
    # The text before each value ('{"a":' for the first, ',"b":' for the others), and '}\n' after the last.
    keys = [("{" if k == 0 else ",") + json.dumps(str(name)) + ":" for k, name in enumerate(frame.columns)]
    columns = [frame.iloc[:, k] for k in range(len(frame.columns))]
    width = 2 * len(columns) + 1
    for start in range(0, len(frame), _JSONL_CHUNK):
        n = min(_JSONL_CHUNK, len(frame) - start)
        parts = [None] * (n * width)
        for k, column in enumerate(columns):
            parts[2 * k::width] = [keys[k]] * n
            parts[2 * k + 1::width] = _json_texts(column.iloc[start:start + n])
        parts[width - 1::width] = ["}\n"] * n
        handle.write("".join(parts).encode("utf-8"))


#: Rows formatted at a time: bounds the memory a file of many millions of scores takes.
_JSONL_CHUNK = 100_000


def _json_texts(column: pd.Series) -> list:
    """Each value of a column as JSON text; missing values (and infinities, which JSON lacks) as null.

    Floats as Python writes them, the shortest text that reads back as the same float: pandas'
    to_json keeps 10 decimal places (15 at most), so 3e-11 was written as 0.0 and a score within
    1e-10 of its threshold as equal to it. Text as json.dumps writes it (ASCII: other characters
    as \\u escapes). Times as ISO text with nanoseconds, zone-aware ones on their local clock with
    its UTC offset, as in CSV and in object columns (see :func:`write_table`): the default (epoch
    milliseconds) reads back as plain integers, a coarser unit truncates sub-second buckets, and
    one text layout per column is what pandas.to_datetime parses in one format. Any other column
    (object, timedelta...) value by value, by :func:`_object_texts`.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        # Each category's text once, as an object column's value; a missing value (code -1) null.
        categories = pd.Series(column.cat.categories.astype(object), dtype=object)
        texts = np.array(_object_texts(categories) + ["null"], dtype=object)
        return texts.take(column.cat.codes.to_numpy()).tolist()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if not isinstance(dtype, (np.dtype, pd.DatetimeTZDtype)):  # pyarrow's timestamps
            column = pd.Series(pd.DatetimeIndex(column))
        return _time_texts(column)
    if pd.api.types.is_string_dtype(dtype) and (
        dtype != object or pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty")
    ):
        codes, uniques = pd.factorize(column)  # a missing value: code -1
        texts = np.array(list(map(_encode_text, uniques.tolist())) + ["null"], dtype=object)
        return texts.take(codes).tolist()
    if isinstance(dtype, np.dtype) and (dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8)):
        return _number_texts(column.to_numpy())
    if isinstance(dtype, _NULLABLE_NUMBERS):
        # Nullable Int64, Float64, boolean: as the NumPy column of their values, missing ones null.
        values = column.to_numpy(dtype=dtype.numpy_dtype, na_value=np.nan if dtype.kind == "f" else 0)
        texts = _number_texts(values)
        for pos in np.flatnonzero(column.isna().to_numpy()):
            texts[pos] = "null"
        return texts
    return _object_texts(column)


#: pandas' nullable numbers and booleans: a NumPy array of values and a mask of missing ones.
_NULLABLE_NUMBERS = (pd.BooleanDtype, pd.Float32Dtype, pd.Float64Dtype, pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype,
                     pd.Int64Dtype, pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype)

#: json.dumps of a str (json's own function): the text quoted and escaped, in ASCII (\\u escapes).
_encode_text = json.encoder.encode_basestring_ascii


def _object_texts(column: pd.Series) -> list:
    """Value by value: floats by :func:`_float_text`, times by ``isoformat()``, the rest by json.dumps."""
    values = column.astype(object).where(column.notna(), None).tolist()
    return [_float_text(float(value)) if isinstance(value, (float, np.floating)) else json.dumps(value, default=_json_scalar)
            for value in values]


def _number_texts(values: np.ndarray) -> list:
    """JSON texts of a NumPy array of bools, integers or floats (floats by :func:`_float_text`'s rule)."""
    if values.dtype.kind == "b":
        return np.where(values, "true", "false").astype(object).tolist()
    if values.dtype.kind == "f":
        return _by_distinct(values.astype(np.float64, copy=False), _float_texts)
    return _by_distinct(values, lambda distinct: list(map(str, distinct.tolist())))


def _float_texts(values: np.ndarray) -> list:
    """:func:`_float_text` of each float64, ``repr`` in one pass and the odd values (NaN, inf, subnormal) after."""
    texts = list(map(float.__repr__, values.tolist()))
    odd = ~np.isfinite(values) | ((values != 0) & (np.abs(values) < _SMALLEST_NORMAL))
    for pos in np.flatnonzero(odd):
        texts[pos] = _float_text(float(values[pos]))
    return texts


def _by_distinct(values: np.ndarray, texts_of: Callable[[np.ndarray], list]) -> list:
    """``texts_of(values)``, calling it on each distinct value once when the first values repeat.

    Distinct by their bits (floats and times by their 64 bits: 0.0 and -0.0 stay apart). Only
    the first values are judged: a threshold, a count or a time repeats, a score seldom does,
    and finding the distinct values of a column without repeats only adds to its time.
    """
    bits = values.view(np.int64) if values.dtype.kind in "fM" else values
    if len(bits) <= 1024 or len(np.unique(bits[:1024])) > 512:
        return texts_of(values)
    codes, distinct = pd.factorize(bits)
    return np.array(texts_of(distinct.view(values.dtype)), dtype=object).take(codes).tolist()


def _time_texts(column: pd.Series) -> list:
    """A datetime column as ISO text with nine fractional digits; zone-aware times on their local
    clock with its UTC offset (``2026-03-29T03:00:00.000000000+02:00``), as ``isoformat()`` writes them."""
    zone = column.dt.tz
    values = (column.dt.tz_convert("UTC").dt.tz_localize(None) if zone is not None else column).to_numpy()
    known = values[~np.isnat(values)]
    years = np.array([known.min(), known.max()]).astype("datetime64[Y]").astype(np.int64) + 1970 if len(known) else [2000]
    if zone is not None and (min(years) < 2 or max(years) > 9998):
        # Local years that may leave 1 to 9999 (NumPy writes those otherwise): value by value, or
        # in UTC by pandas where Python cannot hold a local year (year 0, year 10000).
        try:
            return ["null" if stamp is pd.NaT else json.dumps(stamp.isoformat(timespec="nanoseconds"))
                    for stamp in column.tolist()]
        except (NotImplementedError, ValueError, OverflowError):
            years = [0]
    def in_utc() -> list:  # pandas' own text, in UTC ("Z")
        stamps = json.loads(column.to_json(orient="values", date_format="iso", date_unit="ns"))
        return ["null" if stamp is None else json.dumps(stamp) for stamp in stamps]

    if min(years) < 1 or max(years) > 9999:
        return in_utc()  # years NumPy and pandas write differently (outside 1 to 9999)

    def texts_of(times: np.ndarray) -> list:
        if zone is None:
            return ["null" if text == "NaT" else '"' + text + '"'
                    for text in np.datetime_as_string(times, unit="ns").tolist()]
        # The local clock, and its offset from UTC as isoformat() writes it ("+02:00", "-03:30").
        local, offsets = _local_clocks(times, zone)
        return ["null" if text == "NaT" else '"' + text + offset + '"'
                for text, offset in zip(np.datetime_as_string(local, unit="ns").tolist(), offsets)]

    try:
        return _by_distinct(values, texts_of)
    except pd.errors.OutOfBoundsDatetime:
        # A local clock past pandas' last nanosecond (pd.Timestamp.max as a "valid until" in a zone
        # east of UTC), which pandas cannot hold: the column in UTC, as before offsets were kept.
        return in_utc()


def _offset_text(microseconds: int) -> str:
    """A UTC offset as ``isoformat()`` ends a time with it: ``+02:00``, ``-03:30``, ``+00:19:32``."""
    zone = _dt.timezone(_dt.timedelta(microseconds=microseconds))
    return _dt.datetime(2000, 1, 1, tzinfo=zone).isoformat()[len("2000-01-01T00:00:00"):]


#: The smallest normal float64: pandas' JSON reader cannot decode a subnormal one (a range error).
_SMALLEST_NORMAL = np.finfo(np.float64).tiny


def _float_text(value: float) -> str:
    """A float as JSON: the shortest text that reads back as it; null for NaN and infinities (no JSON);
    0.0 for a subnormal one (below 2.2e-308), which pandas' JSON reader refuses to decode."""
    if not math.isfinite(value):
        return "null"
    return repr(value) if value == 0 or abs(value) >= _SMALLEST_NORMAL else repr(math.copysign(0.0, value))


def _json_scalar(value):
    """A value json does not know: times as ISO text, NumPy scalars as their Python value, else text."""
    if isinstance(value, (pd.Timestamp, _dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, _dt.timedelta)):
        return pd.Timedelta(value).isoformat()
    return value.item() if hasattr(value, "item") else str(value)


#: Format -> writer(frame, binary handle). Tests replace entries to simulate a failure mid-write.
_WRITERS: dict[str, Callable] = {"csv": _write_csv, "parquet": _write_parquet, "jsonl": _write_jsonl}


def atomic_path(path) -> Path:
    """A fresh hidden temporary path in the folder of ``path`` (same file system, so os.replace is atomic)."""
    path = Path(path)
    # The name cut to 120 bytes: with the 14 added, a valid name of up to 255 bytes stays valid.
    stem = path.name.encode("utf-8")[:120].decode("utf-8", errors="ignore")
    return path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")


def check_output_path(path, option: str = "output", what: str = "a file", example: str | None = None) -> Path:
    """Refuse an output path that cannot be written, and return the file that will be written.

    A command with several outputs checks each before any work (before reading its input,
    and before it writes the first output): one found unwritable only when its turn came
    left the outputs written before it replaced, the job half done.

    Parameters
    ----------
    path : str or Path
        The output; a symbolic link is written to its target (:func:`write_table`), which is
        the path checked.
    option : str, default "output"
        How messages name it (``"--scores"``).
    what : str, default "a file"
        What it should name ("a model file").
    example : str, optional
        A file name the message suggests inside a folder given by mistake (``"model.tsa"``).

    Returns
    -------
    Path
        The file written: ``path``, or its target when it is a symbolic link.

    Raises
    ------
    ValueError
        ``path`` is a folder (a link to one included).
    FileNotFoundError
        The folder that would hold it does not exist.
    """
    given = str(path)
    path = Path(path)
    try:
        target = path.resolve() if path.is_symlink() else path
    except RuntimeError:  # a loop of symbolic links: resolve() gives up with RuntimeError
        raise ValueError(f"{option} {path} is a loop of symbolic links; name {what}") from None
    # Path drops a trailing separator ("out/" is Path("out")): the name of a folder to be, not a file.
    if target.is_dir() or given.endswith(("/", os.sep)):
        hint = f", e.g. {option} {path / example}" if example else ""
        raise ValueError(f"{option} {given} is a folder; name {what}{hint}")
    if target.parent.exists() and not target.parent.is_dir():
        raise ValueError(f"{option} {path}: {target.parent} is a file, not a folder; name {what} in a folder")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"{option} {path}: its folder {target.parent} does not exist; create it or name {what} in an "
            "existing folder"
        )
    # A file made and removed there: a folder without write permission (or a read-only file system)
    # was found only when the output was written, after the job's work and after its other outputs.
    try:
        handle, probe = tempfile.mkstemp(dir=target.parent, prefix=".tsanomaly-", suffix=".probe")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {target.parent} ({exc.strerror or exc})") from None
    os.close(handle)
    try:
        os.unlink(probe)
    except OSError:  # written, so the folder takes files (an append-only one keeps the probe)
        pass
    return target


def _atomic_write(path, write: Callable) -> Path:
    """Call ``write(binary_handle)`` on a temporary file, then move it onto ``path`` atomically.

    An existing file keeps its permissions (an alerts file an operator restricted to 0600 must
    not become readable by all at the next run), and a symbolic link keeps pointing at the file
    it names, which is the one replaced (replacing the link itself left its target stale).
    """
    path = check_output_path(path)
    tmp = atomic_path(path)
    try:
        # O_EXCL: never write through a file (or link) that someone else put there; mode 0o666
        # lets the umask decide permissions, as for any new file (mkstemp would force 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {_first_line(exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        # Any failure, KeyboardInterrupt included: the old output (if any) stays untouched.
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_table(frame: pd.DataFrame, path) -> Path:
    """Write ``frame`` to ``path`` atomically; the extension picks CSV, Parquet or JSON lines.

    Parameters
    ----------
    frame : pandas.DataFrame
        Written without its index. Timestamps are written as ISO 8601 text in
        CSV and JSON lines (JSON lines always with nine fractional digits, so
        sub-second times stay distinct; CSV always with the time of day, also
        in a column whose times are all at midnight), so :func:`read_table` and
        ``Panel.from_frame`` read them back exactly. Zone-aware timestamps keep
        their local clock and UTC offset in both (``2026-03-29 03:00:00+02:00``
        in CSV, ``2026-03-29T03:00:00.000000000+02:00`` in JSON lines): the
        same instant as in UTC, and the local time an analyst reading an alert
        expects. Text with an offset is read back as the instant it names (by
        ``Panel.from_frame``, ``pandas.to_datetime(..., utc=True)``), not as a
        zone: the zone itself is kept by Parquet only. (``pandas.read_json``
        left to guess turns a column named like a time, ``peak_time``, into
        dates only where its offsets agree, and leaves text across a
        daylight-saving switch: parse it with ``pandas.to_datetime(..., utc=True)``.)
    path : str or Path
        Destination; its folder must exist. An existing file is replaced only
        once the new one is complete.

    Returns
    -------
    Path
    """
    fmt = table_format(path)
    path = Path(path)
    if fmt == "csv" or fmt == "jsonl":
        compress = path.name.lower().endswith(".gz")

        def write(handle):
            if compress:
                import gzip

                with gzip.GzipFile(fileobj=handle, mode="wb", filename="") as zipped:
                    _WRITERS[fmt](frame, zipped)
            else:
                _WRITERS[fmt](frame, handle)

        return _atomic_write(path, write)
    return _atomic_write(path, lambda handle: _WRITERS[fmt](frame, handle))


def write_text(text: str, path) -> Path:
    """Write UTF-8 text (an HTML report, a JSON summary) to ``path`` atomically."""
    data = text.encode("utf-8")
    return _atomic_write(path, lambda handle: handle.write(data))
