"""Find an SSH brute-force episode in a real sshd ``auth.log``.

What it shows
-------------
The whole path from raw log lines to an explained alert:

1. parse the sshd lines into failed-authentication attempts (``Failed password``,
   ``Failed publickey``..., where ``message repeated 5 times: [ Failed password ... ]``
   counts as 5 attempts), one row per attempt with its time, source address and user;
2. count them per source address and per time bucket (default one hour): a Panel with
   one context per source address, zero where a source made no attempt;
3. fit a detector on the first days of the log and score the rest, hour by hour, as a
   scheduled job would;
4. report the top alert with its explanation: the source, the hours, how many attempts
   against how many expected, which accounts were tried, and whether the same source
   logged in successfully before (a known address turning hostile) or is new.

The log is the one from Elastic's "suspicious login activity" recipe (three weeks of
one host, ``../shared/data/authlog/auth.log`` beside the repository). Its documented
brute-force episode — hourly peak Mar 30 15:00 — comes from 24.151.103.17, an address
that had logged in successfully dozens of times before: the detector ranks it first
because it is compared with *its own* quiet past. Addresses never seen before are scored
from a cold start by the baseline and the matrix profile (each of them is a single burst,
and they are listed by volume); the STL detector cannot score them (it needs a source's
fitted daily shape and scale), so with ``--detector stl`` only the sources seen in the
history are scored and the run prints how many it left out.

The default detector is the rolling robust z-score (``baseline``) over the preceding
24 buckets, with no seasonal period: failed logins on one server follow attackers, not a
daily cycle, and there are only a few days of history. Its threshold is a fixed robust
z-score (``--threshold``, default 8) because the history is too short to calibrate a
quantile. ``--detector stl`` or ``--detector mp`` score the same panel with those
detectors (a daily period for the STL; a 6-hour window and a threshold of 0.7 on its
absolute scale for the matrix profile). Both are counted in buckets of ``--bucket``: 24 and
6 at one hour, 48 and 12 at 30 minutes, 12 and 3 at two hours (the STL needs a bucket that
divides a day; the matrix profile's window is at least 3 buckets). The matrix profile compares shapes, not sizes: on
sparse per-source counts (one burst in weeks of zeros) every burst looks alike to it, so it
ranks them poorly here; it is there to compare.

Run it
------
::

    python examples/auth_log_bruteforce.py ../shared/data/authlog/auth.log
    python examples/auth_log_bruteforce.py ../shared/data/authlog --bucket 30min --top 5
    python examples/auth_log_bruteforce.py ../shared/data/authlog --report bruteforce.html

``PATH`` may be the log file or its folder. Syslog lines carry no year: ``--year``
(default 2017, the year of this log) sets it, and a year boundary in the log (Dec -> Jan)
is followed. ``--small`` reads only the first 4,000 lines (still holding the episode).
It runs in a few seconds on a laptop CPU.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import tsanomaly
from tsanomaly.detectors import make_detector

# One failed attempt, possibly folded by syslog into "message repeated N times: [ ... ]".
FAILED = re.compile(
    r"^(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d) \S+ sshd\[\d+\]: "
    r"(?:message repeated (?P<repeat>\d+) times: \[ )?"
    r"Failed (?P<method>password|publickey|none|keyboard-interactive/pam|hostbased) for "
    r"(?P<invalid>invalid user )?(?P<user>.*?) from (?P<source>[0-9A-Fa-f.:]+) port \d+"
)
ACCEPTED = re.compile(
    r"^(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d) \S+ sshd\[\d+\]: "
    r"Accepted \S+ for (?P<user>\S+) from (?P<source>[0-9A-Fa-f.:]+) port \d+"
)
_MONTHS = {m: k for k, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}

# Detector parameters for hourly per-source counts (see the module docstring for why). The
# thresholds are fixed: robust z-scores of 8 for the baseline and the STL, and for the matrix
# profile 0.7 on its absolute scale (correlation below 0.51 with every earlier window).
# The STL's period (a day) and the matrix profile's window (6 hours) are given here for hourly
# buckets; detector_params rescales them to --bucket.
DETECTOR_PARAMS = {
    "baseline": {"window": 24, "seasonal_period": None, "direction": "up", "threshold": 8.0},
    "stl": {"periods": 24, "threshold": 8.0},
    "mp": {"window": 6, "threshold": 0.7},
}


def detector_params(detector: str, bucket: str) -> dict:
    """DETECTOR_PARAMS[detector] for ``bucket``: the STL's period is a day and the mp window 6 hours, in buckets.

    Raises
    ------
    ValueError
        For the STL, when ``bucket`` does not divide a day into two buckets or more.
    """
    params = dict(DETECTOR_PARAMS[detector])
    step = pd.Timedelta(bucket)
    if detector == "stl":
        per_day = pd.Timedelta("1D") / step
        if per_day < 2 or per_day != int(per_day):
            raise ValueError(
                f"--detector stl takes a day as its period: --bucket must divide a day into 2 buckets or more, "
                f"got {bucket}"
            )
        params["periods"] = int(per_day)
    elif detector == "mp":
        params["window"] = max(3, int(round(pd.Timedelta("6h") / step)))
    return params



def _attempts(count, noun: str = "attempt") -> str:
    """``"1 attempt"``, ``"3 attempts"``: a count of log lines for the console."""
    count = int(count)
    return f"{count} {noun}{'' if count == 1 else 's'}"

def parse_auth_log(path, year: int = 2017, max_lines: int | None = None):
    """Failed attempts and successful logins from an sshd log.

    Parameters
    ----------
    path : str or Path
        The log file, or a folder holding ``auth.log``.
    year : int
        Year of the first line (syslog omits it); it advances when the month wraps.
    max_lines : int, optional
        Read only the first lines.

    Returns
    -------
    failed : pandas.DataFrame
        One row per failed attempt: ``time``, ``source``, ``user``, ``invalid_user`` (bool).
    accepted : pandas.DataFrame
        One row per successful login: ``time``, ``source``, ``user``.
    first, last : pandas.Timestamp
        Times of the first and last line of the log (any kind), the span to bucket.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "auth.log"
    if not path.exists():
        raise FileNotFoundError(f"no sshd log at {path}")
    failed, accepted = [], []
    first = last = None
    previous_month, current_year = None, year
    stamp_re = re.compile(r"^(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d) ")
    with open(path, encoding="utf-8", errors="replace") as handle:
        for n, line in enumerate(handle):
            if max_lines is not None and n >= max_lines:
                break
            stamp = stamp_re.match(line)
            if stamp is None or stamp["month"] not in _MONTHS:
                continue
            month = _MONTHS[stamp["month"]]
            if previous_month is not None and month < previous_month:
                current_year += 1  # December -> January
            previous_month = month
            when = pd.Timestamp(f"{current_year}-{month:02d}-{int(stamp['day']):02d} {stamp['clock']}")
            first = when if first is None else first
            last = when
            if (m := FAILED.match(line)) is not None:
                for _ in range(int(m["repeat"] or 1)):
                    failed.append((when, m["source"], m["user"], m["invalid"] is not None))
            elif (m := ACCEPTED.match(line)) is not None:
                accepted.append((when, m["source"], m["user"]))
    if first is None:
        raise ValueError(f"{path}: no syslog lines found")
    failed = pd.DataFrame(failed, columns=["time", "source", "user", "invalid_user"])
    accepted = pd.DataFrame(accepted, columns=["time", "source", "user"])
    return failed, accepted, first, last


