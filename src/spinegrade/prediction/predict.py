"""Grade whole studies end to end: read -> locate -> crop -> classify -> submission.csv.

One study is in memory at a time (plus the few being read ahead by `workers` processes), so memory does
not grow with the number of studies. Whatever cannot be graded from images - a missing or unreadable
series type, a point the locator did not find, a study that fails altogether - gets the per-level prior
probabilities, a warning and a line in the closing summary; the other studies go on. Each study also gets
OUT/studies/<study_id>.json (points, grades, problems); with `resume` a study whose JSON was written by the
same models is taken from it instead of being graded again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from spinegrade import __version__
from spinegrade.crops.cache import write_atomic
from spinegrade.data.tables import (
    SAMPLE_SUBMISSION,
    TRAIN_LABELS,
    labels_long,
    read_sample_submission,
    read_train_labels,
)
from spinegrade.errors import DataError, Problem
from spinegrade.evaluation.priors import level_priors
from spinegrade.prediction.grade import CropSpec, Ensemble, cut_crops
from spinegrade.prediction.studies import StudyImages, StudyPlan, discover_studies, read_study
from spinegrade.runtime import torch_threads
from spinegrade.vocab import (
    CONDITION_SERIES,
    CONDITIONS,
    LEVELS,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGETS,
    make_row_id,
)

STAGES: Final = ("read", "locate", "crop", "classify")
GRADE_COLUMNS: Final = ("condition", "level", *SEVERITIES, "source")
# The real sample_submission.csv's order within a study: conditions alphabetically, levels top-down.
_ROW_ORDER: Final = sorted(TARGETS, key=lambda t: (t[0], LEVELS.index(t[1])))

Locate = Callable[[Mapping[str, Sequence[Any]]], pd.DataFrame]


class PredictionWarning(UserWarning):
    """A study (or part of one) was graded with prior probabilities instead of its images."""


@dataclass
class StudyResult:
    """One graded study: the located points, 25 grades (source 'model' or 'prior') and what went wrong."""

    study_id: int
    points: pd.DataFrame
    grades: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)

    def rows(self) -> pd.DataFrame:
        """The study's 25 submission rows, in the real sample submission's order."""
        grades = self.grades.set_index(["condition", "level"]).loc[_ROW_ORDER]
        out = grades[list(SEVERITIES)].reset_index(drop=True)
        out.insert(0, "row_id", [make_row_id(self.study_id, c, lv) for c, lv in _ROW_ORDER])
        return out

    def to_json(self, fingerprint: str) -> dict[str, Any]:
        grades = self.grades.assign(
            grade=[SEVERITY_LABELS[i] for i in self.grades[list(SEVERITIES)].to_numpy().argmax(1)]
        )
        return {
            "study_id": self.study_id,
            "fingerprint": fingerprint,
            "series": self.series,
            "points": self.points.to_dict("records"),
            "grades": grades.to_dict("records"),
            "problems": [p.to_dict() for p in self.problems],
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyResult:
        return cls(
            int(data["study_id"]),
            pd.DataFrame(data["points"]),
            pd.DataFrame(data["grades"])[list(GRADE_COLUMNS)],
            [Problem(**p) for p in data["problems"]],
            dict(data["seconds"]),
            dict(data["series"]),
        )


@dataclass
class PredictionSummary:
    """What `predict` did: where it wrote, how long it took, which studies fell back to priors and why."""

    submission: Path
    details: Path
    n_studies: int
    prior_source: str
    seconds_per_study: dict[str, float]
    problems: list[Problem]
    resumed: int = 0

    def studies_with_priors(self) -> dict[int, list[str]]:
        """study_id -> what went wrong in each study where some or all targets got prior probabilities."""
        fallback = {p.study_id for p in self.problems if p.kind in FALLBACK_KINDS}
        out: dict[int, list[str]] = {}
        for p in self.problems:
            if p.study_id in fallback:
                out.setdefault(p.study_id, []).append(p.message)
        return out


# Problems after which some targets of the study were graded with priors.
FALLBACK_KINDS: Final = frozenset(
    {
        "missing_series_type",
        "not_located",
        "locate_failed",
        "crop_failed",
        "unreadable_study",
        "study_not_found",
    }
)


# ------------------------------------------------------------------------------------------------ priors


def load_priors(ensemble: Ensemble, data_dir: Path) -> tuple[pd.DataFrame, str]:
    """Per-level priors (condition, level, normal_mild, moderate, severe) and where they came from.

    The runs' own training-label priors (best.json "priors", averaged) when every run has them; else
    the challenge-weighted class frequencies of DATA_DIR/train.csv; else uniform.
    """
    stored = [run.info.get("priors") for run in ensemble.runs]
    if all(stored):
        tables = [
            pd.DataFrame(p).set_index(["condition", "level"]).loc[list(TARGETS), list(SEVERITIES)]
            for p in stored
        ]
        mean = sum(t.to_numpy(np.float64) for t in tables) / len(tables)
        return _prior_frame(mean), "the classifier runs' training labels (best.json)"
    train_csv = data_dir / TRAIN_LABELS
    if train_csv.is_file():
        priors = level_priors(labels_long(read_train_labels(train_csv)), weighted=True)
        return priors, f"{train_csv} (class frequencies x 1/2/4, renormalised)"
    uniform = np.full((len(TARGETS), len(SEVERITIES)), 1 / len(SEVERITIES))
    return _prior_frame(uniform), "uniform (no train.csv beside the test data)"


def _prior_frame(values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=list(SEVERITIES))
    frame.insert(0, "level", [lv for _, lv in TARGETS])
    frame.insert(0, "condition", [c for c, _ in TARGETS])
    return frame


# ------------------------------------------------------------------------------------------------ grading


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
                _problem(images.study_id, "locate_failed", f"locator failed: {_reason(exc)}")
            )
    points = _valid_points(points)
    result.seconds["locate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    series_by_id = images.series_by_id()
    crops: dict[CropSpec, list[np.ndarray]] = {spec: [] for spec in ensemble.specs}
    kept = []
    for series_id, rows in points.groupby(points["series_id"].astype(str), sort=False):
        try:
            cut = {spec: cut_crops(series_by_id, rows, spec) for spec in ensemble.specs}
        except (DataError, ValueError) as exc:
            result.problems.append(
                _problem(images.study_id, "crop_failed", f"series {series_id}: crops failed: {_reason(exc)}")
            )
            continue
        for spec, array in cut.items():
            crops[spec].append(array)
        kept.append(rows)
    points = pd.concat(kept, ignore_index=True) if kept else points.iloc[:0]
    result.seconds["crop"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if len(points):
        probs = ensemble.predict({spec: np.concatenate(arrays) for spec, arrays in crops.items()}, points)
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
                _problem(
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
                _problem(
                    images.study_id,
                    "not_located",
                    f"study {images.study_id}: no usable point on the {series_type} series for {targets}; "
                    "prior probabilities used",
                )
            )
    return problems


def _problem(study_id: int, kind: str, message: str) -> Problem:
    return Problem(kind, message, study_id=study_id)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------------- reading


def read_studies(plans: Iterable[StudyPlan], workers: int = 0) -> Iterator[StudyImages]:
    """Read studies in order; with workers > 0, that many processes read ahead (at most `workers` studies
    wait in memory). A study whose reading fails outright comes back empty with the reason."""
    if workers <= 0:
        yield from map(_read_timed, plans)
        return
    plans = iter(plans)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque[tuple[StudyPlan, Future[StudyImages]]] = deque()

        def submit() -> None:
            plan = next(plans, None)
            if plan is not None:
                pending.append((plan, pool.submit(_read_timed, plan)))

        for _ in range(workers):
            submit()
        while pending:
            plan, future = pending.popleft()
            submit()
            try:
                yield future.result()
            except Exception as exc:  # a worker that died: report the study, keep going
                reason = _problem(plan.study_id, "unreadable_study", f"reading failed: {_reason(exc)}")
                yield StudyImages(plan.study_id, problems=[*plan.problems, reason])


def _read_timed(plan: StudyPlan) -> StudyImages:
    start = time.perf_counter()
    images = read_study(plan)
    images.seconds = time.perf_counter() - start
    return images


# ------------------------------------------------------------------------------------------- submission


def align_with_sample(
    plans: list[StudyPlan], sample: pd.DataFrame | None
) -> tuple[list[StudyPlan], list[Problem]]:
    """The studies to grade when a sample submission fixes the rows: its studies, each found or not.

    Studies only in the images are left out (the submission must have exactly the sample's rows);
    studies only in the sample get no series (priors) and a 'study_not_found' problem.
    """
    if sample is None:
        return plans, []
    wanted = dict.fromkeys(int(r.partition("_")[0]) for r in sample["row_id"])
    by_id = {p.study_id: p for p in plans}
    problems = [
        _problem(p.study_id, "not_in_sample", f"study {p.study_id} is not in {SAMPLE_SUBMISSION}; not graded")
        for p in plans
        if p.study_id not in wanted
    ]
    aligned = []
    for study_id in wanted:
        if study_id in by_id:
            aligned.append(by_id[study_id])
        else:
            aligned.append(StudyPlan(study_id, ()))
            problems.append(
                _problem(
                    study_id, "study_not_found", f"study {study_id} of {SAMPLE_SUBMISSION} has no images"
                )
            )
    return aligned, problems


def submission_frame(results: Sequence[StudyResult], sample: pd.DataFrame | None) -> pd.DataFrame:
    """All studies' rows: in the sample submission's order when given (every sample row checked), else
    study by study in the real file's order."""
    rows = pd.concat([r.rows() for r in results], ignore_index=True)
    if sample is None:
        return rows
    missing = sample.loc[~sample["row_id"].isin(rows["row_id"]), "row_id"]
    if len(missing):
        raise DataError(
            f"{SAMPLE_SUBMISSION} row {missing.iloc[0]!r} (and {len(missing) - 1} more) got no prediction"
        )
    return rows.set_index("row_id").loc[sample["row_id"]].reset_index()


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """CSV without the index, written to a temporary name beside `path`, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, frame.to_csv(index=False))


def fingerprint(ensemble: Ensemble, locator_dir: Path, tta: bool) -> str:
    """Identifies the grading models (files, sizes, modification times): --resume reuses only their work."""
    files = [run.path / name for run in ensemble.runs for name in ("best.safetensors", "best.json")]
    files += sorted(p for p in locator_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join([__version__, f"tta={tta}", *parts]).encode()).hexdigest()[:16]


def _resumed(path: Path, key: str) -> StudyResult | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return StudyResult.from_json(data) if data.get("fingerprint") == key else None


# ------------------------------------------------------------------------------------------ orchestration


def predict(
    data_dir: str | os.PathLike,
    runs: Sequence[str | os.PathLike],
    locator_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    details: str | os.PathLike | None = None,
    figures: bool = False,
    workers: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    tta: bool = False,
    threads: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> PredictionSummary:
    """Grade every test study of DATA_DIR and write the submission CSV `out` (see the module doc).

    details (default: OUT's folder/studies) gets one JSON per study and, with `figures`, an overlay PNG
    per series. threads: torch's CPU threads while predicting (0: torch's default). One is the default:
    the models see one small batch per study, and on 2 shared cores a second thread made them 4-15x
    slower (bench/predict.py), while `workers` can use the other core to read ahead.
    Raises DataError for unusable inputs (no runs, no locator, a bad CSV); never for one study.
    """
    from spinegrade.localization.locate import load_locator, locate_study

    data_dir, out, locator_dir = Path(data_dir), Path(out), Path(locator_dir)
    details_dir = Path(details) if details is not None else out.parent / "studies"
    sample_path = data_dir / SAMPLE_SUBMISSION
    sample = read_sample_submission(sample_path) if sample_path.is_file() else None
    plans, problems = align_with_sample(discover_studies(data_dir, images), sample)
    ensemble = Ensemble.load(runs, device=device, batch_size=batch_size, tta=tta)
    locator = load_locator(locator_dir, device=device)
    priors, prior_source = load_priors(ensemble, data_dir)
    key = fingerprint(ensemble, locator_dir, tta)
    details_dir.mkdir(parents=True, exist_ok=True)

    results: dict[int, StudyResult] = {}
    if resume:
        for plan in plans:
            done = _resumed(details_dir / f"{plan.study_id}.json", key)
            if done is not None:
                results[plan.study_id] = done
    todo = [p for p in plans if p.study_id not in results]
    with torch_threads(threads):
        for result in grade_studies(
            todo,
            lambda series_by_type: locate_study(series_by_type, locator),
            ensemble,
            priors,
            details_dir,
            key,
            workers=workers,
            figures=figures,
            progress=progress,
        ):
            results[result.study_id] = result

    ordered = [results[p.study_id] for p in plans]
    write_csv_atomic(submission_frame(ordered, sample), out)
    fresh = [results[p.study_id] for p in todo]
    seconds = {
        stage: float(np.mean([r.seconds.get(stage, 0.0) for r in fresh])) if fresh else 0.0
        for stage in STAGES
    }
    return PredictionSummary(
        out,
        details_dir,
        len(plans),
        prior_source,
        seconds,
        problems + [p for r in ordered for p in r.problems],
        resumed=len(plans) - len(todo),
    )


def grade_studies(
    plans: Sequence[StudyPlan],
    locate: Locate,
    ensemble: Ensemble,
    priors: pd.DataFrame,
    details_dir: Path,
    key: str,
    *,
    workers: int = 0,
    figures: bool = False,
    progress: bool = True,
) -> Iterator[StudyResult]:
    """Read and grade studies one by one (progress bar), writing each one's JSON (and figures) as it is
    done and warning (PredictionWarning) about every target graded with priors."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from spinegrade.prediction.overlay import write_overlays

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("grading studies", total=len(plans))
        for study in read_studies(plans, workers):
            result = grade_study(study, locate, ensemble, priors)
            if figures:
                clock = time.perf_counter()
                write_overlays(study, result, details_dir / "figures")
                result.seconds["figures"] = time.perf_counter() - clock
            del study  # one study's images in memory at a time
            text = json.dumps(result.to_json(key), indent=1) + "\n"
            write_atomic(details_dir / f"{result.study_id}.json", text)
            for p in result.problems:
                if p.kind in FALLBACK_KINDS:
                    warnings.warn(p.message, PredictionWarning, stacklevel=2)
            bar.update(task, advance=1, description=f"graded study {result.study_id}")
            yield result
