"""The main job end to end at small size: phantom, cv (locate, crop, grade per fold), predict, score."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.demo import PARTS, DemoSettings, run_demo
from spinegrade.runtime import torch_threads

# Toy sizes: too few studies and epochs to learn (cv's scores are not asserted against the prior here; the
# full demo reports `beats_prior` per group). Under 5 minutes on 2 free cores.
TOY = DemoSettings(
    studies=12,
    test_studies=3,
    image_px=64,
    crop_px=32,
    folds=2,
    epochs=1,
    locator_px=64,
    locator_epochs=1,
    locator_samples=32,
    n_boot=200,
)


@pytest.mark.slow
def test_demo_cross_validates_end_to_end_and_scores_the_test_studies(tmp_path: Path) -> None:
    with torch_threads(1):
        result = run_demo(tmp_path / "demo", TOY)

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
    assert headline["n_studies"] == TOY.studies == prior["n_studies"]
    assert set(result["beats_prior"]) == {"score", *PARTS}
    for part, beaten in result["beats_prior"].items():
        assert beaten == (headline[part]["value"] < prior[part]["value"]), part
    assert headline["score"]["low"] <= headline["score"]["value"] <= headline["score"]["high"]
    oracle = table[f"oracle points ({TOY.train_points})"]
    gap = result["gaps"][f"end to end - oracle points ({TOY.train_points} training points)"]
    assert gap == pytest.approx(headline["score"]["value"] - oracle["score"]["value"])
    cv = Path(result["paths"]["cv"])
    for name in ("oof_submission.csv", "oof_oracle_submission.csv", "oof_prior_submission.csv"):
        assert len(pd.read_csv(cv / name)) == 25 * TOY.studies, name
    points = pd.read_csv(cv / "oof_points.csv")
    assert len(points) and set(points["fold"]) == {0, 1}
    assert points["error_mm"].notna().equals(points["located"].astype(bool))  # an error for every found point
    submission = pd.read_csv(result["paths"]["submission"])
    assert len(submission) == 25 * TOY.test_studies
    assert submission[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()
    test = table["test studies, end to end"]
    report = json.loads((Path(result["paths"]["reports"]) / "test" / "report.json").read_text())
    assert report["score"] == pytest.approx(test["score"]["value"])
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["headline"] == result["headline"]
    record = json.loads((tmp_path / "demo" / "submission.ensemble.json").read_text())
    assert record["calibration"] == str(cv / "calibration.json")  # cv's OOF calibration grades the test
