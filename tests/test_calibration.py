"""Post-hoc calibration fitted to the challenge score, nested OOF, bootstrap intervals, ensemble averaging."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from spinegrade.errors import DataError
from spinegrade.evaluation.bootstrap import bootstrap_difference, submission_interval
from spinegrade.evaluation.calibration import (
    CALIBRATION_FILE,
    Calibration,
    find_calibration,
    fit_calibration,
    folds_of,
    nested_calibrated_oof,
)
from spinegrade.evaluation.commands import calibrate_command
from spinegrade.evaluation.ensemble import average_probabilities, average_submissions
from spinegrade.evaluation.score import (
    SCORE_PARTS,
    EvaluationWarning,
    predicted_rows,
    score_rows,
    score_submission,
)
from spinegrade.vocab import LABEL_COLUMNS, SEVERITIES, SEVERITY_LABELS, TARGETS, make_row_id

STUDIES = 60


@pytest.fixture(autouse=True)
def quiet() -> None:
    warnings.simplefilter("ignore", EvaluationWarning)


def _labels(rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """train.csv-format labels of STUDIES studies and the true class probabilities they were drawn from."""
    truth = rng.dirichlet([4.0, 1.5, 0.8], size=(STUDIES, len(TARGETS)))
    codes = (rng.random((STUDIES, len(TARGETS), 1)) > truth.cumsum(axis=2)).sum(axis=2).clip(0, 2)
    wide = pd.DataFrame(np.asarray(SEVERITY_LABELS, dtype=object)[codes], columns=list(LABEL_COLUMNS))
    wide.insert(0, "study_id", np.arange(100, 100 + STUDIES))
    return wide, truth


def _submission(probs: np.ndarray) -> pd.DataFrame:
    ids = [make_row_id(100 + s, c, lv) for s in range(STUDIES) for c, lv in TARGETS]
    out = pd.DataFrame({"row_id": ids})
    out[list(SEVERITIES)] = probs.reshape(-1, 3)
    return out


@pytest.fixture(scope="module")
def overconfident() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Labels, predictions sharpened far beyond the truth (p^3), and 5 folds of 12 studies."""
    labels, truth = _labels(np.random.default_rng(0))
    sharp = truth**3
    pred = _submission(sharp / sharp.sum(axis=2, keepdims=True))
    folds = pd.Series(np.arange(STUDIES) % 5, index=labels["study_id"])
    return labels, pred, folds


def test_identity_changes_nothing_and_json_round_trips(tmp_path, overconfident) -> None:
    _, pred, _ = overconfident
    same = Calibration.identity().apply(pred)
    np.testing.assert_allclose(same[list(SEVERITIES)].to_numpy(), pred[list(SEVERITIES)].to_numpy())
    calibration = Calibration(
        {"spinal": 0.9, "foraminal": 1.2, "subarticular": 1.0},
        {"spinal": [0, 0.1, -0.2], "foraminal": [0, 0, 0], "subarticular": [0, 0.3, 0]},
        spinal_severe_boost=1.25,
    )
    path = tmp_path / "c.json"
    calibration.save(path)
    assert json.loads(path.read_text())["format"] == "spinegrade-calibration/1"
    assert Calibration.load(path) == calibration
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a spinegrade calibration"):
        Calibration.load(path)


def test_boost_raises_only_each_studys_top_spinal_severe(overconfident) -> None:
    _, pred, _ = overconfident
    boosted = Calibration({**Calibration.identity().temperature}, Calibration.identity().bias, 1.5).apply(
        pred
    )
    assert np.allclose(boosted[list(SEVERITIES)].sum(axis=1), 1.0)
    changed = ~np.isclose(boosted["severe"], pred["severe"])
    spinal = pred["row_id"].str.contains("spinal_canal")
    assert not changed[~spinal].any()
    studies = pred["row_id"].str.partition("_")[0]
    assert changed.sum() == STUDIES and studies[changed].nunique() == STUDIES  # one row per study
    top = pred[spinal].groupby(studies[spinal])["severe"].idxmax()
    assert set(top) == set(np.flatnonzero(changed))
    assert (boosted.loc[changed, "severe"] > pred.loc[changed, "severe"]).all()


def test_fit_softens_overconfident_predictions_and_improves_the_score(overconfident) -> None:
    labels, pred, _ = overconfident
    calibration = fit_calibration(pred, labels, bias=False, boost=False)
    assert all(t > 1.5 for t in calibration.temperature.values())  # p^3 -> T near 3
    before = score_submission(labels, pred)["score"]
    after = score_submission(labels, calibration.apply(pred))["score"]
    assert after < before - 0.05
    assert calibration.fitted["score_calibrated"] == pytest.approx(after)
    assert calibration.fitted["score_raw"] == pytest.approx(before)
    full = fit_calibration(pred, labels, bias=True, boost=True)
    assert full.fitted["parts"] == ["temperature", "bias", "boost"]
    assert full.fitted["score_calibrated"] <= after + 0.01  # more parameters, a ridge toward identity
    assert score_submission(labels, full.apply(pred))["score"] == pytest.approx(
        full.fitted["score_calibrated"]
    )


