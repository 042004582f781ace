"""Grade one read study: locate its targets, cut their crops, classify them; priors for the rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spinegrade.crops.views import study_axials
from spinegrade.errors import DataError, Problem
from spinegrade.prediction.grade import CropSpec, Cut, Ensemble, cut_crops
from spinegrade.prediction.results import StudyResult, reason, study_problem
from spinegrade.prediction.studies import StudyImages
from spinegrade.vocab import CONDITION_SERIES, CONDITIONS, LEVELS, SEVERITIES

Locate = Callable[[Mapping[str, Sequence[Any]]], pd.DataFrame]


def grade_study(images: StudyImages, locate: Locate, ensemble: Ensemble, priors: pd.DataFrame) -> StudyResult:
    """Locate, crop and classify one read study; targets that cannot be graded keep their prior."""
    result = StudyResult(
        images.study_id,
        pd.DataFrame(),
        priors[["condition", "level", *SEVERITIES]].assign(source="prior"),
        list(images.problems),
        {"read": images.seconds},
        {kind: [s.series_id for s in group] for kind, group in images.series_by_type.items()},
    )
    clock = time.perf_counter()
    points = pd.DataFrame()
    if images.series_by_type:
        try:
            points = locate(images.series_by_type)
        except Exception as exc:  # one study's odd geometry must not stop the others
            result.problems.append(
                study_problem(images.study_id, "locate_failed", f"locator failed: {reason(exc)}")
            )
    points = _valid_points(points)
    result.seconds["locate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    series_by_id = images.series_by_id()
    axials = study_axials(images.series_by_type)
    crops: dict[CropSpec, list[Cut]] = {spec: [] for spec in ensemble.specs}
    kept = []
    for series_id, rows in points.groupby(points["series_id"].astype(str), sort=False):
        try:
            cut = {spec: cut_crops(series_by_id, rows, spec, axials) for spec in ensemble.specs}
        except (DataError, ValueError) as exc:
            result.problems.append(
                study_problem(
                    images.study_id, "crop_failed", f"series {series_id}: crops failed: {reason(exc)}"
                )
            )
            continue
        for spec, array in cut.items():
            crops[spec].append(array)
        kept.append(rows)
    points = pd.concat(kept, ignore_index=True) if kept else points.iloc[:0]
    result.seconds["crop"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if len(points):
        sizes = [len(rows) for rows in kept]
        probs = ensemble.predict({spec: Cut.join(cuts, sizes) for spec, cuts in crops.items()}, points)
        graded = points[["condition", "level"]].assign(**dict(zip(SEVERITIES, probs.T, strict=True)))
        index = pd.MultiIndex.from_frame(result.grades[["condition", "level"]])
        at = index.get_indexer(pd.MultiIndex.from_frame(graded[["condition", "level"]]))
        result.grades.loc[at, list(SEVERITIES)] = graded[list(SEVERITIES)].to_numpy()
        result.grades.loc[at, "source"] = "model"
    result.seconds["classify"] = time.perf_counter() - clock
    result.points = points
    result.problems += _fallback_problems(images, result.grades)
    return result


def _valid_points(points: pd.DataFrame) -> pd.DataFrame:
    """The locator's rows for known targets with finite coordinates, one per (condition, level)."""
    if points.empty:
        return pd.DataFrame(columns=["condition", "level", "series_id", "slice_index", "x", "y"])
    ok = (
        points["condition"].isin(CONDITIONS)
        & points["level"].isin(LEVELS)
        & np.isfinite(points[["slice_index", "x", "y"]].to_numpy(np.float64)).all(axis=1)
    )
    return points[ok].drop_duplicates(["condition", "level"]).reset_index(drop=True)


def _fallback_problems(images: StudyImages, grades: pd.DataFrame) -> list[Problem]:
    """One Problem per series type whose conditions (some levels or all) kept their priors."""
    problems = []
    prior = grades[grades["source"] == "prior"]
    for series_type in dict.fromkeys(CONDITION_SERIES.values()):
        conditions = [c for c, t in CONDITION_SERIES.items() if t == series_type]
        rows = prior[prior["condition"].isin(conditions)]
        if rows.empty:
            continue
        if series_type not in images.series_by_type:
            problems.append(
                study_problem(
                    images.study_id,
                    "missing_series_type",
                    f"study {images.study_id} has no readable {series_type} series: "
                    f"{', '.join(conditions)} get prior probabilities",
                )
            )
        else:
            targets = "; ".join(
                f"{c} {', '.join(g['level'])}" for c, g in rows.groupby("condition", sort=False)
            )
            problems.append(
                study_problem(
                    images.study_id,
                    "not_located",
                    f"study {images.study_id}: no usable point on the {series_type} series for {targets}; "
                    "prior probabilities used",
                )
            )
    return problems
