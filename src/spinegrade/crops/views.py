"""Second views: a sagittal target's crop cut again on the axial slice through the same point.

The spinal canal and the neural foramina show on the axial slice through a disc level as well as on the
sagittal ones, with their own noise and partial volume; one classifier learns both planes (a crop shows
which it is) and grading averages a target's views. The subarticular recesses stay axial only: their
sagittal T2 view graded worse than the axial one and added nothing averaged in (measured:
docs/results.md#second-views). A point maps into the axial series through patient space, so the located
sagittal point carries its error into its axial view.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from spinegrade.crops.extract import crop_centres, crop_instances, crops_for_points
from spinegrade.data.series import slice_through_point
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITION_SERIES, CONDITIONS

if TYPE_CHECKING:
    from spinegrade.data.series import Series

OWN: Final = "own"  # the crop in the series the condition is graded on
AXIAL: Final = "axial"  # the crop on the axial slice through a sagittal target's point
VIEWS: Final = (OWN, AXIAL)
AXIAL_SERIES: Final = "Axial T2"
# Conditions graded on sagittal series: the ones an axial view is added to.
SAGITTAL_CONDITIONS: Final = tuple(c for c in CONDITIONS if CONDITION_SERIES[c] != AXIAL_SERIES)


def check_views(views: Iterable[str]) -> tuple[str, ...]:
    """`views` as a tuple in VIEWS order; DataError unless it holds 'own' and only known views."""
    given = tuple(dict.fromkeys(v.strip() for v in views))
    unknown = [v for v in given if v not in VIEWS]
    if unknown or OWN not in given:
        raise DataError(f"views {','.join(given)!r}: give 'own' and optionally 'axial' (e.g. own,axial)")
    return tuple(v for v in VIEWS if v in given)


def parse_views(text: str) -> tuple[str, ...]:
    """'own,axial' -> ('own', 'axial') (see check_views)."""
    return check_views(part for part in text.split(",") if part.strip())


def expand_views(points: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """`points` with a `view` column: each row as 'own', then with 'axial' a copy of every sagittal
    target's row (the same point, cut on the axial slice through it). Row order: each own row followed by
    its axial copy, so rows grouped by study stay grouped."""
    views = check_views(views)
    own = points.assign(view=OWN)
    if AXIAL not in views or points.empty:
        return own.reset_index(drop=True)
    order = np.arange(len(own))
    sagittal = own["condition"].isin(SAGITTAL_CONDITIONS).to_numpy()
    both = pd.concat(
        [own.assign(_at=order, _then=0), own[sagittal].assign(view=AXIAL, _at=order[sagittal], _then=1)]
    )
    return (
        both.sort_values(["_at", "_then"], kind="stable")
        .drop(columns=["_at", "_then"])
        .reset_index(drop=True)
    )


def axial_plane(condition: Iterable[str], view: Iterable[str] | None) -> np.ndarray:
    """Whether each crop lies in an axial plane (bool (N,)): an axial condition's own view or an axial one."""
    on_axial = np.array([CONDITION_SERIES[c] == AXIAL_SERIES for c in condition], dtype=bool)
    if view is None:
        return on_axial
    return on_axial | (np.asarray(list(view), dtype=object) == AXIAL)


def axial_view_crops(
    own: Series,
    axials: Sequence[Series],
    points: pd.DataFrame,
    *,
    k: int,
    size: int,
    crop_mm: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops float32 (N, k, size, size) on the axial slice through each point of `own` (points as for
    crops_for_points), and the instances that fill them ('' and a blank crop where no axial slice holds
    the point: the target keeps its own view only)."""
    crops = np.zeros((len(points), k, size, size), dtype=np.float32)
    instances = np.full(len(points), "", dtype=object)
    if not axials or points.empty:
        return crops, instances
    index, x, y = crop_centres(own, points)
    patient = own.pixel_to_patient(index, x, y)
    picks = [slice_through_point(axials, p) for p in patient]
    for position in dict.fromkeys(p[0] for p in picks if p is not None):
        mine = np.array([i for i, p in enumerate(picks) if p is not None and p[0] == position])
        series = axials[position]
        _, ax, ay = series.patient_to_pixel(patient[mine])
        at = pd.DataFrame(
            {
                "condition": points["condition"].to_numpy()[mine],
                "slice_index": [float(p[1]) for p in (picks[i] for i in mine) if p is not None],
                "x": ax,
                "y": ay,
            }
        )
        crops[mine] = crops_for_points(series, at, k=k, size=size, crop_mm=crop_mm)
        instances[mine] = crop_instances(series, at, k=k)
    return crops, instances


def study_axials(series_by_type: Mapping[str, Sequence[Series]]) -> list[Series]:
    """The axial series of a study (by series type), where axial views are cut."""
    return list(series_by_type.get(AXIAL_SERIES, ()))
