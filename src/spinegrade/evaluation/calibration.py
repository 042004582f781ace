"""Post-hoc calibration of submission-format predictions, fitted on out-of-fold predictions to the score.

A Calibration maps the probabilities of each row in three steps, all fitted at once by minimising the
challenge score (evaluation.score, the exact metric) of the out-of-fold predictions:

1. temperature per condition group: logits = log p / T_group (T < 1 sharpens, T > 1 softens);
2. with bias=True, a bias per group added to the moderate and severe logits (a prior shift the network's
   training distribution left behind);
3. with boost=True, for any_severe_spinal: in each study, the spinal level with the highest severe
   probability gets its severe probability multiplied by `spinal_severe_boost` and its row renormalised (a
   public top solution used 1.25). Rows stay probabilities that sum to 1.

Temperature alone is the default: bias and boost did not add to it out of fold (measured:
docs/results.md#variants).

`nested_calibrated_oof` calibrates each fold with a calibration fitted on the other folds, so the gain it
shows is itself out of fold. The fit adds a ridge penalty |theta|^2 / (2 n_studies) on the parameters
(log temperatures, biases, log boost; a unit normal prior over them), so a small OOF set stays near the
identity. Stored as a small JSON file (`save` / `load`), never pickle.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.evaluation.score import (
    EPS,
    GROUPS,
    EvaluationWarning,
    ScoredRows,
    clip_normalize,
    predicted_rows,
    score_rows,
)
from spinegrade.evaluation.submission import validate_submission
from spinegrade.fileio import write_atomic
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, SEVERITIES

FORMAT: Final = "spinegrade-calibration/1"
CALIBRATION_FILE: Final = "calibration.json"  # the name a calibration stored with the runs has
_SPINAL: Final = GROUPS.index("spinal")
_SEVERE: Final = SEVERITIES.index("severe")
_GROUP_OF_CODE: Final = np.array([GROUPS.index(GROUP_OF_CONDITION[c]) for c in CONDITIONS])
_LOG_T_BOUNDS: Final = (np.log(0.2), np.log(5.0))
_BIAS_BOUNDS: Final = (-4.0, 4.0)
_LOG_BOOST_BOUNDS: Final = (np.log(0.5), np.log(4.0))


def calibrate_arrays(
    probs: np.ndarray,
    group: np.ndarray,
    study_id: np.ndarray,
    temperature: np.ndarray,
    bias: np.ndarray,
    boost: float,
) -> np.ndarray:
    """The calibrated (n, 3) probabilities of rows with their group codes (index of GROUPS) and studies.

    temperature (3,) per group, bias (3 groups, 3 classes) added to the logits, boost of the top spinal
    severe probability per study (1: none).
    """
    logits = np.log(clip_normalize(probs)) / temperature[group][:, None] + bias[group]
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=1, keepdims=True)
    if boost != 1.0:
        spinal = np.flatnonzero(group == _SPINAL)
        if len(spinal):
            order = spinal[np.lexsort((-out[spinal, _SEVERE], study_id[spinal]))]
            first = np.r_[True, study_id[order][1:] != study_id[order][:-1]]
            top = order[first]
            out[top, _SEVERE] *= boost
            out[top] /= out[top].sum(axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class Calibration:
    """Fitted calibration parameters (see the module doc); identity() changes nothing."""

    temperature: dict[str, float]
    bias: dict[str, list[float]]
    spinal_severe_boost: float = 1.0
    fitted: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def identity(cls) -> Calibration:
        return cls({g: 1.0 for g in GROUPS}, {g: [0.0] * len(SEVERITIES) for g in GROUPS})

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        temperature = np.array([self.temperature[g] for g in GROUPS], dtype=np.float64)
        bias = np.array([self.bias[g] for g in GROUPS], dtype=np.float64)
        return temperature, bias

    def apply_rows(self, probs: np.ndarray, condition: np.ndarray, study_id: np.ndarray) -> np.ndarray:
        """Calibrated (n, 3) probabilities of rows given as arrays (condition: index into CONDITIONS)."""
        temperature, bias = self._arrays()
        group = _GROUP_OF_CODE[np.asarray(condition, dtype=np.int64)]
        return calibrate_arrays(
            probs, group, np.asarray(study_id, np.int64), temperature, bias, self.spinal_severe_boost
        )

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        """A submission frame (row_id, normal_mild, moderate, severe) calibrated, rows and index kept."""
        sub = validate_submission(pred)
        condition = pd.Index(CONDITIONS).get_indexer(sub["condition"])
        probs = self.apply_rows(sub[list(SEVERITIES)].to_numpy(np.float64), condition, sub["study_id"])
        out = pd.DataFrame({"row_id": sub["row_id"]}, index=sub.index)
        out[list(SEVERITIES)] = probs
        return out

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "calibration") -> Calibration:
        if data.get("format") != FORMAT:
            raise DataError(f"{source} is not a spinegrade calibration (format {data.get('format')!r})")
        try:
            calibration = cls(
                temperature={g: float(data["temperature"][g]) for g in GROUPS},
                bias={g: [float(v) for v in data["bias"][g]] for g in GROUPS},
                spinal_severe_boost=float(data["spinal_severe_boost"]),
                fitted=dict(data.get("fitted", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: bad calibration field ({type(exc).__name__}: {exc})") from None
        bad = [g for g in GROUPS if not calibration.temperature[g] > 0 or len(calibration.bias[g]) != 3]
        if bad or not calibration.spinal_severe_boost > 0:
            raise DataError(f"{source}: temperatures and the boost must be > 0 and biases have 3 values")
        return calibration

    def save(self, path: str | os.PathLike) -> None:
        """Write the calibration as JSON, atomically."""
        write_atomic(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        return cls.from_json(read_json(path, "calibration"), str(path))


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A post-hoc step's JSON file (a calibration, a stacking); DataError naming `what` and the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from None


def _with_probs(rows: ScoredRows, probs: np.ndarray) -> ScoredRows:
    return replace(rows, probs=clip_normalize(probs), severe_raw=np.clip(probs[:, _SEVERE], EPS, 1.0 - EPS))


def fit_rows(rows: ScoredRows, *, bias: bool = False, boost: bool = False) -> Calibration:
    """Fit a Calibration to labelled rows by minimising their challenge score plus the ridge penalty
    (module doc) with L-BFGS-B, bounded."""
    from scipy.optimize import minimize

    group = rows.group
    n_groups = len(GROUPS)
    ridge = 0.5 / max(len(np.unique(rows.study_id)), 1)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        temperature = np.exp(theta[:n_groups])
        b = np.zeros((n_groups, len(SEVERITIES)))
        if bias:
            b[:, 1:] = theta[n_groups : 3 * n_groups].reshape(n_groups, 2)
        return temperature, b, float(np.exp(theta[-1])) if boost else 1.0

    def score(theta: np.ndarray) -> float:
        temperature, b, k = unpack(theta)
        probs = calibrate_arrays(rows.probs, group, rows.study_id, temperature, b, k)
        return score_rows(_with_probs(rows, probs))["score"]

    def objective(theta: np.ndarray) -> float:
        return score(theta) + ridge * float(theta @ theta)

    bounds = [_LOG_T_BOUNDS] * n_groups + ([_BIAS_BOUNDS] * 2 * n_groups if bias else [])
    bounds += [_LOG_BOOST_BOUNDS] if boost else []
    start = np.zeros(len(bounds))
    result = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    theta = result.x if result.fun < objective(start) else start
    temperature, b, k = unpack(theta)
    return Calibration(
        temperature={g: float(temperature[i]) for i, g in enumerate(GROUPS)},
        bias={g: [float(v) for v in b[i]] for i, g in enumerate(GROUPS)},
        spinal_severe_boost=k,
        fitted={
            "rows": len(rows),
            "studies": len(np.unique(rows.study_id)),
            "score_raw": score(start),
            "score_calibrated": score(theta),
            "parts": [p for p, on in (("temperature", True), ("bias", bias), ("boost", boost)) if on],
        },
    )


def fit_calibration(
    pred: pd.DataFrame, labels: pd.DataFrame, *, bias: bool = False, boost: bool = False
) -> Calibration:
    """Fit a Calibration on OOF predictions (submission format) against train.csv-format labels.

    Only the labelled targets that `pred` predicts are used (evaluation.score.predicted_rows).
    """
    return fit_rows(predicted_rows(labels, pred), bias=bias, boost=boost)


class PostHoc(Protocol):
    """A step fitted on OOF predictions that maps a submission frame to another (Calibration, Stacking)."""

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame: ...


def nested_oof(
    pred: pd.DataFrame, folds: pd.Series, fit: Callable[[pd.DataFrame], PostHoc], what: str
) -> pd.DataFrame:
    """`pred` with each fold's rows mapped by `fit(the other folds' rows)`, so that scoring the result
    gives an out-of-fold estimate of what the step gains. folds maps study_id -> fold (a Series indexed
    by study id); the result has pred's rows, order and index."""
    sub = validate_submission(pred)
    fold_of = sub["study_id"].map(folds)
    if fold_of.isna().any():
        missing = sub.loc[fold_of.isna(), "study_id"].unique()
        raise DataError(
            f"nested {what}: {len(missing)} predicted study id(s) have no fold, e.g. {missing[0]}"
        )
    if fold_of.nunique() < 2:
        raise DataError(f"nested {what} needs predictions of at least two folds")
    out = pd.DataFrame({"row_id": sub["row_id"]}, index=sub.index)
    out[list(SEVERITIES)] = np.nan
    for fold in sorted(fold_of.unique()):
        held = (fold_of == fold).to_numpy()
        with warnings.catch_warnings():  # the held-out studies are "labelled but not predicted" here
            warnings.simplefilter("ignore", EvaluationWarning)
            step = fit(pred.loc[~held])
        out.loc[held, list(SEVERITIES)] = step.apply(pred.loc[held])[list(SEVERITIES)].to_numpy()
    return out


def nested_calibrated_oof(
    pred: pd.DataFrame,
    labels: pd.DataFrame,
    folds: pd.Series,
    *,
    bias: bool = False,
    boost: bool = False,
) -> pd.DataFrame:
    """`pred` with each fold's rows calibrated by a Calibration fitted on the other folds' rows."""
    return nested_oof(
        pred, folds, lambda rows: fit_calibration(rows, labels, bias=bias, boost=boost), "calibration"
    )


def folds_of(frame: pd.DataFrame, source: str = "folds") -> pd.Series:
    """study_id -> fold from any table with study_id and fold columns (a crop cache's index.csv)."""
    missing = {"study_id", "fold"} - set(frame.columns)
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(sorted(missing))}; expected study_id and fold")
    pairs = frame[["study_id", "fold"]].drop_duplicates()
    clash = pairs["study_id"].duplicated()
    if clash.any():
        raise DataError(f"{source}: study {pairs.loc[clash, 'study_id'].iloc[0]} is in more than one fold")
    return pairs.set_index("study_id")["fold"].astype(np.int64)


def find_stored(run_paths: Sequence[str | os.PathLike], name: str) -> Path | None:
    """The file `name` stored with the runs (a calibration, a stacking) in one of the run folders given
    (None if none); DataError when several differ, so the caller names one."""
    files = (Path(p) / name for p in run_paths)
    found = list(dict.fromkeys(f.resolve() for f in files if f.is_file()))
    if len(found) > 1 and len({f.read_bytes() for f in found}) > 1:
        raise DataError(
            f"the run folders hold {len(found)} different {name} files ({found[0]}, {found[1]}); "
            "choose one with its option"
        )
    return found[0] if found else None


def find_calibration(run_paths: Sequence[str | os.PathLike]) -> Path | None:
    """CALIBRATION_FILE stored with the runs (find_stored)."""
    return find_stored(run_paths, CALIBRATION_FILE)
