"""A million-context scoring job on a GPU, in chunks, with its throughput.

What it shows
-------------
The shape of a nightly job at platform scale: one context per (country, ASN, app
version, ...) — a million of them — each with two weeks of hourly history and one new
day to score. The contexts are processed in chunks (``--chunk``) so that memory stays
bounded on the GPU as on the host; each chunk is fitted on its history and scored on
its new day, independently, as the shards of a distributed job would be (per-context
state never depends on other contexts; only the quantile threshold is calibrated per
chunk, which for exchangeable chunks changes nothing material).

The data is synthetic and generated chunk by chunk on the host (a daily cycle in a
random time zone, Poisson counts, sizes spanning three orders of magnitude), in fixed
blocks of 1,000 contexts each with its own random stream, so that a context's data
does not depend on ``--chunk``; 0.1% of the contexts get a 3-hour burst on the new day,
and the run prints how many bursts an alert overlapped.
Generation is timed apart: the throughput printed is for fitting + scoring +
collecting alerts, including the host-to-device copies a real job would pay.
The first chunk includes the one-off start-up (CUDA context, kernel compilation), so
the steady-state throughput is given over the later chunks as well.

Run it
------
::

    python examples/gpu_scoring_job.py                               # 1,000,000 contexts, GPU if present
    python examples/gpu_scoring_job.py --device cuda --detector stl --chunk 200000
    python examples/gpu_scoring_job.py --contexts 20000 --device cpu # laptop-sized
    python examples/gpu_scoring_job.py --small                       # 2,000 contexts, a few seconds

``--device auto`` uses the GPU when CuPy sees one. ``--detector`` takes any short name of
:func:`tsanomaly.detectors.make_detector`. A million contexts on a CPU take many minutes:
use ``--contexts`` there.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import pandas as pd

import tsanomaly
from tsanomaly.detectors import make_detector

#: Contexts per random stream: the data of a context depends on the seed and its number only,
#: whatever --chunk (a chunk takes the rows it needs from the blocks it overlaps).
BLOCK = 1000
BURST_HOURS = 3


def _make_block(block: int, history_days: int, seed: int, burst_rate: float):
    """Counts (BLOCK x hours) of contexts ``block * BLOCK ..``, and the bursts' rows and first hours."""
    rng = np.random.default_rng([seed, block])
    n_times = 24 * (history_days + 1)
    hours = np.arange(n_times) % 24
    level = np.exp(rng.normal(np.log(20.0), 1.2, size=(BLOCK, 1)))  # ~1 .. 1,000 events per hour
    offset = rng.integers(-8, 10, size=(BLOCK, 1))
    daily = 1.0 + 0.7 * np.cos(2 * np.pi * ((hours[None, :] + offset) % 24 - 14) / 24)
    values = rng.poisson(level * daily).astype(np.float64)
    bursty = np.flatnonzero(rng.random(BLOCK) < burst_rate)
    start = 24 * history_days + rng.integers(0, 20, size=len(bursty))
    for row, s in zip(bursty, start):
        values[row, s : s + BURST_HOURS] += np.maximum(8 * level[row, 0], 60)
    return values, bursty, start


