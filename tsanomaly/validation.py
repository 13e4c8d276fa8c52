"""Parameter checks shared by the detectors and the thresholds: one rule, one wording."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["is_int", "check_flag"]


def is_int(value) -> bool:
    """True for Python and NumPy integers; False for bools (``True`` is no window length)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_flag(value, name: str) -> None:
    """Raise ValueError unless ``value`` is a Python or NumPy bool.

    A truthy string or number (``"no"``, ``0.0``) would otherwise be read silently.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
