"""The main job end to end: phantom, cv (locate, crop, grade per fold), predict, score; it must learn."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.demo import PARTS, DemoSettings, run_demo

# `make demo` itself: every fold graded (50 studies out of fold), nested calibration. One graded fold (the
# quick demo, 17 studies) was too noisy to assert on: at seed 1 two studies' confident foraminal misses put
# it above the prior (1.306 against 0.935) while seed 0 beat it on every group. 9 to 13 minutes on 2 cores
# (docs/results.md#demo).
LEARNS = DemoSettings()


@pytest.mark.slow
def test_demo_cross_validates_end_to_end_and_scores_the_test_studies(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", LEARNS)

    assert set(result["timings_s"]) == {
        "phantom",
        "inspect",
        "cross-validate (end to end)",
        "predict test studies",
        "score test predictions",
    }
    table = result["table"]
    headline = table[result["headline"]]
    prior = table["prior (training folds)"]
    cv = Path(result["paths"]["cv"])
    n_graded = len(pd.read_csv(cv / "folds.csv"))  # every training study, out of fold
    assert headline["n_studies"] == n_graded == prior["n_studies"]
    assert set(result["beats_prior"]) == {"score", *PARTS}
    for part, beaten in result["beats_prior"].items():
        assert beaten == (headline[part]["value"] < prior[part]["value"]), part
        value, floor = headline[part]["value"], prior[part]["value"]
        assert beaten, f"{part}: end to end {value:.3f} does not beat the prior {floor:.3f}"
    assert headline["score"]["low"] <= headline["score"]["value"] <= headline["score"]["high"]
    oracle = table[f"oracle points ({LEARNS.train_points})"]
    gap = result["gaps"][f"end to end - oracle points ({LEARNS.train_points} training points)"]
    assert gap == pytest.approx(headline["score"]["value"] - oracle["score"]["value"])
    for name in ("oof_submission.csv", "oof_oracle_submission.csv", "oof_prior_submission.csv"):
        assert len(pd.read_csv(cv / name)) == 25 * n_graded, name
    points = pd.read_csv(cv / "oof_points.csv")
    assert len(points) and set(points["fold"]) == set(range(LEARNS.folds))
    assert points["error_mm"].notna().equals(points["located"].astype(bool))  # an error for every found point
    submission = pd.read_csv(result["paths"]["submission"])
    assert len(submission) == 25 * LEARNS.test_studies
    assert submission[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()
    test = table["test studies, end to end"]
    report = json.loads((Path(result["paths"]["reports"]) / "test" / "report.json").read_text())
    assert report["score"] == pytest.approx(test["score"]["value"])
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["headline"] == result["headline"]
    record = json.loads((tmp_path / "demo" / "submission.ensemble.json").read_text())
    # cv fits a calibration from the graded folds (nested in its report) and predict applies it
    assert record["calibration"] is not None and (cv / "calibration.json").is_file()
