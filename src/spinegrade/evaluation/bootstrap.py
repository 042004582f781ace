"""Bootstrap intervals of the challenge score over studies (the unit that is sampled, as in the test set).

Every part of the score is a ratio of sums over rows (weighted log loss / weights) or over studies (any
severe spinal), so each study is reduced once to its sums; a resample is then a count vector over studies
and all resamples are one matrix product - thousands of resamples of 2,000 studies take well under a second.
A study drawn twice counts twice, in any_severe_spinal too. `bootstrap_difference` scores two predictions
of the same rows on the same resamples, so the interval of their difference is paired.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.evaluation.score import (
    GROUPS,
    SCORE_PARTS,
    ScoredRows,
    any_severe_spinal,
    predicted_rows,
    scored_rows,
)


def study_sums(rows: ScoredRows) -> tuple[np.ndarray, np.ndarray]:
    """(study ids, sums (n_studies, 8)): per part, the weighted loss sum and the weight sum of each study."""
    studies, at = np.unique(rows.study_id, return_inverse=True)
    sums = np.zeros((len(studies), 2 * len(SCORE_PARTS)))
    weight, nll = rows.weight, rows.nll
    for g in range(len(GROUPS)):
        member = rows.group == g
        sums[:, 2 * g] = np.bincount(at[member], weights=(weight * nll)[member], minlength=len(studies))
        sums[:, 2 * g + 1] = np.bincount(at[member], weights=weight[member], minlength=len(studies))
    label, prob, study_weight = any_severe_spinal(rows)
    spinal_ids = pd.unique(rows.study_id[rows.group == GROUPS.index("spinal")])
    binary = -(label * np.log(prob) + (1.0 - label) * np.log1p(-prob))
    where = np.searchsorted(studies, spinal_ids)
    sums[where, -2] = binary * study_weight
    sums[where, -1] = study_weight
    return studies, sums


def _scores(sums: np.ndarray) -> np.ndarray:
    """Score and parts (m, 5) from summed statistics (m, 8); a part without weight is NaN and left out."""
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = sums[:, 0::2] / sums[:, 1::2]
    score = np.nanmean(np.where(np.isfinite(parts), parts, np.nan), axis=1)
    return np.column_stack([score, parts])


def _counts(n_studies: int, n: int, seed: int) -> np.ndarray:
    """(n, n_studies): how often each study is drawn in each of n resamples with replacement."""
    if n < 1:
        raise ValueError(f"need n >= 1 resamples, got {n}")
    draws = np.random.default_rng(seed).integers(0, n_studies, size=(n, n_studies))
    counts = np.zeros((n, n_studies))
    np.add.at(counts, (np.repeat(np.arange(n), n_studies), draws.ravel()), 1.0)
    return counts


def _bounds(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"need 0 < level < 1, got level={level}")
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_interval(
    frame: pd.DataFrame, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """The score and its parts with a percentile bootstrap interval over studies.

    `frame` is challenge_score's input (study_id, condition, level, severity, normal_mild, moderate,
    severe). Returns {"score" | part: {"value", "low", "high"}}; "value" equals challenge_score(frame).
    """
    _, sums = study_sums(scored_rows(frame))
    resampled = _scores(_counts(len(sums), n, seed) @ sums)
    value = _scores(sums.sum(axis=0, keepdims=True))[0]
    low, high = _bounds(resampled, level)
    names = ("score", *SCORE_PARTS)
    return {
        name: {"value": float(value[i]), "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate(names)
    }


def submission_interval(
    labels: pd.DataFrame, pred: pd.DataFrame, n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """{"score", "low", "high", "n"}: the challenge score of `pred` (submission format) against
    train.csv-format `labels` on the targets it predicts, with its interval over n study resamples."""
    _, sums = study_sums(predicted_rows(labels, pred))
    resampled = _scores(_counts(len(sums), n, seed) @ sums)[:, 0]
    low, high = _bounds(resampled, level)
    return {
        "score": float(_scores(sums.sum(0, keepdims=True))[0, 0]),
        "low": float(low),
        "high": float(high),
        "n": n,
    }


def bootstrap_difference(
    labels: pd.DataFrame,
    pred: pd.DataFrame,
    baseline: pd.DataFrame,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """{"score", "low", "high", "n", "parts"} of score(pred) - score(baseline) on the same study resamples
    (paired; "parts": the same per part of the score); negative = pred is better. Both must predict the same
    labelled targets."""
    a, b = predicted_rows(labels, pred), predicted_rows(labels, baseline)
    key_a = sorted(zip(a.study_id.tolist(), a.condition.tolist(), a.level.tolist(), strict=True))
    key_b = sorted(zip(b.study_id.tolist(), b.condition.tolist(), b.level.tolist(), strict=True))
    if key_a != key_b:
        raise DataError("bootstrap_difference: the two predictions score different labelled targets")
    (_, sums_a), (_, sums_b) = study_sums(a), study_sums(b)  # same studies, in the same (sorted) order
    counts = _counts(len(sums_a), n, seed)
    values = _scores(counts @ sums_a) - _scores(counts @ sums_b)
    low, high = _bounds(values, level)
    point = _scores(sums_a.sum(0, keepdims=True))[0] - _scores(sums_b.sum(0, keepdims=True))[0]
    parts = {
        name: {"value": float(point[i]), "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate(SCORE_PARTS, start=1)
    }
    return {"score": float(point[0]), "low": float(low[0]), "high": float(high[0]), "n": n, "parts": parts}
