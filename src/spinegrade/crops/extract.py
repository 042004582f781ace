"""Cut 2.5D crops (k neighbouring slices x a square window of fixed physical size) around points.

Training (labelled points) and inference (predicted points) both cut their crops here, so a model sees
the same geometry and intensities at both times. Left and right conditions keep their side: no mirroring.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

from spinegrade.crops.defaults import DEFAULT_CROP_MM, DEFAULT_K, DEFAULT_SIZE, NORMALIZE_PERCENTILES
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITION_GROUPS, GROUP_OF_CONDITION

if TYPE_CHECKING:
    from spinegrade.data.series import Series

_TRUNCATE = 4.0  # the anti-aliasing Gaussian's reach in sigmas (scipy's default)


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


def sample_crops(
    series: Series,
    pixels: np.ndarray,
    slice_index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    size_mm: np.ndarray,
    out_px: int,
    k: int,
) -> np.ndarray:
    """Crops of `pixels` (the series' normalised slices) around N points at once -> float32 (N, k, out_px,
    out_px), each `size_mm` wide (see crop_25d); the classifier's crops and the refiners' windows."""
    _check_shape_args(k, out_px)
    n_slices = pixels.shape[0]
    centre = np.rint(slice_index).astype(np.int64)
    if np.any((centre < 0) | (centre >= n_slices)):
        raise DataError(f"series {series.series_id}: slice index {centre.tolist()} outside 0..{n_slices - 1}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError(
            f"series {series.series_id}: crop centre is not finite (x={x.tolist()}, y={y.tolist()})"
        )
    spacing = np.asarray(series.pixel_spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing[centre]) & (spacing[centre] > 0)):
        raise DataError(
            f"series {series.series_id}: PixelSpacing (0028,0030) {spacing[centre].tolist()} is missing or "
            "not > 0"
        )
    # Pixel centres of the output grid on the centre slice, in its pixels: out_px cells of size_mm/out_px mm.
    grid = np.arange(out_px, dtype=np.float64) - (out_px - 1) / 2
    step_mm = size_mm / out_px  # (N,)
    rows = y[:, None] + grid[None, :] * (step_mm[:, None] / spacing[centre, 0][:, None])  # (N, S)
    cols = x[:, None] + grid[None, :] * (step_mm[:, None] / spacing[centre, 1][:, None])  # (N, S)
    slices = series.neighbours(centre, k)  # (N, k): the centre's own stack, its ends repeated
    r_grid = np.broadcast_to(rows[:, :, None], (len(centre), out_px, out_px))  # (N, S, S)
    c_grid = np.broadcast_to(cols[:, None, :], (len(centre), out_px, out_px))
    points = None  # patient positions of the centre grids (N, S, S, 3), when a neighbour needs them
    taps = []  # per (crop, channel): the slice, its smoothing and the sampling coordinates on it
    boxes: dict[tuple[int, float, float], tuple[int, int, int, int]] = {}  # the source region each needs
    for j in range(k):
        if np.all(slices[:, j] == centre):
            r, c = r_grid, c_grid
        else:  # the centre grid's patient positions, in each neighbour's own pixel grid
            if points is None:
                points = series.pixel_to_patient(centre[:, None, None], c_grid, r_grid)
            s = slices[:, j]
            relative = points - series.positions[s][:, None, None]
            orientation = series.slice_orientations[s]
            c = np.einsum("nabj,nj->nab", relative, orientation[:, 0]) / spacing[s, 1][:, None, None]
            r = np.einsum("nabj,nj->nab", relative, orientation[:, 1]) / spacing[s, 0][:, None, None]
            own = slices[:, j] == centre  # a repeated end: the centre slice itself, on its own grid
            r, c = np.where(own[:, None, None], r_grid, r), np.where(own[:, None, None], c_grid, c)
        for n in range(len(centre)):
            key = (int(slices[n, j]), *_antialias_sigma(step_mm[n], spacing[slices[n, j]]))
            boxes[key] = _union(boxes.get(key), _tap_box(r[n], c[n], key[1:], pixels.shape[1:]))
            taps.append((n, j, key, r[n], c[n]))
    regions = {key: _smoothed_region(pixels[key[0]], key[1:], box) for key, box in boxes.items()}
    out = np.empty((len(centre), k, out_px, out_px), dtype=np.float32)
    for n, j, key, r, c in taps:
        region, (top, left) = regions[key]
        out[n, j] = ndimage.map_coordinates(
            region, [r - top, c - left], order=1, mode="grid-constant", cval=0.0
        )
    return out


def _tap_box(
    r: np.ndarray, c: np.ndarray, sigma: tuple[float, float], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive: the part of a slice of `shape` that bilinear
    taps at (r, c) read, widened by the reach of the Gaussian of `sigma` and clipped to the slice (never
    empty); the whole slice when a coordinate is not finite."""
    if not (np.isfinite(r).all() and np.isfinite(c).all()):
        return 0, shape[0], 0, shape[1]
    box = []
    for values, s, size in ((r, sigma[0], shape[0]), (c, sigma[1], shape[1])):
        reach = int(_TRUNCATE * s + 0.5) if s > 0 else 0  # scipy's kernel radius
        low = min(max(0, int(np.floor(values.min())) - reach), size - 1)
        high = max(min(size, int(np.floor(values.max())) + 2 + reach), low + 1)
        box += [low, high]
    return box[0], box[1], box[2], box[3]


