"""The benchmark scripts measure what they say and fail the way they document.

Speed itself is never asserted here (it is measured by the scripts); these are the cheap checks
of their set-up, arguments and exit codes that a CPU machine can run."""
from __future__ import annotations

import pytest


def test_asv_lstm_training_runs_on_fits_threads(monkeypatch):
    """track_train_windows_per_second trains under fit's thread setting (one thread on the CPU):
    under PyTorch's default (2 threads on 2 cores) it timed a loop 3-5x slower than fit's."""
    torch = pytest.importorskip("torch")
    from benchmarks import bench_lstm
    from tsanomaly.kernels import lstm_torch

    monkeypatch.setitem(bench_lstm.SIZES, "cpu", dict(n_contexts=4, n_train_windows=64, epochs=1))
    threads = []
    train_model = lstm_torch.train_model

    def spy(*args, **kwargs):
        threads.append(torch.get_num_threads())
        return train_model(*args, **kwargs)

    monkeypatch.setattr(lstm_torch, "train_model", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bench = bench_lstm.LSTMThroughput()
        bench.setup("cpu")
        fit_threads = list(threads)
        threads.clear()
        assert bench.track_train_windows_per_second("cpu") > 0
        assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert fit_threads == [1]
    assert threads and set(threads) == {1}
