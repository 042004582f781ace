"""Refine located sagittal points on a window around each: finer pixels in-plane, the slice re-picked.

A whole-series locator sees a sagittal series at `size` px (about 2.6 mm per pixel at 96 px over a
250 mm field), so its points are coarse, and the end-to-end score pays most for the sagittal points'
in-plane error (measured: docs/results.md#refinement). A refiner is a LocatorNet of the same points (one
heatmap and one slice distribution each) whose input is a window of `refine_mm` at `refine_size` px and
`refine_depth` slices cut around one located point by `crops.extract.sample_crops`, as the classifier's
crops are; only the point's own channel is read. It trains on windows around the labelled points moved
at random in-plane (up to a quarter of the window) and by up to one slice, so it learns to walk back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import torch

from spinegrade.crops.defaults import NORMALIZE_PERCENTILES
from spinegrade.crops.extract import sample_crops
from spinegrade.data.series import Series
from spinegrade.errors import DataError
from spinegrade.localization.dataset import LocatorDataset, Samples
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import SeriesTargets, Task, decode_heatmaps, decode_slices, rescale

if TYPE_CHECKING:
    from spinegrade.localization.locate import LocatorModel

MARGIN: Final = 1.5  # training windows are cut this much wider and cropped at a random place
SLICE_SHIFT: Final = 1  # ... and this many slices deeper on each side, the window moved by up to that


def _margin(settings: LocatorSettings) -> tuple[int, float]:
    """(side in px, side in mm) of a training window: the inference window's pixel size, MARGIN wider."""
    side = round(settings.refine_size * MARGIN)
    return side, settings.refine_mm * side / settings.refine_size


def window_samples(
    task: Task, items: Iterable[tuple[Series, list[SeriesTargets]]], settings: LocatorSettings
) -> Samples:
    """A refiner's training samples: one wider window per labelled point, the point at its centre.

    `settings` are the whole-series locator's (refine_mm, refine_size, refine_depth). Each sample's
    target is its own point's channel only (the others are NaN).
    """
    side, side_mm = _margin(settings)
    depth = settings.refine_depth + 2 * SLICE_SHIFT
    n_points = len(task.points)
    images, points, slices = [], [], []
    for series, targets in items:
        pixels = series.normalized(*NORMALIZE_PERCENTILES)
        for t in targets:
            seen = np.flatnonzero(~np.isnan(t.slices))
            if not seen.size:
                continue
            x, y = t.points[seen, 0], t.points[seen, 1]
            windows = sample_crops(
                series, pixels, t.slices[seen], x, y, np.full(seen.size, side_mm), side, depth
            )
            for p, window in zip(seen, windows, strict=True):
                images.append(window.astype(np.float16))
                target, on_slice = np.full((n_points, 2), np.nan), np.full(n_points, np.nan)
                target[p], on_slice[p] = (side - 1) / 2, depth // 2
                points.append(target)
                slices.append(on_slice)
    return Samples(
        images=np.stack(images) if images else np.zeros((0, depth, side, side), np.float16),
        points=np.asarray(points, np.float32).reshape(-1, n_points, 2),
        slices=np.asarray(slices, np.float32).reshape(-1, n_points),
    )


class WindowDataset(LocatorDataset):
    """A refiner's windows: each wider training window cropped to the input at a random place and slice
    shift, then augmented like the whole-series locators' inputs."""

    def __init__(self, samples: Samples, task: Task, settings: LocatorSettings) -> None:
        super().__init__(samples, task)
        self.size, self.depth = settings.size, settings.depth

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        side = self.samples.images.shape[-1]
        first = SLICE_SHIFT + int(torch.randint(-SLICE_SHIFT, SLICE_SHIFT + 1, ()))
        top, left = (int(v) for v in torch.randint(0, side - self.size + 1, (2,)))
        window = self.samples.images[
            i, first : first + self.depth, top : top + self.size, left : left + self.size
        ]
        points = self.samples.points[i] - np.array([left, top], np.float32)
        slices = self.samples.slices[i] - first
        return self.augment(
            torch.from_numpy(window.astype(np.float32)), torch.from_numpy(points), torch.from_numpy(slices)
        )


def refine_rows(
    model: LocatorModel, series_list: Sequence[Series], rows: list[dict], device: torch.device
) -> list[dict]:
    """`rows` (a volume task's located points, each on one of `series_list`) with slice_index,
    instance_number, x and y refined on a window around each point; the confidence stays the whole-series
    locator's."""
    s = model.settings
    by_id = {int(series.series_id): series for series in series_list}
    out = [dict(r) for r in rows]
    for series_id in sorted({int(r["series_id"]) for r in out}):
        series = by_id[series_id]
        mine = [r for r in out if int(r["series_id"]) == series_id]
        index = np.array([r["slice_index"] for r in mine], dtype=np.int64)
        x = np.array([r["x"] for r in mine], dtype=np.float64)
        y = np.array([r["y"] for r in mine], dtype=np.float64)
        pixels = series.normalized(*NORMALIZE_PERCENTILES)
        try:
            windows = sample_crops(
                series, pixels, index, x, y, np.full(len(mine), s.refine_mm), s.size, s.depth
            )
        except DataError:
            continue  # its points stay unrefined; their crops fail alike, and grading says why
        heatmaps, slice_logits = model.net(torch.from_numpy(windows).to(device))
        assert slice_logits is not None  # a refiner is a volume task
        channel = torch.tensor([model.task.points.index((r["condition"], r["level"])) for r in mine])
        at = torch.arange(len(mine))
        xy, _ = decode_heatmaps(heatmaps.cpu()[at, channel])
        position, _ = decode_slices(slice_logits.cpu()[at, channel])
        h, w = heatmaps.shape[-2:]
        step = s.refine_mm / s.size  # mm per window pixel
        spacing = np.asarray(series.pixel_spacing, dtype=np.float64)[index]  # (N, 2): rows, columns
        centre = (s.size - 1) / 2
        new_x = x + (rescale(xy[:, 0].numpy(), w, s.size) - centre) * step / spacing[:, 1]
        new_y = y + (rescale(xy[:, 1].numpy(), h, s.size) - centre) * step / spacing[:, 0]
        pick = np.clip(np.rint(position.numpy()), 0, s.depth - 1).astype(np.int64)
        new_index = series.neighbours(index, s.depth)[np.arange(len(mine)), pick]
        rows_px, cols_px = series.pixels.shape[1:]  # the window may overhang the image
        new_x, new_y = np.clip(new_x, 0, cols_px - 1), np.clip(new_y, 0, rows_px - 1)
        for r, i, nx, ny in zip(mine, new_index, new_x, new_y, strict=True):
            r.update(
                slice_index=int(i),
                instance_number=int(series.instance_numbers[i]),
                x=float(nx),
                y=float(ny),
            )
    return out
