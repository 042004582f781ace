"""Study-level cross-validation folds: every crop of a study lands in the same fold.

Rows are stratified on condition group x severity, so severe cases (rare, weighted 4x by the score) are
spread evenly across folds. A random row split would leak a patient's other levels into validation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from spinegrade.crops.defaults import DEFAULT_FOLDS
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITION_GROUPS, GROUP_OF_CONDITION


def study_folds(labels: pd.DataFrame, n_folds: int = DEFAULT_FOLDS, seed: int = 0) -> pd.Series:
    """study_id -> fold (0..n_folds-1) from long labels [study_id, condition, severity (0..2)].

    Seeded and deterministic; raises DataError when there are fewer studies than folds.
    """
    missing = [c for c in ("study_id", "condition", "severity") if c not in labels.columns]
    if missing:
        raise DataError(f"labels for fold assignment lack column(s) {', '.join(missing)}")
    studies = labels["study_id"].to_numpy(np.int64)
    n_studies = len(np.unique(studies))
    if n_folds < 2 or n_studies < n_folds:
        raise DataError(f"cannot split {n_studies} studies into {n_folds} folds; need 2 <= folds <= studies")
    group = labels["condition"].map(GROUP_OF_CONDITION)
    if group.isna().any():
        bad = labels.loc[group.isna(), "condition"].iloc[0]
        raise DataError(f"labels for fold assignment have unknown condition {bad!r}")
    group_code = group.map({g: i for i, g in enumerate(CONDITION_GROUPS)}).to_numpy(np.int64)
    strata = group_code * 3 + labels["severity"].to_numpy(np.int64)
    from sklearn.model_selection import StratifiedGroupKFold  # here: crop workers import this module too

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = pd.Series(-1, index=pd.Index(np.unique(studies), name="study_id"), name="fold", dtype=np.int64)
    with warnings.catch_warnings():  # rare strata (few severe cases in small data) are balanced best-effort
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(np.zeros(len(studies)), strata, groups=studies))
    for i, (_, test) in enumerate(splits):
        fold.loc[np.unique(studies[test])] = i
    return fold
