"""Per-(condition, level) class priors: the best constant predictions, for missing series and baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.vocab import SEVERITIES, SEVERITY_WEIGHTS, TARGETS


def level_priors(labels_long: pd.DataFrame, weighted: bool = False, smoothing: float = 0.5) -> pd.DataFrame:
    """Class frequencies of each (condition, level) of labels_long[study_id, condition, level, severity 0..2].

    weighted=False gives the plain frequencies (the log-loss-optimal constant). weighted=True multiplies them
    by the challenge's sample weights 1/2/4 and renormalises: the constant that minimises the *weighted* log
    loss of each level (the per-group terms of the challenge score). A (condition, level) without any label
    gets the frequencies pooled over all labels. `smoothing` is a pseudo-count added to every class (0.5: the
    Jeffreys prior), so a class unseen in a small sample (a fold of a phantom) does not get probability 0
    and an infinite log loss; on the real 1,975 studies it moves the scores by < 0.001.
    Returns DataFrame[condition, level, normal_mild, moderate, severe], one row per target (TARGETS order).
    """
    missing = {"condition", "level", "severity"} - set(labels_long.columns)
    if missing:
        raise DataError(f"level_priors: labels lack column(s) {', '.join(sorted(missing))}")
    if labels_long.empty:
        raise DataError("level_priors: no labels to compute priors from")
    counts = pd.crosstab([labels_long["condition"], labels_long["level"]], labels_long["severity"])
    counts = counts.reindex(columns=range(len(SEVERITIES)), fill_value=0)
    counts = counts.reindex(pd.MultiIndex.from_tuples(TARGETS, names=["condition", "level"]))
    pooled = counts.sum().to_numpy(dtype=np.float64)
    values = counts.to_numpy(dtype=np.float64, copy=True)
    values[np.isnan(values).any(axis=1)] = pooled
    values += smoothing
    if weighted:
        values = values * np.asarray(SEVERITY_WEIGHTS)
    values /= values.sum(axis=1, keepdims=True)
    out = pd.DataFrame(values, columns=list(SEVERITIES))
    out.insert(0, "level", [lv for _, lv in TARGETS])
    out.insert(0, "condition", [c for c, _ in TARGETS])
    return out
