"""NAB and UCR readers on tiny fixture files, and on two real files of each set when present."""
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsanomaly import Panel
from tsanomaly.datasets.nab import LabelledSeries, read_nab
from tsanomaly.datasets.ucr import read_ucr
from tsanomaly.metrics import nab_corpus_score, ucr_correct

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"


# ------------------------------------------------------------------------------------------
# NAB fixture
# ------------------------------------------------------------------------------------------
# 18 rows on a 5-minute grid from 00:00 to 01:30 (19 grid points): 00:15 and 00:20 are missing,
# 00:30 appears twice, and 00:36 is a jittered 00:35.
TOY_TIMES = ["00:00", "00:05", "00:10", "00:25", "00:30", "00:30", "00:36", "00:40", "00:45",
             "00:50", "00:55", "01:00", "01:05", "01:10", "01:15", "01:20", "01:25", "01:30"]
TOY_WINDOW = ["2024-01-01 00:36:00.000000", "2024-01-01 00:50:00.000000"]  # rows 6..9


def _write_nab(root: Path, extra_label=None, unsorted=False):
    (root / "data" / "catA").mkdir(parents=True)
    (root / "data" / "catB").mkdir(parents=True)
    (root / "labels").mkdir()
    times = list(TOY_TIMES)
    if unsorted:
        times[1], times[2] = times[2], times[1]
    toy = pd.DataFrame({"timestamp": ["2024-01-01 " + t + ":00" for t in times],
                        "value": np.arange(1.0, 19.0)})
    toy.to_csv(root / "data" / "catA" / "toy.csv", index=False)
    hours = pd.date_range("2024-02-01", periods=4, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    flat = pd.DataFrame({"timestamp": hours, "value": [1.0, 1.0, 2.0, 1.0]})
    flat.to_csv(root / "data" / "catB" / "flat.csv", index=False)
    labels = {"catA/toy.csv": [TOY_WINDOW], "catB/flat.csv": []}
    if extra_label is not None:
        labels.update(extra_label)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    return root


def test_read_nab_puts_rows_on_the_regular_grid(tmp_path):
    series = read_nab(_write_nab(tmp_path))
    assert [s.name for s in series] == ["catA/toy", "catB/flat"]
    toy = series[0]
    assert isinstance(toy, LabelledSeries) and isinstance(toy.panel, Panel)
    assert toy.panel.shape == (1, 19)
    assert list(toy.panel.contexts) == ["catA/toy"]
    assert toy.panel.index.freq == pd.Timedelta("5min")
    assert toy.panel.index[0] == pd.Timestamp("2024-01-01 00:00")
    # grid point:  0  1  2   3    4   5   6     7  8 ... 18
    # rows:        0  1  2   -    -   3   4,5   6  7 ... 17    (values are row + 1)
    expected = np.array([1, 2, 3, np.nan, np.nan, 4, 5.5] + list(range(7, 19)), dtype=float)
    np.testing.assert_array_equal(toy.values, expected)
    np.testing.assert_array_equal(toy.rows, [0, 1, 2, 5, 6, 6] + list(range(7, 19)))
    # window 00:36..00:50 holds rows 6..9, which sit on grid points 7..10
    assert toy.row_windows == [(6, 9)]
    assert toy.windows == [(7, 10)]
    np.testing.assert_array_equal(np.flatnonzero(toy.labels), [7, 8, 9, 10])
    # probationary period: floor(0.15 * 18 rows) = 2 rows -> scoring starts at row 2 = grid point 2
    assert toy.train_end == 2
    flat = series[1]
    assert flat.windows == [] and not flat.labels.any()
    assert flat.panel.index.freq == pd.Timedelta("1h")


def test_read_nab_rows_grid_keeps_the_file_as_is(tmp_path):
    toy = read_nab(_write_nab(tmp_path), files=["catA/toy"], grid="rows")[0]
    assert toy.panel.shape == (1, 18)
    assert isinstance(toy.panel.index, pd.RangeIndex)
    np.testing.assert_array_equal(toy.values, np.arange(1.0, 19.0))
    assert toy.windows == toy.row_windows == [(6, 9)]
    assert toy.train_end == 2


def test_nab_file_of_a_record_scores_the_source_rows(tmp_path):
    series = read_nab(_write_nab(tmp_path))
    # scores high exactly on the labelled grid points: a perfect detector
    files = [s.nab_file(s.labels.astype(float)) for s in series]
    assert files[0].scores.shape == (18,)  # one score per row of the file
    assert nab_corpus_score(files).score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="shape"):
        series[0].nab_file(np.zeros(18))