def make_chunk(first: int, n: int, history_days: int, seed: int, burst_rate: float = 0.001):
    """Hourly counts for contexts ``first .. first + n - 1``: (history Panel, new-day Panel, bursts).

    ``bursts`` is a DataFrame with one row per injected burst: ``context``, ``start``, ``end``
    (inclusive hours). The data are generated in blocks of ``BLOCK`` contexts, each with its
    own random stream (seeded by ``seed`` and the block number), so a context's data does not
    depend on the chunk size.
    """
    n_times = 24 * (history_days + 1)
    index = pd.date_range("2024-05-01", periods=n_times, freq="1h", name="ts")
    parts, bursts = [], []
    for block in range(first // BLOCK, (first + n - 1) // BLOCK + 1):
        values, bursty, start = _make_block(block, history_days, seed, burst_rate)
        lo, hi = max(first, block * BLOCK) - block * BLOCK, min(first + n, (block + 1) * BLOCK) - block * BLOCK
        parts.append(values[lo:hi])
        keep = (bursty >= lo) & (bursty < hi)
        bursts.append(pd.DataFrame({"context": block * BLOCK + bursty[keep], "start": index[start[keep]],
                                    "end": index[start[keep] + BURST_HOURS - 1]}))
    contexts = pd.RangeIndex(first, first + n, name="context")
    panel = tsanomaly.Panel(np.vstack(parts), contexts, index)
    split = 24 * history_days
    history, new = panel.time_slice(end=index[split - 1]), panel.time_slice(start=index[split])
    return history, new, pd.concat(bursts, ignore_index=True)


def bursts_found(bursts: pd.DataFrame, alerts: pd.DataFrame) -> int:
    """How many bursts an alert on their context overlaps in time (an alert elsewhere in the day does not count)."""
    pairs = bursts.merge(alerts[["context", "start", "end"]], on="context", suffixes=("", "_alert"))
    overlap = (pairs["start_alert"] <= pairs["end"]) & (pairs["end_alert"] >= pairs["start"])
    return int(pairs.loc[overlap, ["context", "start"]].drop_duplicates().shape[0])


def _gpu_memory_note(device: str) -> str:
    if device != "cuda":
        return ""
    try:
        import cupy

        pool = cupy.get_default_memory_pool()
        return f"; CuPy memory pool holds {pool.total_bytes() / 2**30:.2f} GiB"
    except Exception:  # noqa: BLE001 - a note only
        return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--contexts", type=int, default=None, help="number of contexts (default 1,000,000; 2,000 with --small)"
    )
    parser.add_argument(
        "--chunk", type=int, default=None, help="contexts per chunk (default 100,000; 500 with --small)"
    )
    parser.add_argument("--history-days", type=int, default=14, help="days of hourly history per context")
    parser.add_argument("--detector", default="stl", help="stl | baseline | mp | lstm (default: stl)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--small", action="store_true", help="2,000 contexts in chunks of 500, unless --contexts or --chunk say"
    )
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    # Explicit --contexts and --chunk win over --small (they used to be silently replaced).
    n_contexts = args.contexts if args.contexts is not None else (2000 if args.small else 1_000_000)
    chunk = args.chunk if args.chunk is not None else (500 if args.small else 100_000)
    if n_contexts < 1:
        parser.error(f"--contexts must be 1 or more, got {n_contexts}")
    if chunk < 1:
        parser.error(f"--chunk must be 1 or more, got {chunk}")
    # The new day is always scored (it follows the history), so only the history can be too short:
    # shorter than the detector needs for a finite training score, its calibrated threshold could
    # never be reached (STL: two daily cycles; the LSTM: a 48-hour window in the 80% of the history
    # it trains on; the baseline: seven past days at the same hour; the matrix profile: a quarter of
    # its four-week look-back, then one window).
    min_days = max(1, math.ceil(make_detector(args.detector).min_fit_times() / 24))
    if args.history_days < min_days:
        parser.error(
            f"--history-days must be at least {min_days} for the {args.detector} detector, got {args.history_days}"
        )

    device = tsanomaly.resolve_device(args.device)
    n_chunks = (n_contexts + chunk - 1) // chunk
    print(
        f"{n_contexts:,} contexts x ({24 * args.history_days} history + 24 new) hourly points, "
        f"{n_chunks} chunks of {chunk:,}, detector {args.detector} on {device}"
    )
    total_alerts, found, injected = 0, 0, 0
    gen_seconds, work_seconds = 0.0, []
    for k in range(n_chunks):
        first = k * chunk
        n = min(chunk, n_contexts - first)
        t0 = time.perf_counter()
        history, new, bursts = make_chunk(first, n, args.history_days, args.seed)
        t1 = time.perf_counter()
        det = make_detector(args.detector, device=args.device)
        det.fit(history)
        alerts = det.alerts(new)
        t2 = time.perf_counter()
        gen_seconds += t1 - t0
        work_seconds.append(t2 - t1)
        total_alerts += len(alerts)
        injected += len(bursts)
        found += bursts_found(bursts, alerts)
        print(
            f"  chunk {k + 1}/{n_chunks}: {n:,} contexts in {t2 - t1:6.2f} s "
            f"({n / (t2 - t1):,.0f} contexts/s), {len(alerts)} alerts{_gpu_memory_note(device)}"
        )
    total = sum(work_seconds)
    points = n_contexts * 24 * (args.history_days + 1)
    print(
        f"\nfit + score + alerts: {total:.2f} s for {n_contexts:,} contexts = {n_contexts / total:,.0f} contexts/s, "
        f"{points / total / 1e6:,.1f} M points/s (data generation, not counted: {gen_seconds:.1f} s)"
    )
    if len(work_seconds) > 1:
        steady = sum(work_seconds[1:])
        later = n_contexts - min(chunk, n_contexts)
        print(f"steady state (chunks 2..{n_chunks}): {later / steady:,.0f} contexts/s")
    if injected:
        print(f"{total_alerts:,} alerts; injected bursts found: {found} of {injected} ({found / injected:.0%})")
    else:  # each context gets a burst with probability 1 in 1,000: a small run may draw none
        print(f"{total_alerts:,} alerts; no burst injected (each context gets one with probability 1 in 1,000; none was drawn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
