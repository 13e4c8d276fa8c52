"""tsanomaly.backend's CUDA kernel sources and module loading, without CuPy or a GPU (a recording
stand-in for cupy.RawModule)."""
from __future__ import annotations

import re
import shutil
import subprocess
import types

import pytest

from tsanomaly import backend

NVCC = shutil.which("nvcc")


@pytest.fixture
def recorded_modules(tmp_path, monkeypatch):
    """A temporary copy of the kernel folder (TSANOMALY_CUDA_KERNELS) and the RawModule calls made."""
    folder = tmp_path / "kernels"
    shutil.copytree(backend.cuda_kernels_dir(), folder)
    monkeypatch.setenv("TSANOMALY_CUDA_KERNELS", str(folder))
    calls = []

    def raw_module(code, options=()):
        calls.append((code, tuple(options)))
        return object()

    monkeypatch.setattr(backend, "_import_cupy", lambda: types.SimpleNamespace(RawModule=raw_module))
    backend._raw_module.cache_clear()
    yield folder, calls
    backend._raw_module.cache_clear()  # it holds the stand-in's modules


def _hash_option(options):
    found = [o for o in options if o.startswith("-DTSA_SOURCE_HASH=")]
    assert len(found) == 1, options
    return found[0]


@pytest.mark.parametrize("filename, header", [("stl.cu", "stl.cuh"), ("matrix_profile.cu", "matrix_profile.cuh")])
def test_a_header_change_changes_what_is_compiled(recorded_modules, filename, header):
    """CuPy's on-disk kernel cache is keyed on the source text and the options, not on headers
    found through -I: the options carry a hash of the .cu and every header, so that a changed
    header cannot be served a binary built from the old one."""
    folder, calls = recorded_modules
    first = backend.load_cuda_module(filename, ("-DX=1",))
    assert backend.load_cuda_module(filename, ("-DX=1",)) is first  # compiled once per process
    assert len(calls) == 1
    code, options = calls[0]
    assert code == (folder / filename).read_text()
    assert f"-I{folder}" in options and options[-1] == "-DX=1"  # #include still resolves; caller's options kept
    assert re.fullmatch(r"-DTSA_SOURCE_HASH=[0-9a-f]{64}", _hash_option(options))

    path = folder / header
    path.write_text(path.read_text() + "\n// an edit that changes the header only\n")
    second = backend.load_cuda_module(filename, ("-DX=1",))
    assert second is not first and len(calls) == 2
    code2, options2 = calls[1]
    assert code2 == code  # the .cu text is unchanged ...
    assert _hash_option(options2) != _hash_option(options)  # ... the options are not
    assert [o for o in options2 if not o.startswith("-DTSA")] == [o for o in options if not o.startswith("-DTSA")]


def test_the_source_hash_covers_the_cu_file_and_every_header(tmp_path):
    (tmp_path / "a.cu").write_text('#include "a.cuh"\n')
    (tmp_path / "a.cuh").write_text("// a\n")
    (tmp_path / "b.cu").write_text("// b\n")
    base = backend.kernel_sources_hash(tmp_path, "a.cu")
    assert backend.kernel_sources_hash(tmp_path, "a.cu") == base  # deterministic
    (tmp_path / "b.cu").write_text("// another kernel file: not part of a.cu\n")
    assert backend.kernel_sources_hash(tmp_path, "a.cu") == base
    (tmp_path / "a.cuh").write_text("// a, edited\n")
    edited = backend.kernel_sources_hash(tmp_path, "a.cu")
    assert edited != base
    (tmp_path / "new.cuh").write_text("// a new header\n")
    assert backend.kernel_sources_hash(tmp_path, "a.cu") != edited
    (tmp_path / "a.cu").write_text('#include "a.cuh"\n// edited\n')
    assert backend.kernel_sources_hash(tmp_path, "a.cu") not in (base, edited)


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_the_compile_options_are_accepted_by_nvcc(recorded_modules, tmp_path):
    """The options load_cuda_module hands to NVRTC (hash define included) compile the real sources."""
    folder, calls = recorded_modules
    backend.load_cuda_module("stl.cu")
    _, options = calls[0]
    out = tmp_path / "stl.ptx"
    result = subprocess.run(["nvcc", "-arch=sm_90", "--ptx", *options, str(folder / "stl.cu"), "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ".entry stl_batch(" in out.read_text()


# ---------------------------------------------------------------------- CUDA kernel sources
def test_the_kernel_sources_are_found_without_a_gpu(monkeypatch):
    monkeypatch.delenv("TSANOMALY_CUDA_KERNELS", raising=False)
    assert (backend.cuda_kernels_dir() / "matrix_profile.cu").is_file()


def test_the_kernel_folder_override_is_used(tmp_path, monkeypatch):
    (tmp_path / "matrix_profile.cu").write_text("// a stand-in kernel\n")
    monkeypatch.setenv("TSANOMALY_CUDA_KERNELS", str(tmp_path))
    assert backend.cuda_kernels_dir() == tmp_path
    assert backend.kernel_source("matrix_profile.cu") == "// a stand-in kernel\n"


def test_a_kernel_folder_override_that_is_missing_or_empty_is_an_error(tmp_path, monkeypatch):
    # Falling back to the bundled sources would compile kernels other than the ones asked for.
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("TSANOMALY_CUDA_KERNELS", str(missing))
    with pytest.raises(FileNotFoundError, match=r"TSANOMALY_CUDA_KERNELS=.*nowhere.*no such folder"):
        backend.cuda_kernels_dir()
    (tmp_path / "notes.txt").write_text("no kernels here")
    monkeypatch.setenv("TSANOMALY_CUDA_KERNELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"TSANOMALY_CUDA_KERNELS=.*holds no \.cu file"):
        backend.kernel_source("matrix_profile.cu")


def test_free_device_bytes_counts_the_blocks_cupys_pool_keeps(monkeypatch):
    """CuPy's pool keeps freed blocks from the driver: chunk budgets count them as free."""
    import types

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(memGetInfo=lambda: (3 << 30, 80 << 30))),
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 5 << 30),
    )
    monkeypatch.setattr(backend, "array_module", lambda device: fake)
    assert backend.free_device_bytes() == 8 << 30
