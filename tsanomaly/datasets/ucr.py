"""Reader for the UCR Time Series Anomaly Archive (2021).

Wu & Keogh, "Current Time Series Anomaly Detection Benchmarks are Flawed and are Creating the
Illusion of Progress", TKDE 2021. Each file ``NNN_UCR_Anomaly_<name>_<trainEnd>_<start>_<end>``
holds one series whose points ``1..trainEnd`` (1-based) are anomaly-free training data and which
has exactly one anomaly in ``[start, end]`` (1-based, inclusive). Expected layout::

    <path>/data/NNN_UCR_Anomaly_<name>_<trainEnd>_<start>_<end>.txt[.gz]   the values
    <path>/labels.csv   (optional) file,id,name,train_end,anomaly_start,anomaly_end,length

Values are whitespace-separated numbers, usually one per line (a few files of the archive hold
them all on one line; both are read).

The series differ in length, so the reader returns a **list of records, one single-context Panel
each** (:class:`~tsanomaly.datasets.nab.LabelledSeries`), with positions converted to 0-based.
"""
from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from tsanomaly.datasets.nab import LabelledSeries, _each_file, _select
from tsanomaly.io import _first_line
from tsanomaly.panel import Panel

__all__ = ["read_ucr"]

_NAME = re.compile(r"^(\d+)_UCR_Anomaly_(.+)_(\d+)_(\d+)_(\d+)\.txt(?:\.gz)?$")
_PATTERN = "NNN_UCR_Anomaly_<name>_<trainEnd>_<start>_<end>.txt[.gz]"


def _parse_name(file_name: str) -> dict:
    m = _NAME.match(file_name)
    if m is None:
        raise ValueError(
            f"{file_name!r} does not follow {_PATTERN}"
        )
    return {
        "file": file_name,
        "id": m.group(1),
        "name": m.group(2),
        "train_end": int(m.group(3)),
        "anomaly_start": int(m.group(4)),
        "anomaly_end": int(m.group(5)),
        "length": None,
    }


def _stem(file_name: str) -> str:
    return re.sub(r"\.txt(?:\.gz)?$", "", file_name)


def _read_values(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        # gzip's BadGzipFile is an OSError and a truncated file an EOFError, naming no file.
        compressed = "gzip-compressed " if path.suffix == ".gz" else ""
        raise ValueError(
            f"{path.name}: cannot be read ({_first_line(exc)}); UCR files hold {compressed}text, numbers separated by "
            "spaces or line breaks"
        ) from exc
    tokens = text.split()
    if not tokens:
        raise ValueError(f"{path.name}: the file holds no values")
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(k for k, token in enumerate(tokens) if not _is_number(token))
        raise ValueError(
            f"{path.name}: value {bad} ({tokens[bad]!r}) is not a number; UCR files hold numbers separated by spaces "
            "or line breaks"
        ) from None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _labels_table(labels_path: Path) -> dict:
    """``labels.csv`` as ``{file: fields}``, checked against the file names; ValueError naming the row otherwise."""
    try:
        table = pd.read_csv(labels_path, dtype={"id": str, "file": str, "name": str})
    except ValueError as exc:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{labels_path}: not a readable CSV file ({_first_line(exc)})") from exc
    needed = {"file", "train_end", "anomaly_start", "anomaly_end"}
    if needed - set(table.columns):
        raise ValueError(
            f"{labels_path} lacks the column(s) {sorted(needed - set(table.columns))}; it needs "
            "file,train_end,anomaly_start,anomaly_end (length optional)"
        )
    meta = {}
    for number, row in enumerate(table.to_dict("records")):
        name = row["file"]
        if not isinstance(name, str):
            raise ValueError(f"{labels_path.name}: row {number} names no file")
        try:
            parsed = _parse_name(name)
        except ValueError as exc:
            raise ValueError(f"{labels_path.name}: row {number}: {exc}") from None
        if name in meta:
            raise ValueError(f"{labels_path.name}: {name} is listed twice (rows {meta[name]['row']} and {number})")
        for column in ("train_end", "anomaly_start", "anomaly_end", "length"):
            value = row.get(column)
            if column == "length" and pd.isna(value):
                continue
            # int() of a blank cell (NaN) or of text raised a ValueError naming neither file nor column.
            if not (isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())):
                shown = "blank" if pd.isna(value) else f"not a whole number: {value!r}"
                raise ValueError(f"{labels_path.name}: {column} of {name} is {shown}")
            if column == "length":
                parsed["length"] = int(value)
            elif int(value) != parsed[column]:
                raise ValueError(f"{labels_path.name}: {column}={value} for {name} but its name says {parsed[column]}")
        meta[name] = {**parsed, "row": number}
    return meta


