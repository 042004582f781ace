"""Bootstrap intervals of the challenge score over studies (the unit the folds and the metric share).

Each resample draws studies with replacement; a study drawn twice counts twice, also in
any_severe_spinal (its copies get distinct ids). `bootstrap_difference` scores two predictions of the
same rows on the same resamples, so the interval of their difference is paired. The labelled targets
that a prediction lacks are not scored (evaluation.score.predicted_rows).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.evaluation.score import ScoredRows, predicted_rows, score_rows


def _rows(labels: pd.DataFrame, pred: pd.DataFrame) -> ScoredRows:
    return predicted_rows(labels, pred)


def _resamples(study_id: np.ndarray, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n resamples of rows: (row positions, new study ids), the same for any rows ordered alike."""
    studies, inverse = np.unique(study_id, return_inverse=True)
    rows_of = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        drawn = rng.integers(0, len(studies), len(studies))
        positions = np.concatenate([rows_of[s] for s in drawn])
        new_id = np.repeat(np.arange(len(drawn)), [len(rows_of[s]) for s in drawn])
        out.append((positions, new_id))
    return out


def _take(rows: ScoredRows, positions: np.ndarray, new_id: np.ndarray) -> ScoredRows:
    return replace(
        rows,
        study_id=new_id,
        condition=rows.condition[positions],
        level=rows.level[positions],
        severity=rows.severity[positions],
        probs=rows.probs[positions],
        severe_raw=rows.severe_raw[positions],
    )


def _interval(values: np.ndarray, point: float, n: int) -> dict:
    low, high = np.quantile(values, [0.025, 0.975])
    return {"score": point, "low": float(low), "high": float(high), "n": n}


def bootstrap_interval(labels: pd.DataFrame, pred: pd.DataFrame, n: int = 1000, seed: int = 0) -> dict:
    """{"score", "low", "high", "n"}: the challenge score of `pred` (submission format) against
    train.csv-format `labels` and its 95% percentile interval over n study resamples."""
    rows = _rows(labels, pred)
    values = np.array([score_rows(_take(rows, p, s))["score"] for p, s in _resamples(rows.study_id, n, seed)])
    return _interval(values, score_rows(rows)["score"], n)


def bootstrap_difference(
    labels: pd.DataFrame, pred: pd.DataFrame, baseline: pd.DataFrame, n: int = 1000, seed: int = 0
) -> dict:
    """{"score", "low", "high", "n"} of score(pred) - score(baseline) on the same study resamples (paired);
    negative = pred is better. Both must predict the same labelled targets."""
    a, b = _rows(labels, pred), _rows(labels, baseline)
    key_a = np.stack([a.study_id, a.condition, a.level], axis=1)
    key_b = np.stack([b.study_id, b.condition, b.level], axis=1)
    order_a = np.lexsort(key_a.T[::-1])
    order_b = np.lexsort(key_b.T[::-1])
    if len(a) != len(b) or not np.array_equal(key_a[order_a], key_b[order_b]):
        raise DataError("bootstrap_difference: the two predictions score different labelled targets")
    a = _take(a, order_a, a.study_id[order_a])
    b = _take(b, order_b, b.study_id[order_b])
    values = np.array(
        [
            score_rows(_take(a, p, s))["score"] - score_rows(_take(b, p, s))["score"]
            for p, s in _resamples(a.study_id, n, seed)
        ]
    )
    return _interval(values, score_rows(a)["score"] - score_rows(b)["score"], n)
