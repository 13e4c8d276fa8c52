"""Every example in examples/ runs, small, and finds what its docstring says it finds."""
from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _run(name: str, args: list[str], capsys) -> str:
    """Run an example's main() in this process (faster than a subprocess) and return what it printed."""
    namespace = runpy.run_path(str(EXAMPLES / name))  # run_name is not "__main__": nothing runs on import
    assert namespace["main"](args) == 0
    return capsys.readouterr().out


def _usage_error(name: str, args: list[str], capsys) -> str:
    """Run an example's main() expecting argparse's usage error (exit status 2); return its stderr."""
    namespace = runpy.run_path(str(EXAMPLES / name))
    with pytest.raises(SystemExit) as exit_info:
        namespace["main"](args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_every_example_is_documented_at_its_top():
    for path in sorted(EXAMPLES.glob("*.py")):
        if path.name == "spark_scoring_job.py":
            continue
        source = path.read_text()
        assert source.startswith('"""'), path.name
        doc = source.split('"""')[1]
        assert "Run it" in doc and "python examples/" in doc, path.name


@pytest.mark.parametrize("detector", ["baseline", "stl"])
def test_credential_stuffing_finds_every_attacked_asn(detector, capsys):
    # stl ships with the package: an import failure is a failure here, not a skip.
    out = _run("credential_stuffing.py", ["--small", "--detector", detector, "--device", "cpu"], capsys)
    assert "attacked ASNs found: 4 of 4" in out
    assert "MISSED" not in out
    # Explained: observed against usual failed logins at the peak.
    assert re.search(r"with \d+ failed logins where \d+ are usual \([\d.]+x", out)
    assert re.search(r"busiest 6-hour window: [4-9] ASNs alerting", out)


def test_registration_farm_is_missed_by_the_threshold_and_found_by_shape(capsys):
    out = _run("registration_farm.py", ["--small", "--device", "cpu"], capsys)
    methods = ("threshold", "baseline", "stl", "mp")
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in methods}
    assert " no " in rows["threshold"]
    assert " yes " in rows["baseline"]
    # stl and mp ship with the package: the example lists a detector it cannot import as
    # "unavailable", which must not happen here.
    for name in ("stl", "mp"):
        assert " yes " in rows[name], rows[name]
    assert "unavailable" not in out


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")
def test_auth_log_bruteforce_finds_the_documented_episode(capsys, tmp_path):
    report = tmp_path / "auth.html"
    out = _run("auth_log_bruteforce.py", [str(SHARED_DATA / "authlog"), "--report", str(report)], capsys)
    assert "BRUTE-FORCE EPISODE (top alert): 24.151.103.17" in out
    assert "peak 2017-03-30 15:00" in out
    assert "known source:" in out  # the address had logged in before: explained as a known source
    html = report.read_text()
    assert html.count("<img ") == 3
    # the sources never seen before are tagged (the example's re-ranked table had dropped the tag)
    assert "new context" in html


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")
def test_auth_log_small_still_holds_the_episode(capsys):
    out = _run("auth_log_bruteforce.py", [str(SHARED_DATA / "authlog"), "--small"], capsys)
    assert "peak 2017-03-30 15:00" in out


def test_gpu_scoring_job_runs_small_on_cpu(capsys):
    out = _run("gpu_scoring_job.py", ["--small", "--device", "cpu", "--detector", "stl"], capsys)
    assert "4 chunks of 500" in out and "contexts/s" in out
    assert "detector stl on cpu" in out
    found, injected = map(int, re.search(r"injected bursts found: (\d+) of (\d+)", out).groups())
    assert injected > 0 and found == injected


