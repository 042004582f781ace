"""Find the studies to grade and read one study's series, grouped by series type.

The test split's series descriptions say which folder holds which series type; without them every study
folder under the image folder is taken and each series' type comes from its SeriesDescription tag (axial
series without a known description are recognised by their orientation). Reading never raises for one bad
series: what went wrong is returned as Problems, so one damaged study cannot stop the others.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.data.series import Series, read_usable_series
from spinegrade.data.tables import descriptions_file, read_series_descriptions
from spinegrade.errors import DataError, Problem
from spinegrade.vocab import SERIES_TYPES

_TYPE_BY_TEXT = {t.casefold(): t for t in SERIES_TYPES}
# |normal . z| above this makes a slice stack axial (LPS: z runs superior).
_AXIAL_COSINE = 0.8


@dataclass(frozen=True)
class StudyPlan:
    """Where one study's series live; `series_type` None means "take it from the DICOM headers"."""

    study_id: int
    series: tuple[tuple[str | None, Path], ...]
    problems: tuple[Problem, ...] = ()


@dataclass
class StudyImages:
    """The series of one study read into memory, by series type, with what went wrong while reading and
    how the series were acquired (notes: Problem.note)."""

    study_id: int
    series_by_type: dict[str, list[Series]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0  # spent reading

    def series_by_id(self) -> dict[str, Series]:
        """Every series of the study by its series_id (folder name)."""
        return {s.series_id: s for group in self.series_by_type.values() for s in group}


def series_type(text: str | None) -> str | None:
    """A series description -> its vocab.SERIES_TYPES spelling (case and spacing ignored), else None."""
    return _TYPE_BY_TEXT.get(" ".join(str(text).split()).casefold()) if text else None


def discover_studies(data_dir: str | os.PathLike, images: str | os.PathLike | None = None) -> list[StudyPlan]:
    """The studies of the test split, in the order of test_series_descriptions.csv (first appearance).

    `images` (default DATA_DIR/test_images) holds <study_id>/<series_id>/*.dcm. Without the descriptions
    file, every numerically named study folder there is a study (ascending id), typed from its headers.
    """
    data_dir = Path(data_dir)
    image_dir = Path(images) if images is not None else data_dir / "test_images"
    described = data_dir / descriptions_file("test")
    if described.is_file():
        return _plans_from_descriptions(read_series_descriptions(described), image_dir)
    if not image_dir.is_dir():
        raise DataError(
            f"neither {described} nor the image folder {image_dir} exists; pass the folder holding "
            "test_series_descriptions.csv and test_images/, or the image folder with --images"
        )
    studies = sorted(
        (p for p in image_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not studies:
        raise DataError(f"{image_dir} has no study folders (named by their numeric study id)")
    return [
        StudyPlan(int(s.name), tuple((None, p) for p in sorted(s.iterdir()) if p.is_dir())) for s in studies
    ]


def _plans_from_descriptions(descriptions: pd.DataFrame, image_dir: Path) -> list[StudyPlan]:
    """One plan per described study (file order); series of unknown description become Problems."""
    plans = []
    file = descriptions.attrs.get("file")
    for study_id, rows in descriptions.groupby("study_id", sort=False):
        series, problems = [], []
        for row in rows.itertuples():
            kind = series_type(row.series_description)
            if kind is None:
                problems.append(
                    Problem(
                        "unknown_series_description",
                        f"study {study_id} series {row.series_id} is described as "
                        f"{row.series_description!r}, not one of "
                        f"{', '.join(SERIES_TYPES)}; it is ignored",
                        file=file,
                        study_id=int(study_id),
                        series_id=int(row.series_id),
                    )
                )
            else:
                series.append((kind, image_dir / str(study_id) / str(row.series_id)))
        plans.append(StudyPlan(int(study_id), tuple(series), tuple(problems)))
    return plans


def read_study(plan: StudyPlan) -> StudyImages:
    """Read every series of a study (read_usable_series: corrupt slices skipped); a series that cannot be
    read or whose geometry cannot be used is left out with a Problem, so only its targets get priors.

    Safe to run in a worker process: it returns plain data and raises for nothing a file can cause.
    """
    study = StudyImages(plan.study_id, problems=list(plan.problems))
    for kind, folder in plan.series:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            series, problems = read_usable_series(folder)  # the policy prepare reads with
        study.problems.extend(replace(p, study_id=plan.study_id) for p in problems)
        study.problems.extend(_problem(plan, folder, "series_warning", str(w.message)) for w in caught)
        if series is None:  # unreadable, or no usable geometry: only the targets it serves get priors
            continue
        study.problems.extend(replace(n, study_id=plan.study_id) for n in series.notes)
        kind = kind or series_type(series.description) or _type_from_geometry(series)
        if kind is None:
            study.problems.append(
                _problem(
                    plan,
                    folder,
                    "unknown_series_type",
                    f"SeriesDescription {series.description!r} is not one of {', '.join(SERIES_TYPES)} "
                    "and the series is not axial; it is ignored",
                )
            )
            continue
        study.series_by_type.setdefault(kind, []).append(series)
    return study


def _type_from_geometry(series: Series) -> str | None:
    """'Axial T2' for a stack whose slices are roughly transverse; sagittal T1 and T2 look alike."""
    normal = series.normal
    return "Axial T2" if np.isfinite(normal).all() and abs(normal[2]) > _AXIAL_COSINE else None


def _problem(plan: StudyPlan, folder: Path, kind: str, message: str) -> Problem:
    """A Problem of one series of the study; its message starts with the study and series ids."""
    where = f"study {plan.study_id} series {folder.name}: "
    return Problem(
        kind,
        message if message.startswith(where) else where + message,
        file=str(folder),
        study_id=plan.study_id,
        series_id=int(folder.name) if folder.name.isdigit() else None,
    )
