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
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from tsanomaly.datasets.nab import LabelledSeries, _each_file, _select
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
    with opener(path, "rt") as fh:
        text = fh.read()
    try:
        return np.array(text.split(), dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path.name}: not a list of numbers ({exc})") from exc


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
        and checked against the file names; otherwise the fields come from the names).
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
        When there is no series (no archive file in ``data/``, or ``labels.csv`` lists none); on an unknown file, a name that is not an archive name, labels.csv disagreeing with a
        file name or length, a non-numeric or infinite value, or an anomaly outside the series
        or inside the training part.

    Examples
    --------
    >>> series = read_ucr("../shared/data/ucr", files=["005"])   # doctest: +SKIP
    >>> s = series[0]; s.train_end, s.windows                      # doctest: +SKIP
    (4000, [(5390, 5391)])
    """
    root = Path(path)
    data_dir = root / "data"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no UCR data folder at {data_dir}")
    labels_path = root / "labels.csv"
    if labels_path.is_file():
        table = pd.read_csv(labels_path, dtype={"id": str, "file": str, "name": str})
        needed = {"file", "train_end", "anomaly_start", "anomaly_end"}
        if needed - set(table.columns):
            raise ValueError(f"{labels_path} lacks the column(s) {sorted(needed - set(table.columns))}")
        meta = {}
        for row in table.to_dict("records"):
            parsed = _parse_name(row["file"])
            for field in ("train_end", "anomaly_start", "anomaly_end"):
                if int(row[field]) != parsed[field]:
                    raise ValueError(
                        f"{labels_path.name}: {field}={row[field]} for {row['file']} "
                        f"but its name says {parsed[field]}"
                    )
            if "length" in row and not pd.isna(row["length"]):
                parsed["length"] = int(row["length"])
            meta[row["file"]] = parsed
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
            raise FileNotFoundError(f"{key} is listed in labels.csv but missing from {data_dir}")
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
                f"anomaly=({start}, {end}) 0-based, length={n}"
            )
        labels = np.zeros(n, dtype=bool)
        labels[start : end + 1] = True
        name = _stem(key)
        panel = Panel(values[None, :], pd.Index([name]), pd.RangeIndex(n))
        windows = [(start, end)]
        return LabelledSeries(name, panel, labels, windows, train_end, np.arange(n), list(windows))

    return _each_file(_select(keys, files, limit, alias), read_one, on_error)