def test_an_example_runs_as_a_script():
    """The `python examples/...` command of the docstrings, in a fresh interpreter."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "credential_stuffing.py"), "--small", "--detector", "baseline",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "attacked ASNs found: 4 of 4" in done.stdout


def test_credential_stuffing_counts_every_alert(capsys):
    # Every alert is found, on an attacked ASN outside its attack, or on another ASN: the
    # totals add up (an alert just after an attack used to be counted nowhere).
    out = _run("credential_stuffing.py", ["--small", "--detector", "stl", "--device", "cpu"], capsys)
    total = int(re.search(r"(\d+) alerts in the scored week", out).group(1))
    during = int(re.search(r"\((\d+) alerts during the attack\)", out).group(1))
    false_alarms, outside, other = map(
        int, re.search(r"false alarms over the week: (\d+) — (\d+) on attacked ASNs outside their attack, "
                       r"(\d+) on the 56 other ASNs", out).groups()
    )
    assert false_alarms == outside + other
    assert during + false_alarms == total
    assert outside >= 1  # this seed has one: the case the totals used to miss
    assert out.count("outside its attack\n") == outside


@pytest.mark.parametrize(
    "args, limit",
    [(["--small", "--asns", "100"], 30), (["--small", "--asns", "0"], 30), (["--asns", "60"], 57)],
)
def test_credential_stuffing_rejects_an_impossible_campaign(args, limit, capsys):
    # Before: capped silently (100), a KeyError (0), a broadcast error past the scored week (60).
    err = _usage_error("credential_stuffing.py", args + ["--detector", "baseline", "--device", "cpu"], capsys)
    assert f"--asns must be from 1 to {limit}" in err


def test_credential_stuffing_accepts_the_longest_campaign(capsys):
    out = _run("credential_stuffing.py", ["--small", "--asns", "30", "--detector", "baseline", "--device", "cpu"],
               capsys)
    assert re.search(r"attacked ASNs found: \d+ of 30", out)


def test_auth_log_stl_says_which_sources_it_could_not_score(shared_data, capsys):
    # The STL has no cold start: the sources new since the fit are counted, not silently NaN.
    out = _run("auth_log_bruteforce.py", [str(shared_data / "authlog"), "--small", "--detector", "stl",
                                          "--device", "cpu"], capsys)
    new = int(re.search(r"\((\d+) sources new since the fit\)", out).group(1))
    assert new > 0
    assert f"{new} sources not scored: new since the fit, and the stl detector needs" in out


def test_auth_log_baseline_scores_new_sources_from_a_cold_start(shared_data, capsys):
    out = _run("auth_log_bruteforce.py", [str(shared_data / "authlog"), "--small", "--device", "cpu"], capsys)
    assert "not scored" not in out


def _write_log(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "auth.log").write_text("".join(line + "\n" for line in lines))
    return folder


def test_auth_log_without_failed_logins_is_a_usage_error(tmp_path, capsys):
    folder = _write_log(tmp_path / "log", [
        "Mar 27 13:06:01 host sshd[1]: Accepted password for bob from 10.0.0.1 port 22 ssh2",
        "Mar 29 13:06:01 host sshd[1]: Accepted password for bob from 10.0.0.1 port 22 ssh2",
    ])
    err = _usage_error("auth_log_bruteforce.py", [str(folder)], capsys)
    assert f"no failed authentication lines found in {folder}" in err


def test_auth_log_history_over_the_whole_log_is_a_usage_error(tmp_path, capsys):
    failed = "sshd[1]: Failed password for bob from 10.0.0.2 port 22 ssh2"
    folder = _write_log(tmp_path / "log", [f"Mar 27 13:06:01 host {failed}", f"Mar 29 13:06:01 host {failed}"])
    err = _usage_error("auth_log_bruteforce.py", [str(folder), "--history-days", "40"], capsys)
    assert "history covers the whole log (ends 2017-03-29 13:06): nothing left to score" in err


def test_auth_log_stl_needs_two_cycles_of_history(shared_data, capsys):
    err = _usage_error("auth_log_bruteforce.py", [str(shared_data / "authlog"), "--small", "--detector", "stl",
                                                  "--history-days", "1.97", "--device", "cpu"], capsys)
    assert "--detector stl needs two cycles of its period in the history (48 buckets)" in err


def test_spark_job_input_folder_depends_on_the_split(tmp_path):
    # A rerun with another --history-days must not reuse the input written for the first split.
    pq = pytest.importorskip("pyarrow.parquet")
    write_input = runpy.run_path(str(EXAMPLES / "spark_scoring_job.py"))["write_input"]
    five = write_input(tmp_path, 10, 8, 5, 0)
    six = write_input(tmp_path, 10, 8, 6, 0)
    assert five != six
    ends = [pq.read_table(folder / "history").column("ts").to_pandas().max() for folder in (five, six)]
    assert ends[1] - ends[0] == pd.Timedelta(days=1)


@pytest.mark.parametrize("detector, days, minimum", [("baseline", "0", 8), ("baseline", "7", 8), ("stl", "1", 2),
                                                    ("mp", "7", 8)])
def test_gpu_scoring_job_rejects_a_too_short_history(detector, days, minimum, capsys):
    # --history-days 0 used to wrap the split to the new day's last point; each detector states the
    # history it needs (min_fit_times): the baseline 169 hours, the matrix profile 192, STL 48.
    err = _usage_error(
        "gpu_scoring_job.py", ["--small", "--device", "cpu", "--detector", detector, "--history-days", days], capsys
    )
    assert f"--history-days must be at least {minimum} for the {detector} detector, got {days}" in err


def test_auth_log_lists_the_strongest_known_source_when_the_top_alert_is_new(tmp_path, capsys):
    # known.iloc[1:] assumed the top alert was on a known source: with a new source on top it was
    # listed twice and the strongest alert on a known source never printed.
    import random

    rng = random.Random(0)
    lines = []

    def add(day, hour, minute, source, n, user="bob"):
        for k in range(n):
            lines.append((day, hour, minute, k, f"Mar {day:2d} {hour:02d}:{minute:02d}:{k % 60:02d} host sshd[1]: "
                                               f"Failed password for {user} from {source} port 22 ssh2"))

    for day in range(1, 6):  # a known source: about one failure an hour over the history
        for hour in range(24):
            add(day, hour, 5, "10.0.0.1", rng.choice([0, 1, 1, 2]))
    add(6, 10, 0, "10.0.0.1", 5)  # its strongest alert
    add(7, 3, 0, "203.0.113.9", 50, user="root")  # a new source, on top
    for day in range(6, 9):
        for hour in range(0, 24, 6):
            lines.append((day, hour, 30, 0, f"Mar {day:2d} {hour:02d}:30:00 host CRON[2]: session opened"))
    folder = _write_log(tmp_path / "log", [line[-1] for line in sorted(lines)])
    out = _run("auth_log_bruteforce.py", [str(folder), "--history-days", "4.5", "--device", "cpu"], capsys)
    assert "BRUTE-FORCE EPISODE (top alert): 203.0.113.9" in out
    assert out.count("source 203.0.113.9:") == 1
    known = out.split("other alerts on sources seen in the history:")[1]
    assert known.lstrip().startswith("source 10.0.0.1: 5 failed attempts from 2017-03-06 10:00")


def test_auth_log_detector_periods_follow_the_bucket():
    # The docstring promises a daily period for the STL and a 6-hour window for mp: they were 24
    # and 6 buckets whatever --bucket (12 hours and 3 hours at 30min).
    params = runpy.run_path(str(EXAMPLES / "auth_log_bruteforce.py"))["detector_params"]
    assert params("stl", "1h")["periods"] == 24 and params("mp", "1h")["window"] == 6
    assert params("stl", "30min")["periods"] == 48 and params("mp", "30min")["window"] == 12
    assert params("stl", "2h")["periods"] == 12 and params("mp", "2h")["window"] == 3
    assert params("mp", "4h")["window"] == 3  # the matrix profile's smallest window
    with pytest.raises(ValueError, match="--bucket must divide a day"):
        params("stl", "5h")


def test_auth_log_stl_at_30min_needs_two_days_of_history(shared_data, capsys):
    err = _usage_error("auth_log_bruteforce.py", [str(shared_data / "authlog"), "--small", "--detector", "stl",
                                                  "--bucket", "30min", "--history-days", "1.5", "--device", "cpu"],
                       capsys)
    assert "--detector stl needs two cycles of its period in the history (96 buckets)" in err


def test_spark_job_counts_an_attack_found_only_by_an_alert_during_it():
    # An alert anywhere in the scored week on an attacked context used to count as finding it.
    found = runpy.run_path(str(EXAMPLES / "spark_scoring_job.py"))["attacks_found"]
    attacks = pd.DataFrame({"country": ["US", "DE"], "asn": ["AS1-0", "AS2-0"], "kind": ["outage", "slow_drip"],
                            "start": pd.to_datetime(["2024-01-23 10:00", "2024-01-24 00:00"]),
                            "end": pd.to_datetime(["2024-01-23 14:00", "2024-01-26 23:00"])})
    alerts = pd.DataFrame({"country": ["US", "DE"], "asn": ["AS1-0", "AS2-0"],
                           "start": pd.to_datetime(["2024-01-27 10:00", "2024-01-26 23:00"]).tz_localize("UTC"),
                           "end": pd.to_datetime(["2024-01-27 12:00", "2024-01-27 02:00"]).tz_localize("UTC")})
    assert found(attacks, alerts)["asn"].tolist() == ["AS2-0"]
    assert len(found(attacks, alerts.iloc[:0])) == 0


@pytest.mark.parametrize(
    "name, args, expected",
    [
        ("credential_stuffing.py", ["--small", "--contexts", "80", "--detector", "baseline"],
         "failed logins per hour for 80 (country, ASN) contexts"),
        ("gpu_scoring_job.py", ["--small", "--contexts", "100", "--chunk", "50", "--detector", "baseline"],
         "100 contexts x (336 history + 24 new) hourly points, 2 chunks of 50"),
        ("registration_farm.py", ["--small", "--countries", "4", "--methods", "threshold"],
         "registrations per hour for 16 (country, device) contexts"),
    ],
)
def test_an_explicit_option_wins_over_small(name, args, expected, capsys):
    # --small used to replace --contexts, --chunk and --countries without a word.
    assert expected in _run(name, args + ["--device", "cpu"], capsys)


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("credential_stuffing.py", ["--contexts", "0"], "--contexts must be 1 or more, got 0"),
        ("gpu_scoring_job.py", ["--contexts", "0"], "--contexts must be 1 or more, got 0"),
        ("gpu_scoring_job.py", ["--small", "--chunk", "0"], "--chunk must be 1 or more, got 0"),
        ("registration_farm.py", ["--countries", "1"], "--countries must be from 2"),
        ("registration_farm.py", ["--countries", "20"], "--countries must be from 2 (the farm is in BR, the second "
                                                        "country) to 8, got 20"),
    ],
)
def test_an_out_of_range_option_is_refused(name, args, message, capsys):
    # --countries 1 ran 2 countries and 20 ran 8 (clamped silently).
    assert message in _usage_error(name, args + ["--device", "cpu"], capsys)


def test_gpu_scoring_job_data_do_not_depend_on_the_chunk_size():
    # Each chunk was seeded by (seed, first context): another --chunk gave other data.
    make_chunk = runpy.run_path(str(EXAMPLES / "gpu_scoring_job.py"))["make_chunk"]
    whole_history, whole_new, whole_bursts = make_chunk(0, 2500, 14, 3, burst_rate=0.01)
    parts = [make_chunk(first, n, 14, 3, burst_rate=0.01) for first, n in ((0, 700), (700, 1300), (2000, 500))]
    for k, whole in ((0, whole_history), (1, whole_new)):
        assert np.array_equal(np.vstack([p[k].to_numpy() for p in parts]), whole.to_numpy())
    pd.testing.assert_frame_equal(pd.concat([p[2] for p in parts], ignore_index=True), whole_bursts)
    assert len(whole_bursts) > 0


def test_gpu_scoring_job_counts_a_burst_found_only_by_an_alert_during_it():
    # Any alert on a bursty context, at any hour of the new day, used to count as finding the burst.
    found = runpy.run_path(str(EXAMPLES / "gpu_scoring_job.py"))["bursts_found"]
    bursts = pd.DataFrame({"context": [5, 9], "start": pd.to_datetime(["2024-05-15 03:00", "2024-05-15 10:00"]),
                           "end": pd.to_datetime(["2024-05-15 05:00", "2024-05-15 12:00"])})
    alerts = pd.DataFrame({"context": [5, 9, 9], "start": pd.to_datetime(["2024-05-15 20:00", "2024-05-15 12:00",
                                                                          "2024-05-15 13:00"]),
                           "end": pd.to_datetime(["2024-05-15 21:00", "2024-05-15 12:00", "2024-05-15 14:00"])})
    assert found(bursts, alerts) == 1
