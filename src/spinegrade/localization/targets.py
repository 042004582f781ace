"""What each locator learns and how points become training targets and back.

A *task* is one series type with its named points. Points travel between three grids: the original
image (pixels of the DICOM slice), the network input (the slice resized to `size` x `size`) and the
heatmap (the input divided by the output stride). All grids put pixel centres at integer coordinates,
as DICOM and `torch.nn.functional.interpolate(align_corners=False)` do, so a resize maps
x -> (x + 0.5) * new / old - 0.5. Heatmap targets are normalised Gaussians (a distribution over pixels,
trained with cross-entropy, so the logits are a log-density); decoding takes the arg-max (robust to
secondary peaks) and refines it with a parabola through the neighbouring logits, which is exact for a
Gaussian, where a windowed soft-argmax is biased towards the peak pixel. The whole-series sagittal
locators' levels are decoded together instead (localization.levels), from the same peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import pandas as pd
import torch

from spinegrade.data.series import Series
from spinegrade.errors import DataError
from spinegrade.vocab import LEVELS


@dataclass(frozen=True)
class Task:
    """One locator: the series type it reads and the (condition, level) points it finds.

    `volume` tasks see the whole (sagittal) series as channels and also pick each point's slice;
    slice tasks (axial) see a few neighbouring slices and find points on the centre one, one heatmap per
    condition (the level comes from the sagittal locator). A refiner (`refines`) is a volume task whose
    input is a window of a few slices around one located point (localization.refine).
    """

    slug: str
    series_type: str
    conditions: tuple[str, ...]
    volume: bool
    refines: str | None = None  # a refiner: the slug of the task whose located points it refines

    @property
    def points(self) -> tuple[tuple[str, str], ...]:
        """The heatmap channels: (condition, level) for volume tasks, (condition, '') for slice tasks."""
        if self.volume:
            return tuple((c, lv) for c in self.conditions for lv in LEVELS)
        return tuple((c, "") for c in self.conditions)


TASKS: Final = (
    Task("sagittal_t2", "Sagittal T2/STIR", ("spinal_canal_stenosis",), volume=True),
    Task(
        "sagittal_t1",
        "Sagittal T1",
        ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
        volume=True,
    ),
    Task("axial_t2", "Axial T2", ("left_subarticular_stenosis", "right_subarticular_stenosis"), volume=False),
)
REFINERS: Final = tuple(
    Task(f"{t.slug}_refine", t.series_type, t.conditions, volume=True, refines=t.slug)
    for t in TASKS
    if t.volume
)
REFINER_OF: Final = {t.refines: t for t in REFINERS}  # a task's slug -> its refiner
TASK_BY_SLUG: Final = {t.slug: t for t in (*TASKS, *REFINERS)}


Coords = TypeVar("Coords", float, np.ndarray, torch.Tensor)


def rescale(coords: Coords, old: float, new: float) -> Coords:
    """Map pixel-centre coordinates from a grid of `old` pixels to one of `new` pixels along one axis."""
    return (coords + 0.5) * (new / old) - 0.5


def gaussian_heatmaps(points: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Normalised Gaussian targets (..., P, height, width) centred on `points` (..., P, 2) as (x, y).

    Missing points (NaN) give all-zero maps; mask them out of the loss.
    """
    ys = torch.arange(height, dtype=points.dtype, device=points.device)
    xs = torch.arange(width, dtype=points.dtype, device=points.device)
    dx2 = (xs - points[..., 0:1].nan_to_num(-1e6)) ** 2  # (..., P, W)
    dy2 = (ys - points[..., 1:2].nan_to_num(-1e6)) ** 2  # (..., P, H)
    maps = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2))
    return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def gaussian_1d(positions: torch.Tensor, length: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian targets (..., length) centred on `positions` (...) (slice targets)."""
    grid = torch.arange(length, dtype=positions.dtype, device=positions.device)
    d2 = (grid - positions[..., None].nan_to_num(-1e6)) ** 2
    g = torch.exp(-d2 / (2 * sigma**2))
    return g / g.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _refine(logits: torch.Tensor, peak: torch.Tensor, dim: int) -> torch.Tensor:
    """Sub-pixel offset (in [-0.5, 0.5]) of the maximum along `dim`: the vertex of the parabola through the
    logits at peak - 1, peak, peak + 1 (exact for a Gaussian: its log is a parabola). 0 at the edges."""
    n = logits.shape[dim]
    around = [torch.gather(logits, dim, (peak + d).clamp(0, n - 1)) for d in (-1, 0, 1)]
    curvature = around[0] - 2 * around[1] + around[2]
    offset = (
        0.5 * (around[0] - around[2]) / torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
    )
    inner = (peak > 0) & (peak < n - 1) & (curvature < 0)
    return torch.where(inner, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


def decode_heatmaps(logits: torch.Tensor, radius: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap logits (..., H, W) -> (points (..., 2) as (x, y) in heatmap pixels, confidence (...)).

    Arg-max refined to sub-pixel by a parabola through the neighbouring logits along x and along y;
    confidence is the softmax probability mass within +-radius pixels of the peak (1 = all of it).
    """
    h, w = logits.shape[-2:]
    logits = logits.float()
    peak = logits.flatten(-2).argmax(dim=-1)
    py, px = peak // w, peak % w
    probs = torch.softmax(logits.flatten(-2), dim=-1).unflatten(-1, (h, w))
    ys = torch.arange(h, device=logits.device)[:, None]
    xs = torch.arange(w, device=logits.device)[None, :]
    near = ((ys - py[..., None, None]).abs() <= radius) & ((xs - px[..., None, None]).abs() <= radius)
    return subpixel(logits, px, py), (probs * near).sum(dim=(-2, -1))


def subpixel(logits: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Points (..., 2) as (x, y): the integer peaks `px`, `py` (...) of heatmap logits (..., H, W) moved by
    the parabola through their neighbouring logits along x and along y."""
    h, w = logits.shape[-2:]
    row = torch.gather(logits, -2, py[..., None, None].expand(*py.shape, 1, w))[..., 0, :]  # (..., W)
    col = torch.gather(logits, -1, px[..., None, None].expand(*px.shape, h, 1))[..., 0]  # (..., H)
    x = px + _refine(row, px[..., None], -1)[..., 0]
    y = py + _refine(col, py[..., None], -1)[..., 0]
    return torch.stack([x, y], dim=-1)


def decode_slices(logits: torch.Tensor, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice logits (..., D) -> (fractional position in 0..D-1, confidence) like `decode_heatmaps`."""
    logits = logits.float()
    peak = logits.argmax(dim=-1, keepdim=True)
    position = (peak + _refine(logits, peak, -1))[..., 0]
    probs = torch.softmax(logits, dim=-1)
    near = (torch.arange(logits.shape[-1], device=logits.device) - peak).abs() <= radius
    return position, (probs * near).sum(dim=-1)


def slice_to_depth(index: np.ndarray | float, n_slices: int, depth: int) -> np.ndarray | float:
    """A slice index of an n-slice series -> its position on the `depth` resampled channels.

    The resampling keeps the first and last slice (align-corners), so a 1-slice series maps to 0.
    """
    return index * (depth - 1) / max(n_slices - 1, 1)


def depth_to_slice(position: np.ndarray | float, n_slices: int, depth: int) -> np.ndarray | float:
    """Inverse of `slice_to_depth` (fractional)."""
    return position * max(n_slices - 1, 1) / (depth - 1)


@dataclass(frozen=True)
class SeriesTargets:
    """The labelled points of one training sample, in the Series' pixel grid.

    Volume tasks: one sample per series; `points` (P, 2) and `slices` (P,) slice indices, NaN where a
    point is not labelled. Slice tasks: one sample per labelled instance (`slice_index`); `points` (P, 2)
    for the conditions marked on that instance (left and right are often marked on different slices).
    """

    points: np.ndarray
    slices: np.ndarray
    slice_index: int | None


def label_to_grid(series: Series, index: int, x: float, y: float) -> tuple[float, float]:
    """A label's (x, y), given on the instance as stored, -> the Series' pixel grid.

    read_series resamples odd-sized slices keeping the corner pixel centres, so x scales by
    (cols - 1) / (original cols - 1); slices of the common size are unchanged.
    """
    rows, cols = series.pixels.shape[1:]
    orig_rows, orig_cols = series.original_shapes[index]
    return x * (cols - 1) / max(orig_cols - 1, 1), y * (rows - 1) / max(orig_rows - 1, 1)


def series_targets(rows: pd.DataFrame, series: Series, task: Task) -> list[SeriesTargets]:
    """Turn the coordinate rows of one series (columns condition, level, instance_number, x, y) into samples.

    Rows of other conditions are ignored. An instance number the series does not hold raises DataError
    naming the series and the instance.
    """
    rows = rows[rows["condition"].isin(task.conditions)]
    channel = {p: i for i, p in enumerate(task.points)}
    n = len(task.points)

    def where(r) -> tuple[int, float, float]:
        try:
            index = series.index_of_instance(int(r.instance_number))
        except KeyError as exc:
            raise DataError(
                f"series {series.series_id}: the coordinates of {r.condition} {r.level} name instance "
                f"{int(r.instance_number)}, which the series folder does not hold ({exc.args[0]})"
            ) from None
        return (index, *label_to_grid(series, index, float(r.x), float(r.y)))

    if task.volume:
        points, slices = np.full((n, 2), np.nan), np.full(n, np.nan)
        for r in rows.itertuples(index=False):
            index, x, y = where(r)
            points[channel[(r.condition, r.level)]] = x, y
            slices[channel[(r.condition, r.level)]] = index
        return [SeriesTargets(points, slices, None)] if len(rows) else []
    samples: dict[int, np.ndarray] = {}
    for r in rows.itertuples(index=False):
        index, x, y = where(r)
        samples.setdefault(index, np.full((n, 2), np.nan))[channel[(r.condition, "")]] = x, y
    return [SeriesTargets(p, np.full(n, np.nan), i) for i, p in sorted(samples.items())]