def test_read_nab_files_and_limit(tmp_path):
    root = _write_nab(tmp_path)
    assert [s.name for s in read_nab(root, files=["flat"])] == ["catB/flat"]
    assert [s.name for s in read_nab(root, files=["catB/flat.csv", "catA/toy"])] == ["catB/flat", "catA/toy"]
    assert [s.name for s in read_nab(root, limit=1)] == ["catA/toy"]
    with pytest.raises(ValueError, match="no file named 'nope'"):
        read_nab(root, files=["nope"])
    with pytest.raises(ValueError, match="limit"):
        read_nab(root, limit=0)
    with pytest.raises(ValueError, match="grid"):
        read_nab(root, grid="hourly")


def test_read_nab_rejects_bad_folders_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data"):
        read_nab(tmp_path)
    root = _write_nab(tmp_path / "a")
    (root / "data" / "catB" / "orphan.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    with pytest.raises(ValueError, match="catB/orphan.csv has no entry"):
        read_nab(root)
    with pytest.raises(ValueError, match="not sorted"):
        read_nab(_write_nab(tmp_path / "b", unsorted=True))
    root = _write_nab(tmp_path / "c", extra_label={"catB/flat.csv": [["2030-01-01", "2030-01-02"]]})
    with pytest.raises(ValueError, match="covers no row"):
        read_nab(root, files=["flat"])


@pytest.mark.parametrize("grid", ["time", "rows"])
def test_read_nab_rejects_text_values_and_keeps_blank_cells_missing(tmp_path, grid):
    root = _write_nab(tmp_path)
    flat = root / "data" / "catB" / "flat.csv"
    lines = flat.read_text().splitlines()  # header, then 4 rows "timestamp,value"
    # A blank cell is a missing observation: read as NaN, like a grid point with no row.
    lines[2] = lines[2].split(",")[0] + ","
    flat.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_nab(root, files=["flat"], grid=grid)[0].values, [1.0, np.nan, 2.0, 1.0])
    # Text that is not a number used to become NaN too, dropping the observation unseen.
    lines[3] = lines[3].split(",")[0] + ",1.O"
    flat.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"catB/flat.csv: value at row 2 is not a number: '1.O'"):
        read_nab(root, files=["flat"], grid=grid)


@pytest.mark.parametrize(
    "labels, message",
    [
        ("{not json", r"combined_windows.json: not valid JSON \(Expecting property name"),
        ("[1, 2]", r"combined_windows.json: expected a JSON object .* got a list"),
    ],
    ids=["malformed", "not-an-object"],
)
def test_read_nab_names_a_bad_labels_file(tmp_path, labels, message):
    # json.load's own message named no file; a list gave "catA/toy.csv has no entry".
    root = _write_nab(tmp_path)
    (root / "labels" / "combined_windows.json").write_text(labels)
    with pytest.raises(ValueError, match=message):
        read_nab(root)


