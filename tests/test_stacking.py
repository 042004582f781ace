"""The second stage: a study's 25 targets graded together from OOF predictions (evaluation.stacking)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spinegrade.errors import DataError
from spinegrade.evaluation.calibration import nested_oof
from spinegrade.evaluation.score import challenge_score, join_submission
from spinegrade.evaluation.stacking import FEATURES, Stacking, fit_stacking, stacking_features
from spinegrade.evaluation.submission import validate_submission
from spinegrade.vocab import LABEL_COLUMNS, SEVERITIES, SEVERITY_LABELS, TARGETS, make_row_id


def _correlated(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Labels whose latent has a strong study factor, and predictions that see each target's latent only
    through heavy noise: the study's other targets then carry most of the evidence."""
    rng = np.random.default_rng(seed)
    latent = 0.8 * rng.standard_normal((n, 1)) + 0.6 * rng.standard_normal((n, len(TARGETS)))
    grade = np.digitize(latent + 0.3 * rng.standard_normal(latent.shape), [0.5, 1.2])
    seen = latent + 1.2 * rng.standard_normal(latent.shape)
    logits = np.stack([np.zeros_like(seen), seen - 0.5, 2 * seen - 1.7], axis=-1)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = np.arange(1000, 1000 + n)
    labels = pd.DataFrame({"study_id": ids})
    for j, column in enumerate(LABEL_COLUMNS):
        labels[column] = np.asarray(SEVERITY_LABELS, dtype=object)[grade[:, j]]
    rows = [make_row_id(int(s), c, lv) for s in ids for c, lv in TARGETS]
    pred = pd.DataFrame({"row_id": rows})
    pred[list(SEVERITIES)] = probs.reshape(-1, 3)
    return labels, pred, pd.Series(np.arange(n) % 3, index=ids)


def _score(labels: pd.DataFrame, pred: pd.DataFrame) -> float:
    return challenge_score(join_submission(labels, pred).frame)["score"]


def test_stacking_out_of_fold_beats_the_first_stage_when_targets_are_correlated() -> None:
    labels, pred, folds = _correlated(240, seed=0)
    stacked = nested_oof(pred, folds, lambda rows: fit_stacking(rows, labels), "stacking")
    assert list(stacked["row_id"]) == list(pred["row_id"])
    np.testing.assert_allclose(stacked[list(SEVERITIES)].sum(axis=1), 1.0, atol=1e-9)
    assert _score(labels, stacked) < _score(labels, pred) - 0.05


def test_nested_stacking_does_not_see_the_held_out_folds_labels() -> None:
    labels, pred, folds = _correlated(90, seed=1)
    fit = lambda lab: lambda rows: fit_stacking(rows, lab)  # noqa: E731
    first = nested_oof(pred, folds, fit(labels), "stacking")
    changed = labels.copy()
    fold0 = changed["study_id"].map(folds) == 0
    changed.loc[fold0, list(LABEL_COLUMNS)] = "Severe"
    again = nested_oof(pred, folds, fit(changed), "stacking")
    held = first["row_id"].str.partition("_")[0].astype(int).map(folds) == 0
    pd.testing.assert_frame_equal(first[held], again[held])
    assert not np.allclose(first.loc[~held, "severe"], again.loc[~held, "severe"])


def test_features_are_the_studys_other_targets_centred() -> None:
    rows = [make_row_id(7, c, lv) for c, lv in TARGETS]
    pred = pd.DataFrame({"row_id": rows, "normal_mild": 1.0, "moderate": 0.0, "severe": 0.0})
    severe = make_row_id(7, "left_neural_foraminal_narrowing", "l4_l5")
    pred.loc[pred["row_id"] == severe, list(SEVERITIES)] = [0.0, 0.0, 1.0]  # expected grade 2
    x = stacking_features(validate_submission(pred), np.zeros((5, 5)))
    feature = {name: x[:, i] for i, name in enumerate(FEATURES)}

    def at(condition: str, level: str) -> int:
        return rows.index(make_row_id(7, condition, level))

    partner = at("right_neural_foraminal_narrowing", "l4_l5")
    assert feature["other_side"][partner] == pytest.approx(2.0)
    assert feature["same_level"][at("spinal_canal_stenosis", "l4_l5")] == pytest.approx(2.0 / 4)
    assert feature["same_level"][partner] == pytest.approx(0.0)  # the other side is its own feature
    assert feature["same_condition"][at("left_neural_foraminal_narrowing", "l1_l2")] == pytest.approx(2 / 4)
    assert feature["rest"][at("spinal_canal_stenosis", "l1_l2")] == pytest.approx(2.0 / 16)
    assert feature["other_side"][at("spinal_canal_stenosis", "l4_l5")] == 0.0  # no side
    assert feature["rest"][rows.index(severe)] == pytest.approx(0.0, abs=1e-9)  # never its own value


def test_a_group_without_every_grade_passes_unchanged() -> None:
    labels, pred, _ = _correlated(60, seed=2)
    spinal = [c for c in LABEL_COLUMNS if c.startswith("spinal")]
    labels[spinal] = "Normal/Mild"
    stacking = fit_stacking(pred, labels)
    assert stacking.coef["spinal"] is None and stacking.coef["foraminal"] is not None
    out = stacking.apply(pred)
    is_spinal = pred["row_id"].str.contains("spinal")
    np.testing.assert_allclose(out.loc[is_spinal, "severe"], pred.loc[is_spinal, "severe"])


def test_stacking_round_trips_as_json_and_refuses_bad_files(tmp_path) -> None:
    labels, pred, _ = _correlated(60, seed=3)
    stacking = fit_stacking(pred, labels)
    path = tmp_path / "stacking.json"
    stacking.save(path)
    assert json.loads(path.read_text())["features"] == list(FEATURES)
    again = Stacking.load(path)
    pd.testing.assert_frame_equal(again.apply(pred), stacking.apply(pred))
    data = stacking.to_json()
    with pytest.raises(DataError, match="not a spinegrade stacking"):
        Stacking.from_json({**data, "format": "x"}, "f.json")
    with pytest.raises(DataError, match="wrong shape"):
        Stacking.from_json({**data, "means": [[0.0]]}, "f.json")
