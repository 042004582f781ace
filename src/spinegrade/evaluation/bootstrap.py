"""Bootstrap intervals of the challenge score over studies (the unit that is sampled, as in the test set).

Every part of the score is a ratio of sums over rows (weighted log loss / weights) or over studies (any
severe spinal), so each study is reduced once to its sums; a resample is then a count vector over studies
and all resamples are one matrix product - thousands of resamples of 2,000 studies take well under a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spinegrade.evaluation.score import GROUPS, SCORE_PARTS, ScoredRows, any_severe_spinal, scored_rows


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


def bootstrap_interval(
    frame: pd.DataFrame, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """The score and its parts with a percentile bootstrap interval over studies.

    `frame` is challenge_score's input (study_id, condition, level, severity, normal_mild, moderate,
    severe). Returns {"score" | part: {"value", "low", "high"}}; "value" equals challenge_score(frame).
    """
    if not 0 < level < 1 or n < 1:
        raise ValueError(f"need 0 < level < 1 and n >= 1, got level={level}, n={n}")
    _, sums = study_sums(scored_rows(frame))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n, len(sums)))
    counts = np.zeros((n, len(sums)))
    np.add.at(counts, (np.repeat(np.arange(n), len(sums)), draws.ravel()), 1.0)
    resampled = _scores(counts @ sums)
    value = _scores(sums.sum(axis=0, keepdims=True))[0]
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail], axis=0)
    names = ("score", *SCORE_PARTS)
    return {
        name: {"value": float(value[i]), "low": float(low[i]), "high": float(high[i])}
        for i, name in enumerate(names)
    }
