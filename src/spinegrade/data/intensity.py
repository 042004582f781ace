"""Intensity normalisation of MR volumes, whose raw values have no absolute scale between scanners."""

from __future__ import annotations

import numpy as np


def normalize(pixels: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Scale a series (any shape) to float32 in [0, 1] between its `lower` and `upper` percentiles.

    Percentiles rather than min/max so that a few hot or dark pixels do not squash the contrast; values
    beyond them are clipped. A constant input gives zeros (not NaN). Float throughout, never a uint8 cast.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100 percentiles, got lower={lower}, upper={upper}")
    values = np.asarray(pixels, dtype=np.float32)
    if values.size == 0:
        return values.copy()
    if not np.isfinite(values).all():
        raise ValueError(
            f"cannot normalise pixels holding {np.count_nonzero(~np.isfinite(values))} NaN/inf values"
        )
    low, high = (float(v) for v in np.percentile(values, [lower, upper]))
    if not high > low:
        return np.zeros_like(values)
    out = (values - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out)
