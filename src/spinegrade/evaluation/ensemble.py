"""Averaging predictions of several models: in probability space or in logit space, optionally weighted.

Probability space is the arithmetic mean of the probabilities; logit space averages log-probabilities (the
logits up to a per-row constant) and takes the softmax, a renormalised geometric mean that lets a
confident model count more. Used by prediction's Ensemble (runs, mirrored views) and for OOF files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.evaluation.score import clip_normalize
from spinegrade.vocab import SEVERITIES

SPACES: Final = ("probability", "logit")


def model_weights(weights: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    """Normalised weights of n models (equal when None); DataError for a wrong count or a bad weight."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"ensemble weights {list(weights)}: give {n} finite weights >= 0, not all zero")
    return w / w.sum()


def average_probabilities(
    probs: Sequence[np.ndarray],
    weights: Sequence[float] | np.ndarray | None = None,
    space: str = "probability",
) -> np.ndarray:
    """The (n, 3) average of models' (n, 3) probabilities in `space` (see the module doc)."""
    if space not in SPACES:
        raise DataError(f"ensemble space {space!r} unknown; use {' or '.join(SPACES)}")
    if not probs:
        raise DataError("nothing to average: no model predictions")
    w = model_weights(weights, len(probs))
    if space == "probability":
        return sum(wi * np.asarray(p, np.float64) for wi, p in zip(w, probs, strict=True))
    logits = sum(wi * np.log(clip_normalize(p, 1e-7)) for wi, p in zip(w, probs, strict=True))
    out = np.exp(logits - logits.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def average_submissions(
    frames: Sequence[pd.DataFrame], weights: Sequence[float] | None = None, space: str = "probability"
) -> pd.DataFrame:
    """Submission frames (row_id, normal_mild, moderate, severe) of the same rows averaged in `space`;
    rows in the first frame's order."""
    if not frames:
        raise DataError("nothing to average: no submissions")
    order = frames[0]["row_id"]
    aligned = []
    for i, frame in enumerate(frames):
        indexed = frame.set_index("row_id")
        if len(indexed) != len(order) or not indexed.index.isin(order).all():
            raise DataError(f"submission {i} does not predict the same rows as submission 0")
        aligned.append(indexed.loc[order, list(SEVERITIES)].to_numpy(np.float64))
    out = pd.DataFrame({"row_id": order.to_numpy()})
    out[list(SEVERITIES)] = average_probabilities(aligned, weights, space)
    return out
