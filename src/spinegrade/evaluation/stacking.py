"""A second stage that grades a study's 25 targets together: stacking on out-of-fold predictions.

The levels and conditions of one spine are correlated (a degenerated L4/L5 tends to be narrowed
everywhere; left and right foramina of a level go together), so the first stage's predictions for a study's
other targets carry evidence about each one; the challenge's best teams all model this. Per condition group,
a multinomial logistic regression (scikit-learn) maps a row's own log-probabilities and four context means
of the study's other targets - the other side of the same level, the other conditions of the level, the
other levels of the condition, and the rest - to its grade, each context an expected grade (moderate + 2 x
severe) centred on its target's mean. Rows are weighted 1/2/4 by true grade, as the score weighs them.
Fitted on OOF predictions (`fit_stacking`; `nested_oof` gives its out-of-fold effect) and stored as JSON,
never pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from spinegrade.data.tables import labels_long
from spinegrade.errors import DataError
from spinegrade.evaluation.calibration import find_stored, read_json
from spinegrade.evaluation.score import EPS, GROUPS, clip_normalize
from spinegrade.evaluation.submission import validate_submission
from spinegrade.fileio import write_atomic
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, LEVELS, SEVERITIES, SEVERITY_WEIGHTS

FORMAT: Final = "spinegrade-stacking/1"
STACKING_FILE: Final = "stacking.json"  # the name a stacking stored with the runs has
FEATURES: Final = (
    "log_normal_mild",
    "log_moderate",
    "log_severe",
    "other_side",
    "same_level",
    "same_condition",
    "rest",
)
# Regularisation of the logistic regressions (scikit-learn's C). measured: docs/results.md#stacking
DEFAULT_C: Final = 1.0
_PARTNER: Final = np.array(
    [CONDITIONS.index(c.replace("left_", "right_")) if c.startswith("left_") else
     CONDITIONS.index(c.replace("right_", "left_")) if c.startswith("right_") else -1
     for c in CONDITIONS]
)  # fmt: skip
_GROUP_OF_CODE: Final = np.array([GROUPS.index(GROUP_OF_CONDITION[c]) for c in CONDITIONS])


def _codes(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(study index, condition code, level code) of a validated submission's rows."""
    _, study = np.unique(sub["study_id"].to_numpy(np.int64), return_inverse=True)
    condition = pd.Index(CONDITIONS).get_indexer(sub["condition"])
    level = pd.Index(LEVELS).get_indexer(sub["level"])
    return study, condition, level


def expected_grades(sub: pd.DataFrame) -> np.ndarray:
    """moderate + 2 x severe of each row of a validated submission (n,)."""
    probs = clip_normalize(sub[list(SEVERITIES)].to_numpy(np.float64))
    return probs[:, 1] + 2.0 * probs[:, 2]


def stacking_features(sub: pd.DataFrame, means: np.ndarray) -> np.ndarray:
    """The (n, len(FEATURES)) inputs of a validated submission's rows; means (5 conditions, 5 levels) are
    the expected grades the contexts are centred on. A context with no other row in the study is 0."""
    study, condition, level = _codes(sub)
    n_studies = int(study.max()) + 1 if len(study) else 0
    grid = np.zeros((n_studies, len(CONDITIONS), len(LEVELS)))
    seen = np.zeros_like(grid)
    grid[study, condition, level] = expected_grades(sub) - means[condition, level]
    seen[study, condition, level] = 1.0
    own, own_n = grid[study, condition, level], seen[study, condition, level]
    partner = _PARTNER[condition]
    has_partner = partner >= 0
    side = np.where(has_partner, grid[study, np.maximum(partner, 0), level], 0.0)
    side_n = np.where(has_partner, seen[study, np.maximum(partner, 0), level], 0.0)
    level_sum, level_n = grid.sum(1)[study, level] - own - side, seen.sum(1)[study, level] - own_n - side_n
    cond_sum, cond_n = grid.sum(2)[study, condition] - own, seen.sum(2)[study, condition] - own_n
    rest_sum = grid.sum((1, 2))[study] - grid.sum(1)[study, level] - grid.sum(2)[study, condition] + own
    rest_n = seen.sum((1, 2))[study] - seen.sum(1)[study, level] - seen.sum(2)[study, condition] + own_n
    probs = clip_normalize(sub[list(SEVERITIES)].to_numpy(np.float64))
    contexts = [
        (side, side_n),
        (level_sum, level_n),
        (cond_sum, cond_n),
        (rest_sum, rest_n),
    ]
    return np.column_stack([np.log(probs), *(total / np.maximum(count, 1.0) for total, count in contexts)])


