"""Where a phantom series' slices lie (DICOM geometry), planned on the anatomy like a technologist would.

A plan holds exactly the values written to the DICOM headers (rounded to what a DS string keeps), so label
points projected with `SeriesPlan.project` match what a reader computes from the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from spinegrade.data.phantom.anatomy import Anatomy
from spinegrade.vocab import CONDITIONS, LEVELS

SAGITTAL_AXES = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # columns run posterior, rows run inferior
AXIAL_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns run to the left, rows posterior
SAGITTAL_SLICES = (10, 20)
AXIAL_SLICES = (15, 30)


@dataclass(frozen=True)
class SeriesPlan:
    """Geometry of one series; slice i has InstanceNumber i + 1."""

    orientation: np.ndarray  # (2, 3) ImageOrientationPatient: row 0 along columns (x), row 1 along rows (y)
    positions: np.ndarray  # (n, 3) ImagePositionPatient of each slice, in instance order
    pixel_spacing: tuple[float, float]  # DICOM PixelSpacing: (between rows dy, between columns dx)
    rows: int
    cols: int
    thickness: float
    spacing: float  # between slice centres

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[0], self.orientation[1])

    def pixel_points(self, first: int = 0, stop: int | None = None) -> np.ndarray:
        """Patient coordinates (n, rows, cols, 3) float32 of the pixel centres of slices first..stop-1."""
        dy, dx = self.pixel_spacing
        along_x = ((np.arange(self.cols) * dx)[:, None] * self.orientation[0]).astype(np.float32)  # (cols, 3)
        along_y = ((np.arange(self.rows) * dy)[:, None] * self.orientation[1]).astype(np.float32)  # (rows, 3)
        origin = self.positions[first:stop, None, None, :].astype(np.float32)
        return origin + along_y[None, :, None, :] + along_x[None, None, :, :]

    def project(self, point: np.ndarray) -> tuple[int, float, float]:
        """Patient point (3,) -> (instance number of the nearest slice, x = column, y = row) on that slice."""
        offsets = (point - self.positions) @ self.normal
        nearest = int(np.argmin(np.abs(offsets)))
        d = point - self.positions[nearest]
        dy, dx = self.pixel_spacing
        return nearest + 1, float(d @ self.orientation[0] / dx), float(d @ self.orientation[1] / dy)


def _stack(
    axes: np.ndarray,
    tilt: np.ndarray,
    centre: np.ndarray,
    cover: np.ndarray,
    margin: float,
    fov: float,
    size: int,
    thickness: float,
    spacing: float,
    slices: tuple[int, int],
) -> SeriesPlan:
    """Parallel square slices with in-plane centre `centre`, covering the points `cover` (m, 3) plus margin.

    The spacing is stretched or squeezed when the slice count would leave `slices`.
    """
    turn = Rotation.from_euler("xyz", tilt, degrees=True).as_matrix()
    orientation = np.round(axes @ turn.T, 7)
    normal = np.cross(orientation[0], orientation[1])
    reach = (cover - centre) @ normal
    low, high = reach.min() - margin, reach.max() + margin
    n = int(np.ceil((high - low) / spacing)) + 1
    if not slices[0] <= n <= slices[1]:
        n = int(np.clip(n, *slices))
        spacing = (high - low) / (n - 1)
    spacing = round(spacing, 4)
    # Slice 1 lies at the far end along the normal: the patient's right on sagittals, the top on axials.
    along = (high + low) / 2.0 + (np.arange(n)[::-1] - (n - 1) / 2.0) * spacing
    dx = round(fov / size, 5)
    half = (size - 1) / 2.0 * dx
    corner = centre - half * orientation[0] - half * orientation[1]
    positions = np.round(corner + along[:, None] * normal, 4)
    return SeriesPlan(orientation, positions, (dx, dx), size, size, round(thickness, 3), spacing)


def plan_sagittal(anatomy: Anatomy, rng: np.random.Generator, size: int) -> SeriesPlan:
    """A sagittal stack over both foramina, centred near the back of the vertebral bodies."""
    foramina = np.array(
        [anatomy.target_point(c, lv) for c in CONDITIONS if "foraminal" in c for lv in LEVELS]
    )
    centre = anatomy.to_patient(0.0, anatomy.body_d, 0.0) + rng.normal(0.0, 5.0, 3) * [0.0, 1.0, 1.0]
    thickness = rng.uniform(3.0, 4.0)
    return _stack(
        SAGITTAL_AXES,
        rng.uniform(-2.0, 2.0, 3),
        centre,
        foramina,
        margin=rng.uniform(3.0, 8.0),
        fov=rng.uniform(230.0, 270.0),
        size=size,
        thickness=thickness,
        spacing=thickness + rng.uniform(0.0, 0.6),
        slices=SAGITTAL_SLICES,
    )


def plan_axial(anatomy: Anatomy, rng: np.random.Generator, size: int) -> SeriesPlan:
    """A contiguous axial stack from above L1/L2 to below L5/S1, tilted a little towards the discs."""
    canal = np.array([anatomy.target_point("spinal_canal_stenosis", lv) for lv in (LEVELS[0], LEVELS[-1])])
    k = anatomy.scale
    centre = anatomy.to_patient(0.0, anatomy.canal_v - 12.0 * k, 0.0) + rng.normal(0.0, 3.0, 3)
    thickness = rng.uniform(3.5, 5.0)
    return _stack(
        AXIAL_AXES,
        np.array([rng.uniform(-4.0, 8.0), rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)]),
        centre,
        canal,
        margin=rng.uniform(6.0, 14.0),
        fov=rng.uniform(170.0, 210.0),
        size=size,
        thickness=thickness,
        spacing=thickness + rng.uniform(0.0, 1.0),
        slices=AXIAL_SLICES,
    )
