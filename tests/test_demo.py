"""The main job end to end at toy size: phantom, prepare, train, evaluate, locate, predict, score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.demo import DemoSettings, run_demo
from spinegrade.runtime import torch_threads

TOY = DemoSettings(
    studies=8,
    test_studies=2,
    image_px=64,
    crop_px=32,
    epochs=1,
    head_epochs=1,
    archs=("efficientnet_b0",),
    imbalances=("class-weights",),
    locator_px=64,
    locator_epochs=1,
    locator_samples=16,
)


@pytest.mark.slow
def test_demo_runs_every_stage_and_scores_the_test_studies(tmp_path: Path) -> None:
    with torch_threads(1):
        result = run_demo(tmp_path / "demo", TOY)

    assert set(result["timings_s"]) == {
        "phantom",
        "inspect",
        "prepare",
        "train classifiers",
        "evaluate validation folds",
        "train locators",
        "predict test studies",
        "score test predictions",
    }
    submission = pd.read_csv(result["paths"]["submission"])
    assert len(submission) == 25 * TOY.test_studies
    assert submission[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()
    assert [r["arch"] for r in result["comparison"]] == ["efficientnet_b0"]
    assert math.isfinite(result["test_score"]["score"]) and math.isfinite(result["test_prior_score"])
    report = json.loads((Path(result["paths"]["reports"]) / "test" / "report.json").read_text())
    assert report["score"] == pytest.approx(result["test_score"]["score"])
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["best_run"] == result["best_run"]