@dataclass(frozen=True)
class Stacking:
    """Fitted second stage: per group a (3, len(FEATURES)) coefficient matrix and 3 intercepts (None:
    the group's rows pass unchanged, e.g. a class never seen in training), and the centring means."""

    means: list[list[float]]  # (5 conditions, 5 levels) mean expected grade of each target
    coef: dict[str, list[list[float]] | None]
    intercept: dict[str, list[float] | None]
    fitted: dict[str, Any] = field(default_factory=dict)

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        """A submission frame (row_id, normal_mild, moderate, severe) graded by the second stage, rows and
        index kept; every study's rows are taken together."""
        sub = validate_submission(pred)
        x = stacking_features(sub, np.asarray(self.means))
        probs = clip_normalize(sub[list(SEVERITIES)].to_numpy(np.float64))
        group = _GROUP_OF_CODE[pd.Index(CONDITIONS).get_indexer(sub["condition"])]
        for g, name in enumerate(GROUPS):
            rows = group == g
            if self.coef[name] is None or not rows.any():
                continue
            logits = x[rows] @ np.asarray(self.coef[name]).T + np.asarray(self.intercept[name])
            logits -= logits.max(axis=1, keepdims=True)
            out = np.exp(logits)
            probs[rows] = out / out.sum(axis=1, keepdims=True)
        frame = pd.DataFrame({"row_id": sub["row_id"]}, index=sub.index)
        frame[list(SEVERITIES)] = np.clip(probs, EPS, 1.0)
        return frame

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": list(FEATURES),
            "means": self.means,
            "coef": self.coef,
            "intercept": self.intercept,
            "fitted": self.fitted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "stacking") -> Stacking:
        if data.get("format") != FORMAT:
            raise DataError(f"{source} is not a spinegrade stacking (format {data.get('format')!r})")
        if list(data.get("features", [])) != list(FEATURES):
            raise DataError(f"{source}: features {data.get('features')} differ from {list(FEATURES)}")
        try:
            means = np.asarray(data["means"], dtype=np.float64)
            coef = {
                g: None if data["coef"][g] is None else np.asarray(data["coef"][g], float) for g in GROUPS
            }
            intercept = {
                g: None if data["intercept"][g] is None else np.asarray(data["intercept"][g], float)
                for g in GROUPS
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: bad stacking field ({type(exc).__name__}: {exc})") from None
        shapes_ok = means.shape == (len(CONDITIONS), len(LEVELS)) and all(
            (c is None and i is None)
            or (c is not None and i is not None and c.shape == (3, len(FEATURES)) and i.shape == (3,))
            for c, i in ((coef[g], intercept[g]) for g in GROUPS)
        )
        finite = all(
            np.isfinite(a).all() for a in (means, *coef.values(), *intercept.values()) if a is not None
        )
        if not shapes_ok or not finite:
            raise DataError(f"{source}: stacking arrays have the wrong shape or non-finite values")
        return cls(
            means=means.tolist(),
            coef={g: None if (c := coef[g]) is None else c.tolist() for g in GROUPS},
            intercept={g: None if (i := intercept[g]) is None else i.tolist() for g in GROUPS},
            fitted=dict(data.get("fitted", {})),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the stacking as JSON, atomically."""
        write_atomic(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Stacking:
        return cls.from_json(read_json(path, "stacking"), str(path))


def fit_stacking(pred: pd.DataFrame, labels: pd.DataFrame, *, c: float = DEFAULT_C) -> Stacking:
    """Fit the second stage on OOF predictions (submission format) against train.csv-format labels.

    Features use every predicted row of a study; the regressions learn from its labelled rows.
    """
    from sklearn.linear_model import LogisticRegression

    sub = validate_submission(pred)
    grades = expected_grades(sub)
    condition = pd.Index(CONDITIONS).get_indexer(sub["condition"])
    level = pd.Index(LEVELS).get_indexer(sub["level"])
    means = np.zeros((len(CONDITIONS), len(LEVELS)))
    np.add.at(means, (condition, level), grades)
    counts = np.zeros_like(means)
    np.add.at(counts, (condition, level), 1.0)
    means = np.divide(means, counts, out=np.zeros_like(means), where=counts > 0)
    x = stacking_features(sub, means)
    truth = labels_long(labels).set_index(["study_id", "condition", "level"])["severity"]
    keys = pd.MultiIndex.from_arrays([sub["study_id"].astype(np.int64), sub["condition"], sub["level"]])
    severity = truth.reindex(keys).to_numpy()
    labelled = ~np.isnan(severity.astype(np.float64))
    group = _GROUP_OF_CODE[condition]
    coef: dict[str, list[list[float]] | None] = {}
    intercept: dict[str, list[float] | None] = {}
    for g, name in enumerate(GROUPS):
        rows = labelled & (group == g)
        y = severity[rows].astype(np.int64)
        if len(np.unique(y)) < len(SEVERITIES):
            coef[name] = intercept[name] = None  # a grade never seen: leave the group's rows as they are
            continue
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x[rows], y, sample_weight=np.asarray(SEVERITY_WEIGHTS)[y])
        coef[name], intercept[name] = model.coef_.tolist(), model.intercept_.tolist()
    return Stacking(
        means=means.tolist(),
        coef=coef,
        intercept=intercept,
        fitted={"rows": int(labelled.sum()), "studies": int(sub["study_id"].nunique()), "c": c},
    )


def find_stacking(run_paths: Sequence[str | os.PathLike]) -> Path | None:
    """STACKING_FILE in one of the run folders given (None if none)."""
    return find_stored(run_paths, STACKING_FILE)
