"""Where a phantom series' slices lie (DICOM geometry), planned on the anatomy like a technologist would.

As in the real data, image sizes and pixel spacing vary by series, sagittal stacks have 15-19 slices of
3-4 mm with gaps, an axial series is either one stack over the lumbar spine or a block of a few slices
parallel to each disc (each block with its own orientation, gaps between blocks), and InstanceNumber runs
along the slice normal in some studies and against it in others. A plan holds exactly the values written
to the DICOM headers (rounded to what a DS string keeps), so label points projected with
`SeriesPlan.project` match what a reader computes from the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from spinegrade.phantom.anatomy import DISCS, Anatomy
from spinegrade.vocab import CONDITIONS, LEVELS

SAGITTAL_AXES = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # columns run posterior, rows run inferior
AXIAL_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns run to the left, rows posterior
SAGITTAL_SLICES = (15, 19)
AXIAL_SLICES = (20, 50)  # one stack over the lumbar spine
BLOCK_SLICES = (3, 5)  # per disc, in an axial series of angled blocks
REAL_SIZES = (320, 384, 448, 512, 576, 640)  # image widths (pixels) of real series
REAL_SPACING = (0.3, 0.9)  # pixel spacing (mm) of real series
TALL_RATE = 0.4  # share of sagittal series taller than wide (e.g. 540 x 384, as in the real study)


@dataclass(frozen=True)
class SeriesPlan:
    """Geometry of one series; slice i has InstanceNumber i + 1 and its own orientation (angled blocks)."""

    orientations: np.ndarray  # (n, 2, 3) ImageOrientationPatient: row 0 along columns (x), 1 along rows (y)
    positions: np.ndarray  # (n, 3) ImagePositionPatient of each slice, in instance order
    pixel_spacing: tuple[float, float]  # DICOM PixelSpacing: (between rows dy, between columns dx)
    rows: int
    cols: int
    thickness: float
    spacing: float  # between slice centres within a stack or block

    @property
    def orientation(self) -> np.ndarray:
        """(2, 3) orientation of the first slice (that of every slice unless the series has angled blocks)."""
        return self.orientations[0]

    @property
    def normals(self) -> np.ndarray:
        """(n, 3) slice normals."""
        return np.cross(self.orientations[:, 0], self.orientations[:, 1])

    def pixel_points(self, first: int = 0, stop: int | None = None) -> np.ndarray:
        """Patient coordinates (n, rows, cols, 3) float32 of the pixel centres of slices first..stop-1."""
        dy, dx = self.pixel_spacing
        o = self.orientations[first:stop].astype(np.float32)  # (n, 2, 3)
        along_x = (np.arange(self.cols, dtype=np.float32) * dx)[None, :, None] * o[:, None, 0]  # (n, cols, 3)
        along_y = (np.arange(self.rows, dtype=np.float32) * dy)[None, :, None] * o[:, None, 1]  # (n, rows, 3)
        origin = self.positions[first:stop, None, None, :].astype(np.float32)
        return origin + along_y[:, :, None, :] + along_x[:, None, :, :]

    def project(self, point: np.ndarray) -> tuple[int, float, float]:
        """Patient point (3,) -> (instance number of the nearest slice, x = column, y = row) on that slice."""
        offsets = np.einsum("nj,nj->n", point - self.positions, self.normals)
        nearest = int(np.argmin(np.abs(offsets)))
        d = point - self.positions[nearest]
        dy, dx = self.pixel_spacing
        o = self.orientations[nearest]
        return nearest + 1, float(d @ o[0] / dx), float(d @ o[1] / dy)


def _image_size(rng: np.random.Generator, size: int | None, sagittal: bool) -> tuple[int, int]:
    """(rows, cols): `size` x `size` when given, else a real width (320-640); sagittals taller at times."""
    if size is not None:
        return size, size
    cols = int(rng.choice(REAL_SIZES))
    if sagittal and rng.random() < TALL_RATE:
        return min(640, 2 * round(cols * rng.uniform(1.2, 1.45) / 2)), cols  # e.g. 540 x 384
    return cols, cols


def _pixel_spacing(fov: float, pixels: int, size: int | None) -> float:
    """Pixel spacing (mm) of a field of view across `pixels`; real sizes keep it to the real 0.3-0.9 mm."""
    dx = fov / pixels if size is not None else float(np.clip(fov / pixels, *REAL_SPACING))
    return round(dx, 5)


def _frame(axes: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """Orientation (2, 3) of `axes` turned by the Euler angles `tilt` (degrees), rounded like a DS string."""
    turn = Rotation.from_euler("xyz", tilt, degrees=True).as_matrix()
    return np.round(axes @ turn.T, 7)


def _slices(
    orientation: np.ndarray,
    centre: np.ndarray,
    along: np.ndarray,
    rows: int,
    cols: int,
    dx: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Orientations (n, 2, 3) and positions (n, 3) of slices at offsets `along` the normal from `centre`."""
    normal = np.cross(orientation[0], orientation[1])
    corner = centre - (cols - 1) / 2.0 * dx * orientation[0] - (rows - 1) / 2.0 * dx * orientation[1]
    positions = np.round(corner + along[:, None] * normal, 4)
    return np.repeat(orientation[None], len(along), axis=0), positions


def _offsets(cover: np.ndarray, margin: float, spacing: float, slices: tuple[int, int]) -> np.ndarray:
    """Slice offsets along the normal (ascending) covering the offsets `cover` plus margin, centred on them.

    At least slices[0] slices at `spacing`; the spacing is stretched when more than slices[1] would be needed.
    """
    low, high = cover.min() - margin, cover.max() + margin
    n = int(np.ceil((high - low) / spacing)) + 1
    if n > slices[1]:
        n, spacing = slices[1], (high - low) / (slices[1] - 1)
    n = max(n, slices[0])
    return (high + low) / 2.0 + (np.arange(n) - (n - 1) / 2.0) * round(spacing, 4)


