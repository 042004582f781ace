"""The fold plan: one study-level cross-validation split per dataset, shared by every stage.

Folds are assigned once, by study, stratified on the study's labels (condition group x severity, with
StratifiedGroupKFold so severe cases - rare, weighted 4x by the score - spread evenly), from *all*
labelled targets of train.csv, so a study without any point still gets a fold. The plan is written as
folds.csv (study_id, fold) and identified by the SHA-256 of that file; `prepare`, `train`, `train-locator`
and `cv` read the same plan (or the one given with --folds-file), so a fold's validation studies are the
same for the locators and the classifiers. A random row split would leak a patient's other levels.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from spinegrade.crops.defaults import DEFAULT_FOLDS
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITION_GROUPS, GROUP_OF_CONDITION

FOLDS_FILE: Final = "folds.csv"


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


def folds_csv(folds: pd.Series) -> str:
    """The plan as folds.csv text: study_id,fold sorted by study (the bytes its hash is taken of)."""
    frame = folds.rename("fold").rename_axis("study_id").sort_index().reset_index()
    return frame.astype({"study_id": "int64", "fold": "int64"}).to_csv(index=False)


def folds_hash(folds: pd.Series) -> str:
    """SHA-256 (hex) of the plan's folds.csv text: two runs with the same hash used the same split."""
    return hashlib.sha256(folds_csv(folds).encode()).hexdigest()


def write_folds(path: str | os.PathLike[str], folds: pd.Series) -> str:
    """Write the plan to `path` atomically; returns its hash."""
    from spinegrade.fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, folds_csv(folds))
    return folds_hash(folds)


def read_folds(path: str | os.PathLike[str]) -> pd.Series:
    """A folds.csv (study_id, fold) -> study_id -> fold; DataError names the file and row at fault."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fold plan {path} does not exist; write one with `spinegrade prepare` or `cv`")
    frame = pd.read_csv(path)
    missing = [c for c in ("study_id", "fold") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected study_id,fold")
    for column in ("study_id", "fold"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round()) | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = frame[column].iloc[row]
            raise DataError(f"{path} row {row + 2}: {column} {value!r} is not a whole number")
    if frame["study_id"].duplicated().any():
        row = int(np.flatnonzero(frame["study_id"].duplicated().to_numpy())[0])
        raise DataError(f"{path} row {row + 2}: study {frame['study_id'].iloc[row]} appears twice")
    folds = frame.set_index(frame["study_id"].astype(np.int64))["fold"].astype(np.int64)
    if folds.nunique() < 2:
        raise DataError(f"{path} holds {folds.nunique()} fold(s); a plan needs at least 2")
    return folds.rename("fold").rename_axis("study_id")


def fold_plan(
    labels: pd.DataFrame,
    *,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    folds_file: str | os.PathLike[str] | None = None,
) -> pd.Series:
    """The dataset's plan: read from `folds_file` when given (every labelled study must be in it), else
    assigned from the long labels [study_id, condition, severity] of all labelled targets."""
    if folds_file is None:
        return study_folds(labels, n_folds=n_folds, seed=seed)
    folds = read_folds(folds_file)
    absent = np.setdiff1d(labels["study_id"].unique(), folds.index.to_numpy())
    if len(absent):
        raise DataError(
            f"fold plan {folds_file} has no fold for {len(absent)} labelled studies "
            f"(e.g. {', '.join(map(str, absent[:5]))}); it was made for another dataset"
        )
    return folds


def plan_summary(folds: pd.Series) -> dict[str, object]:
    """What a run records about its plan: number of folds, studies per fold and the hash."""
    return {
        "n_folds": int(folds.max()) + 1,
        "studies_per_fold": {int(k): int(v) for k, v in folds.value_counts().sort_index().items()},
        "sha256": folds_hash(folds),
    }
