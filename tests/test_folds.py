"""The fold plan: written and read back with its hash, shared by the stages, leak-free on the real CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import REAL_CSV_DIR

from spinegrade.crops.folds import fold_plan, folds_hash, read_folds, study_folds, write_folds
from spinegrade.crops.prepare import crop_plan
from spinegrade.data.tables import labels_long, load_rsna
from spinegrade.errors import DataError
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.train import split_studies


def _labels(n: int = 30) -> pd.DataFrame:
    rows = [
        (1000 + s, c, (s + i) % 3)
        for s in range(n)
        for i, c in enumerate(["spinal_canal_stenosis", "left_subarticular_stenosis"])
    ]
    return pd.DataFrame(rows, columns=["study_id", "condition", "severity"])


def test_plan_round_trips_with_its_hash_and_checks_coverage(tmp_path: Path) -> None:
    labels = _labels()
    folds = study_folds(labels, n_folds=3, seed=1)
    digest = write_folds(tmp_path / "folds.csv", folds)
    back = read_folds(tmp_path / "folds.csv")
    assert back.sort_index().equals(folds.sort_index()) and folds_hash(back) == digest
    assert folds_hash(study_folds(labels, n_folds=3, seed=2)) != digest
    assert fold_plan(labels, folds_file=tmp_path / "folds.csv").equals(back)
    with pytest.raises(DataError, match="no fold for 1 labelled studies"):
        fold_plan(_labels(31), folds_file=tmp_path / "folds.csv")
    (tmp_path / "bad.csv").write_text("study_id,fold\n1,0\n2,x\n")
    with pytest.raises(DataError, match=r"bad\.csv row 3: fold 'x'"):
        read_folds(tmp_path / "bad.csv")


@pytest.mark.skipif(not (REAL_CSV_DIR / "train.csv").is_file(), reason="real CSVs absent")
def test_real_csvs_locator_and_classifier_hold_out_the_same_studies() -> None:
    data = load_rsna(REAL_CSV_DIR, "train")
    rows, plan = crop_plan(data, n_folds=5, seed=0)  # what `prepare` puts in the cache's fold column
    assert set(plan.index) == set(data.labels["study_id"])
    for fold in range(5):
        folds, train_ids, val_ids = split_studies(data, LocatorSettings(fold=fold, n_folds=5, seed=0))
        assert folds_hash(folds) == folds_hash(plan)
        classifier_val = set(rows.loc[rows["fold"] == fold, "study_id"])
        classifier_train = set(rows.loc[rows["fold"] != fold, "study_id"])
        with_points = set(rows["study_id"])
        assert classifier_val == val_ids & with_points and len(classifier_val) > 300
        assert not classifier_train & val_ids and not classifier_val & train_ids
    # stratified on the study's labels: severe rows spread evenly over the folds
    severe = labels_long(data.labels).query("severity == 2")["study_id"].map(plan).value_counts()
    assert severe.max() / severe.min() < 1.15