@pytest.mark.parametrize(
    "windows, message",
    [
        ("soon", r"catB/flat.csv: in combined_windows.json, the windows must be a list of \[start, end\] pairs, got 'soon'"),
        ([5], r"catB/flat.csv: in combined_windows.json, a window must be \[start, end\], got 5"),  # was TypeError
        ([["2024-02-01 01:00", "yesterday"]], r"catB/flat.csv: in combined_windows.json, window .*: 'yesterday' is not a timestamp"),
        ([["2024-02-01 01:00", None]], r"catB/flat.csv: in combined_windows.json, window .*: None is not a timestamp"),
        ([["2024-02-01 03:00", "2024-02-01 01:00"]], "ends before it starts"),
        ([["2024-02-01 01:00+00:00", "2024-02-01 02:00+00:00"]],  # was TypeError: Cannot compare tz-naive and tz-aware
         r"catB/flat.csv: in combined_windows.json, window .* is in UTC but the file's timestamps are without a timezone; "
         "write both with a timezone or both without"),
        ([["2024-02-01 00:00", "2024-02-01 01:00"], ["2024-02-01 01:00", "2024-02-01 02:00"]], "overlap; merge them into one"),
    ],
    ids=["not-a-list", "not-a-pair", "bad-timestamp", "null", "reversed", "timezone", "overlap"],
)
def test_read_nab_names_the_file_and_the_window_that_is_wrong(tmp_path, windows, message):
    root = _write_nab(tmp_path, extra_label={"catB/flat.csv": windows})
    with pytest.raises(ValueError, match=message):
        read_nab(root, files=["flat"])


@pytest.mark.parametrize(
    "rows, message",
    [
        (["2024-02-01 00:00:00,1", "yesterday,2"], r"catB/flat.csv: timestamp at row 1 is not a date in the format of row 0: 'yesterday'"),
        (["2024-02-01T00:00:00+00:00,1", "2024-02-01T02:00:00+01:00,2"], "catB/flat.csv: timestamps mix timezones or UTC offsets"),
        (["2024-02-01 00:00:00,1", ",2"], "catB/flat.csv: row 1 has no timestamp"),
        (["2024-02-01 01:00:00,1", "2024-02-01 00:00:00,2"], r"catB/flat.csv: timestamps are not sorted: row 1 .* sort the file by time"),
        (['"2024-02-01 00:00:00,1'], r"catB/flat.csv: not a readable CSV file \(Error tokenizing data"),
    ],
    ids=["not-a-date", "mixed-offsets", "no-timestamp", "unsorted", "malformed-csv"],
)
def test_read_nab_names_the_file_and_row_of_a_bad_timestamp(tmp_path, rows, message):
    root = _write_nab(tmp_path)
    (root / "data" / "catB" / "flat.csv").write_text("\n".join(["timestamp,value", *rows]) + "\n")
    with pytest.raises(ValueError, match=message):
        read_nab(root, files=["flat"])


def test_read_nab_reads_timestamps_and_windows_with_a_timezone(tmp_path):
    root = _write_nab(tmp_path, extra_label={"catB/flat.csv": [["2024-02-01T01:00:00Z", "2024-02-01T02:00:00+00:00"]]})
    flat = root / "data" / "catB" / "flat.csv"
    flat.write_text(flat.read_text().replace(":00:00,", ":00:00+00:00,"))
    (series,) = read_nab(root, files=["flat"])
    assert series.panel.index.tz is not None and series.windows == [(1, 2)]


# ------------------------------------------------------------------------------------------
# UCR fixture
# ------------------------------------------------------------------------------------------
def _write_ucr(root: Path, labels_csv: str | None = None, extra: dict | None = None):
    (root / "data").mkdir(parents=True)
    # 001: 30 values, one per line, gzipped; trainEnd 10, anomaly 15..17 (1-based)
    with gzip.open(root / "data" / "001_UCR_Anomaly_toy_10_15_17.txt.gz", "wt") as fh:
        fh.write("\n".join(f"{v:.1f}" for v in np.arange(30.0)) + "\n")
    # 002: 12 values on one line, plain text; trainEnd 5, anomaly 8..8
    (root / "data" / "002_UCR_Anomaly_oneline_5_8_8.txt").write_text(
        "  ".join(str(v) for v in np.linspace(0, 1.1, 12)) + "\n"
    )
    for name, text in (extra or {}).items():
        (root / "data" / name).write_text(text)
    if labels_csv is not None:
        (root / "labels.csv").write_text(labels_csv)
    return root


UCR_LABELS = (
    "file,id,name,train_end,anomaly_start,anomaly_end,length\n"
    "001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,10,15,17,30\n"
    "002_UCR_Anomaly_oneline_5_8_8.txt,002,oneline,5,8,8,12\n"
)


