"""Credential stuffing: a burst of failed logins on a few ASNs, found and explained.

What it shows
-------------
A credential-stuffing campaign replays leaked username/password pairs through a botnet or
rented proxies, so failed logins jump for a few hours on the handful of ASNs (hosting
providers, residential proxy networks) the traffic comes from — while every other ASN
stays normal. This example:

1. builds hourly failed-login counts per (country, ASN) with
   :func:`tsanomaly.datasets.make_security_panel` (no random attacks: a clean, realistic
   panel with daily and weekly cycles, time zones, over-dispersed noise and gaps);
2. injects one campaign: the botnet works through ``--asns`` ASNs one after the other,
   each for a few hours, overlapping — several times their usual failed logins;
3. fits a detector on three weeks of history and scores the last week, as a daily job would;
4. prints the alerts on the attacked ASNs with their explanation (observed against
   expected failed logins at the peak, and the ratio), finds the 6-hour window in which
   the most ASNs alert (the campaign, seen across ASNs), and counts the false alarms:
   alerts on the other ASNs, and alerts on an attacked ASN outside its attack;
5. optionally writes the HTML report an analyst would open (``--report``).

Run it
------
::

    python examples/credential_stuffing.py                      # STL detector, 300 ASNs
    python examples/credential_stuffing.py --detector baseline --report stuffing.html
    python examples/credential_stuffing.py --small              # 60 ASNs, a few seconds

``--detector`` takes any short name of :func:`tsanomaly.detectors.make_detector`
(``stl``, ``baseline``, ``mp``, ``lstm``). It runs in well under a minute on a laptop CPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from tsanomaly.datasets import make_security_panel
from tsanomaly.detectors import make_detector
from tsanomaly.panel import Panel

HISTORY_DAYS = 21
# The campaign's pace (see inject_campaign): a new ASN every CAMPAIGN_STEP hours, at most
# CAMPAIGN_MAX_HOURS hours on each.
CAMPAIGN_STEP = 2
CAMPAIGN_MAX_HOURS = 5


def campaign_candidates(panel: Panel) -> np.ndarray:
    """Rows of the ASNs a campaign may go through: mid to large ones (mean at least the median).

    That is where a proxy network or a hosting provider would sit.
    """
    level = np.nanmean(panel.to_numpy(), axis=1)
    return np.flatnonzero(level >= np.nanquantile(level, 0.5))


def max_campaign_asns(panel: Panel, start) -> tuple[int, int]:
    """How many ASNs a campaign starting at ``start`` can go through in ``panel``.

    Returns
    -------
    candidates : int
        Number of ASNs large enough to be attacked (:func:`campaign_candidates`).
    fits : int
        Most ASNs whose attack, one every ``CAMPAIGN_STEP`` hours, ends before the panel does.
    """
    hours_left = panel.n_times - panel.index.get_loc(pd.Timestamp(start))
    return len(campaign_candidates(panel)), max(0, (hours_left - CAMPAIGN_MAX_HOURS) // CAMPAIGN_STEP + 1)


def inject_campaign(panel: Panel, n_asns: int, start, seed: int = 0) -> tuple[Panel, pd.DataFrame]:
    """Add a credential-stuffing campaign to a failed-login panel.

    The botnet moves through ``n_asns`` ASNs of mid to large size, spending 3-5 hours on
    each and starting on the next one 2 hours later, with 8-20 times the ASN's usual
    failed logins for that hour and at least 100-200 an hour (a botnet replaying a
    leaked list makes thousands of attempts, whatever the ASN's size).

    Returns
    -------
    panel : Panel
        A copy with the campaign added.
    campaign : pandas.DataFrame
        One row per attacked ASN: country, asn, start, end (inclusive), added (failed logins added).

    Raises
    ------
    ValueError
        When ``n_asns`` is below 1 or above :func:`max_campaign_asns` (not enough large ASNs,
        or a campaign that would run past the end of the panel).
    """
    n_candidates, fits = max_campaign_asns(panel, start)
    if not 1 <= n_asns <= min(n_candidates, fits):
        raise ValueError(f"n_asns must be from 1 to {min(n_candidates, fits)}, got {n_asns}")
    rng = np.random.default_rng(seed)
    values = panel.to_numpy().copy()
    level = np.nanmean(values, axis=1)
    rows = rng.choice(campaign_candidates(panel), size=n_asns, replace=False)
    first = panel.index.get_loc(pd.Timestamp(start))
    per_day = int(pd.Timedelta("1D") / pd.Timedelta(panel.freq))
    campaign = []
    for k, row in enumerate(rows):
        begin = first + CAMPAIGN_STEP * k
        length = int(rng.integers(3, CAMPAIGN_MAX_HOURS + 1))
        span = slice(begin, begin + length)
        # The usual level of this hour: the same hour of the previous days.
        same_hour = values[row, begin - per_day * 7 : begin : per_day]
        usual = np.nanmedian(values[row, [begin - per_day * d for d in range(1, 8)]]) if same_hour.size else level[row]
        per_hour = np.maximum(rng.uniform(8, 20) * max(usual, 1.0), rng.uniform(100, 200))
        added = per_hour * rng.uniform(0.8, 1.2, size=length)
        values[row, span] = np.nan_to_num(values[row, span], nan=0.0) + np.round(added)
        label = panel.contexts[row]
        campaign.append(
            {
                "country": label[0],
                "asn": label[1],
                "start": panel.index[begin],
                "end": panel.index[begin + length - 1],
                "added": int(np.round(added).sum()),
            }
        )
    return panel.with_values(values), pd.DataFrame(campaign)


def busiest_window(alerts: pd.DataFrame, width: pd.Timedelta) -> tuple[pd.Timestamp, pd.DataFrame]:
    """The ``width``-long window in which alerts touch the most distinct ASNs: a candidate campaign.

    A campaign moves through several ASNs within hours, while false alarms are spread
    over the week, so the densest window points at the campaign. Returns its start and
    the alerts that overlap it.
    """
    best_start, best = None, alerts.head(0)
    for start in alerts["start"].sort_values().unique():
        start = pd.Timestamp(start)
        inside = alerts[(alerts["start"] < start + width) & (alerts["end"] >= start)]
        if inside[["country", "asn"]].drop_duplicates().shape[0] > best[["country", "asn"]].drop_duplicates().shape[0]:
            best_start, best = start, inside
    return best_start, best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", default="stl", help="stl | baseline | mp | lstm (default: stl)")
    parser.add_argument(
        "--contexts", type=int, default=None, help="(country, ASN) contexts (default 300; 60 with --small)"
    )
    parser.add_argument("--asns", type=int, default=4, help="ASNs the campaign goes through (default 4)")
    parser.add_argument("--small", action="store_true", help="60 contexts unless --contexts says: a quick run")
    parser.add_argument(
        "--contamination", type=float, default=1e-4,
        help="share of training points over the threshold (default 1e-4: about one false alarm per "
        "10,000 context-hours; the library default 1e-3 suits fewer contexts)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--report", default=None, help="also write the analyst's HTML report to this file")
    args = parser.parse_args(argv)
    # An explicit --contexts wins over --small (it used to be silently replaced by 60).
    n_contexts = args.contexts if args.contexts is not None else (60 if args.small else 300)
    if n_contexts < 1:
        parser.error(f"--contexts must be 1 or more, got {n_contexts}")

    started = time.perf_counter()
    data = make_security_panel(n_contexts=n_contexts, n_days=HISTORY_DAYS + 7, seed=args.seed, attack_rate=0.0)
    clean = data.panels["failed_logins"]
    attack_start = clean.index[0] + pd.Timedelta(days=HISTORY_DAYS + 2, hours=3)
    n_candidates, fits = max_campaign_asns(clean, attack_start)
    if not 1 <= args.asns <= min(n_candidates, fits):
        parser.error(
            f"--asns must be from 1 to {min(n_candidates, fits)}, got {args.asns}: {n_candidates} of the "
            f"{n_contexts} ASNs are large enough to attack, and a campaign moving to a new ASN every "
            f"{CAMPAIGN_STEP} hours from {attack_start:%a %H:%M} ends within the scored week for at most {fits}"
        )
    panel, campaign = inject_campaign(clean, args.asns, attack_start, seed=args.seed)
    split = clean.index[0] + pd.Timedelta(days=HISTORY_DAYS)
    history = panel.time_slice(end=split - pd.Timedelta(panel.freq))
    new = panel.time_slice(start=split)
    print(f"failed logins per hour for {panel.n_contexts} (country, ASN) contexts; fit on {HISTORY_DAYS} days, score 7")
    print("injected campaign:")
    print(campaign.to_string(index=False))

    det = make_detector(args.detector, device=args.device, contamination=args.contamination)
    det.fit(history)
    alerts = det.alerts(new)
    print(f"\n{type(det).__name__}: {len(alerts)} alerts in the scored week")

    # Explanation: observed against expected at the peak. Detectors that explain an expected
    # value give it; otherwise take the median of the same hour over the previous week.
    peak_col = new.index.get_indexer(alerts["peak_time"])
    rows = new.contexts.get_indexer(pd.MultiIndex.from_frame(alerts[["country", "asn"]]))
    observed = new.to_numpy()[rows, peak_col]
    if "expected" in alerts.columns:
        expected = alerts["expected"].to_numpy(dtype=float)
    else:
        full = panel.to_numpy()
        at = history.n_times + peak_col
        expected = np.array([np.nanmedian(full[r, [t - 24 * d for d in range(1, 8)]]) for r, t in zip(rows, at)])
    alerts["observed"] = observed
    alerts["expected"] = expected
    alerts["ratio"] = observed / np.maximum(expected, 1.0)

    # Each alert is one of: during the attack on its ASN (found), on an attacked ASN outside
    # its attack, or on another ASN; the last two are false alarms. A left merge on the
    # campaign (one row per ASN) keeps the alerts' rows and order, so the masks line up.
    with_attack = alerts.merge(
        campaign[["country", "asn", "start", "end"]], on=["country", "asn"], how="left", suffixes=("", "_attack")
    )
    on_attacked = with_attack["start_attack"].notna().to_numpy()
    during = on_attacked & (
        (with_attack["start"] <= with_attack["end_attack"]) & (with_attack["end"] >= with_attack["start_attack"])
    ).to_numpy()
    attacked = with_attack[during]
    outside = alerts[on_attacked & ~during]
    elsewhere = alerts[~on_attacked]
    found = attacked[["country", "asn"]].drop_duplicates()
    print(f"\nattacked ASNs found: {len(found)} of {len(campaign)} ({len(attacked)} alerts during the attack)")
    for _, a in attacked.sort_values("start").iterrows():
        print(
            f"  {a['country']} {a['asn']}: alert {a['start']:%a %H:%M} .. {a['end']:%H:%M}, "
            f"peak {a['peak_time']:%H:%M} "
            f"with {a['observed']:.0f} failed logins where {a['expected']:.0f} are usual "
            f"({a['ratio']:.1f}x; score {a['peak_score']:.1f}, threshold {a['threshold']:.1f})"
        )
    missed = campaign.merge(found, how="left", indicator=True).query("_merge == 'left_only'")
    for _, m in missed.iterrows():
        print(
            f"  {m['country']} {m['asn']}: MISSED ({m['start']:%a %H:%M} .. {m['end']:%H:%M}, "
            f"{m['added']} failed logins added)"
        )

    window_start, window = busiest_window(alerts, width=pd.Timedelta(hours=6))
    if len(window):
        asns = window[["country", "asn"]].drop_duplicates()
        print(
            f"\nbusiest 6-hour window: {len(asns)} ASNs alerting from {window_start:%a %H:%M} — "
            + ", ".join(f"{c} {a}" for c, a in asns.itertuples(index=False))
        )
    false_alarms = pd.concat([outside, elsewhere])
    print(
        f"false alarms over the week: {len(false_alarms)} — {len(outside)} on attacked ASNs outside their "
        f"attack, {len(elsewhere)} on the {panel.n_contexts - len(campaign)} other ASNs"
        + (f"; highest score {false_alarms['peak_score'].max():.1f}" if len(false_alarms) else "")
    )
    for _, a in outside.sort_values("start").iterrows():
        print(f"  {a['country']} {a['asn']}: alert {a['start']:%a %H:%M} .. {a['end']:%H:%M} "
              f"(score {a['peak_score']:.1f}), outside its attack")
    if args.report:
        from tsanomaly import io as tsio
        from tsanomaly import report

        section = report.ReportSection.from_detector(
            det, new, name="failed logins", value="failed_logins", history=history
        )
        html = report.render_report([section], top=8, title="Credential stuffing: failed logins per (country, ASN)")
        tsio.write_text(html, args.report)
        print(f"report written to {args.report}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