def _union(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The smallest box holding boxes a (None: none) and b."""
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _smoothed_region(
    image: np.ndarray, sigma: tuple[float, float], box: tuple[int, int, int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """(the `box` of `image` Gaussian-smoothed with `sigma`, its (top, left) in the image).

    Equal to that box of the whole slice smoothed (zeros beyond the slice): the box reaches the kernel's
    radius beyond every tap or ends at the slice's edge, so each value kept sees the pixels it would
    see in the whole slice; only the part the crops read is smoothed. No smoothing: the slice itself.
    """
    if not any(sigma):
        return image, (0, 0)
    top, bottom, left, right = box
    part = ndimage.gaussian_filter(image[top:bottom, left:right], sigma, mode="constant", truncate=_TRUNCATE)
    return part, (top, left)


def _antialias_sigma(step_mm: float, spacing: np.ndarray) -> tuple[float, float]:
    """Gaussian sigma (rows, cols; source pixels) that removes what an output pixel of `step_mm` cannot hold.

    (factor - 1) / 2 per axis, factor = output / source pixel size (as skimage's anti-aliased resize); 0
    when the output pixel is not coarser than the source (the locator's resize anti-aliases likewise).
    """
    factor = step_mm / np.asarray(spacing, dtype=np.float64)
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    return float(round(sigma[0], 6)), float(round(sigma[1], 6))


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
    resolution. The k channels are the slice and its neighbours in its own stack (`Series.neighbours`:
    canonical order, the stack's ends repeated); each neighbour is sampled at the patient positions of
    the centre slice's grid through its own geometry, so tilted or shifted neighbours stay aligned.
    Bilinear taps; a source finer than the output pixel is Gaussian-smoothed first (anti-aliasing).
    Pixels outside the image are 0.
    `pixels` are the series' pixels already normalised; by default `series.normalized` (computed once per
    series and shared with the locator).
    """
    pixels = series.normalized(*NORMALIZE_PERCENTILES) if pixels is None else pixels
    index, px, py, mm = (np.array([v], dtype=np.float64) for v in (slice_index, x, y, size_mm))
    return sample_crops(series, pixels, index, px, py, mm, out_px, k)[0]


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
    """The crops of many points of one series, float32 (N, k, size, size), from `series.normalized`.

    `points` has a `condition` column (picks the crop side from `crop_mm` by condition group), x and y,
    and either `slice_index` (x, y in the stored pixel grid, e.g. predicted points) or `instance_number`
    (x, y in that instance's own grid, as in train_label_coordinates.csv).
    """
    sizes = resolve_crop_mm(crop_mm)
    index, x, y = crop_centres(series, points)
    unknown = sorted(set(points["condition"]) - set(GROUP_OF_CONDITION))
    if unknown:
        raise DataError(f"points for series {series.series_id} have unknown condition(s) {unknown}")
    size_mm = points["condition"].map(lambda c: sizes[GROUP_OF_CONDITION[c]]).to_numpy(np.float64)
    return sample_crops(series, series.normalized(*NORMALIZE_PERCENTILES), index, x, y, size_mm, size, k)


def crop_instances(series: Series, points: pd.DataFrame, *, k: int = DEFAULT_K) -> list[str]:
    """The instance numbers, space separated, that fill the k channels of each point's crop, in order
    (edge repeats included): the provenance of what crops_for_points cuts for the same `points`."""
    index, _, _ = crop_centres(series, points)
    _check_shape_args(k, 1)
    slices = series.neighbours(np.rint(index).astype(np.int64), k)
    return [" ".join(str(int(n)) for n in series.instance_numbers[row]) for row in slices]


def crop_centres(series: Series, points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slice index, x, y) float64 arrays of `points` in the stored pixel grid (see crops_for_points)."""
    where = "slice_index" if "slice_index" in points.columns else "instance_number"
    missing = [c for c in ("condition", "x", "y") if c not in points.columns]
    if where not in points.columns:
        missing.append("slice_index or instance_number")
    if missing:
        raise DataError(f"points for series {series.series_id} lack column(s) {', '.join(missing)}")
    if where == "slice_index":
        return tuple(points[c].to_numpy(np.float64) for c in ("slice_index", "x", "y"))
    located = np.array(
        [
            label_to_pixel(series, n, px, py)
            for n, px, py in zip(points["instance_number"], points["x"], points["y"], strict=True)
        ],
        dtype=np.float64,
    ).reshape(-1, 3)
    return located[:, 0], located[:, 1], located[:, 2]