@pytest.mark.parametrize("labels_csv", [None, UCR_LABELS], ids=["from-names", "from-labels-csv"])
def test_read_ucr_converts_to_zero_based_positions(tmp_path, labels_csv):
    series = read_ucr(_write_ucr(tmp_path, labels_csv))
    assert [s.name for s in series] == ["001_UCR_Anomaly_toy_10_15_17", "002_UCR_Anomaly_oneline_5_8_8"]
    toy, line = series
    assert toy.panel.shape == (1, 30)
    assert isinstance(toy.panel.index, pd.RangeIndex)
    np.testing.assert_array_equal(toy.values, np.arange(30.0))
    # 1-based inclusive 15..17 -> 0-based 14..16; points 1..10 (1-based) -> 0..9 are training
    assert toy.windows == [(14, 16)]
    np.testing.assert_array_equal(np.flatnonzero(toy.labels), [14, 15, 16])
    assert toy.train_end == 10
    np.testing.assert_array_equal(toy.rows, np.arange(30))
    assert line.panel.shape == (1, 12)
    np.testing.assert_allclose(line.values, np.linspace(0, 1.1, 12))
    assert line.windows == [(7, 7)] and line.train_end == 5


def test_read_ucr_files_and_limit(tmp_path):
    root = _write_ucr(tmp_path)
    assert [s.name for s in read_ucr(root, files=["002"])] == ["002_UCR_Anomaly_oneline_5_8_8"]
    assert [s.name for s in read_ucr(root, files=[1])] == ["001_UCR_Anomaly_toy_10_15_17"]
    assert len(read_ucr(root, files=["001_UCR_Anomaly_toy_10_15_17"])) == 1
    assert len(read_ucr(root, limit=1)) == 1
    with pytest.raises(ValueError, match="no file named"):
        read_ucr(root, files=["003"])


def test_read_ucr_reads_archive_files_that_labels_csv_omits_with_a_warning(tmp_path):
    # Left out silently before: the benchmark shrank, and asking for the file said it did not exist.
    only_001 = "\n".join(UCR_LABELS.splitlines()[:2]) + "\n"
    root = _write_ucr(tmp_path, only_001)
    with pytest.warns(UserWarning, match=r"1 file\(s\) in .*data not listed in labels.csv \(first 002_UCR_Anomaly_oneline"):
        series = read_ucr(root)
    assert [s.name for s in series] == ["001_UCR_Anomaly_toy_10_15_17", "002_UCR_Anomaly_oneline_5_8_8"]
    assert series[1].windows == [(7, 7)] and series[1].train_end == 5
    with pytest.warns(UserWarning, match="not listed"):
        assert [s.name for s in read_ucr(root, files=["002"])] == ["002_UCR_Anomaly_oneline_5_8_8"]


