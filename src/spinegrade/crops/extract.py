"""Cut 2.5D crops (k neighbouring slices x a square window of fixed physical size) around points.

Training (labelled points) and inference (predicted points) both cut their crops here, so a model sees
the same geometry and intensities at both times. Left and right conditions keep their side: no mirroring.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spinegrade.crops.defaults import DEFAULT_CROP_MM, DEFAULT_K, DEFAULT_SIZE, NORMALIZE_PERCENTILES
from spinegrade.data.intensity import normalize
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITION_GROUPS, GROUP_OF_CONDITION

if TYPE_CHECKING:
    from spinegrade.data.series import Series


def resolve_crop_mm(crop_mm: Mapping[str, float] | None = None) -> dict[str, float]:
    """The crop side per condition group: the defaults, overridden by `crop_mm` (validated)."""
    merged = dict(DEFAULT_CROP_MM)
    for group, mm in (crop_mm or {}).items():
        if group not in CONDITION_GROUPS:
            raise DataError(
                f"unknown condition group {group!r} in crop sizes; use {', '.join(CONDITION_GROUPS)}"
            )
        if not np.isfinite(mm) or mm <= 0:
            raise DataError(f"crop size for {group!r} must be a positive number of mm, got {mm!r}")
        merged[group] = float(mm)
    return merged


def parse_crop_mm(text: str) -> dict[str, float]:
    """'spinal=48,foraminal=40' -> {'spinal': 48.0, 'foraminal': 40.0, 'subarticular': <default>}."""
    given: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        group, _, value = item.partition("=")
        try:
            given[group.strip()] = float(value)
        except ValueError:  # also catches a missing '=' (empty value)
            raise DataError(f"crop size {item!r} is not GROUP=MM (e.g. spinal=48,foraminal=40)") from None
    return resolve_crop_mm(given)


def _check_shape_args(k: int, out_px: int) -> None:
    if k < 1 or k % 2 == 0:
        raise DataError(f"k (slices per crop) must be a positive odd number, got {k}")
    if out_px < 1:
        raise DataError(f"crop size in pixels must be positive, got {out_px}")


def _sample(
    series: Series,
    pixels: np.ndarray,
    slice_index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    size_mm: np.ndarray,
    out_px: int,
    k: int,
) -> np.ndarray:
    """Bilinear samples of `pixels` for N points at once -> float32 (N, k, out_px, out_px)."""
    _check_shape_args(k, out_px)
    n_slices = pixels.shape[0]
    centre = np.rint(slice_index).astype(np.int64)
    if np.any((centre < 0) | (centre >= n_slices)):
        raise DataError(f"series {series.series_id}: slice index {centre.tolist()} outside 0..{n_slices - 1}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError(
            f"series {series.series_id}: crop centre is not finite (x={x.tolist()}, y={y.tolist()})"
        )
    spacing = np.asarray(series.pixel_spacing, dtype=np.float64)[centre]  # (N, 2): (dy, dx) in mm
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise DataError(
            f"series {series.series_id}: PixelSpacing (0028,0030) {spacing.tolist()} is missing or not > 0"
        )
    # Pixel centres of the output grid, in input pixels: out_px cells of size_mm/out_px mm each.
    grid = np.arange(out_px, dtype=np.float64) - (out_px - 1) / 2
    rows = y[:, None] + grid[None, :] * (size_mm / out_px / spacing[:, 0])[:, None]  # (N, S)
    cols = x[:, None] + grid[None, :] * (size_mm / out_px / spacing[:, 1])[:, None]  # (N, S)
    slices = np.clip(centre[:, None] + np.arange(k) - k // 2, 0, n_slices - 1)  # (N, k): ends repeat
    # Bilinear interpolation is separable on this axis-aligned grid: along rows, then along columns.
    strip = sum(  # (N, k, S, cols)
        pixels[slices[:, :, None], index[:, None, :], :] * weight[:, None, :, None]
        for index, weight in _taps(rows, pixels.shape[1])
    )
    crops = sum(
        np.take_along_axis(strip, index[:, None, None, :], axis=3) * weight[:, None, None, :]
        for index, weight in _taps(cols, pixels.shape[2])
    )
    return np.asarray(crops, dtype=np.float32).reshape(len(centre), k, out_px, out_px)


def _taps(coords: np.ndarray, length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two linear-interpolation taps (index, weight) of fractional `coords` on an axis of `length`.

    Taps beyond the axis get weight 0 (zero padding); their index is clipped so that it can be gathered.
    """
    lower = np.floor(coords)
    fraction = coords - lower
    taps = []
    for index, weight in ((lower, 1.0 - fraction), (lower + 1, fraction)):
        inside = (index >= 0) & (index < length)
        taps.append(
            (np.clip(index, 0, length - 1).astype(np.intp), np.where(inside, weight, 0).astype(np.float32))
        )
    return taps


