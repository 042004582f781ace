"""Localisation errors in millimetres: located vs labelled points in patient coordinates.

Both points are mapped to patient coordinates (mm, LPS) with their own series' geometry, so an axial
point found on another axial series than the labelled one is still compared fairly, and an error across
slices counts in mm like an error within the slice.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from spinegrade.data.series import Series
from spinegrade.localization.targets import label_to_grid
from spinegrade.vocab import CONDITION_SERIES

ERROR_COLUMNS = ("study_id", "condition", "level", "located", "error_mm", "slice_error")
WITHIN_MM = 5.0


def point_errors(located: pd.DataFrame, truth: pd.DataFrame, series: Mapping[str, Series]) -> pd.DataFrame:
    """One row per labelled point: was it located, the 3-D distance in mm and the slice error.

    `located` has study_id + locate_study's columns (x, y in the Series grid); `truth` the coordinates
    table's columns (study_id, series_id, instance_number, condition, level, x, y); `series` maps series_id
    (str) to the read Series of both. slice_error is |located - labelled slice| when both are on the same
    series, else NaN; error_mm is NaN when the point was not located. Labels on series missing from
    `series` are skipped.
    """
    key = ["study_id", "condition", "level"]
    pairs = truth.merge(located, on=key, how="left", suffixes=("", "_loc"), validate="one_to_one")
    rows = []
    for r in pairs.itertuples(index=False):
        true_series = series.get(str(r.series_id))
        if true_series is None:
            continue
        true_index = true_series.index_of_instance(int(r.instance_number))
        true_point = true_series.pixel_to_patient(
            true_index, *label_to_grid(true_series, true_index, r.x, r.y)
        )
        error = slice_error = np.nan
        if not pd.isna(r.series_id_loc):
            loc_series = series[str(int(r.series_id_loc))]
            loc_point = loc_series.pixel_to_patient(int(r.slice_index), r.x_loc, r.y_loc)
            error = float(np.linalg.norm(np.asarray(loc_point) - np.asarray(true_point)))
            if int(r.series_id_loc) == int(r.series_id):
                slice_error = float(abs(int(r.slice_index) - true_index))
        rows.append((r.study_id, r.condition, r.level, not pd.isna(r.series_id_loc), error, slice_error))
    return pd.DataFrame(rows, columns=list(ERROR_COLUMNS))


def summarise_errors(errors: pd.DataFrame) -> dict:
    """Median / 90th-percentile error (mm), share within 5 mm, mean slice error and share on the right slice.

    Shares count unlocated points as misses; mm percentiles are over the located points.
    """
    mm = errors["error_mm"].dropna().to_numpy()
    slices = errors["slice_error"].dropna().to_numpy()
    n = len(errors)
    return {
        "n_points": n,
        "located_share": float(errors["located"].mean()) if n else float("nan"),
        "median_mm": float(np.median(mm)) if mm.size else float("nan"),
        "p90_mm": float(np.percentile(mm, 90)) if mm.size else float("nan"),
        "within_5mm_share": float((mm <= WITHIN_MM).sum() / n) if n else float("nan"),
        "mean_slice_error": float(slices.mean()) if slices.size else float("nan"),
        "exact_slice_share": float((slices == 0).mean()) if slices.size else float("nan"),
    }


def error_report(errors: pd.DataFrame) -> dict:
    """`summarise_errors` overall, per series type and per condition (the content of metrics.json)."""
    by_type = errors["condition"].map(CONDITION_SERIES)
    return {
        "overall": summarise_errors(errors),
        "by_series_type": {t: summarise_errors(g) for t, g in errors.groupby(by_type, sort=False)},
        "by_condition": {c: summarise_errors(g) for c, g in errors.groupby("condition", sort=False)},
    }