def _plan(
    parts: list[tuple[np.ndarray, np.ndarray]],
    rows: int,
    cols: int,
    dx: float,
    thickness: float,
    spacing: float,
    reverse: bool,
) -> SeriesPlan:
    """Join stacks/blocks [(orientations, positions)] into one plan, numbered in order or in `reverse`."""
    orientations = np.concatenate([o for o, _ in parts])
    positions = np.concatenate([p for _, p in parts])
    if reverse:
        orientations, positions = orientations[::-1], positions[::-1]
    return SeriesPlan(
        np.ascontiguousarray(orientations),
        np.ascontiguousarray(positions),
        (dx, dx),
        rows,
        cols,
        round(thickness, 3),
        round(spacing, 4),
    )


def plan_sagittal(anatomy: Anatomy, rng: np.random.Generator, size: int | None) -> SeriesPlan:
    """A sagittal stack of 15-19 slices over both foramina, centred near the back of the vertebral bodies."""
    foramina = np.array(
        [anatomy.target_point(c, lv) for c in CONDITIONS if "foraminal" in c for lv in LEVELS]
    )
    centre = anatomy.to_patient(0.0, anatomy.body_d, 0.0) + rng.normal(0.0, 5.0, 3) * [0.0, 1.0, 1.0]
    rows, cols = _image_size(rng, size, sagittal=True)
    dx = _pixel_spacing(rng.uniform(220.0, 300.0), rows, size)
    thickness = round(rng.uniform(3.0, 4.0) * 2) / 2  # 3, 3.5 or 4 mm
    spacing = thickness + rng.uniform(0.2, 0.8)
    orientation = _frame(SAGITTAL_AXES, rng.uniform(-2.0, 2.0, 3))
    normal = np.cross(orientation[0], orientation[1])
    along = _offsets(
        (foramina - centre) @ normal,
        margin=rng.uniform(2.0, 6.0),
        spacing=spacing,
        slices=(int(rng.integers(SAGITTAL_SLICES[0], SAGITTAL_SLICES[1] + 1)), SAGITTAL_SLICES[1]),
    )
    part = _slices(orientation, centre, along, rows, cols, dx)
    spacing = float(np.diff(along).mean())
    return _plan([part], rows, cols, dx, thickness, spacing, reverse=rng.random() < 0.5)


def plan_axial(
    anatomy: Anatomy,
    rng: np.random.Generator,
    size: int | None,
    blocks: bool = False,
    levels: tuple[str, ...] = LEVELS,
) -> SeriesPlan:
    """An axial T2: one stack from above L1/L2 to below L5/S1, tilted a little towards the discs, or with
    `blocks` a block of 3-5 slices parallel to each disc of `levels`, top to bottom."""
    k = anatomy.scale
    rows, cols = _image_size(rng, size, sagittal=False)
    dx = _pixel_spacing(rng.uniform(160.0, 220.0), cols, size)
    thickness = round(rng.uniform(3.5, 5.0) * 2) / 2
    spacing = thickness + rng.uniform(0.0, 1.0)
    shift = rng.normal(0.0, 3.0, 3)
    from_top = rng.random() < 0.7  # most real axial series run from the top (InstanceNumber 1) down
    if not blocks:
        canal = np.array(
            [anatomy.target_point("spinal_canal_stenosis", lv) for lv in (LEVELS[0], LEVELS[-1])]
        )
        centre = anatomy.to_patient(0.0, anatomy.canal_v - 12.0 * k, 0.0) + shift
        orientation = _frame(
            AXIAL_AXES, np.array([rng.uniform(-4.0, 8.0), rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)])
        )
        normal = np.cross(orientation[0], orientation[1])
        along = _offsets((canal - centre) @ normal, rng.uniform(6.0, 14.0), spacing, AXIAL_SLICES)
        part = _slices(orientation, centre, along, rows, cols, dx)
        return _plan([part], rows, cols, dx, thickness, float(np.diff(along).mean()), reverse=from_top)
    parts = []
    for level in levels:
        s = anatomy.disc_s[DISCS.index(level)]
        centre = anatomy.to_patient(0.0, anatomy.canal_v - 12.0 * k, s) + shift
        left = anatomy.to_patient(1.0, anatomy.canal_v, s) - anatomy.to_patient(0.0, anatomy.canal_v, s)
        up = anatomy.to_patient(0.0, anatomy.canal_v, s + 1.0) - anatomy.to_patient(0.0, anatomy.canal_v, s)
        left = left / np.linalg.norm(left)
        back = np.cross(up, left)  # orthonormal: DICOM's row and column directions are unit and perpendicular
        back = back / np.linalg.norm(back)
        jitter = Rotation.from_euler("xyz", rng.uniform(-3.0, 3.0, 3), degrees=True).as_matrix()
        orientation = np.round(np.stack([left, back]) @ jitter.T, 7)
        n = int(rng.integers(BLOCK_SLICES[0], BLOCK_SLICES[1] + 1))
        along = (np.arange(n)[::-1] - (n - 1) / 2.0) * round(spacing, 4) + rng.normal(0.0, 1.0)
        parts.append(_slices(orientation, centre, along, rows, cols, dx))  # each block from the top down
    # The blocks run from the top down; a series numbered from the bottom up reverses them.
    return _plan(parts, rows, cols, dx, thickness, spacing, reverse=not from_top)
