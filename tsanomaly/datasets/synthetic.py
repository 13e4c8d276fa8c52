"""Synthetic security panels: hourly login, failed-login and registration counts with labelled attacks.

Real platform data is private, so tests, examples, the demo and benchmarks use
a generator that imitates its features:

- contexts are (country, ASN) pairs whose sizes span orders of magnitude — a
  few big countries and a long tail of small ASNs;
- a diurnal cycle shifted by each country's time zone, a weekly cycle
  (quieter or busier weekends), slow trends and per-country holidays;
- over-dispersed count noise (negative binomial), and missing buckets;
- injected attacks, each labelled on the metric it changes:

  ``credential_stuffing``  failed logins burst for a few hours on one ASN;
  ``registration_farm``    registrations rise for days with unnaturally low variance;
  ``slow_drip``            failed logins rise slowly by tens of percent, sustained over days;
  ``outage``               every metric drops towards zero for a few hours;
  ``night_bot``            logins at night rise to daytime levels (a shifted daily shape);
                           labelled on the buckets that overlap 00:00-05:00 local time.

Attacks only fall after ``clean_days``, so the first weeks can serve as clean history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsanomaly.panel import Panel

__all__ = ["SecurityPanel", "make_security_panel", "ATTACK_KINDS", "METRICS"]

METRICS = ("logins", "failed_logins", "registrations")
ATTACK_KINDS = ("credential_stuffing", "registration_farm", "slow_drip", "outage", "night_bot")

# Which metrics each attack changes (and therefore labels).
ATTACK_METRICS = {
    "credential_stuffing": ("failed_logins",),
    "registration_farm": ("registrations",),
    "slow_drip": ("failed_logins",),
    "outage": METRICS,
    "night_bot": ("logins",),
}

_COUNTRIES = np.array(["US", "BR", "IN", "DE", "GB", "FR", "JP", "ID", "MX", "NG", "VN", "PL", "TR", "KR", "ZA"])
# UTC offsets (hours) of the countries above: their day peaks at different UTC hours.
_UTC_OFFSETS = np.array([-5, -3, 5, 1, 0, 1, 9, 7, -6, 1, 7, 1, 3, 9, 2])


@dataclass
class SecurityPanel:
    """A generated security data set.

    Attributes
    ----------
    panels : dict of str to Panel
        ``"logins"``, ``"failed_logins"``, ``"registrations"``: counts per hour,
        each (n_contexts x n_times), NaN where a bucket is missing.
    labels : dict of str to Panel
        Boolean Panels of the same shape: True where an injected attack changed that metric.
    attacks : pandas.DataFrame
        One row per attack: ``country``, ``asn``, ``kind``, ``metrics`` (comma-separated),
        ``start``, ``end`` (inclusive timestamps).
    """

    panels: dict
    labels: dict
    attacks: pd.DataFrame

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.panels["logins"].index

    def split(self, at) -> tuple["SecurityPanel", "SecurityPanel"]:
        """(before, from ``at`` on): history to fit on and new data to score.

        The index is naive UTC; an ``at`` with a time zone is converted to UTC first.
        """
        at = pd.Timestamp(at)
        if at.tzinfo is not None:
            at = at.tz_convert("UTC").tz_localize(None)
        # The last bucket before ``at``: ``at - freq`` lost the bucket between them when ``at`` is
        # off the grid (split at 00:30, the 00:00 bucket was in neither part).
        before_at = self.index[self.index < at]
        end_history = before_at[-1] if len(before_at) else self.index[0] - self.index.freq

        def cut(panels, **kw):
            return {name: p.time_slice(**kw) for name, p in panels.items()}

        before = SecurityPanel(
            cut(self.panels, end=end_history), cut(self.labels, end=end_history), self.attacks[self.attacks["start"] < at]
        )
        after = SecurityPanel(cut(self.panels, start=at), cut(self.labels, start=at), self.attacks[self.attacks["end"] >= at])
        return before, after


def _context_labels(rng, n_contexts: int) -> tuple[pd.MultiIndex, np.ndarray]:
    """(country, asn) labels and each context's country number; big countries hold more ASNs."""
    weights = 1.0 / np.arange(1, len(_COUNTRIES) + 1) ** 1.1
    country = rng.choice(len(_COUNTRIES), size=n_contexts, p=weights / weights.sum())
    asn = rng.choice(np.arange(1000, 1000 + 50 * n_contexts), size=n_contexts, replace=False)
    contexts = pd.MultiIndex.from_arrays(
        [_COUNTRIES[country], np.array([f"AS{a}" for a in asn])], names=["country", "asn"]
    )
    # Sorted like Panel.from_frame sorts contexts, so a round trip keeps the row order.
    order = np.lexsort((contexts.get_level_values("asn"), contexts.get_level_values("country")))
    return contexts[order], country[order]


