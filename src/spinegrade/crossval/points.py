"""Located points against labelled ones, and the training points that expect the locator's errors.

For every labelled point of a study the locator located, `located_errors` records the label in the
series' stored pixel grid, the located point, the 3-D error in mm (localization.metrics.point_errors) and,
when both are on the same series, the signed in-plane offset in mm and the signed slice offset. Those
offsets are what `training_points` draws from ("jittered": the labelled point moved by an offset drawn
from the measured ones of the same series type) or replaces the label with ("located": the out-of-fold
located point itself), so that the classifier is trained on crops like the ones it is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from spinegrade.crops.extract import label_to_pixel
from spinegrade.data.series import Series
from spinegrade.localization.metrics import point_errors
from spinegrade.vocab import CONDITION_SERIES

TRAIN_POINTS: Final = ("labelled", "jittered", "located")
POINT_COLUMNS: Final = (
    "study_id",
    "condition",
    "level",
    "series_type",
    "series_id",
    "slice_index",
    "x",
    "y",
    "spacing_x",
    "spacing_y",
    "n_slices",
    "located",
    "series_id_loc",
    "slice_index_loc",
    "x_loc",
    "y_loc",
    "error_mm",
    "slice_error",
    "dx_mm",
    "dy_mm",
    "dslice",
)
_KEY: Final = ["study_id", "condition", "level"]


def located_errors(located: pd.DataFrame, truth: pd.DataFrame, series: Mapping[str, Series]) -> pd.DataFrame:
    """One row (POINT_COLUMNS) per labelled point of one study whose series was read.

    `located`: study_id + locate_study's columns; `truth`: the study's rows of the coordinates table;
    `series`: series_id (str) -> read Series.
    """
    errors = point_errors(located, truth, series)
    pairs = truth.merge(located, on=_KEY, how="left", suffixes=("", "_loc"), validate="one_to_one")
    rows = []
    for r in pairs.itertuples(index=False):
        label_series = series.get(str(r.series_id))
        if label_series is None:
            continue
        index, x, y = label_to_pixel(label_series, int(r.instance_number), r.x, r.y)
        spacing_y, spacing_x = (float(v) for v in label_series.pixel_spacing[index])
        found = not pd.isna(r.series_id_loc)
        same = found and int(r.series_id_loc) == int(r.series_id)
        rows.append(
            {
                "study_id": int(r.study_id),
                "condition": r.condition,
                "level": r.level,
                "series_type": CONDITION_SERIES[r.condition],
                "series_id": int(r.series_id),
                "slice_index": index,
                "x": x,
                "y": y,
                "spacing_x": spacing_x,
                "spacing_y": spacing_y,
                "n_slices": len(label_series.pixels),
                "located": found,
                "series_id_loc": int(r.series_id_loc) if found else np.nan,
                "slice_index_loc": float(r.slice_index) if found else np.nan,
                "x_loc": float(r.x_loc) if found else np.nan,
                "y_loc": float(r.y_loc) if found else np.nan,
                "dx_mm": (r.x_loc - x) * spacing_x if same else np.nan,
                "dy_mm": (r.y_loc - y) * spacing_y if same else np.nan,
                "dslice": float(r.slice_index) - index if same else np.nan,
            }
        )
    frame = pd.DataFrame(rows, columns=[c for c in POINT_COLUMNS if c not in ("error_mm", "slice_error")])
    frame = frame.merge(errors[[*_KEY, "error_mm", "slice_error"]], on=_KEY, how="left")
    return frame[list(POINT_COLUMNS)]


def training_points(rows: pd.DataFrame, points: pd.DataFrame, mode: str, *, seed: int = 0) -> pd.DataFrame:
    """The crop rows (prepare's labelled rows) moved to `mode`'s points, x, y and slice_index in the stored
    grid; rows of targets the locator never saw (no row in `points`) are left out.

    located: the out-of-fold located point (the labelled one where none was located); jittered: the
    labelled point plus an offset drawn at random from the measured same-series offsets of its series
    type (pooled over the folds: only the error distribution is used, never a study's own error).
    """
    if mode not in TRAIN_POINTS[1:]:
        raise ValueError(f"training points {mode!r}: use one of {', '.join(TRAIN_POINTS[1:])}")
    grid = points[[*_KEY, "slice_index", "x", "y"]]
    out = rows.drop(columns=["x", "y"]).merge(grid, on=_KEY, how="inner")
    extra = points.set_index(_KEY).loc[pd.MultiIndex.from_frame(out[_KEY])].reset_index(drop=True)
    if mode == "located":
        found = extra["located"].astype(bool).to_numpy() & extra["series_id_loc"].notna().to_numpy()
        out.loc[found, "series_id"] = extra.loc[found, "series_id_loc"].astype(np.int64).to_numpy()
        for column in ("slice_index", "x", "y"):
            out.loc[found, column] = extra.loc[found, f"{column}_loc"].to_numpy()
    else:
        rng = np.random.default_rng(seed)
        measured = points.dropna(subset=["dx_mm", "dy_mm", "dslice"])
        for series_type, at in out.groupby(extra["series_type"].to_numpy()).indices.items():
            pool = measured.loc[measured["series_type"] == series_type, ["dx_mm", "dy_mm", "dslice"]]
            if pool.empty:
                continue
            draw = pool.to_numpy()[rng.integers(0, len(pool), size=len(at))]
            part = extra.iloc[at]
            out.loc[out.index[at], "x"] = out["x"].to_numpy()[at] + draw[:, 0] / part["spacing_x"].to_numpy()
            out.loc[out.index[at], "y"] = out["y"].to_numpy()[at] + draw[:, 1] / part["spacing_y"].to_numpy()
            moved = out["slice_index"].to_numpy()[at] + draw[:, 2]
            out.loc[out.index[at], "slice_index"] = np.clip(moved, 0, part["n_slices"].to_numpy() - 1)
    out = out.astype({"series_id": np.int64})
    out.attrs["kind"] = mode
    return out


def error_summary(points: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per series type (and overall): points, share located, median / p90 error in mm, share within 5 mm,
    share on the exact slice and within one slice (of the points located on the labelled series)."""
    from spinegrade.localization.metrics import summarise_errors

    def summary(group: pd.DataFrame) -> dict[str, float]:
        out = summarise_errors(group)
        slices = group["slice_error"].dropna().to_numpy()
        out["within_1_slice_share"] = float((slices <= 1).mean()) if slices.size else float("nan")
        return out

    by_type = {t: summary(g) for t, g in points.groupby("series_type", sort=True)}
    return {"overall": summary(points), **by_type}
