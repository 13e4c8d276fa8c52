"""Device choice, array module and CUDA kernel loading, resolved in one place.

Every detector and kernel asks this module which device to run on
(:func:`resolve_device`), which array module to use (:func:`array_module`),
and for compiled CUDA kernels (:func:`load_cuda_module`).  Importing it never
needs CuPy or a GPU: CuPy is imported lazily, the first time a GPU path is
asked for.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = [
    "DEVICES",
    "GPUUnavailableError",
    "resolve_device",
    "gpu_available",
    "array_module",
    "to_device",
    "to_numpy",
    "CPU_BLOCK_POINTS",
    "context_blocks",
    "cuda_kernels_dir",
    "kernel_source",
    "kernel_sources_hash",
    "load_cuda_module",
]

DEVICES = ("auto", "cpu", "cuda")

_INSTALL_HINT = ('install CuPy with `pip install "tsanomaly[gpu]"` (CUDA 12) or `pip install "tsanomaly[gpu-cuda13]"` '
                 '(CUDA 13)')


class GPUUnavailableError(RuntimeError):
    """Raised when ``device="cuda"`` is asked for but cannot be served."""


def _import_cupy():
    """Return the ``cupy`` module, or raise GPUUnavailableError saying why not."""
    try:
        import cupy
    except ImportError as exc:  # CuPy absent or its CUDA libraries are missing
        raise GPUUnavailableError(
            f"device='cuda' was asked for but CuPy is not installed ({exc}); {_INSTALL_HINT}, "
            "or use device='cpu'."
        ) from exc
    return cupy


@functools.lru_cache(maxsize=1)
def _visible_gpu_count() -> int:
    """Number of CUDA devices CuPy sees; 0 when CuPy is absent or sees none."""
    try:
        cupy = _import_cupy()
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU" for auto
        return 0


def gpu_available() -> bool:
    """True when CuPy is importable and sees at least one CUDA device."""
    return _visible_gpu_count() > 0


def resolve_device(device: str = "auto") -> str:
    """Turn a user's device request into ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` picks the GPU when CuPy sees one, else the CPU.

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    ValueError
        For any other string.
    GPUUnavailableError
        For ``"cuda"`` when CuPy is not installed, or installed but sees no device;
        the message says which and how to fix it.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    cupy = _import_cupy()
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - CUDA driver missing or broken
        raise GPUUnavailableError(
            f"device='cuda' was asked for: CuPy is installed but found no usable CUDA device ({exc}). "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use device='cpu'."
        ) from exc
    if count == 0:
        raise GPUUnavailableError(
            "device='cuda' was asked for: CuPy is installed but no CUDA device is visible. "
            "Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use device='cpu'."
        )
    return "cuda"


def array_module(device_or_array):
    """NumPy or CuPy, for a device name (``"cpu"``/``"cuda"``) or an array.

    Array code written against the returned ``xp`` runs unchanged on both.
    """
    if isinstance(device_or_array, str):
        if device_or_array == "cuda":
            return _import_cupy()
        if device_or_array == "cpu":
            return np
        raise ValueError(f"expected 'cpu' or 'cuda', got {device_or_array!r}")
    if isinstance(device_or_array, np.ndarray) or np.isscalar(device_or_array):
        return np
    module = type(device_or_array).__module__
    if module.startswith("cupy"):
        return _import_cupy()
    return np


def is_device_array(x) -> bool:
    """True when ``x`` is a CuPy array."""
    return type(x).__module__.startswith("cupy")


def to_device(x, device: str):
    """Copy ``x`` to ``device`` (``"cpu"`` or ``"cuda"``); a no-op when it is there already."""
    if device == "cpu":
        return to_numpy(x)
    if device == "cuda":
        cupy = _import_cupy()
        return cupy.asarray(x)
    raise ValueError(f"expected 'cpu' or 'cuda', got {device!r}")


def to_numpy(x) -> np.ndarray:
    """Return ``x`` as a NumPy array (copying from the GPU when needed)."""
    if is_device_array(x):
        return x.get()
    return np.asarray(x)


#: Points (contexts x times) that a detector's CPU fit or score works on at a time. Contexts
#: are independent in the per-context detectors, so the CPU takes them in blocks: the working
#: arrays (a few dozen of the block's size) stay in cache-sized, reusable memory instead of
#: being mapped afresh at the whole panel's size each time. The GPU takes the whole panel.
CPU_BLOCK_POINTS = 1 << 20


def free_device_bytes() -> int:
    """Bytes of GPU memory a new allocation can take: the driver's free memory and the blocks
    CuPy's default pool keeps after they were freed (it does not hand them back to the driver,
    so the driver's figure alone shrinks the chunks after every large step)."""
    cupy = array_module("cuda")
    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free) + int(cupy.get_default_memory_pool().free_bytes())


