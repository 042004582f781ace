"""Network inputs from Series, the training samples of a task, and their augmentation.

Inputs are built the same way for training and inference: the series is normalised (robust percentiles)
and every slice resized to size x size (`series_stack`); a volume task then resamples the slice axis to
`depth` channels keeping the first and last slice (`volume_input`), a slice task takes `context`
neighbouring slices around the centre one (`slice_input`). Samples are kept in memory as float16.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spinegrade.data.series import Series
from spinegrade.localization.targets import SeriesTargets, Task, rescale, slice_to_depth


def series_stack(series: Series, size: int, slices: np.ndarray | None = None) -> torch.Tensor:
    """The slices of a series (all, or the indices `slices`) normalised to [0, 1] (`series.normalized`,
    over the whole series) and resized to (n, size, size) float32."""
    normalized = series.normalized()
    # The shared volume is read-only and torch.from_numpy wants a writable array: a copy (fancy indexing
    # copies the chosen slices anyway).
    chosen = normalized.copy() if slices is None else normalized[slices]
    pixels = torch.from_numpy(chosen)[:, None]
    resized = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[:, 0]


def volume_input(stack: torch.Tensor, depth: int) -> torch.Tensor:
    """(n, S, S) slices -> (depth, S, S) by linear interpolation along the slice axis (ends kept)."""
    n, h, w = stack.shape
    if n == 1:
        return stack.expand(depth, h, w).clone()
    flat = stack.reshape(1, n, h * w).transpose(1, 2)  # (1, HW, n)
    return F.interpolate(flat, size=depth, mode="linear", align_corners=True)[0].T.reshape(depth, h, w)


def slice_input(stack: torch.Tensor, index: int, context: int, series: Series | None = None) -> torch.Tensor:
    """(n, S, S) slices -> (context, S, S): the slice `index` and its neighbours (edges repeated); with
    the `series` of the stack, neighbours come from the slice's own stack (angled axial blocks)."""
    if series is not None:
        return stack[torch.from_numpy(series.neighbours(index, context))]
    offsets = torch.arange(context) - context // 2
    return stack[(index + offsets).clamp(0, len(stack) - 1)]


def slice_inputs(series: Series, indices: np.ndarray, size: int, context: int) -> torch.Tensor:
    """`slice_input` of each of `indices` (N, context, size, size), resizing only the slices they use (an
    axial series has some 50 slices; five levels use at most 15)."""
    neighbours = series.neighbours(np.asarray(indices, dtype=np.int64), context)  # (N, context)
    used, inverse = np.unique(neighbours, return_inverse=True)
    return series_stack(series, size, used)[torch.from_numpy(inverse.reshape(neighbours.shape))]


@dataclass
class Samples:
    """A task's training samples: inputs, target points in input pixels and slice positions on `depth`."""

    images: np.ndarray  # (N, C, S, S) float16
    points: np.ndarray  # (N, P, 2) float32, NaN = not labelled
    slices: np.ndarray  # (N, P) float32 positions on the depth channels (volume tasks), else NaN

    def __len__(self) -> int:
        return len(self.images)


def make_samples(
    task: Task, items: Iterable[tuple[Series, list[SeriesTargets]]], size: int, depth: int, context: int
) -> Samples:
    """Build the inputs of every (series, its targets) pair; points and slices rescaled to the input."""
    images, points, slices = [], [], []
    for series, targets in items:
        stack = series_stack(series, size)
        rows, cols = series.pixels.shape[1:]
        for t in targets:
            if task.volume:
                image = volume_input(stack, depth)
            else:
                assert t.slice_index is not None  # a slice task's targets are per labelled slice
                image = slice_input(stack, t.slice_index, context, series)
            images.append(image.half().numpy())
            points.append(
                np.stack([rescale(t.points[:, 0], cols, size), rescale(t.points[:, 1], rows, size)], 1)
            )
            slices.append(slice_to_depth(t.slices, len(series), depth))
    n_points = len(task.points)
    channels = depth if task.volume else context
    return Samples(
        images=np.stack(images) if images else np.zeros((0, channels, size, size), np.float16),
        points=np.asarray(points, np.float32).reshape(-1, n_points, 2),
        slices=np.asarray(slices, np.float32).reshape(-1, n_points),
    )


class LocatorDataset(torch.utils.data.Dataset):
    """Training samples as tensors, augmented: the left-right mirror (half of the time), a random affine
    transform of the image and its points (rotation, scale, shift) and a random gamma."""

    def __init__(self, samples: Samples, task: Task) -> None:
        self.samples = samples
        self.task = task
        self.swap = torch.tensor(mirror_permutation(task))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.samples.images[i].astype(np.float32))
        points = torch.from_numpy(self.samples.points[i].copy())
        slices = torch.from_numpy(self.samples.slices[i].copy())
        return self.augment(image, points, slices)

    def augment(
        self, image: torch.Tensor, points: torch.Tensor, slices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mirror (half of the time), a random affine transform and a random gamma."""
        if torch.rand(()) < 0.5:
            image, points, slices = self._mirror(image, points, slices)
        image, points = random_affine(image, points)
        gamma = math.exp(float(torch.empty(()).uniform_(-0.3, 0.3)))
        return image.clamp(0, 1) ** gamma, points, slices

    def _mirror(
        self, image: torch.Tensor, points: torch.Tensor, slices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flip patient left-right: the slice axis of sagittal volumes, the columns of axial slices."""
        if self.task.volume:
            image, slices = image.flip(0), (image.shape[0] - 1) - slices
        else:
            image, points = image.flip(-1), points.clone()
            points[:, 0] = (image.shape[-1] - 1) - points[:, 0]
        return image, points[self.swap], slices[self.swap]


def mirror_permutation(task: Task) -> list[int]:
    """Channel order after a left-right mirror: each left_* point takes its right_* twin's place."""
    names = [
        (c.replace("left_", "\0").replace("right_", "left_").replace("\0", "right_"), lv)
        for c, lv in task.points
    ]
    return [task.points.index(n) for n in names]


def random_affine(
    image: torch.Tensor,
    points: torch.Tensor,
    rotate_deg: float = 10.0,
    scale: float = 0.1,
    shift: float = 0.06,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate, scale and shift an image (C, S, S) and its points (P, 2); points moved out of view are NaN."""
    size = image.shape[-1]
    angle = math.radians(float(torch.empty(()).uniform_(-rotate_deg, rotate_deg)))
    zoom = float(torch.empty(()).uniform_(1 - scale, 1 + scale))
    t = torch.empty(2).uniform_(-shift, shift) * 2
    # affine_grid maps output to input normalised coordinates: in = A @ out + t.
    a = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) / zoom
    theta = torch.cat([a, t[:, None]], dim=1)[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    warped = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    normalised = (2 * points + 1) / size - 1
    moved = (normalised - t) @ torch.linalg.inv(a).T
    moved = ((moved + 1) * size - 1) / 2
    outside = ((moved < 0) | (moved > size - 1)).any(dim=-1, keepdim=True)
    return warped, moved.masked_fill(outside, float("nan"))
