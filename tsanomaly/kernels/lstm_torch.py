"""PyTorch core of the LSTM autoencoder: the model, its training loop and batched reconstruction.

Device-agnostic: every function takes a ``torch.device`` (or a string such as
``"cpu"``/``"cuda"``) and works on tensors of that device, so the detector
(:mod:`tsanomaly.detectors.lstm_ae`) never branches on the device beyond
choosing it.  This module imports torch at the top; the detector imports this
module lazily, so ``import tsanomaly`` never needs torch.

Model (Malhotra et al. 2016, "LSTM-based Encoder-Decoder for Multi-sensor
Anomaly Detection", ICML anomaly detection workshop): an encoder LSTM reads
the window; a decoder LSTM, started from the encoder's final state,
reconstructs the window in reverse order (newest point first); a linear
read-out maps each decoder state to one value.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

__all__ = [
    "LSTMAutoencoder",
    "build_model",
    "model_arrays",
    "load_model_arrays",
    "train_model",
    "reconstruct",
    "PRECISIONS",
]

#: Arithmetic modes: plain float32, or float16 autocast (CUDA only) with loss scaling.
PRECISIONS = ("float32", "mixed")


class LSTMAutoencoder(nn.Module):
    """LSTM encoder-decoder that reconstructs a univariate window.

    Parameters
    ----------
    hidden : int
        Units of each LSTM layer (the size of the code).
    layers : int
        Stacked LSTM layers in the encoder and in the decoder.

    Notes
    -----
    The decoder is started from the encoder's final ``(h, c)`` and fed zero
    inputs, so it must rebuild the window from the code alone.  Malhotra et
    al. feed the decoder the true previous value while training and its own
    prediction at inference; we feed nothing, because (a) a decoder that sees
    the true values can learn to copy them, which makes anomalies easy to
    reconstruct, (b) training and inference then run the same computation,
    and (c) the whole decoder is one fused ``nn.LSTM`` call (cuDNN on the
    GPU) instead of a Python loop over time steps.  As in the paper, the
    decoder emits the window newest point first; :meth:`forward` flips it back
    into time order.
    """

    def __init__(self, hidden: int, layers: int = 1):
        super().__init__()
        self.encoder = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=layers, batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, newest: int | None = None) -> torch.Tensor:
        """Reconstruct a batch of windows, or only their newest points.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, window)
            Scaled windows, oldest point first.
        newest : int, optional
            Reconstruct only the newest ``newest`` points of each window (at
            least 1, at most ``window``); None: the whole window (training).

        Returns
        -------
        torch.Tensor, shape (batch, window) or (batch, newest)
            Reconstructions, oldest point first.

        Notes
        -----
        The decoder emits the newest point first and its step ``i`` depends
        only on the code and on steps ``0 .. i-1`` (its inputs are zeros), so
        running it for ``newest`` steps gives the first ``newest`` outputs of
        the full run, and the older points' decoder steps, which scoring never
        reads, are not run at all.  On the CPU the outputs are the same bit
        for bit (each step is the same computation whatever the length); on
        CUDA cuDNN may pick another kernel for another length, so there they
        agree within rounding only.
        """
        _, state = self.encoder(x.unsqueeze(-1))
        length = x.shape[1] if newest is None else int(newest)
        if not 1 <= length <= x.shape[1]:
            raise ValueError(f"newest={newest} is outside 1..{x.shape[1]} (the window)")
        # Zero inputs (see the class notes); `new_zeros` keeps the device and dtype of x.
        steps = x.new_zeros(x.shape[0], length, 1)
        decoded, _ = self.decoder(steps, state)
        # The read-out Linear(hidden, 1) written as multiply-and-sum: on the CPU a
        # matrix-vector product rounds a row differently depending on its position in the
        # batch, whereas a row-wise sum treats every row alike (batch-invariant scores).
        reversed_out = (decoded * self.readout.weight[0]).sum(dim=-1) + self.readout.bias[0]  # newest first
        return reversed_out.flip(1)


def build_model(hidden: int, layers: int, seed: int, device) -> LSTMAutoencoder:
    """A freshly initialised autoencoder on ``device``, its weights drawn from ``seed``.

    The initialisation runs on the CPU under a forked RNG, so the same seed
    gives the same initial weights on every device and the caller's global
    torch RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = LSTMAutoencoder(hidden, layers)
    return model.to(device)


def model_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters as float32 NumPy arrays, by ``state_dict`` name."""
    state = model.state_dict()
    return {name: tensor.detach().to("cpu", torch.float32).numpy().copy() for name, tensor in state.items()}


def load_model_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> nn.Module:
    """Load ``arrays`` (as written by :func:`model_arrays`) into ``model`` with ``load_state_dict``.

    ``strict=True``: a missing or unexpected name, or a shape that does not
    match the model, raises instead of silently leaving random weights.
    """
    device = next(model.parameters()).device
    state = {
        # torch.tensor copies: the arrays may be read-only (a memory-mapped file), which from_numpy would wrap
        name: torch.tensor(np.asarray(value, dtype=np.float32), device=device)
        for name, value in arrays.items()
    }
    model.load_state_dict(state, strict=True)
    return model


def _autocast(device: torch.device, precision: str):
    """Context for a forward pass: float16 autocast for ``"mixed"`` on CUDA, else nothing."""
    if precision == "mixed" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _ieee_float32(device: torch.device):
    """On CUDA, keep cuDNN's LSTM kernels in true float32 (no TF32) inside the block.

    PyTorch lets cuDNN run float32 RNNs on TF32 tensor cores (10-bit
    mantissa) by default, which would put GPU scores far outside the stated
    CPU agreement.  The previous setting is restored on exit.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    rnn = getattr(cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):  # torch >= 2.9: per-operator flags
        saved = rnn.fp32_precision
        rnn.fp32_precision = "ieee"
        try:
            yield
        finally:
            rnn.fp32_precision = saved
    else:
        saved = cudnn.allow_tf32
        cudnn.allow_tf32 = False
        try:
            yield
        finally:
            cudnn.allow_tf32 = saved