def test_read_ucr_rejects_inconsistent_labels(tmp_path):
    wrong_length = UCR_LABELS.replace(",30\n", ",31\n")
    with pytest.raises(ValueError, match="length 31"):
        read_ucr(_write_ucr(tmp_path / "a", wrong_length))
    wrong_field = UCR_LABELS.replace("toy,10,15,17", "toy,10,16,17")
    with pytest.raises(ValueError, match="anomaly_start=16"):
        read_ucr(_write_ucr(tmp_path / "b", wrong_field))
    # an anomaly inside the training part
    root = _write_ucr(tmp_path / "c", extra={"003_UCR_Anomaly_bad_10_5_6.txt": "1\n" * 20})
    with pytest.raises(ValueError, match="train_end"):
        read_ucr(root, files=["003"])
    root = _write_ucr(tmp_path / "d", extra={"004_UCR_Anomaly_text_2_3_3.txt": "1\n2\nx\n4\n"})
    with pytest.raises(ValueError, match=r"004_UCR_Anomaly_text_2_3_3.txt: value 2 \('x'\) is not a number"):
        read_ucr(root, files=["004"])
    with pytest.raises(FileNotFoundError):
        read_ucr(tmp_path / "missing")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("003_UCR_Anomaly_gz_2_3_3.txt.gz", b"plain text", r"003_UCR_Anomaly_gz_2_3_3.txt.gz: cannot be read \(Not a gzipped file"),
        ("003_UCR_Anomaly_gz_2_3_3.txt.gz", gzip.compress(bytes(range(256)) * 40)[:200],  # was EOFError
         r"003_UCR_Anomaly_gz_2_3_3.txt.gz: cannot be read \(Compressed file ended"),
        ("003_UCR_Anomaly_bin_2_3_3.txt", b"\xff\xfe\x00\x01", r"003_UCR_Anomaly_bin_2_3_3.txt: cannot be read \('utf-8' codec"),
        ("003_UCR_Anomaly_empty_2_3_3.txt", b" \n", "003_UCR_Anomaly_empty_2_3_3.txt: the file holds no values"),
    ],
    ids=["not-gzip", "truncated-gzip", "not-text", "empty"],
)
def test_read_ucr_names_a_file_that_cannot_be_read(tmp_path, name, content, message):
    root = _write_ucr(tmp_path)
    (root / "data" / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_ucr(root, files=["003"])


@pytest.mark.parametrize(
    "row, message",
    [
        ("001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,10,,17,30", "labels.csv: anomaly_start of 001_UCR_Anomaly_toy_10_15_17.txt.gz is blank"),
        ("001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,ten,15,17,30",
         "labels.csv: train_end of 001_UCR_Anomaly_toy_10_15_17.txt.gz is not a whole number: 'ten'"),
        ("001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,10,15,17,thirty",
         "labels.csv: length of 001_UCR_Anomaly_toy_10_15_17.txt.gz is not a whole number: 'thirty'"),
        ("toy.txt,001,toy,10,15,17,30", "labels.csv: row 0: 'toy.txt' does not follow NNN_UCR_Anomaly_"),
        (",001,toy,10,15,17,30", "labels.csv: row 0 names no file"),
        ("001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,10,15,17,30\n001_UCR_Anomaly_toy_10_15_17.txt.gz,001,toy,10,15,17,30",
         r"labels.csv: 001_UCR_Anomaly_toy_10_15_17.txt.gz is listed twice \(rows 0 and 1\)"),
        ('"001_UCR_Anomaly_toy_10_15_17.txt.gz,001', r"labels.csv: not a readable CSV file \(Error tokenizing data"),
    ],
    ids=["blank", "text", "length-text", "bad-name", "no-file", "twice", "malformed"],
)
def test_read_ucr_names_the_row_of_labels_csv_that_is_wrong(tmp_path, row, message):
    # int() of a blank cell or of text raised "cannot convert float NaN to integer" or "invalid
    # literal for int()", naming neither the labels file nor the series.
    header = UCR_LABELS.splitlines()[0]
    with pytest.raises(ValueError, match=message):
        read_ucr(_write_ucr(tmp_path, f"{header}\n{row}\n"))


# ------------------------------------------------------------------------------------------
# empty data sets, and files that cannot be read
# ------------------------------------------------------------------------------------------
def test_readers_refuse_an_empty_data_set(tmp_path):
    # An empty list reached the accuracy report, which failed with KeyError: 'detector'.
    nab = tmp_path / "nab"
    (nab / "data" / "cat").mkdir(parents=True)
    (nab / "labels").mkdir()
    (nab / "labels" / "combined_windows.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no NAB data file in .*nab/data: expected <category>/<name>.csv"):
        read_nab(nab)
    ucr = tmp_path / "ucr"
    (ucr / "data").mkdir(parents=True)
    (ucr / "data" / "notes.txt").write_text("not a series")
    with pytest.raises(ValueError, match=r"no UCR series: no file named like NNN_UCR_Anomaly_"):
        read_ucr(ucr)
    (ucr / "labels.csv").write_text("file,train_end,anomaly_start,anomaly_end\n")
    with pytest.raises(ValueError, match=r"no UCR series: .*labels.csv lists no file"):
        read_ucr(ucr)


def test_readers_hand_a_file_that_cannot_be_read_to_on_error_and_read_the_others(tmp_path):
    root = _write_nab(tmp_path / "nab", extra_label={"catB/flat.csv": [["2024-02-01 01:00", "soon"]]})
    with pytest.raises(ValueError):
        read_nab(root)  # by default, the first error is raised
    failed = []
    series = read_nab(root, on_error=lambda name, exc: failed.append((name, type(exc))))
    assert [s.name for s in series] == ["catA/toy"]
    assert [name for name, _ in failed] == ["catB/flat.csv"]
    root = _write_ucr(tmp_path / "ucr", extra={"004_UCR_Anomaly_text_2_3_3.txt": "1\n2\nx\n4\n"})
    failed = []
    series = read_ucr(root, on_error=lambda name, exc: failed.append((name, str(exc))))
    assert [s.name for s in series] == ["001_UCR_Anomaly_toy_10_15_17", "002_UCR_Anomaly_oneline_5_8_8"]
    assert failed == [("004_UCR_Anomaly_text_2_3_3.txt", failed[0][1])] and "value 2 ('x') is not a number" in failed[0][1]


# ------------------------------------------------------------------------------------------
# real data (CI has it at ../shared/data; skipped elsewhere)
# ------------------------------------------------------------------------------------------
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no labelled data at {SHARED_DATA}")


@needs_data
def test_read_nab_real_files():
    root = SHARED_DATA / "nab"
    names = ["artificialWithAnomaly/art_daily_jumpsup", "realAdExchange/exchange-2_cpc_results"]
    series = read_nab(root, files=names)
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    for s, name in zip(series, names):
        frame = pd.read_csv(root / "data" / (name + ".csv"), parse_dates=["timestamp"])
        ts = pd.DatetimeIndex(frame["timestamp"])
        n_rows = len(frame)
        assert s.rows.shape == (n_rows,)
        assert np.all(np.diff(s.rows) >= 0)
        # every row's value is found at its grid point (rows alone on their point)
        alone = np.bincount(s.rows)[s.rows] == 1
        np.testing.assert_allclose(s.values[s.rows[alone]], frame["value"].to_numpy()[alone])
        # the grid timestamps of the rows are the rows' timestamps (to within half a step)
        step = s.panel.index.freq
        assert np.all(np.abs(s.panel.index[s.rows] - ts) <= pd.Timedelta(step) / 2)
        # windows: the rows inside each labelled [start, end]
        expected_rows = [
            (int(np.flatnonzero(ts >= pd.Timestamp(a))[0]), int(np.flatnonzero(ts <= pd.Timestamp(b))[-1]))
            for a, b in windows[name + ".csv"]
        ]
        assert s.row_windows == expected_rows
        assert s.train_end == s.rows[min(int(0.15 * n_rows), 750)]
    jumpsup, exchange = series
    assert jumpsup.panel.shape == (1, 4032) and jumpsup.train_end == 604  # floor(0.15 * 4032)
    assert exchange.panel.index.freq == pd.Timedelta("1h")
    assert np.isnan(exchange.values).sum() > 0  # the file has gaps
    # labels used as scores: a perfect NAB detector
    assert nab_corpus_score([s.nab_file(s.labels.astype(float)) for s in series]).score == pytest.approx(100)


@needs_data
def test_read_ucr_real_files():
    root = SHARED_DATA / "ucr"
    table = pd.read_csv(root / "labels.csv", dtype={"id": str}).set_index("id")
    series = read_ucr(root, files=["005", "205"])  # 205 holds all its values on one line
    assert len(series) == 2
    for s, file_id in zip(series, ["005", "205"]):
        row = table.loc[file_id]
        assert s.name == row["file"].removesuffix(".txt.gz")
        assert s.panel.shape == (1, row["length"])
        assert s.train_end == row["train_end"]
        assert s.windows == [(row["anomaly_start"] - 1, row["anomaly_end"] - 1)]
        assert s.labels.sum() == row["anomaly_end"] - row["anomaly_start"] + 1
        assert np.isfinite(s.values).all()
        start, end = s.windows[0]
        assert ucr_correct(s.labels.astype(float), s.train_end, start, end)