def crop_25d(
    series: Series,
    slice_index: int,
    x: float,
    y: float,
    *,
    size_mm: float,
    out_px: int,
    k: int,
    pixels: np.ndarray | None = None,
) -> np.ndarray:
    """One crop, float32 (k, out_px, out_px) in [0, 1], centred on pixel (x=column, y=row) of a slice.

    The window is `size_mm` wide in that slice's PixelSpacing, so it covers the same anatomy at any
    resolution; slices beyond the series ends repeat the edge slice, pixels outside the image are 0.
    `pixels` are the series' pixels already normalised (pass `normalize(series.pixels)` when cutting
    several crops from one series); they are normalised here when omitted.
    """
    pixels = normalize(series.pixels, *NORMALIZE_PERCENTILES) if pixels is None else pixels
    index, px, py, mm = (np.array([v], dtype=np.float64) for v in (slice_index, x, y, size_mm))
    return _sample(series, pixels, index, px, py, mm, out_px, k)[0]


def label_to_pixel(series: Series, instance_number: int, x: float, y: float) -> tuple[int, float, float]:
    """A label's (instance_number, x, y) -> (slice index, x, y) in the series' stored pixel grid.

    Labels are in the pixel grid of the instance as acquired; a slice that read_series resampled to the
    series' common shape (corner pixel centres kept in place) gets its coordinates scaled the same way.
    """
    index = series.index_of_instance(int(instance_number))
    original = series.original_shapes[index].astype(np.float64) - 1
    stored = np.array(series.pixels.shape[1:], dtype=np.float64) - 1
    scale = np.where(original > 0, stored / np.maximum(original, 1), 1.0)  # (rows, cols)
    return index, float(x * scale[1]), float(y * scale[0])


def crops_for_points(
    series: Series,
    points: pd.DataFrame,
    *,
    k: int = DEFAULT_K,
    size: int = DEFAULT_SIZE,
    crop_mm: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The crops of many points of one series, float32 (N, k, size, size), normalising the series once.

    `points` has a `condition` column (picks the crop side from `crop_mm` by condition group), x and y,
    and either `slice_index` (x, y in the stored pixel grid, e.g. predicted points) or `instance_number`
    (x, y in that instance's own grid, as in train_label_coordinates.csv).
    """
    sizes = resolve_crop_mm(crop_mm)
    where = "slice_index" if "slice_index" in points.columns else "instance_number"
    missing = [c for c in ("condition", "x", "y") if c not in points.columns]
    if where not in points.columns:
        missing.append("slice_index or instance_number")
    if missing:
        raise DataError(f"points for series {series.series_id} lack column(s) {', '.join(missing)}")
    unknown = sorted(set(points["condition"]) - set(GROUP_OF_CONDITION))
    if unknown:
        raise DataError(f"points for series {series.series_id} have unknown condition(s) {unknown}")
    size_mm = points["condition"].map(lambda c: sizes[GROUP_OF_CONDITION[c]]).to_numpy(np.float64)
    if where == "slice_index":
        index = points["slice_index"].to_numpy(np.float64)
        x = points["x"].to_numpy(np.float64)
        y = points["y"].to_numpy(np.float64)
    else:
        located = np.array(
            [
                label_to_pixel(series, n, px, py)
                for n, px, py in zip(points["instance_number"], points["x"], points["y"], strict=True)
            ],
            dtype=np.float64,
        ).reshape(-1, 3)
        index, x, y = located.T
    return _sample(series, normalize(series.pixels, *NORMALIZE_PERCENTILES), index, x, y, size_mm, size, k)
