"""Shared test set-up: the `gpu` marker and the path of the real labelled data.

Tests marked ``gpu`` are skipped where no CUDA device is visible (to CuPy, and
to PyTorch as well for those also marked ``torch_cuda``), except under
``TSANOMALY_REQUIRE_GPU=1`` (GPU CI, see ``benchmarks/gpu_ci.sh``), where a
missing or broken CuPy, PyTorch build or GPU fails them instead: GPU CI must not
go green by skipping everything.

Tests not marked ``gpu`` run on the CPU wherever they run: ``device="auto"`` picks the
CPU in them even on a machine with a GPU (:func:`_auto_is_the_cpu_outside_gpu_tests`).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

#: The real labelled data sets (NAB, UCR, an sshd log), beside the repository; absent on users' machines.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@functools.lru_cache(maxsize=1)
def _gpu_problem() -> str | None:
    """None when CuPy sees a CUDA device, else why not."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken CUDA install
        return f"CuPy is not usable: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        return f"CuPy sees no CUDA runtime: {exc}"
    return None if count > 0 else "no CUDA device is visible"


@functools.lru_cache(maxsize=1)
def _torch_cuda_problem() -> str | None:
    """None when PyTorch sees a CUDA device, else why not (a CPU-only build, for one)."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return f"PyTorch is not usable: {exc}"
    return None if torch.cuda.is_available() else f"PyTorch {torch.__version__} sees no CUDA device"


def pytest_runtest_setup(item):
    # The marker itself: item.keywords also holds node names and parametrize ids ("gpu").
    if item.get_closest_marker("gpu") is None:
        return
    # A skipif in the test module would be decided before this hook, out of reach of
    # TSANOMALY_REQUIRE_GPU; the torch_cuda marker brings PyTorch's check here.
    problem = _gpu_problem() or (item.get_closest_marker("torch_cuda") is not None and _torch_cuda_problem() or None)
    if problem is None:
        return
    if os.environ.get("TSANOMALY_REQUIRE_GPU") == "1":
        pytest.fail(f"GPU test under TSANOMALY_REQUIRE_GPU=1: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _auto_is_the_cpu_outside_gpu_tests(request, monkeypatch):
    """``device="auto"`` (every detector's default) means the CPU in tests not marked ``gpu``.

    They compare results with NumPy arrays, which CuPy's arrays refuse to mix with: on a
    machine with a GPU, ``auto`` would put the detectors there and a dozen tests would fail
    on their own comparisons (a strict CuPy stand-in found them in ``test_baseline.py``). The
    GPU paths are the ``gpu`` tests' to check. A test that needs to know whether a GPU is
    really there asks the ``gpu_visible`` fixture, not :func:`tsanomaly.gpu_available`.
    """
    if request.node.get_closest_marker("gpu") is None:
        from tsanomaly import backend

        monkeypatch.setattr(backend, "_visible_gpu_count", lambda: 0)


@pytest.fixture(scope="session")
def gpu_visible() -> bool:
    """Whether CuPy really sees a CUDA device (``tsanomaly.gpu_available`` says no outside ``gpu`` tests)."""
    return _gpu_problem() is None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real labelled data not found at {SHARED_DATA}")
    return SHARED_DATA
