"""tsanomaly: GPU-accelerated anomaly detection for many short per-context time series."""
from tsanomaly.backend import GPUUnavailableError, gpu_available, resolve_device

__version__ = "0.1.0"
