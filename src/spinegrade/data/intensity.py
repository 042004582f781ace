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
    smallest, largest = float(values.min()), float(values.max())  # NaN when any value is NaN
    if not (np.isfinite(smallest) and np.isfinite(largest)):
        raise ValueError(
            f"cannot normalise pixels holding {np.count_nonzero(~np.isfinite(values))} NaN/inf values"
        )
    low, high = percentiles(values, (lower, upper), (smallest, largest))
    if not high > low:
        return np.zeros_like(values)
    out = np.subtract(values, low, dtype=np.float32)  # in place from here: (values - low) / (high - low)
    np.divide(out, high - low, out=out)
    return np.clip(out, 0.0, 1.0, out=out)


# Integer-valued pixels spanning at most this many values take the counting path in `percentiles`.
_COUNTING_RANGE = 1 << 20
# Values counted per pass, so that the int64 copy of a chunk stays in cache
# (measured: docs/results.md#reading-dicom).
_CHUNK = 1 << 18


def percentiles(
    values: np.ndarray, q: tuple[float, ...], extremes: tuple[float, float] | None = None
) -> list[float]:
    """np.percentile(values, q) (linear interpolation), by counting when the values are whole numbers in
    a modest range (DICOM pixels: 12-16 bit), which is faster and gives the same result
    (measured: docs/results.md#reading-dicom).
    `extremes`: (min, max) of the values when the caller has them."""
    flat = values.ravel()
    low, high = extremes if extremes is not None else (float(flat.min()), float(flat.max()))
    counts = _counts(flat, low, high) if high - low < _COUNTING_RANGE else None
    if counts is None:
        return [float(v) for v in np.percentile(flat, q)]
    cumulative = np.cumsum(counts)
    out = []
    for rank in np.asarray(q, dtype=np.float64) / 100 * (flat.size - 1):
        below = int(np.floor(rank))
        at = np.searchsorted(cumulative, [below + 1, min(below + 2, flat.size)])  # sorted[below], [below+1]
        a, b = low + float(at[0]), low + float(at[1])
        out.append(a + (b - a) * (rank - below))
    return out


def _counts(flat: np.ndarray, low: float, high: float) -> np.ndarray | None:
    """How often each whole number low..high occurs in `flat`, or None when a value is not whole."""
    if not (low.is_integer() and high.is_integer()):
        return None
    counts = np.zeros(int(high - low) + 1, dtype=np.int64)
    buffer = np.empty(min(_CHUNK, flat.size), dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        whole = buffer[: part.size]
        np.copyto(whole, part, casting="unsafe")
        if not np.array_equal(whole, part):
            return None
        if low:
            whole -= int(low)
        counts += np.bincount(whole, minlength=counts.size)
    return counts
