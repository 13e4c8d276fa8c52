"""The console script: the demo end to end, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsanomaly import backend
from tsanomaly.cli import main


def _one_line_error(capsys) -> str:
    """stderr of a failed command: one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_demo_prints_alerts_and_precision_recall(capsys):
    status = main(["demo", "--detector", "baseline", "--contexts", "40", "--days", "28", "--top", "5"])
    out = capsys.readouterr().out
    assert status == 0
    assert "alerts" in out and "precision" in out and "recall" in out
    assert "credential_stuffing" in out


def test_demo_on_too_few_contexts_for_an_attack_says_so(capsys):
    # Three contexts draw no attack: the demo printed "Empty DataFrame" and "recall nan".
    assert main(["demo", "--detector", "baseline", "--contexts", "3", "--days", "28"]) == 0
    out = capsys.readouterr().out
    assert "No attack was injected" in out and "recall n/a" in out
    assert "Empty DataFrame" not in out and "nan" not in out
    assert main(["demo", "--detector", "baseline", "--contexts", "10", "--days", "28"]) == 0
    assert "Injected attacks found" in capsys.readouterr().out  # the count the message suggests


def test_unknown_detector_is_a_user_error(capsys):
    status = main(["demo", "--detector", "nope", "--contexts", "10"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "unknown detector 'nope'" in err


# ---------------------------------------------------------------------- demo: days and devices
def test_demo_scores_the_last_week_whatever_the_days(monkeypatch):
    import tsanomaly.demo

    shown = []
    monkeypatch.setattr(tsanomaly.demo, "print_demo", lambda result, top: shown.append(result))
    # 35 days: the fit used to stop after day 21 whatever --days said, so two weeks were scored.
    assert main(["demo", "--detector", "baseline", "--contexts", "40", "--days", "35"]) == 0
    (result,) = shown
    last_week = pd.Timestamp("2024-01-01") + pd.Timedelta(days=28)  # the panel starts on 2024-01-01
    assert len(result.alerts) > 0 and len(result.attacks) > 0
    assert (result.alerts["start"] >= last_week).all()
    assert (result.attacks["start"] >= last_week).all()


@pytest.mark.parametrize(
    "option, message",
    [(["--days", "7"], "--days must be at least 8"), (["--days", "0"], "--days must be at least 8"),
     (["--top", "-1"], "--top must be 0 or more"), (["--seed", "-1"], "--seed must be 0 or more")],
)
def test_demo_rejects_days_without_history_and_negative_top(option, message, capsys):
    # --days 7 used to fit on all of it, score an empty panel and print "precision nan" with status 0;
    # --seed -1 printed numpy's "expected non-negative integer", naming no option.
    assert main(["demo", "--detector", "baseline", "--contexts", "10", *option]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("detector, short, need", [("baseline", 14, 15), ("mp", 14, 15), ("stl", 8, 9)])
def test_demo_refuses_days_that_leave_the_detector_too_short_a_history(detector, short, need, capsys):
    """The baseline and the matrix profile need over a week of history, STL two days: with fewer,
    the baseline calibrated an infinite threshold and printed "precision nan" with status 0."""
    assert main(["demo", "--detector", detector, "--contexts", "10", "--days", str(short)]) == 2
    assert f"--days must be at least {need} for --detector {detector}" in _one_line_error(capsys)


def test_demo_help_states_the_fewest_days_each_detector_needs():
    """The help's figures are those the command enforces (it said "at least 8", which no detector accepts)."""
    import argparse
    import math
    import re

    from tsanomaly.cli import _build_parser
    from tsanomaly.demo import SCORED_DAYS
    from tsanomaly.detectors import make_detector

    parser = _build_parser()
    demo = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["demo"]
    text = " ".join(next(a for a in demo._actions if "--days" in a.option_strings).help.split())
    stated = {name: int(days) for days, names in re.findall(r"(\d+) for ([a-z, ]+?)(?:,|\s\()", text)
              for name in re.split(r",? and |, ", names.strip())}
    pytest.importorskip("torch")
    assert stated == {name: SCORED_DAYS + math.ceil(make_detector(name).min_fit_times() / 24)
                      for name in ("baseline", "stl", "mp", "lstm", "ensemble")}


def test_run_demo_needs_a_day_to_fit_and_a_day_to_score():
    from tsanomaly.demo import run_demo

    # n_days=7 used to fit on every day (the history default was 21) and score nothing.
    with pytest.raises(ValueError, match="need 1 <= history_days < n_days"):
        run_demo("baseline", n_contexts=10, n_days=7)
    with pytest.raises(ValueError, match="need 1 <= history_days < n_days"):
        run_demo("baseline", n_contexts=10, n_days=28, history_days=28)


def test_demo_matches_alerts_against_the_labelled_buckets():
    # A night_bot's [start, end] runs from its first attacked night to its last: an alert in the
    # unlabelled daytime between them used to count as a hit (and found the attack).
    from tsanomaly.datasets import make_security_panel
    from tsanomaly.demo import match_alerts

    data = make_security_panel(n_contexts=200, n_days=28, seed=7, clean_days=21)
    attack = data.attacks[data.attacks["kind"] == "night_bot"].iloc[[0]].reset_index(drop=True)
    row = data.labels["logins"].contexts.get_loc((attack.at[0, "country"], attack.at[0, "asn"]))
    labelled = data.labels["logins"].values[row]
    inside = (data.index >= attack.at[0, "start"]) & (data.index <= attack.at[0, "end"])
    day, night = data.index[inside & ~labelled][10], data.index[inside & labelled][3]

    def alert(at, metric="logins"):
        return pd.DataFrame({"country": [attack.at[0, "country"]], "asn": [attack.at[0, "asn"]],
                             "metric": [metric], "start": [at], "end": [at]})

    context = ["country", "asn"]
    hit, found = match_alerts(alert(day), attack, context, labels=data.labels)
    assert not hit[0] and not found[0]
    hit, found = match_alerts(alert(night), attack, context, labels=data.labels)
    assert hit[0] and found[0]
    hit, found = match_alerts(alert(night, "failed_logins"), attack, context, labels=data.labels)
    assert not hit[0] and not found[0]  # a metric the attack did not change
    hit, _ = match_alerts(alert(day), attack, context)
    assert hit[0]  # without labels: any overlap of the two spans, as before


def test_demo_counts_an_alert_as_an_attack_only_on_a_labelled_bucket():
    from tsanomaly.datasets import make_security_panel
    from tsanomaly.demo import run_demo

    result = run_demo("baseline", n_contexts=40, n_days=28, device="cpu")
    data = make_security_panel(n_contexts=40, n_days=28, seed=7, clean_days=21)
    for alert in result.alerts.itertuples():
        label = data.labels[alert.metric]
        row = label.contexts.get_loc((alert.country, alert.asn))
        covered = label.values[row, (data.index >= alert.start) & (data.index <= alert.end)].any()
        assert alert.attack == covered
    assert result.precision == result.alerts["attack"].mean()


def _without_cupy(monkeypatch):
    """Make ``import cupy`` fail, as on a machine without CuPy, whatever this machine has."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_visible_gpu_count", lambda: 0)


def test_demo_on_cuda_without_a_gpu_is_a_user_error(monkeypatch, capsys):
    _without_cupy(monkeypatch)
    assert main(["demo", "--detector", "baseline", "--contexts", "10", "--device", "cuda"]) == 2
    assert "device='cuda' was asked for" in _one_line_error(capsys)


# ---------------------------------------------------------------------- evaluate
def _write_nab(root: Path) -> Path:
    """A NAB folder with one file: 400 hourly rows of a daily cycle, a spike in a labelled window."""
    (root / "nab" / "data" / "cat").mkdir(parents=True)
    (root / "nab" / "labels").mkdir()
    times = pd.date_range("2024-01-01", periods=400, freq="h")
    values = 10 + 5 * np.sin(2 * np.pi * np.arange(400) / 24)
    values[300] = 60.0
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
        root / "nab" / "data" / "cat" / "cycle.csv", index=False
    )
    window = [str(times[295]), str(times[305])]
    (root / "nab" / "labels" / "combined_windows.json").write_text(json.dumps({"cat/cycle.csv": [window]}))
    return root


def _evaluate(root, *options):
    return ["evaluate", "--data", str(root), "--datasets", "nab", "--detectors", "baseline", *options]


@pytest.mark.parametrize("datasets", ["nba", "nab,ucr,uc", ","])
def test_evaluate_rejects_unknown_data_set_names(datasets, tmp_path, capsys):
    # An unknown name used to be skipped: an empty report and exit status 0.
    args = ["evaluate", "--data", str(_write_nab(tmp_path)), "--datasets", datasets, "--detectors", "baseline"]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "--datasets" in err and "valid names: nab, ucr" in err


@pytest.mark.parametrize("detectors", ["", "mp,foo"])
def test_evaluate_rejects_unknown_or_no_detector_names(detectors, tmp_path, capsys):
    args = ["evaluate", "--data", str(_write_nab(tmp_path)), "--datasets", "nab", "--detectors", detectors]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "--detectors" in err and "valid names: baseline, stl, mp, mp-multi, lstm, ensemble" in err


@pytest.mark.parametrize("points", ["0", "-5"])
def test_evaluate_rejects_max_points_below_one(points, tmp_path, capsys):
    # 0 used to end in a ZeroDivisionError traceback.
    assert main(_evaluate(_write_nab(tmp_path), "--max-points", points)) == 2
    assert "--max-points must be at least 1" in _one_line_error(capsys)


def test_evaluate_on_cuda_without_a_gpu_is_a_user_error(monkeypatch, tmp_path, capsys):
    _without_cupy(monkeypatch)
    assert main(_evaluate(_write_nab(tmp_path), "--device", "cuda")) == 2
    assert "device='cuda' was asked for" in _one_line_error(capsys)


def test_evaluate_report_quotes_the_command_after_a_global_flag(tmp_path, capsys):
    root = _write_nab(tmp_path / "data")
    out = tmp_path / "report.md"  # outside the data folder, which holds only inputs
    assert main(["-v", *_evaluate(root, "--out", str(out))]) == 0
    capsys.readouterr()
    # The quote used to be argv[1:], which repeated the sub-command after -v: "evaluate evaluate".
    expected = f"Made with: `tsanomaly evaluate --data {root} --datasets nab --detectors baseline --out {out}`"
    assert expected in out.read_text()


def test_evaluate_refuses_an_out_that_would_replace_an_input_before_any_work(tmp_path, capsys, monkeypatch):
    # --out naming the data folder's README (or a data or labels file) replaced it with the
    # report, after the whole run.
    root = _write_nab(tmp_path / "data")
    (root / "README.md").write_text("the data set's README\n")
    link = tmp_path / "link.md"
    link.symlink_to(root / "README.md")
    hard = tmp_path / "hard.csv"
    hard.hardlink_to(root / "nab" / "data" / "cat" / "cycle.csv")
    inputs = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    import tsanomaly.evaluation

    monkeypatch.setattr(tsanomaly.evaluation, "evaluate", lambda *a, **k: pytest.fail("ran before refusing --out"))
    for out, message in [
        (root / "README.md", "lies inside the data folder"),
        (root / "nab" / "labels" / "combined_windows.json", "lies inside the data folder"),
        (root / "nab" / "new.md", "lies inside the data folder"),  # not an input yet, but inside the data set
        (tmp_path / "data" / "nab" / ".." / "README.md", "lies inside the data folder"),
        (link, "lies inside the data folder"),  # a link is written through, to the README
        (hard, "hard link"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing" / "r.md", "does not exist"),
    ]:
        assert main(_evaluate(root, "--out", str(out))) == 2, out
        assert message in _one_line_error(capsys), out
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == inputs
    assert main(_evaluate(root, "--out", "")) == 2
    assert "--out names no file" in _one_line_error(capsys)


def test_evaluate_refuses_a_detector_named_twice(tmp_path, capsys):
    # It was run twice and counted twice: "## NAB (2 files)" for a data set of one file.
    assert main(_evaluate(_write_nab(tmp_path), "--detectors", "baseline,stl,baseline")) == 2
    assert "--detectors names baseline more than once" in _one_line_error(capsys)


@pytest.mark.parametrize("dataset", ["nab", "ucr"])
def test_evaluate_on_an_empty_data_set_says_so(dataset, tmp_path, capsys):
    # An empty data set ended in "error: 'detector'" (a KeyError of the empty summary).
    (tmp_path / dataset / "data").mkdir(parents=True)
    (tmp_path / dataset / "labels").mkdir()
    (tmp_path / dataset / "labels" / "combined_windows.json").write_text("{}")
    assert main(["evaluate", "--data", str(tmp_path), "--datasets", dataset, "--detectors", "baseline"]) == 2
    err = _one_line_error(capsys)
    assert f"no {dataset.upper()}" in err and str(tmp_path / dataset / "data") in err


def test_evaluate_finds_a_missing_data_set_before_running_any(tmp_path, capsys, monkeypatch):
    # ucr/ missing was found after NAB had been scored (minutes on the real data).
    import tsanomaly.evaluation

    monkeypatch.setattr(tsanomaly.evaluation, "evaluate", lambda *a, **k: pytest.fail("scored before finding ucr/ missing"))
    root = _write_nab(tmp_path)
    assert main(["evaluate", "--data", str(root), "--detectors", "baseline"]) == 2
    assert f"data folder {root / 'ucr'} not found" in _one_line_error(capsys)


def test_evaluate_reports_an_unreadable_file_and_scores_the_others(tmp_path, capsys):
    # A malformed CSV ended the run with pandas' error, naming no file and scoring none.
    root = _write_nab(tmp_path / "data")
    (root / "nab" / "data" / "cat" / "broken.csv").write_text('timestamp,value\n2024-01-01 00:00:00,1\n"2024-01-01 01:00')
    labels = root / "nab" / "labels" / "combined_windows.json"
    labels.write_text(labels.read_text().replace("{", '{"cat/broken.csv": [], ', 1))
    out = tmp_path / "report.md"
    assert main(_evaluate(root, "--out", str(out))) == 1
    captured = capsys.readouterr()
    assert "1 file(s) could not be read and 0 (detector, file) run(s) failed" in captured.err
    text = out.read_text()
    assert "## NAB (2 files, 1 of them unreadable)" in text
    assert "| baseline | 1 | 0 |" in text  # the readable file, scored
    assert "- cat/broken.csv: not read, in no detector's figures (not a readable CSV file (Error tokenizing data" in text


def test_evaluate_records_a_detector_failing_on_one_file_and_goes_on(tmp_path, capsys, monkeypatch):
    import tsanomaly.evaluation

    root = _write_nab(tmp_path / "data")
    second = root / "nab" / "data" / "cat" / "second.csv"
    second.write_bytes((root / "nab" / "data" / "cat" / "cycle.csv").read_bytes())
    labels = root / "nab" / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    labels.write_text(json.dumps({**windows, "cat/second.csv": windows["cat/cycle.csv"]}))
    real = tsanomaly.evaluation.score_series

    def flaky(record, name, **kwargs):
        if record.name == "cat/cycle":  # read first: the run must go on to cat/second
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(record, name, **kwargs)

    monkeypatch.setattr(tsanomaly.evaluation, "score_series", flaky)
    out = tmp_path / "report.md"
    assert main(_evaluate(root, "--out", str(out))) == 1
    assert "0 file(s) could not be read and 1 (detector, file) run(s) failed" in capsys.readouterr().err
    text = out.read_text()
    assert "## NAB (2 files)" in text and "| baseline | 2 | 1 |" in text
    assert "- baseline failed on cat/cycle (LinAlgError: SVD did not converge): scored as giving no score" in text


def test_evaluate_names_a_malformed_labels_file_in_one_line(tmp_path, capsys):
    # json's own message ("Expecting value: line 1 column 1") named no file.
    root = _write_nab(tmp_path)
    labels = root / "nab" / "labels" / "combined_windows.json"
    labels.write_text("")
    assert main(_evaluate(root)) == 2
    assert f"{labels}: not valid JSON (Expecting value: line 1 column 1 (char 0))" in _one_line_error(capsys)


def test_an_error_whose_message_starts_with_a_newline_is_not_reported_as_empty(tmp_path, capsys, monkeypatch):
    # Matplotlib's mathtext errors begin with "\n": the CLI printed "error: " and nothing else.
    import tsanomaly.evaluation

    def fail(*args, **kwargs):
        raise ValueError("\n$x_{$\n    ^\nExpected end of text")

    monkeypatch.setattr(tsanomaly.evaluation, "format_markdown", fail)
    assert main(_evaluate(_write_nab(tmp_path))) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "tsanomaly evaluate: error: $x_{$"


def test_a_warning_is_one_line_naming_the_command_not_a_source_line(tmp_path, capsys, monkeypatch):
    """STL drops a weekly period on 12 days: said as the errors are, not as 'base.py:286: UserWarning: ...'."""
    import warnings

    rng = np.random.default_rng(0)
    index = pd.date_range("2024-03-01", periods=24 * 12, freq="h")
    frame = pd.concat([pd.DataFrame({"ctx": c, "ts": index, "n": rng.poisson(30, len(index))}) for c in "ab"])
    frame.to_csv(tmp_path / "h.csv", index=False)
    # Python's own display (pytest records warnings instead): the formatted text to stderr.
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["fit", "--input", str(tmp_path / "h.csv"), "--context", "ctx", "--time", "ts", "--value", "n",
                     "--detector", "stl", "--param", "periods=[24,168]", "--save", str(tmp_path / "m.tsa")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("tsanomaly fit: warning: periods [168] are at least half the series' length"), err
    assert err.count("\n") == 1 and ".py:" not in err and err.rstrip().endswith("(UserWarning)")


def test_the_help_lists_every_extension_the_reader_takes(capsys):
    """fit, score and report named .csv, .parquet and .jsonl, where the reader takes seven."""
    from tsanomaly.io import FORMATS

    for command in ("fit", "score", "report"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
        assert all(ext in text for ext in FORMATS), (command, text)
