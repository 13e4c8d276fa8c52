"""Per-context location and scale that detectors share: median and a floored robust sigma.

Scores that must be comparable across contexts (a country with a million logins an hour
and an ASN with ten) are expressed in units of each context's own spread. The spread is
robust (a burst in the history must not make every later burst look small) and floored
(a mostly-zero count series has a MAD of 0).
"""
from __future__ import annotations

import warnings

from tsanomaly import backend

__all__ = ["MAD_TO_SIGMA", "MEAN_ABS_TO_SIGMA", "robust_center_scale"]

#: 1.4826 x MAD estimates the standard deviation of Gaussian data.
MAD_TO_SIGMA = 1.4826

#: sqrt(pi / 2) x the mean absolute deviation estimates the standard deviation of Gaussian data.
MEAN_ABS_TO_SIGMA = 1.2533

# Floors of the per-context scale (see robust_center_scale).  The mean-deviation floor
# matters for sparse counts (a context with mostly zero registrations has MAD 0): with
# half this floor the LSTM autoencoder's scaled values reached 5-10 and dominated its
# training loss, and on make_security_panel data the AUC-ROC of its newest-point error fell
# from 0.86 to 0.72.
_MEAN_DEV_FLOOR = 1.0
_REL_SCALE_FLOOR = 1e-3


def robust_center_scale(values):
    """Median and robust scale of each row, ignoring NaN.

    The scale is ``1.4826 * MAD``, floored so that sparse and flat rows still
    get a positive value that scales with the data: at least ``1.2533 *`` the
    mean absolute deviation from the median (the same estimate of sigma for
    Gaussian data; non-zero unless the row is constant, whereas the MAD of a
    mostly-zero count series is 0), at least ``1e-3 * |median|`` (a constant
    row), and 1 for a row of zeros (or of NaN).

    Parameters
    ----------
    values : array, shape (n_contexts, n_times), NumPy or CuPy
        NaN marks a missing value (replace inf by NaN first).

    Returns
    -------
    center, scale : arrays of shape (n_contexts,), of the same array module.
    """
    xp = backend.array_module(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, replaced below
        center = xp.nanmedian(values, axis=1)
        dev = xp.abs(values - center[:, None])
        mad = MAD_TO_SIGMA * xp.nanmedian(dev, axis=1)
        mean_dev = MEAN_ABS_TO_SIGMA * xp.nanmean(dev, axis=1)
    center = xp.nan_to_num(center, nan=0.0)
    scale = xp.maximum(xp.nan_to_num(mad, nan=0.0), _MEAN_DEV_FLOOR * xp.nan_to_num(mean_dev, nan=0.0))
    scale = xp.maximum(scale, _REL_SCALE_FLOOR * xp.abs(center))
    scale = xp.where(scale > 0, scale, 1.0)
    return center, scale
