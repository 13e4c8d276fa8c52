"""tsanomaly's matrix profile against STUMPY on the same input, in one process.

    python benchmarks/compare.py mp                       # defaults below
    python benchmarks/compare.py mp --case selfjoin --n 65536 --m 100 --repeat 3
    python benchmarks/compare.py mp --case batch --contexts 10000 --length 2016 --m 24
    python benchmarks/compare.py mp --plain               # normalize=False against stumpy.aamp

Cases:

* ``selfjoin``: one random walk of ``--n`` points, window ``--m``. CPU:
  ``tsanomaly.matrix_profile(device="cpu")`` against ``stumpy.stump`` (both Numba,
  both on all the cores Numba is given). GPU (when CuPy sees one): double and
  single precision against ``stumpy.gpu_stump`` (default n = 2**20 there).
* ``batch``: ``--contexts`` random walks of ``--length`` points (default 10,000 x
  2,016: twelve weeks of hourly counts, or a week of 5-minute counts, per
  context), window ``--m`` (default 24).
  tsanomaly computes them in one call; STUMPY has no batch form, so it runs
  ``stumpy.stump`` context by context on the first ``--stumpy-contexts`` of them
  and its rate is extrapolated from those.

``--plain`` times plain (non-z-normalised) distances instead: ``normalize=False``
against ``stumpy.aamp`` / ``stumpy.gpu_aamp``.

Each measurement is the best of ``--repeat`` runs after one untimed warm-up (which
absorbs JIT compilation); the two sides alternate, so a busy machine slows both.
Except in the ``batch`` case: there tsanomaly's two precisions alternate with each
other, then STUMPY's loop over ``--stumpy-contexts`` series is timed once, after its
own warm-up, so its figure is a single run that does not alternate with tsanomaly.
Throughput is in window pairs per second, pairs = (w - e - 1)(w - e) / 2 per
self-join of w windows with exclusion zone e (the pairs either side computes).
On the CPU the CPU seconds of the process are printed too: where other jobs share
the cores, wall time overstates both sides' cost, CPU time much less so.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compare_devices  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py mp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["selfjoin", "batch", "all"], default="all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and the GPU too when one is visible")
    parser.add_argument("--n", type=int, default=None, help="self-join length (default 2**16 CPU, 2**20 GPU)")
    parser.add_argument("--m", type=int, default=None, help="window (default 100 self-join, 24 batch)")
    parser.add_argument("--contexts", type=int, default=10_000, help="batch: number of series")
    parser.add_argument("--length", type=int, default=2016, help="batch: points per series")
    parser.add_argument("--stumpy-contexts", type=int, default=100, help="batch: series STUMPY runs")
    parser.add_argument("--plain", action="store_true",
                        help="plain distances: normalize=False against stumpy.aamp / gpu_aamp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def self_join_pairs(n: int, m: int) -> int:
    """Window pairs a self-join compares: j - i > ceil(m / 4)."""
    w, e = n - m + 1, math.ceil(m / 4)
    return max(0, (w - e - 1) * (w - e) // 2)


def _sync(device):
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def _timed(fn, device):
    """(wall seconds, process CPU seconds) of one call."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _race(named, device, repeat):
    """Warm each up once, then alternate them; best wall and CPU time of each."""
    for _, fn in named:
        fn()
        _sync(device)
    best = {name: [math.inf, math.inf] for name, _ in named}
    for _ in range(repeat):
        for name, fn in named:
            wall, cpu = _timed(fn, device)
            best[name][0] = min(best[name][0], wall)
            best[name][1] = min(best[name][1], cpu)
    return best


def _report(title, pairs, best, reference, device):
    print(title)
    print(f"  {'':34s} {'wall s':>9s} {'pairs/s':>10s}" + (f" {'cpu s':>9s}" if device == "cpu" else ""))
    for name, (wall, cpu) in best.items():
        line = f"  {name:34s} {wall:9.3f} {pairs / wall:10.3g}"
        print(line + (f" {cpu:9.3f}" if device == "cpu" else ""))
    ref_wall, ref_cpu = best[reference]
    for name, (wall, cpu) in best.items():
        if name == reference:
            continue
        extra = f", {ref_cpu / cpu:.2f}x in CPU time" if device == "cpu" else ""
        print(f"  ratio {name} / {reference}: {ref_wall / wall:.2f}x in wall time{extra}")
    print()


def _stumpy_function(args, gpu):
    """STUMPY's counterpart: (name, function) -- stump / gpu_stump, or aamp / gpu_aamp with --plain."""
    import stumpy

    name = ("gpu_" if gpu else "") + ("aamp" if args.plain else "stump")
    return f"stumpy.{name}", getattr(stumpy, name)


def _ours(data, m, device, normalize):
    """tsanomaly in both precisions, as (name, call) pairs for _race."""
    from tsanomaly.detectors.matrix_profile import matrix_profile

    return [
        (f"tsanomaly {device} {precision}",
         lambda precision=precision: matrix_profile(data, m, device=device, precision=precision, normalize=normalize))
        for precision in ("double", "single")
    ]


def compare_self_join(args, device):
    n = args.n or (2**16 if device == "cpu" else 2**20)
    m = args.m or 100
    normalize = not args.plain
    x = np.cumsum(np.random.default_rng(args.seed).standard_normal(n))
    pairs = self_join_pairs(n, m)
    reference, stumpy_fn = _stumpy_function(args, gpu=device == "cuda")
    data = x
    if device == "cuda":
        import cupy

        data = cupy.asarray(x)
    named = _ours(data, m, device, normalize) + [(reference, lambda: stumpy_fn(x, m))]
    best = _race(named, device, args.repeat)
    kind = "plain" if args.plain else "z-normalised"
    _report(f"self-join ({kind}), random walk n={n}, m={m}, {pairs:.3g} pairs, device {device}", pairs, best,
            reference, device)


def compare_batch(args, device):
    m = args.m or 24
    normalize = not args.plain
    stumpy_name, stumpy_fn = _stumpy_function(args, gpu=False)
    rng = np.random.default_rng(args.seed)
    batch = np.cumsum(rng.standard_normal((args.contexts, args.length)), axis=1)
    k = min(args.stumpy_contexts, args.contexts)
    per_context = self_join_pairs(args.length, m)
    if device == "cuda":
        import cupy

        data = cupy.asarray(batch)
    else:
        data = batch
    ours = _race(_ours(data, m, device, normalize), device, args.repeat)
    theirs = _race([(f"{stumpy_name}, one call per context", lambda: [stumpy_fn(row, m) for row in batch[:k]])],
                   "cpu", 1)
    # STUMPY ran k contexts: scale its time to all of them.
    scale = args.contexts / k
    best = {**ours, **{f"{stumpy_name} x {k} (scaled to {args.contexts})": [t * scale for t in v]
                       for _, v in [next(iter(theirs.items()))]}}
    kind = "plain" if args.plain else "z-normalised"
    title = (f"batch ({kind}), {args.contexts} random walks x {args.length} points, m={m}, "
             f"{per_context * args.contexts:.3g} pairs, device {device}")
    _report(title, per_context * args.contexts, best, next(k_ for k_ in best if k_.startswith("stumpy")), device)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        import stumpy  # noqa: F401
    except ImportError:
        print("stumpy is not installed: pip install 'tsanomaly[bench]'", file=sys.stderr)
        return 2
    import numba

    print(f"numba threads: {numba.get_num_threads()}")
    for device in compare_devices(args.device):
        if args.case in ("selfjoin", "all"):
            compare_self_join(args, device)
        if args.case in ("batch", "all"):
            compare_batch(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