def _diurnal(local_hour: np.ndarray, peak_hour: np.ndarray) -> np.ndarray:
    """Daily shape: a quiet night and a broad day peak.

    Its mean over a day is about 0.7, not 1: 0.73 for a peak at 12:00, down to 0.68 for a peak
    at 16:00 (hourly points), whose later evening bump is cut off at midnight.
    """
    day = np.exp(-0.5 * ((local_hour - peak_hour) / 4.0) ** 2)
    evening = 0.5 * np.exp(-0.5 * ((local_hour - (peak_hour + 6.0)) / 2.5) ** 2)
    return (0.15 + day + evening) / 0.95


def make_security_panel(
    n_contexts: int = 200,
    n_days: int = 28,
    freq: str = "1h",
    seed: int = 0,
    start: str = "2024-01-01",
    clean_days: int = 21,
    attack_rate: float = 0.15,
    missing_rate: float = 0.002,
) -> SecurityPanel:
    """Hourly login, failed-login and registration counts per (country, ASN), with labelled attacks.

    Parameters
    ----------
    n_contexts : int
        Number of (country, ASN) contexts.
    n_days : int
        Length in days.
    freq : str
        Bucket size: ``"1h"`` (default) or any divisor of a day such as ``"15min"``, ``"6h"``
        or ``"1D"``. Counts are per bucket. A ``night_bot`` raises each bucket that overlaps
        00:00-05:00 local time by the share of it that falls at night: clearly at hourly and
        shorter buckets, less at a few hours, hardly above the noise at 12 hours or a day.
    seed : int
        Same seed, same data; 0 or more.
    start : str
        First timestamp, read as UTC: a naive timestamp (the index is naive UTC). A
        timestamp with a time zone is refused; convert it first, e.g.
        ``pd.Timestamp(start).tz_convert("UTC").tz_localize(None)``.
    clean_days : int
        0 or more. No attack starts before this day, so ``split`` at it gives clean
        history; ``n_days // 2`` when it is not less than ``n_days``.
    attack_rate : float
        Share of contexts that receive one attack (at least one of each kind
        when there are enough contexts).
    missing_rate : float
        Rate of missing (NaN) buckets, in short runs (1-3 buckets); in [0, 1). Runs may
        overlap, so the share actually missing is about ``1 - exp(-0.95 * missing_rate)``:
        the rate itself for small values (0.002 gives 0.2%), 9% for 0.1, 38% for 0.5.

    Returns
    -------
    SecurityPanel
        Panels per metric, label Panels per metric and the attack table.

    Examples
    --------
    >>> data = make_security_panel(n_contexts=50, n_days=28, seed=1)
    >>> data.panels["failed_logins"].shape
    (50, 672)
    >>> history, new = data.split("2024-01-22")
    """
    if n_contexts < 1 or n_days < 2:
        raise ValueError(f"need n_contexts >= 1 and n_days >= 2, got {n_contexts} and {n_days}")
    if not 0 <= attack_rate <= 1:
        raise ValueError(f"attack_rate must lie in [0, 1], got {attack_rate}")
    if not 0 <= missing_rate < 1:
        raise ValueError(f"missing_rate must lie in [0, 1), got {missing_rate}")
    if clean_days < 0:
        raise ValueError(f"clean_days must be 0 or more, got {clean_days}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if pd.Timestamp(start).tzinfo is not None:
        raise ValueError(
            f"start must be a naive timestamp, read as UTC (the index is naive UTC), got {start!r}; "
            f"convert it first, e.g. pd.Timestamp(start).tz_convert('UTC').tz_localize(None)"
        )
    step = pd.Timedelta(freq)
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq must be a positive bucket size that divides a day, got {freq!r}")
    per_hour = pd.Timedelta("1h") / step
    step_hours = 1.0 / per_hour
    per_day = int(round(24 * per_hour))
    if per_day < 1 or not np.isclose(pd.Timedelta("1D") / step, per_day):
        raise ValueError(f"freq must divide a day, got {freq!r}")
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_days * per_day, freq=freq, name="ts")
    n_times = len(index)
    contexts, country = _context_labels(rng, n_contexts)

    # ---- expected logins per bucket: size x daily shape x weekly factor x trend x holidays
    size = np.exp(rng.normal(np.log(40.0), 1.6, size=n_contexts))  # lognormal: 1 .. 10^4 per hour
    size *= np.where(np.arange(n_contexts) < max(1, n_contexts // 20), 5.0, 1.0)[rng.permutation(n_contexts)]
    hours = np.asarray(index.hour + index.minute / 60.0)
    local_hour = (hours[None, :] + _UTC_OFFSETS[country][:, None]) % 24
    peak_hour = rng.uniform(12.0, 16.0, size=(n_contexts, 1))
    weekday = np.asarray(index.day_of_week)
    weekend_factor = rng.uniform(0.6, 1.25, size=(n_contexts, 1))
    weekly = np.where(weekday[None, :] >= 5, weekend_factor, 1.0)
    days = np.arange(n_times) / per_day
    trend = 1.0 + rng.normal(0.0, 0.1, size=(n_contexts, 1)) * days[None, :] / 30.0
    holiday_day = rng.integers(0, n_days, size=len(_COUNTRIES))
    holiday = np.where((days[None, :].astype(int) == holiday_day[country][:, None]), 0.7, 1.0)
    base = size[:, None] / per_hour * _diurnal(local_hour, peak_hour) * weekly * np.maximum(trend, 0.3) * holiday

    rates = {
        "logins": base,
        "failed_logins": base * rng.uniform(0.02, 0.08, size=(n_contexts, 1)),
        "registrations": base * rng.uniform(0.005, 0.02, size=(n_contexts, 1)),
    }
    rates = {m: r.copy() for m, r in rates.items()}
    labels = {m: np.zeros((n_contexts, n_times), dtype=bool) for m in METRICS}
    # Registration farms replace counts with a near-constant value; remember where.
    steady = np.full((n_contexts, n_times), np.nan)

    # ---- attacks
    if clean_days >= n_days:
        clean_days = n_days // 2
    first = clean_days * per_day
    n_attacked = int(round(attack_rate * n_contexts))
    attacked = rng.choice(n_contexts, size=min(n_attacked, n_contexts), replace=False)
    kinds = [ATTACK_KINDS[k % len(ATTACK_KINDS)] for k in range(len(attacked))]
    rng.shuffle(kinds)
    rows = []
    for ctx, kind in zip(attacked, kinds):
        if kind == "credential_stuffing":
            length = int(rng.integers(1, 7) * per_hour)
        elif kind == "outage":
            length = int(rng.integers(2, 9) * per_hour)
        elif kind in ("registration_farm", "slow_drip"):
            length = int(rng.integers(2, 5) * per_day)
        else:  # night_bot: several nights, labelled night by night below
            length = int(rng.integers(2, 5) * per_day)
        length = max(1, min(length, n_times - first))
        begin = int(rng.integers(first, n_times - length + 1))
        span = slice(begin, begin + length)
        mask = np.zeros(n_times, dtype=bool)
        mask[span] = True
        if kind == "credential_stuffing":
            # Many attempts from a botnet: several times the normal failures, and at least a
            # few dozen per hour so that small ASNs show it too.
            extra = np.maximum(rates["failed_logins"][ctx, span] * rng.uniform(5, 20), 30.0 / per_hour)
            rates["failed_logins"][ctx, span] += extra
        elif kind == "registration_farm":
            level = np.nanmean(rates["registrations"][ctx]) * rng.uniform(2.0, 4.0) + 2.0 / per_hour
            # At least one a bucket: at short buckets (5 min) the level rounds to 0, and a farm
            # would add nothing (and the jitter below would go negative).
            steady[ctx, span] = max(np.round(level), 1.0)
        elif kind == "slow_drip":
            ramp = np.linspace(0.0, 1.0, length)
            rates["failed_logins"][ctx, span] *= 1.0 + rng.uniform(0.4, 0.8) * np.minimum(1.0, 2 * ramp)
            rates["failed_logins"][ctx, span] += 3.0 / per_hour
        elif kind == "outage":
            for m in METRICS:
                rates[m][ctx, span] *= 0.03
        elif kind == "night_bot":
            # The buckets that overlap 00:00-05:00 local time (at coarse freq a bucket can
            # start in the evening and run past midnight); each is raised towards the day
            # level by the share of it that falls at night (all of it at hourly freq).
            share = _night_share(local_hour[ctx], step_hours)
            night = (share > 0) & mask
            if not night.any():  # not reached: a span of a day or more always holds a night
                continue
            day_level = np.percentile(rates["logins"][ctx], 80)
            raised = (1.0 - share[night]) * rates["logins"][ctx, night] + share[night] * day_level
            rates["logins"][ctx, night] = np.maximum(rates["logins"][ctx, night], raised)
            mask = night
        for m in ATTACK_METRICS[kind]:
            labels[m][ctx] |= mask
        idx = np.flatnonzero(mask)
        rows.append(
            {
                "country": contexts[ctx][0],
                "asn": contexts[ctx][1],
                "kind": kind,
                "metrics": ",".join(ATTACK_METRICS[kind]),
                "start": index[idx[0]],
                "end": index[idx[-1]],
            }
        )

    # ---- over-dispersed counts: negative binomial with mean `rate` and shape k (var = mu + mu^2/k)
    dispersion = rng.uniform(15.0, 80.0, size=(n_contexts, 1))
    panels = {}
    missing = _missing_mask(rng, n_contexts, n_times, missing_rate)
    for m in METRICS:
        mu = np.maximum(rates[m], 1e-9)
        counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float64)
        if m == "registrations":
            farm = ~np.isnan(steady)
            counts[farm] = np.maximum(steady[farm] + rng.integers(-1, 2, size=int(farm.sum())), 0.0)
        counts[missing] = np.nan
        panels[m] = Panel(counts, contexts, index)
    label_panels = {m: Panel(labels[m], contexts, index) for m in METRICS}
    attacks = pd.DataFrame(rows, columns=["country", "asn", "kind", "metrics", "start", "end"])
    attacks = attacks.sort_values(["start", "country", "asn"]).reset_index(drop=True)
    return SecurityPanel(panels, label_panels, attacks)


def _night_share(local_hour: np.ndarray, step_hours: float) -> np.ndarray:
    """Share of each bucket [h, h + step) (local hours, h in [0, 24)) that falls at night, 00:00-05:00.

    A bucket of up to a day overlaps at most two nights: the one it starts in and the next.
    """
    end = local_hour + step_hours
    overlap = np.clip(np.minimum(end, 5.0) - local_hour, 0.0, None)
    overlap += np.clip(np.minimum(end, 29.0) - np.maximum(local_hour, 24.0), 0.0, None)
    return overlap / step_hours


def _missing_mask(rng, n_contexts: int, n_times: int, rate: float) -> np.ndarray:
    """Missing buckets in short runs (1-3 buckets): about ``1 - exp(-0.95 * rate)`` of all buckets (runs overlap)."""
    missing = np.zeros((n_contexts, n_times), dtype=bool)
    n_runs = rng.binomial(n_contexts * n_times, rate / 2.0)
    if n_runs:
        ctx = rng.integers(0, n_contexts, size=n_runs)
        begin = rng.integers(0, n_times, size=n_runs)
        for offset in range(3):
            keep = rng.random(n_runs) < (1.0, 0.6, 0.3)[offset]
            missing[ctx[keep], np.minimum(begin[keep] + offset, n_times - 1)] = True
    return missing