def train_model(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    precision: str = "float32",
) -> np.ndarray:
    """Train ``model`` to reconstruct ``windows`` (mean squared error, Adam).

    Parameters
    ----------
    model : LSTMAutoencoder
        Trained in place, on the device of its parameters.
    windows : torch.Tensor, shape (n_windows, window), float32
        Scaled training windows, already on the model's device: the whole
        training set lives there and each batch is an index slice of it, so
        the loop makes no host-device copies. NaN marks a missing point: it
        enters the network as 0 (the context's median) and is left out of the
        loss, which is then the mean squared error over the observed points of
        the batch (without any NaN in ``windows``, the plain mean, computed as
        before, bit for bit).
    epochs, batch_size, lr : int, int, float
        Passes over the data, windows per step, Adam learning rate.
    seed : int
        Seeds the shuffling (one permutation of the window indices per epoch).
    precision : {"float32", "mixed"}
        ``"mixed"``: float16 autocast with dynamic loss scaling on CUDA;
        identical to ``"float32"`` on the CPU.

    Returns
    -------
    numpy.ndarray, shape (epochs,)
        Mean training loss of each epoch (copied to the host once, at the end).
    """
    device = windows.device
    n = windows.shape[0]
    losses = torch.zeros(epochs, device=device)
    if n == 0 or epochs == 0:
        return losses.cpu().numpy()
    # Decided once for the whole set (one device-host sync): a set without a missing point
    # trains exactly as before the mask existed.
    masked = bool(torch.isnan(windows).any())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    use_scaler = precision == "mixed" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    model.train()
    with _ieee_float32(device):
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator, device=device)
            for start in range(0, n, batch_size):
                batch = windows[order[start : start + batch_size]]  # an index slice, on the device
                if masked:
                    observed = ~torch.isnan(batch)
                    batch = torch.nan_to_num(batch, nan=0.0)
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, precision):
                    recon = model(batch)
                if masked:
                    # Missing points are left out of the loss (the batch's observed points weigh
                    # alike); every window holds some, so the count is never 0.
                    squared = torch.where(observed, (recon.float() - batch) ** 2, 0.0)
                    loss = squared.sum() / observed.sum()
                else:
                    loss = torch.mean((recon.float() - batch) ** 2)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                # Accumulated on the device: no .item() (a sync and a copy) inside the loop.
                losses[epoch] += loss.detach() * batch.shape[0]
    model.eval()
    return (losses / n).cpu().numpy()


@torch.inference_mode()
def reconstruct(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int,
    precision: str = "float32",
    pad_batches: bool = False,
    newest: int | None = None,
) -> torch.Tensor:
    """Reconstructions of ``windows`` (or of their newest points), computed in batches.

    Parameters
    ----------
    model : LSTMAutoencoder
    windows : torch.Tensor, shape (n_windows, window)
        Scaled windows on the model's device (a strided view is fine; each
        batch is made contiguous on its own).
    batch_size : int
        Windows per forward pass.
    precision : {"float32", "mixed"}
    pad_batches : bool
        Pad the last batch with zero windows to ``batch_size``, so that every
        forward pass has the same shape.  With a power-of-two ``batch_size``
        on the CPU this makes each window's reconstruction independent of the
        other windows of the call (no vector-loop tails, one thread split),
        so a context scores bit for bit the same alone or in any panel.
    newest : int, optional
        Reconstruct only the newest ``newest`` points of each window (see
        :meth:`LSTMAutoencoder.forward`): the decoder runs ``newest`` steps
        instead of ``window``.  Scoring reads only the newest few points of
        each window (8 of 48), so this skips most of the decoder's work; on
        the CPU the values equal the matching columns of the full
        reconstruction bit for bit.  None: the whole window.

    Returns
    -------
    torch.Tensor, shape (n_windows, window) or (n_windows, newest)
        Oldest point first, on the model's device, in the dtype of
        ``windows`` (float32 under ``"mixed"``: the float16 outputs are
        widened).
    """
    model.eval()
    device = windows.device
    n, window = windows.shape
    out = torch.empty((n, window if newest is None else int(newest)), dtype=windows.dtype, device=device)
    with _ieee_float32(device):
        for start in range(0, n, batch_size):
            batch = windows[start : start + batch_size]
            rows = batch.shape[0]
            if pad_batches and rows < batch_size:
                batch = torch.cat([batch, batch.new_zeros(batch_size - rows, batch.shape[1])])
            with _autocast(device, precision):
                out[start : start + rows] = model(batch.contiguous(), newest)[:rows].to(out.dtype)
    return out
