"""Parameter checks shared by the detectors and the thresholds: one rule, one wording."""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["is_int", "is_finite_real", "check_flag"]


def is_int(value) -> bool:
    """True for Python and NumPy integers; False for bools (``True`` is no window length)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_finite_real(value) -> bool:
    """True for finite Python and NumPy real numbers (integers included); False for bools,
    NaN, +-inf and anything that is not a number (``"nan"`` from a command line).

    Numeric parameters are checked with this before their range: every comparison with NaN
    is False, so a refusal written as ``value < 0`` lets NaN through, and inf accepted as a
    scale or a step turns scores into 0 or NaN. An integer too large for a float (``10**400``)
    is False too: the parameters are used as floats, where it would be inf (``math.isfinite``
    raised OverflowError on it, a traceback from ``--param contamination=1000...``).
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_flag(value, name: str) -> None:
    """Raise ValueError unless ``value`` is a Python or NumPy bool.

    A truthy string or number (``"no"``, ``0.0``) would otherwise be read silently.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