def context_blocks(n_contexts: int, n_times: int, xp, points: int | None = None) -> list[slice]:
    """Row slices covering ``n_contexts`` contexts: one for the whole panel on the GPU (``xp``
    CuPy), blocks of about ``points // n_times`` contexts (at least one) on the CPU (``xp`` NumPy);
    ``points`` defaults to :data:`CPU_BLOCK_POINTS`, read at each call.

    Examples
    --------
    >>> context_blocks(5, 400_000, np)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    points = CPU_BLOCK_POINTS if points is None else points
    block = n_contexts if xp is not np else max(1, points // max(n_times, 1))
    return [slice(lo, min(lo + block, n_contexts)) for lo in range(0, n_contexts, max(block, 1))]


def cuda_kernels_dir() -> Path:
    """Folder holding the CUDA sources (``*.cu``/``*.cuh``).

    In an installed wheel they lie in ``tsanomaly/cuda_kernels`` (hatch
    ``force-include``); in an editable checkout, in ``cuda_kernels/`` at the
    repository root.  ``TSANOMALY_CUDA_KERNELS`` overrides both: when it is
    set (non-empty), only that folder is used.

    Raises
    ------
    FileNotFoundError
        When ``TSANOMALY_CUDA_KERNELS`` names a folder that does not exist or
        holds no ``.cu`` file (naming the variable and the path), or, without
        it, when neither default folder holds the sources.
    """
    override = os.environ.get("TSANOMALY_CUDA_KERNELS")
    if override:
        # An explicit choice: falling back to the bundled sources would silently compile
        # kernels other than the ones asked for.
        folder = Path(override)
        if not folder.is_dir():
            raise FileNotFoundError(f"TSANOMALY_CUDA_KERNELS={override!r}: no such folder")
        if not any(folder.glob("*.cu")):
            raise FileNotFoundError(f"TSANOMALY_CUDA_KERNELS={override!r}: the folder holds no .cu file")
        return folder
    package_dir = Path(__file__).resolve().parent
    candidates = [package_dir / "cuda_kernels", package_dir.parent / "cuda_kernels"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.cu")):
            return folder
    raise FileNotFoundError(
        "CUDA kernel sources not found; looked in " + ", ".join(str(c) for c in candidates)
    )


def kernel_source(filename: str) -> str:
    """Text of one CUDA source file from :func:`cuda_kernels_dir`."""
    return (cuda_kernels_dir() / filename).read_text()


def kernel_sources_hash(folder, filename: str) -> str:
    """SHA-256 (hex) of ``folder/filename`` and of every header (``*.cuh``, ``*.h``) in ``folder``.

    Part of the compile options of :func:`load_cuda_module`: CuPy's on-disk kernel
    cache is keyed on the source text and the options, not on the headers that
    ``#include`` finds through ``-I``, so without it a changed header could be
    served a binary built from the old one.
    """
    folder = Path(folder)
    headers = sorted(p for pattern in ("*.cuh", "*.h") for p in folder.glob(pattern) if p.is_file())
    digest = hashlib.sha256()
    for path in [folder / filename, *headers]:
        data = path.read_bytes()
        name = path.name.encode()
        digest.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _raw_module(source: str, options: tuple[str, ...]):
    """One ``cupy.RawModule`` per (source, options), for the life of the process.

    CuPy adds ``-ftz=true`` to NVRTC's options (CuPy 14.2's ``cupy/cuda/compiler.py``, read, not run
    here): float32 subnormals flush to zero on the GPU and not in the Numba kernels, so the single-
    precision matrix profile may differ from the CPU's in the last bits where a correlation is near
    0. Double precision (STL, the default matrix profile) has no such flush.
    """
    return _import_cupy().RawModule(code=source, options=options)


def load_cuda_module(filename: str, options: tuple[str, ...] = ()):
    """Compile ``cuda_kernels/<filename>`` with CuPy once per process and cache it.

    ``#include "x.cuh"`` lines resolve against the kernel folder.  CuPy also
    keeps its own on-disk cache of compiled modules, so a new process with the
    same source skips NVRTC.  That cache is keyed on the ``.cu`` text and the
    options only, so the options carry ``-DTSA_SOURCE_HASH=<sha256>`` of the
    ``.cu`` file and every header in the folder (:func:`kernel_sources_hash`):
    an edited header compiles anew instead of reusing a stale binary.  The files
    are read on every call (a few small files); compiled modules are cached per
    (source, options), so a header edited during a process is picked up too.

    Parameters
    ----------
    filename : str
        A ``.cu`` file in the kernel folder.
    options : tuple of str
        Extra NVRTC options (for example ``("-DTILE=256",)``).

    Returns
    -------
    cupy.RawModule
    """
    _import_cupy()  # GPUUnavailableError first, before any file is read
    folder = cuda_kernels_dir()
    source = (folder / filename).read_text()
    digest = kernel_sources_hash(folder, filename)
    return _raw_module(
        source,
        ("--std=c++17", f"-I{folder}", f"-DTSA_SOURCE_HASH={digest}") + tuple(options),
    )