def failure_panel(failed: pd.DataFrame, first, last, bucket: str = "1h") -> tsanomaly.Panel:
    """Failed attempts per source address and per time bucket, zero where a source made none.

    The grid spans the whole log (not only the hours with failures), so quiet hours count
    as zeros and the history starts where the log starts.
    """
    grid = pd.date_range(pd.Timestamp(first).floor(bucket), pd.Timestamp(last).floor(bucket), freq=bucket, name="time")
    counts = failed.assign(time=failed["time"].dt.floor(bucket)).groupby(["source", "time"]).size()
    sources = pd.Index(sorted(failed["source"].unique()), name="source")
    values = np.zeros((len(sources), len(grid)))
    rows = sources.get_indexer(counts.index.get_level_values("source"))
    values[rows, grid.get_indexer(counts.index.get_level_values("time"))] = counts.to_numpy()
    return tsanomaly.Panel(values, sources, grid)


def describe_alert(alert, failed: pd.DataFrame, accepted: pd.DataFrame, bucket: str, history_end) -> list[str]:
    """Lines explaining one alert: volume, accounts tried, what the source did before."""
    source = alert["source"]
    span_end = pd.Timestamp(alert["end"]) + pd.Timedelta(bucket)
    in_span = (failed["source"] == source) & (failed["time"] >= alert["start"]) & (failed["time"] < span_end)
    mine = failed[in_span]
    users = mine["user"].replace("", "(empty)").value_counts()
    invalid = int(mine["invalid_user"].sum())
    before = accepted[(accepted["source"] == source) & (accepted["time"] < alert["start"])]
    from_source = accepted[accepted["source"] == source]
    during = from_source[(from_source["time"] >= alert["start"]) & (from_source["time"] < span_end)]
    expected = f", expected {alert['expected']:.1f}" if "expected" in alert and np.isfinite(alert["expected"]) else ""
    lines = [
        f"source {source}: {_attempts(len(mine), 'failed attempt')} from {alert['start']:%Y-%m-%d %H:%M} to "
        f"{span_end:%Y-%m-%d %H:%M} (peak {alert['peak_time']:%Y-%m-%d %H:%M}: "
        f"{_attempts(alert['observed'])}{expected}; score {alert['peak_score']:.1f}, "
        f"threshold {alert['threshold']:.1f})",
        f"  accounts tried: {len(users)} — "
        + ", ".join(f"{u} ({c})" for u, c in users.head(6).items())
        + (", ..." if len(users) > 6 else "")
        + (f"; {invalid} attempts on accounts that do not exist" if invalid else ""),
    ]
    if len(before):
        lines.append(
            f"  known source: {len(before)} successful logins before the episode "
            f"(first {before['time'].min():%Y-%m-%d %H:%M}, accounts {', '.join(sorted(before['user'].unique())[:5])})"
        )
    else:
        in_history = (failed["source"].eq(source) & (failed["time"] <= history_end)).any()
        seen = " (seen in the fitted history)" if in_history else ""
        lines.append(f"  no successful login from this source before the episode{seen}")
    if len(during):
        lines.append(f"  and {len(during)} successful logins during it: {', '.join(sorted(during['user'].unique()))}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="the sshd auth.log, or the folder holding it (../shared/data/authlog)")
    parser.add_argument("--bucket", default="1h", help="time bucket (default 1h)")
    parser.add_argument(
        "--history-days", type=float, default=2.5, help="fit on the first days of the log (default 2.5)"
    )
    parser.add_argument("--detector", default="baseline", choices=sorted(DETECTOR_PARAMS))
    parser.add_argument(
        "--threshold", type=float, default=None, help="fixed alert threshold on the score (default: 8; 0.7 for mp)"
    )
    parser.add_argument("--top", type=int, default=3, help="alerts explained in full (default 3)")
    parser.add_argument("--year", type=int, default=2017, help="year of the first line (syslog omits it)")
    parser.add_argument("--small", action="store_true", help="read only the first 4,000 lines")
    parser.add_argument("--report", default=None, help="also write an HTML report with plots to this file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.report and args.top < 1:  # the report plots the top alerts: at least one (render_report)
        parser.error(f"--top must be at least 1 with --report, got {args.top}")
    try:
        if pd.Timedelta(args.bucket) <= pd.Timedelta(0):
            raise ValueError(f"--bucket must be a positive duration, got {args.bucket}")
        params = detector_params(args.detector, args.bucket)
    except ValueError as exc:
        parser.error(str(exc))

    started = time.perf_counter()
    try:
        failed, accepted, first, last = parse_auth_log(
            args.path, year=args.year, max_lines=4000 if args.small else None
        )
    except (FileNotFoundError, ValueError) as exc:  # a wrong path or a file that is no syslog
        parser.error(str(exc))
    if len(failed) == 0:
        # Nothing to count: without this the empty frame fails deep in pandas (.dt on no datetimes).
        parser.error(f"no failed authentication lines found in {args.path}")
    print(
        f"parsed {args.path}: {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}, {len(failed)} failed attempts "
        f"from {failed['source'].nunique()} source addresses, {len(accepted)} successful logins"
    )
    panel = failure_panel(failed, first, last, args.bucket)
    split = pd.Timestamp(first).floor(args.bucket) + pd.Timedelta(days=args.history_days)
    history = panel.time_slice(end=split - pd.Timedelta(args.bucket))
    new = panel.time_slice(start=split)
    # Say why there is nothing to do rather than fit or score an empty panel.
    if history.n_times == 0:
        parser.error(f"--history-days {args.history_days:g} covers no whole {args.bucket} bucket: nothing to fit")
    if args.detector == "stl" and history.n_times < 2 * params["periods"]:
        # The STL decomposition needs two full cycles of its period (a day) in the history.
        parser.error(
            f"--detector stl needs two cycles of its period in the history "
            f"({2 * params['periods']} buckets); --history-days {args.history_days:g} gives "
            f"{history.n_times}"
        )
    if new.n_times == 0:
        parser.error(
            f"--history-days {args.history_days:g}: the history covers the whole log "
            f"(ends {last:%Y-%m-%d %H:%M}): nothing left to score"
        )
    # A source with no failure in the history has nothing to fit: it is left to the detector's
    # cold start (baseline, mp) or not scored (stl).
    history = history.take(np.flatnonzero(history.to_numpy().sum(axis=1) > 0))
    if history.n_contexts == 0:
        parser.error(
            f"no failed attempt in the history (up to {history.index[-1]}): nothing to fit; "
            "raise --history-days"
        )
    print(
        f"fitting {args.detector} on {history.n_contexts} sources x {history.n_times} buckets "
        f"(up to {history.index[-1]}), scoring {new.n_contexts} sources x {new.n_times} buckets"
    )
    if args.threshold is not None:
        params["threshold"] = args.threshold
    det = make_detector(args.detector, device=args.device, **params)
    det.fit(history)
    scores = det.score(new)
    alerts = det.alerts(new, scores=scores)
    unseen = set(det.unseen_contexts(new))
    alerts["new_source"] = alerts["source"].isin(unseen)
    if "observed" not in alerts.columns:  # every detector: the count at the peak, from the data itself
        peak_pos = new.index.get_indexer(alerts["peak_time"])
        alerts["observed"] = new.to_numpy()[new.contexts.get_indexer(alerts["source"]), peak_pos]

    totals = pd.Series(panel.to_numpy().sum(axis=0), index=panel.index)
    busiest = totals.sort_values(ascending=False, kind="stable").head(3)
    print(
        f"busiest {args.bucket} buckets overall: "
        + ", ".join(f"{t:%Y-%m-%d %H:%M} ({_attempts(v)})" for t, v in busiest.items())
    )
    print(f"{len(alerts)} alerts on {alerts['source'].nunique()} sources ({len(unseen)} sources new since the fit)")
    # A source whose scores are all NaN cannot alert: say so, or a detector without a cold
    # start (stl) would look as if it had checked the new sources and found them quiet.
    unscored = ~np.isfinite(scores.to_numpy()).any(axis=1)
    unscored_new = int((unscored & new.contexts.isin(unseen)).sum())
    if unscored_new:
        print(
            f"{unscored_new} sources not scored: new since the fit, and the {args.detector} detector "
            "needs a source's fitted history (baseline and mp score them from a cold start)"
        )
    if unscored.sum() > unscored_new:
        print(f"{int(unscored.sum()) - unscored_new} sources seen in the history not scored (no finite score)")
    if len(alerts) == 0:
        print("no brute-force episode found")
        return 0

    # The top alert is explained first; the lists below hold the others, whichever kind of
    # source the top one is (a new top source used to be listed twice, and the strongest
    # alert on a known source skipped).
    top = alerts.iloc[0]
    others = alerts.drop(index=alerts.index[0])
    known = others[~others["new_source"]]
    print()
    print(
        f"BRUTE-FORCE EPISODE (top alert): {top['source']}, "
        f"{top['start']:%Y-%m-%d %H:%M} .. {top['end']:%Y-%m-%d %H:%M}, "
        f"peak {top['peak_time']:%Y-%m-%d %H:%M}"
    )
    for line in describe_alert(top, failed, accepted, args.bucket, history.index[-1]):
        print("  " + line)
    if len(known) and args.top > 1:
        print()
        print("other alerts on sources seen in the history:")
        for _, alert in known.head(args.top - 1).iterrows():
            for line in describe_alert(alert, failed, accepted, args.bucket, history.index[-1]):
                print("  " + line)
    # Cold-start sources tie on score (one burst against a silent past gives the same robust
    # z-score whatever its size), so they are listed by volume.
    cold = others[others["new_source"]].sort_values("observed", ascending=False, kind="stable")
    if len(cold):
        print()
        other = "other " if top["new_source"] else ""
        print(f"{other}new sources with alerts ({len(cold)}), by attempts at their peak:")
        for _, alert in cold.head(args.top).iterrows():
            for line in describe_alert(alert, failed, accepted, args.bucket, history.index[-1]):
                print("  " + line)
    if args.report:
        from tsanomaly import io as tsio
        from tsanomaly import report

        section = report.ReportSection.from_detector(
            det, new, name=f"{args.detector} on {Path(args.path).name}", value="failed_attempts", history=history
        )
        # Same order as printed: score first, then volume (cold-start sources tie on score, up to
        # rounding, hence the rounded score as the first key).
        ranked = alerts.assign(rank_score=alerts["peak_score"].round(3))
        ranked = ranked.sort_values(["rank_score", "observed"], ascending=False, kind="stable")
        # new_source is the report's cold_start (a source unseen at fit): the page tags those alerts
        # "new context", which told a known address turning hostile from a new one (dropped, no tag).
        ranked = ranked.rename(columns={"new_source": "cold_start"})
        section.alerts = ranked.drop(columns=["rank_score"]).reset_index(drop=True)
        html = report.render_report([section], top=args.top, title="sshd failed authentications per source address")
        tsio.write_text(html, args.report)
        print(f"\nreport written to {args.report}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