def test_nested_calibration_is_out_of_fold(overconfident) -> None:
    labels, pred, folds = overconfident
    nested = nested_calibrated_oof(pred, labels, folds, bias=False)
    assert list(nested["row_id"]) == list(pred["row_id"])
    assert score_submission(labels, nested)["score"] < score_submission(labels, pred)["score"] - 0.05
    # Fold 0's calibrated rows do not depend on fold 0's own labels.
    changed = labels.copy()
    in_fold0 = changed["study_id"].map(folds) == 0
    changed.loc[in_fold0, list(LABEL_COLUMNS)] = "Severe"
    again = nested_calibrated_oof(pred, changed, folds, bias=False)
    rows0 = pred["row_id"].str.partition("_")[0].astype(int).map(folds) == 0
    np.testing.assert_allclose(
        again.loc[rows0, list(SEVERITIES)].to_numpy(), nested.loc[rows0, list(SEVERITIES)].to_numpy()
    )
    assert not np.allclose(again.loc[~rows0, "severe"], nested.loc[~rows0, "severe"])
    with pytest.raises(DataError, match="no fold"):
        nested_calibrated_oof(pred, labels, folds.iloc[1:])


def test_folds_come_from_a_cache_index_and_a_calibration_is_found_beside_the_runs(tmp_path) -> None:
    index = pd.DataFrame({"study_id": [1, 1, 2], "fold": [0, 0, 1], "condition": ["a", "b", "a"]})
    assert folds_of(index).to_dict() == {1: 0, 2: 1}
    with pytest.raises(DataError, match="more than one fold"):
        folds_of(pd.DataFrame({"study_id": [1, 1], "fold": [0, 1]}))
    runs = tmp_path / "runs"
    runs.mkdir()
    assert find_calibration([runs]) is None
    Calibration.identity().save(runs / CALIBRATION_FILE)
    assert find_calibration([runs]) == (runs / CALIBRATION_FILE).resolve()


def test_calibrate_command_writes_the_calibration_and_its_nested_score(tmp_path, overconfident) -> None:
    labels, pred, folds = overconfident
    labels.to_csv(tmp_path / "train.csv", index=False)
    pred.to_csv(tmp_path / "oof.csv", index=False)
    folds.rename("fold").reset_index().to_csv(tmp_path / "index.csv", index=False)
    app = typer.Typer()
    app.command()(calibrate_command)
    out = tmp_path / "calibration.json"
    args = ["--pred", str(tmp_path / "oof.csv"), "--labels", str(tmp_path / "train.csv"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--folds", str(tmp_path / "index.csv"), "--no-bias"])
    assert result.exit_code == 0, result.output
    fitted = Calibration.load(out).fitted
    assert fitted["score_nested"] < fitted["score_raw"] and "nested out of fold" in result.output


def test_bootstrap_interval_brackets_the_score_and_pairs_differences(overconfident) -> None:
    labels, pred, _ = overconfident
    interval = submission_interval(labels, pred, n=100, seed=1)
    assert interval["low"] < interval["score"] < interval["high"] and interval["n"] == 100
    assert interval["score"] == pytest.approx(score_submission(labels, pred)["score"])
    assert submission_interval(labels, pred, n=100, seed=1) == interval
    same = bootstrap_difference(labels, pred, pred.iloc[::-1], n=50)
    assert same["score"] == same["low"] == same["high"] == 0.0
    better = fit_calibration(pred, labels, bias=False, boost=False).apply(pred)
    gain = bootstrap_difference(labels, better, pred, n=100)
    assert gain["high"] < 0 < -gain["score"]
    before, after = score_submission(labels, pred), score_submission(labels, better)
    assert set(gain["parts"]) == set(SCORE_PARTS)
    for part, d in gain["parts"].items():  # each part paired on the same resamples
        assert d["value"] == pytest.approx(after[part] - before[part])
        assert d["low"] <= d["value"] <= d["high"]


def test_rows_without_a_prediction_are_left_out_of_the_score(overconfident) -> None:
    labels, pred, _ = overconfident
    part = pred.iloc[5:]
    rows = predicted_rows(labels, part)
    assert len(rows) == len(pred) - 5
    with pytest.raises(DataError, match="no prediction"):
        score_submission(labels, part)
    assert np.isfinite(score_rows(rows)["score"])


def test_logit_averaging_is_a_renormalised_geometric_mean() -> None:
    a = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    b = np.array([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]])
    np.testing.assert_allclose(average_probabilities([a, b]), (a + b) / 2)
    geometric = np.sqrt(a * b)
    np.testing.assert_allclose(
        average_probabilities([a, b], space="logit"), geometric / geometric.sum(1)[:, None]
    )
    np.testing.assert_allclose(average_probabilities([a, b], weights=[3, 1]), 0.75 * a + 0.25 * b)
    with pytest.raises(DataError, match="weights"):
        average_probabilities([a, b], weights=[1])
    frames = [pd.DataFrame({"row_id": ["x", "y"], **dict(zip(SEVERITIES, p.T, strict=True))}) for p in (a, b)]
    mixed = average_submissions([frames[0], frames[1].iloc[::-1]])
    np.testing.assert_allclose(mixed[list(SEVERITIES)].to_numpy(), (a + b) / 2)
