"""One phantom study: labels, anatomy, series plans and ids, the CSV rows it contributes, and its DICOMs.

Everything is drawn from generators seeded by (seed, study index) alone, so a study is the same whichever
worker makes it, and its CSV rows can be rebuilt without rendering (for resuming).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from pydicom.uid import generate_uid

from spinegrade.phantom.anatomy import Anatomy, sample_anatomy
from spinegrade.phantom.dicom_writer import SeriesHeader, write_series
from spinegrade.phantom.geometry import SeriesPlan, plan_axial, plan_sagittal
from spinegrade.phantom.labels import LabelSample, narrowing_of, sample_labels
from spinegrade.phantom.render import render_series, study_contrast
from spinegrade.phantom.settings import DEFAULT_AXIAL_BLOCKS, SECOND_AXIAL_RATE
from spinegrade.vocab import (
    CONDITION_SERIES,
    LABEL_COLUMNS,
    LEVELS,
    SERIES_TYPES,
    SEVERITY_LABELS,
    TARGETS,
    condition_display,
    level_display,
)

SPLITS: Final = ("train", "test")
STIR_RATE: Final = 0.2  # share of studies whose Sagittal T2/STIR is a STIR
CLICK_MM: Final = 0.6  # standard deviation of a radiologist's click around the true place
SERIES_ID_RANGE: Final = (10_000, 4_294_967_295)  # like the real ids (up to 10 digits)


@dataclass(frozen=True)
class PhantomSeries:
    """One series of a study: ids, the sequence it is imaged with, and where its slices lie."""

    series_id: int
    description: str
    sequence: str
    plan: SeriesPlan


@dataclass(frozen=True)
class PhantomStudy:
    """Everything about one study except its pixels."""

    index: int
    study_id: int
    split: str
    labels: LabelSample  # one row
    anatomy: Anatomy
    series: tuple[PhantomSeries, ...]  # in SERIES_TYPES order, then a second axial T2 if any
    points: tuple[tuple[int, int, float, float], ...]  # per target: (series_id, instance_number, x, y)
    frame_of_reference_uid: str
    uid_entropy: str
    render_seed: np.random.SeedSequence
    header_descriptions: bool = False  # write SeriesDescription into the DICOMs (the Kaggle files do not)

    def label_row(self) -> dict[str, object]:
        """The study's train.csv row: study_id and the 25 severities (None where blank)."""
        row: dict[str, object] = {"study_id": self.study_id}
        for column, code, blank in zip(
            LABEL_COLUMNS, self.labels.severity[0], self.labels.blank[0], strict=True
        ):
            row[column] = None if blank else SEVERITY_LABELS[code]
        return row

    def coordinate_rows(self, every_point: bool = False) -> list[dict[str, object]]:
        """The study's train_label_coordinates.csv rows: none for blank targets, nor (unless `every_point`,
        as in the test split's truth) for the point-less ones that imitate the real file's omissions."""
        keep = ~self.labels.blank[0] if every_point else ~(self.labels.blank[0] | self.labels.no_point[0])
        return [
            {
                "study_id": self.study_id,
                "series_id": series_id,
                "instance_number": instance,
                "condition": condition_display(condition),
                "level": level_display(level),
                "x": x,
                "y": y,
            }
            for (condition, level), (series_id, instance, x, y), kept in zip(
                TARGETS, self.points, keep, strict=True
            )
            if kept
        ]

    def description_rows(self) -> list[dict[str, object]]:
        """The study's *_series_descriptions.csv rows."""
        return [
            {"study_id": self.study_id, "series_id": s.series_id, "series_description": s.description}
            for s in self.series
        ]

    def write_images(self, folder: Path) -> int:
        """Render and write every series as folder/<series_id>/<n>.dcm; returns the number of files."""
        rng = np.random.default_rng(self.render_seed)
        contrast = study_contrast(rng)
        count = 0
        for series in self.series:
            pixels, bits = render_series(self.anatomy, series.plan, series.sequence, rng, contrast)
            header = SeriesHeader(
                study_id=self.study_id,
                series_id=series.series_id,
                description=series.description if self.header_descriptions else "",
                frame_of_reference_uid=self.frame_of_reference_uid,
                uid_entropy=self.uid_entropy,
            )
            count += len(write_series(folder / str(series.series_id), series.plan, pixels, bits, header))
        return count


def make_study(
    seed: int,
    index: int,
    study_id: int,
    split: str,
    size: int | None,
    uid_entropy: str,
    axial_blocks: float = DEFAULT_AXIAL_BLOCKS,
    header_descriptions: bool = False,
) -> PhantomStudy:
    """Draw study `index` of the phantom with `seed` (cheap: no pixels are rendered).

    `size` None gives real image sizes; `axial_blocks` is the chance that the axial T2 is angled blocks.
    """
    spec_seed, render_seed = np.random.SeedSequence(seed, spawn_key=(1, index)).spawn(2)
    rng = np.random.default_rng(spec_seed)
    labels = sample_labels(rng, 1)
    anatomy = sample_anatomy(rng, narrowing_of(labels.latent[0]))
    blocks = bool(rng.random() < axial_blocks)
    second = bool(rng.random() < SECOND_AXIAL_RATE)
    kinds = (*SERIES_TYPES, "Axial T2") if second else SERIES_TYPES
    ids = rng.choice(SERIES_ID_RANGE[1] - SERIES_ID_RANGE[0], len(kinds), replace=False)
    sequences = {"Sagittal T1": "T1", "Sagittal T2/STIR": "STIR" if rng.random() < STIR_RATE else "T2"}
    plans = [
        plan_sagittal(anatomy, rng, size),
        plan_sagittal(anatomy, rng, size),
        plan_axial(anatomy, rng, size, blocks),
    ]
    if second:  # a repeat over the lower discs, as blocks
        plans.append(plan_axial(anatomy, rng, size, True, LEVELS[int(rng.integers(2, 4)) :]))
    series = tuple(
        PhantomSeries(
            series_id=int(series_id) + SERIES_ID_RANGE[0],
            description=description,
            sequence=sequences.get(description, "T2"),
            plan=plan,
        )
        for series_id, description, plan in zip(ids, kinds, plans, strict=True)
    )
    by_description = {s.description: s for s in series[: len(SERIES_TYPES)]}
    points = []
    for condition, level in TARGETS:
        target = by_description[CONDITION_SERIES[condition]]
        click = anatomy.target_point(condition, level) + rng.normal(0.0, CLICK_MM, 3)
        points.append((target.series_id, *target.plan.project(click)))
    return PhantomStudy(
        index=index,
        study_id=study_id,
        split=split,
        labels=labels,
        anatomy=anatomy,
        series=series,
        points=tuple(points),
        frame_of_reference_uid=generate_uid(entropy_srcs=[uid_entropy, str(study_id), "frame-of-reference"]),
        uid_entropy=uid_entropy,
        render_seed=render_seed,
        header_descriptions=header_descriptions,
    )
