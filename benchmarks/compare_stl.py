"""tsanomaly's batched STL / MSTL against statsmodels on the same input, in one process.

    python benchmarks/compare.py stl                              # both cases, CPU (and GPU when present)
    python benchmarks/compare.py stl --case stl --contexts 4000 --repeat 3
    python benchmarks/compare.py stl --case mstl --device cuda --contexts 20000

Cases:

* ``stl``: robust STL (statsmodels' defaults: seasonal 7, trend 47, low-pass 25,
  2 inner and 15 outer iterations) of ``--contexts`` hourly series of 720 points
  (30 days), period 24.  Default 2,000 contexts on the CPU, 100,000 on the GPU.
* ``mstl``: MSTL with periods (24, 168) (windows 11 and 15, robust) of series of
  2,016 points (12 weeks).  Default 200 contexts on the CPU, 20,000 on the GPU.

The series are negative-binomial counts with a daily and a weekly cycle, complete
(no gaps), so both sides do exactly the same work.  statsmodels decomposes one
series per call and uses one core: it runs on ``--sm-contexts`` series (its rate
is extrapolated from those), once in this process (one core) and once in a pool of
as many processes as tsanomaly has threads -- the same number of cores.  The
ratios are against that pool, and against the one-core rate times the number of
cores (the ideal scaling statsmodels could reach).  Each measurement is the best
of ``--repeat`` runs after an untimed warm-up (Numba / NVRTC compilation); CPU
seconds of the process are printed beside wall seconds: where other jobs share the
cores, wall time overstates the cost, CPU time much less so.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compare_devices  # noqa: E402

STL_POINTS = 720
MSTL_POINTS = 2016


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py stl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["stl", "mstl", "all"], default="all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and the GPU too when one is visible")
    parser.add_argument("--contexts", type=int, default=None, help="series tsanomaly decomposes (see above)")
    parser.add_argument("--sm-contexts", type=int, default=None,
                        help="series statsmodels decomposes per process (default 40 STL, 4 MSTL)")
    parser.add_argument("--threads", type=int, default=None, help="Numba threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def make_series(n_contexts: int, n_points: int, seed: int = 0) -> np.ndarray:
    """Hourly counts: daily and weekly cycle, a slow trend, negative-binomial noise; float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_points)
    level = np.exp(rng.normal(np.log(50.0), 1.2, size=(n_contexts, 1)))
    daily = 1 + 0.6 * np.sin(2 * np.pi * (t + rng.integers(0, 24, size=(n_contexts, 1))) / 24)
    weekly = np.where((t // 24) % 7 >= 5, rng.uniform(0.6, 1.2, size=(n_contexts, 1)), 1.0)
    trend = 1 + rng.normal(0, 0.1, size=(n_contexts, 1)) * t / n_points
    mu = level * daily * weekly * trend
    k = 30.0
    return rng.negative_binomial(k, k / (k + mu)).astype(np.float64)


def _statsmodels_batch(args):
    """Decompose rows of ``y`` with statsmodels, one by one (runs in a worker process)."""
    case, y = args
    from statsmodels.tsa.seasonal import MSTL, STL

    for row in y:
        if case == "stl":
            STL(row, period=24, robust=True).fit()
        else:
            MSTL(row, periods=(24, 168), stl_kwargs={"robust": True}).fit()
    return len(y)


def _sync(device):
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def _best(fn, device, repeat, warmup=1):
    """Best (wall, process CPU) seconds of ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
        _sync(device)
    best = [math.inf, math.inf]
    for _ in range(repeat):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        best[0] = min(best[0], time.perf_counter() - wall)
        best[1] = min(best[1], time.process_time() - cpu)
    return best


def compare(case: str, device: str, args) -> dict:
    import numba

    from tsanomaly import backend
    from tsanomaly.detectors.stl import decompose

    n_points = STL_POINTS if case == "stl" else MSTL_POINTS
    periods = 24 if case == "stl" else (24, 168)
    default_contexts = {("stl", "cpu"): 2_000, ("stl", "cuda"): 100_000,
                        ("mstl", "cpu"): 200, ("mstl", "cuda"): 20_000}
    n_contexts = args.contexts or default_contexts[(case, device)]
    cores = numba.get_num_threads()
    y = make_series(n_contexts, n_points, args.seed)
    data = backend.to_device(y, device)

    wall, cpu = _best(lambda: decompose(data, periods=periods, robust=True, device=device), device, args.repeat)
    ours = n_contexts / wall

    k = args.sm_contexts or (40 if case == "stl" else 4)
    sample = make_series(k * cores, n_points, args.seed + 1)
    # The untimed warm-up imports statsmodels, so --repeat 1 does not time the import.
    sm_wall, sm_cpu = _best(lambda: _statsmodels_batch((case, sample[:k])), "cpu", args.repeat, warmup=1)
    sm_one = k / sm_wall
    chunks = [(case, sample[i * k:(i + 1) * k]) for i in range(cores)]
    with ProcessPoolExecutor(max_workers=cores) as pool:
        list(pool.map(_statsmodels_batch, [(case, sample[:1])] * cores))  # start the workers
        pool_wall, _ = _best(lambda: list(pool.map(_statsmodels_batch, chunks)), "cpu", args.repeat, warmup=0)
    sm_pool = k * cores / pool_wall

    what = "robust STL, period 24" if case == "stl" else "MSTL (24, 168), robust"
    print(f"{what}, {n_points} points per series; tsanomaly on {device} "
          f"({n_contexts} series{f', {cores} threads' if device == 'cpu' else ''})")
    print(f"  {'':38s} {'series/s':>12s} {'wall s':>9s} {'cpu s':>9s}")
    print(f"  {'tsanomaly.decompose':38s} {ours:12.1f} {wall:9.3f} {cpu:9.3f}")
    print(f"  {'statsmodels, 1 process':38s} {sm_one:12.2f} {sm_wall:9.3f} {sm_cpu:9.3f}  ({k} series)")
    print(f"  {f'statsmodels, {cores} processes':38s} {sm_pool:12.2f} {pool_wall:9.3f} {'':9s}  ({k * cores} series)")
    print(f"  ratio vs statsmodels on {cores} processes: {ours / sm_pool:.1f}x")
    print(f"  ratio vs statsmodels 1 process x {cores} cores: {ours / (sm_one * cores):.1f}x")
    if device == "cpu":
        print(f"  ratio in CPU time per series (1 core each): {(sm_cpu / k) / (cpu / n_contexts):.1f}x")
    print()
    return {"case": case, "device": device, "tsanomaly": ours, "statsmodels_1": sm_one, "statsmodels_pool": sm_pool}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    devices = compare_devices(args.device)
    cases = ["stl", "mstl"] if args.case == "all" else [args.case]
    print(f"machine: {os.cpu_count()} logical CPUs; "
          f"load average {os.getloadavg()[0]:.2f} (other jobs on the cores slow both sides)\n")
    for device in devices:
        for case in cases:
            compare(case, device, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
