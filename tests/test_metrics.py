"""Per-class metrics against scikit-learn, the ECE by hand, undefined metrics, and the level priors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from spinegrade.errors import DataError
from spinegrade.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    metrics_table,
    reliability_table,
    subset_metrics,
)
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import scored_rows
from spinegrade.vocab import LEVELS, SEVERITIES, TARGETS


def random_case(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_sklearn(seed: int) -> None:
    y, probs = random_case(seed)
    pred = probs.argmax(axis=1)
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["quadratic_kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    assert m["macro_roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    for average in ("macro", "weighted"):
        assert m[f"{average}_precision"] == pytest.approx(precision_score(y, pred, average=average))
        assert m[f"{average}_recall"] == pytest.approx(recall_score(y, pred, average=average))
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, pred, average=average))
    per_class_f1 = f1_score(y, pred, average=None)
    for c, name in enumerate(SEVERITIES):
        got = m["per_class"][name]
        assert got["support"] == int((y == c).sum())
        assert got["f1"] == pytest.approx(per_class_f1[c])
        assert got["roc_auc"] == pytest.approx(roc_auc_score(y == c, probs[:, c]))
        assert got["average_precision"] == pytest.approx(average_precision_score(y == c, probs[:, c]))
    json.dumps(m, allow_nan=False)  # strict JSON: no NaN anywhere


def test_expected_calibration_error_by_hand() -> None:
    # confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.35 (wrong) -> bins [0.9,1), [0.5,0.6), [0.3,0.4)
    probs = np.array([[0.95, 0.03, 0.02], [0.95, 0.03, 0.02], [0.25, 0.55, 0.20], [0.35, 0.33, 0.32]])
    y = np.array([0, 1, 1, 2])
    expected = (2 * abs(0.5 - 0.95) + 1 * abs(1.0 - 0.55) + 1 * abs(0.0 - 0.35)) / 4
    assert expected_calibration_error(y, probs) == pytest.approx(expected)
    table = reliability_table(y, probs)
    assert table["count"] == [0, 0, 0, 1, 0, 1, 0, 0, 0, 2]
    assert table["accuracy"][9] == pytest.approx(0.5) and table["confidence"][9] == pytest.approx(0.95)
    assert table["accuracy"][0] is None
    # a confidence of exactly 1.0 falls in the last bin
    assert reliability_table(np.array([0]), np.array([[1.0, 0.0, 0.0]]))["count"][9] == 1


def test_absent_classes_give_none_with_a_note_not_a_crash() -> None:
    y = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05]])
    m = classification_metrics(y, probs)
    assert m["per_class"]["severe"]["roc_auc"] is None
    assert m["per_class"]["severe"]["average_precision"] is None
    assert any(note.startswith("severe: ROC AUC") for note in m["notes"])
    assert m["macro_roc_auc"] == pytest.approx(np.mean([roc_auc_score(y == c, probs[:, c]) for c in (0, 1)]))
    single = classification_metrics(np.zeros(3, dtype=int), np.tile([0.9, 0.05, 0.05], (3, 1)))
    assert single["quadratic_kappa"] is None and single["macro_roc_auc"] is None
    json.dumps([m, single], allow_nan=False)


def test_bad_metric_inputs_raise() -> None:
    with pytest.raises(DataError, match=r"probs must be \(n, 3\)"):
        classification_metrics(np.array([0, 1]), np.ones((3, 3)) / 3)
    with pytest.raises(DataError, match="classes 0, 1, 2"):
        classification_metrics(np.array([0, 3]), np.ones((2, 3)) / 3)


def test_subset_metrics_cover_groups_and_levels() -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        [(s, c, lv) for s in range(8) for c, lv in TARGETS], columns=["study_id", "condition", "level"]
    )
    frame["severity"] = rng.choice(3, size=len(frame))
    frame[list(SEVERITIES)] = rng.dirichlet([1, 1, 1], size=len(frame))
    rows = scored_rows(frame)
    metrics = subset_metrics(rows)
    assert set(metrics["by_group"]) == {"spinal", "foraminal", "subarticular"}
    assert set(metrics["by_level"]) == set(LEVELS)
    assert metrics["by_group"]["spinal"]["n"] == 8 * 5
    spinal = rows.group == 0
    assert metrics["by_group"]["spinal"]["accuracy"] == pytest.approx(
        accuracy_score(rows.severity[spinal], rows.probs[spinal].argmax(axis=1))
    )
    expected = ["overall", "spinal", "foraminal", "subarticular", *LEVELS]
    assert list(metrics_table(metrics)["subset"]) == expected


def test_level_priors_plain_and_weighted_by_hand() -> None:
    labels = pd.DataFrame(
        {
            "study_id": [1, 2, 3, 4, 1, 2],
            "condition": ["spinal_canal_stenosis"] * 4 + ["left_subarticular_stenosis"] * 2,
            "level": ["l1_l2"] * 4 + ["l5_s1"] * 2,
            "severity": [0, 0, 1, 2, 0, 2],
        }
    )
    plain = level_priors(labels, smoothing=0).set_index(["condition", "level"])
    weighted = level_priors(labels, weighted=True, smoothing=0).set_index(["condition", "level"])
    assert len(plain) == len(TARGETS)
    np.testing.assert_allclose(plain.loc[("spinal_canal_stenosis", "l1_l2")], [2 / 4, 1 / 4, 1 / 4])
    # weighted: counts (2, 1, 1) * (1, 2, 4) = (2, 2, 4) -> / 8
    np.testing.assert_allclose(weighted.loc[("spinal_canal_stenosis", "l1_l2")], [2 / 8, 2 / 8, 4 / 8])
    np.testing.assert_allclose(weighted.loc[("left_subarticular_stenosis", "l5_s1")], [1 / 5, 0, 4 / 5])
    # a target without labels gets the pooled frequencies (3, 1, 2) / 6
    np.testing.assert_allclose(plain.loc[("right_subarticular_stenosis", "l3_l4")], [3 / 6, 1 / 6, 2 / 6])
    # the default add-half pseudo-count keeps unseen classes above 0: (1, 0, 1) + 0.5 -> (1.5, 0.5, 1.5) / 3.5
    smoothed = level_priors(labels).set_index(["condition", "level"])
    np.testing.assert_allclose(smoothed.loc[("left_subarticular_stenosis", "l5_s1")], [3 / 7, 1 / 7, 3 / 7])
    with pytest.raises(DataError, match="no labels"):
        level_priors(labels.iloc[:0])
