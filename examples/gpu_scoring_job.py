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
random time zone, Poisson counts, sizes spanning three orders of magnitude); 0.1% of
the contexts get a burst on the new day, so the run also prints how many were found.
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

def make_chunk(first: int, n: int, history_days: int, seed: int, burst_rate: float = 0.001):
    """Hourly counts for contexts ``first .. first + n - 1``: (history Panel, new-day Panel, bursty rows).

    Each chunk has its own random stream (seeded by ``seed`` and ``first``), so a chunk's
    data does not depend on the chunk size used before it.
    """
    rng = np.random.default_rng([seed, first])
    n_times = 24 * (history_days + 1)
    index = pd.date_range("2024-05-01", periods=n_times, freq="1h", name="ts")
    hours = np.arange(n_times) % 24
    level = np.exp(rng.normal(np.log(20.0), 1.2, size=(n, 1)))  # ~1 .. 1,000 events per hour
    offset = rng.integers(-8, 10, size=(n, 1))
    daily = 1.0 + 0.7 * np.cos(2 * np.pi * ((hours[None, :] + offset) % 24 - 14) / 24)
    values = rng.poisson(level * daily).astype(np.float64)
    bursty = np.flatnonzero(rng.random(n) < burst_rate)
    if len(bursty):
        start = 24 * history_days + rng.integers(0, 20, size=len(bursty))
        for row, s in zip(bursty, start):
            values[row, s : s + 3] += np.maximum(8 * level[row, 0], 60)
    contexts = pd.RangeIndex(first, first + n, name="context")
    panel = tsanomaly.Panel(values, contexts, index)
    split = 24 * history_days
    return panel.time_slice(end=index[split - 1]), panel.time_slice(start=index[split]), contexts[bursty]


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
    parser.add_argument("--contexts", type=int, default=1_000_000, help="number of contexts (default 1,000,000)")
    parser.add_argument("--chunk", type=int, default=100_000, help="contexts per chunk (default 100,000)")
    parser.add_argument("--history-days", type=int, default=14, help="days of hourly history per context")
    parser.add_argument("--detector", default="stl", help="stl | baseline | mp | lstm (default: stl)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--small", action="store_true", help="2,000 contexts in chunks of 500")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    n_contexts, chunk = (2000, 500) if args.small else (args.contexts, args.chunk)
    if n_contexts < 1 or chunk < 1:
        parser.error("--contexts and --chunk must be positive")
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
        history, new, bursty = make_chunk(first, n, args.history_days, args.seed)
        t1 = time.perf_counter()
        det = make_detector(args.detector, device=args.device)
        det.fit(history)
        alerts = det.alerts(new)
        t2 = time.perf_counter()
        gen_seconds += t1 - t0
        work_seconds.append(t2 - t1)
        total_alerts += len(alerts)
        injected += len(bursty)
        found += int(pd.Index(bursty).isin(alerts["context"]).sum())
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