def read_ucr(path, files: Iterable[str] | None = None, limit: int | None = None, on_error=None) -> list[LabelledSeries]:
    """Read UCR anomaly-archive series with their labelled anomaly and training part.

    Returns one :class:`~tsanomaly.datasets.nab.LabelledSeries` per file (series differ in
    length, so they are not stacked into one Panel), sorted by file name. Each Panel has a
    RangeIndex. Positions are **0-based**: the archive's 1-based inclusive range
    ``[start, end]`` becomes the window ``(start - 1, end - 1)``, and ``train_end`` keeps the
    archive's ``trainEnd`` (points ``0..train_end-1`` are training data).

    Parameters
    ----------
    path : str or Path
        The UCR folder holding ``data/`` and, optionally, ``labels.csv`` (used when present,
        and checked against the file names; otherwise the fields come from the names, as
        they do, with a warning, for archive files in ``data/`` that ``labels.csv`` omits).
    files : iterable of str or int, optional
        Subset to read: file names (with or without ``.txt.gz``) or archive ids (``"005"``, 5).
    limit : int, optional
        Read at most this many files (after ``files``).
    on_error : callable, optional
        Called as ``on_error(file, exception)`` for a data file that cannot be read (missing,
        not numbers, labels that do not fit it); the file is then left out and the others are
        read. By default the first such error is raised. Errors of the data set as a whole (no
        ``data/`` folder, a malformed ``labels.csv``) are always raised.

    Returns
    -------
    list of LabelledSeries

    Raises
    ------
    FileNotFoundError
        When ``path`` has no ``data/`` folder, or ``labels.csv`` names a missing file.
    ValueError
        When there is no series (no archive file in ``data/``, or ``labels.csv`` lists none);
        on an unknown file, a name that is not an archive name, a ``labels.csv`` that is not
        CSV, lacks a column, lists a file twice, holds a blank or non-integer position or
        disagrees with a file's name or length, a file that cannot be read (not gzip, not
        text), holds no value, a non-numeric or an infinite one, or an anomaly outside the
        series or inside the training part. Each message names the file.

    Examples
    --------
    >>> series = read_ucr("../shared/data/ucr", files=["005"])   # doctest: +SKIP
    >>> s = series[0]; s.train_end, s.windows                      # doctest: +SKIP
    (4000, [(5390, 5391)])
    """
    root = Path(path)
    data_dir = root / "data"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no UCR data folder at {data_dir} (expected <path>/data/{_PATTERN})")
    labels_path = root / "labels.csv"
    if labels_path.is_file():
        meta = _labels_table(labels_path)
        # Archive files labels.csv does not list are read with the fields of their names, as
        # without labels.csv, and named in a warning: left out, they had shrunk the benchmark
        # silently, and asking for one by name said it was not in the data set.
        listed = {_stem(name) for name in meta}
        unlisted = sorted(p.name for p in data_dir.iterdir() if _NAME.match(p.name) and _stem(p.name) not in listed)
        if unlisted:
            warnings.warn(
                f"{len(unlisted)} file(s) in {data_dir} not listed in {labels_path.name} (first {unlisted[0]}) are "
                "read with the positions in their names; add their rows to check them against labels.csv",
                stacklevel=2,
            )
            meta.update({name: _parse_name(name) for name in unlisted})
    else:
        meta = {p.name: _parse_name(p.name) for p in data_dir.iterdir() if _NAME.match(p.name)}
    keys = sorted(meta)
    if not keys:
        # An empty list would reach the caller as an empty report (or a KeyError in its summary).
        where = f"{labels_path} lists no file" if labels_path.is_file() else f"no file named like {_PATTERN} in {data_dir}"
        raise ValueError(f"no UCR series: {where}")
    by_stem = {_stem(k): k for k in keys}
    by_id: dict[int, list[str]] = {}
    for k in keys:
        by_id.setdefault(int(meta[k]["id"]), []).append(k)

    def alias(item: str):
        if item in meta:
            return item
        if _stem(item) in by_stem:
            return by_stem[_stem(item)]
        if item.isdigit() and len(by_id.get(int(item), [])) == 1:
            return by_id[int(item)][0]
        return None

    def read_one(key):
        info = meta[key]
        file_path = data_dir / key
        if not file_path.is_file():
            raise FileNotFoundError(
                f"{key} is listed in labels.csv but missing from {data_dir}; restore the file or remove its row"
            )
        values = _read_values(file_path)
        n = values.shape[0]
        if info["length"] is not None and info["length"] != n:
            raise ValueError(f"{key}: labels.csv says length {info['length']} but the file holds {n} values")
        if np.isinf(values).any():
            raise ValueError(f"{key}: infinite value at position {int(np.flatnonzero(np.isinf(values))[0])}")
        train_end = info["train_end"]
        start, end = info["anomaly_start"] - 1, info["anomaly_end"] - 1
        if not 0 < train_end <= start <= end < n:
            raise ValueError(
                f"{key}: expected 0 < train_end <= anomaly start <= end < length, got train_end={train_end}, "
                f"anomaly=({start}, {end}) 0-based, length={n}: the positions in its name do not fit its values"
            )
        labels = np.zeros(n, dtype=bool)
        labels[start : end + 1] = True
        name = _stem(key)
        panel = Panel(values[None, :], pd.Index([name]), pd.RangeIndex(n))
        windows = [(start, end)]
        return LabelledSeries(name, panel, labels, windows, train_end, np.arange(n), list(windows))

    return _each_file(_select(keys, files, limit, alias), read_one, on_error)
