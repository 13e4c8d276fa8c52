"""ASV throughput of the LSTM autoencoder, in windows per second, on CPU and GPU (window 48, hidden 64).

- ``track_train_windows_per_second``: optimisation steps of the training loop
  (forward, backward, Adam) on training windows that already live on the
  device, as in ``fit`` (on the CPU, one intra-op thread, as ``fit`` trains):
  windows x epochs / seconds.
- ``track_score_windows_per_second``: ``detector.score`` of one new week, the
  whole data path included (scaling, windows, reconstruction, errors); every
  new point is one window: contexts x new points / seconds.

GPU cases raise NotImplementedError in ``setup`` where PyTorch or CuPy sees no
CUDA device, so ASV skips them.  The CPU cases are kept small (about 30 s in
all on two cores); targets (issue 4): GPU >= 200,000 training and >= 1,000,000
scoring windows/s.
"""
from __future__ import annotations

import time

from tsanomaly.backend import gpu_available
from tsanomaly.datasets import make_security_panel

WINDOW, HIDDEN = 48, 64

# Per device: contexts generated, training windows timed, epochs per timed call.
SIZES = {
    "cpu": dict(n_contexts=40, n_train_windows=4_096, epochs=1),
    "cuda": dict(n_contexts=20_000, n_train_windows=1_048_576, epochs=1),
}


def _require(device: str) -> None:
    """NotImplementedError (ASV: skip) unless ``device`` can run the LSTM."""
    try:
        import torch
    except ImportError as exc:
        raise NotImplementedError(f"PyTorch is not installed ({exc})") from exc
    if device == "cuda" and not (torch.cuda.is_available() and gpu_available()):
        raise NotImplementedError("no CUDA device visible to PyTorch and CuPy")


def _best_time(fn, device: str, repeat: int = 3, warmup: int = 1) -> float:
    """Smallest wall time of ``repeat`` calls after ``warmup`` calls; waits for the GPU to finish."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
        sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


class LSTMThroughput:
    """Windows per second of the LSTM autoencoder (window 48, hidden 64, default batch and precision)."""

    params = (["cpu", "cuda"],)
    param_names = ["device"]
    unit = "windows/s"
    timeout = 900

    def setup(self, device):
        _require(device)
        import torch

        from tsanomaly.detectors.lstm_ae import LSTMAutoencoderDetector
        from tsanomaly.kernels import lstm_torch

        size = SIZES[device]
        data = make_security_panel(n_contexts=size["n_contexts"], n_days=28, seed=0)
        history, new = data.split("2024-01-22")
        self.history = history.panels["logins"].to(device)
        self.new = new.panels["logins"].to(device)
        self.detector = LSTMAutoencoderDetector(window=WINDOW, hidden=HIDDEN, epochs=1, device=device, seed=0)
        self.detector.fit(self.history)

        # Training windows as fit builds them (scaled, clipped, on the device), tiled up to the
        # timed count: throughput does not depend on which windows they are.
        det = self.detector
        z = det._scaled(self.history.values, det.center_, det.scale_)
        windows = z.unfold(1, WINDOW, 4).reshape(-1, WINDOW)
        windows = windows[~torch.isnan(windows).any(dim=1)].clamp(-10, 10).float()
        repeats = -(-size["n_train_windows"] // windows.shape[0])
        self.windows = windows.repeat(repeats, 1)[: size["n_train_windows"]].contiguous()
        self.model = lstm_torch.build_model(HIDDEN, 1, 0, det.device_)
        self.epochs = size["epochs"]
        self.precision = det._precision()
        self.batch_size = det.batch_size

    def track_train_windows_per_second(self, device):
        from tsanomaly.detectors import lstm_ae
        from tsanomaly.kernels import lstm_torch

        def train():
            # The thread setting fit trains under (one intra-op thread on the CPU): PyTorch's
            # default on a 2-core machine measured 454-487 windows/s against 1,225-2,581 on one.
            with lstm_ae._training_threads(self.detector.device_):
                lstm_torch.train_model(
                    self.model,
                    self.windows,
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    lr=1e-3,
                    seed=0,
                    precision=self.precision,
                )

        seconds = _best_time(train, device, repeat=2)
        return self.windows.shape[0] * self.epochs / seconds

    def track_score_windows_per_second(self, device):
        seconds = _best_time(lambda: self.detector.score(self.new), device)
        n_ctx, n_new = self.new.shape
        return n_ctx * n_new / seconds


if __name__ == "__main__":  # quick look without ASV: python benchmarks/bench_lstm.py [cpu|cuda]
    import sys

    for device in sys.argv[1:] or ["cpu"]:
        bench = LSTMThroughput()
        try:
            bench.setup(device)
        except NotImplementedError as exc:
            print(f"{device}: skipped ({exc})")
            continue
        train = bench.track_train_windows_per_second(device)
        score = bench.track_score_windows_per_second(device)
        print(f"{device}: train {train:,.0f} windows/s, score {score:,.0f} windows/s")
