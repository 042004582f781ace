"""The Series data model: a volume of slices with the patient geometry (LPS, mm) of each slice.

Maps pixels to patient space and back across stacks (angled blocks); knows nothing of files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from spinegrade.data.intensity import normalize
from spinegrade.errors import DataError, Problem

# The default of Series.slice_orientations and .stacks: __post_init__ replaces it with the derived value.
_DERIVED = np.empty(0)


@dataclass(frozen=True)
class Series:
    """A DICOM series as a float32 volume plus the geometry needed to map pixels to patient space (LPS, mm).

    The slices form one or more stacks (`stacks`: the stack number of each slice, contiguous, ascending):
    slices of one stack share an orientation and lie along one normal; several stacks are e.g. the angled
    axial blocks of a lumbar protocol. Each slice keeps its own geometry (`slice_orientations` (n, 2, 3),
    `positions`, `pixel_spacing`); `orientation` is the series' representative orientation. read_series
    orders every stack canonically (see `normal`): sagittal right -> left, axial head -> feet, coronal
    anterior -> posterior, whatever the sign of the DICOM normal; stacks follow one another the same way.
    `problems` lists what read_series worked around (slices set aside, duplicates, skipped files);
    `notes` how the series was acquired (angled blocks, InstanceNumber against the slice order).
    Missing geometry is NaN.
    """

    pixels: np.ndarray
    instance_numbers: np.ndarray
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    original_shapes: np.ndarray
    slice_thickness: float | None
    series_id: str
    description: str | None = None
    slice_orientations: np.ndarray = field(default_factory=lambda: _DERIVED)
    stacks: np.ndarray = field(default_factory=lambda: _DERIVED)
    problems: tuple[Problem, ...] = ()
    notes: tuple[Problem, ...] = ()
    _normalized: dict[tuple[float, float], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n = len(self.pixels)
        expected = {
            "pixels": (self.pixels, (n, None, None)),
            "instance_numbers": (self.instance_numbers, (n,)),
            "positions": (self.positions, (n, 3)),
            "orientation": (self.orientation, (2, 3)),
            "pixel_spacing": (self.pixel_spacing, (n, 2)),
            "original_shapes": (self.original_shapes, (n, 2)),
        }
        for name, (value, shape) in expected.items():
            if np.ndim(value) != len(shape) or any(
                want is not None and got != want for got, want in zip(np.shape(value), shape, strict=True)
            ):
                raise ValueError(
                    f"Series {self.series_id}: {name} has shape {np.shape(value)}, expected {shape}"
                )
        if self.slice_orientations is _DERIVED:
            object.__setattr__(self, "slice_orientations", np.repeat(self.orientation[None], n, axis=0))
        elif np.shape(self.slice_orientations) != (n, 2, 3):
            raise ValueError(
                f"Series {self.series_id}: slice_orientations has shape {np.shape(self.slice_orientations)}, "
                f"expected {(n, 2, 3)}"
            )
        if self.stacks is _DERIVED:
            object.__setattr__(self, "stacks", np.zeros(n, dtype=np.int64))
        elif np.shape(self.stacks) != (n,) or (n > 1 and np.any(np.diff(self.stacks) < 0)):
            raise ValueError(
                f"Series {self.series_id}: stacks must be (n,) stack numbers in ascending (contiguous) order"
            )

    def __len__(self) -> int:
        return len(self.pixels)

    def normalized(self, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
        """`normalize(pixels, lower, upper)`, computed once per series and shared by all its users (the
        locator's inputs and the crops of a study read the same array, so it is read-only)."""
        key = (float(lower), float(upper))
        if key not in self._normalized:
            shared = normalize(self.pixels, lower, upper)
            shared.flags.writeable = False
            self._normalized[key] = shared
        return self._normalized[key]

    @property
    def n_stacks(self) -> int:
        """Number of stacks (1 for a plain series; more for angled blocks)."""
        return len(np.unique(self.stacks)) if len(self) else 0

    @property
    def normal(self) -> np.ndarray:
        """Unit direction (3,) of increasing slice index: +-cross(row, column) of `orientation`.

        Its sign is read from the slice positions (first stack with two distinct positions), so
        `slice_locations` ascend within each stack; read_series sorts slices so that it is canonical:
        towards patient left (+x, LPS) for sagittal, feet (-z) for axial, posterior (+y) for coronal.
        """
        normal = np.cross(self.orientation[0], self.orientation[1])
        start, stop = self.stack_bounds()
        for first in np.unique(start):
            last = stop[first] - 1
            step = float((self.positions[last] - self.positions[first]) @ normal)
            if np.isfinite(step) and step != 0:
                return normal if step > 0 else -normal
        return normal

    @property
    def slice_locations(self) -> np.ndarray:
        """Position of each slice along `normal` (mm); ascending within each stack."""
        return self.positions @ self.normal

    def stack_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """First index and one past the last index (each (n,)) of the stack of every slice."""
        first = np.searchsorted(self.stacks, self.stacks, side="left")
        last = np.searchsorted(self.stacks, self.stacks, side="right")
        return first.astype(np.int64), last.astype(np.int64)

    def neighbours(self, index: np.ndarray | int, k: int) -> np.ndarray:
        """The k slices (..., k) centred on each `index`, from its own stack only; the stack's ends repeat."""
        index = np.asarray(index, dtype=np.int64)
        start, stop = self.stack_bounds()
        offsets = np.arange(k) - k // 2
        return np.clip(index[..., None] + offsets, start[index][..., None], stop[index][..., None] - 1)

    def index_of_instance(self, instance_number: int) -> int:
        """Slice index of an instance number (as in train_label_coordinates.csv)."""
        hits = np.flatnonzero(self.instance_numbers == instance_number)
        if hits.size == 0:
            raise KeyError(
                f"series {self.series_id} has no instance {instance_number} "
                f"(its {len(self)} slices are instances {self.instance_numbers.min()}.."
                f"{self.instance_numbers.max()})"
            )
        return int(hits[0])

    def pixel_to_patient(
        self, slice_index: np.ndarray | float, x: np.ndarray | float, y: np.ndarray | float
    ) -> np.ndarray:
        """Patient coordinates (..., 3) of pixel (x = column, y = row) on a slice; arguments broadcast.

        Pixel centres sit at integer coordinates (DICOM): P = IPP + x*dx*row_dir + y*dy*col_dir. A fractional
        slice index interpolates the slice origin linearly within the stack of its nearest slice
        (extrapolates beyond the stack's ends).
        """
        idx, x, y = (np.asarray(v, dtype=np.float64) for v in (slice_index, x, y))
        np.broadcast_shapes(idx.shape, x.shape, y.shape)  # the arguments must broadcast
        origin, orientation, spacing = self._plane_at(idx)  # once per index, not per broadcast pixel
        return (
            origin
            + (x * spacing[..., 1])[..., None] * orientation[..., 0, :]
            + (y * spacing[..., 0])[..., None] * orientation[..., 1, :]
        )

    def patient_to_pixel(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map patient points (..., 3) into this series: (fractional slice index, x, y), each (...).

        The nearest slice plane of all stacks is found first; the index then interpolates linearly with
        the neighbour of that slice in its own stack on the point's side (for parallel slices:
        interpolation on `slice_locations`), extrapolating at the stack's ends; x, y are the in-plane
        pixel coordinates on the plane at that index, so `pixel_to_patient` inverts it.
        """
        points = np.asarray(points, dtype=np.float64)
        distance = self._plane_distances(points)
        nearest = np.argmin(np.abs(np.nan_to_num(distance, nan=np.inf)), axis=-1)
        d_near = np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0]
        start, stop = self.stack_bounds()
        first, last = start[nearest], stop[nearest] - 1
        single = first == last
        # Interpolate with the neighbour on the point's side of the nearest plane (or the inner one at
        # the stack's ends, which extrapolates).
        other = np.clip(np.where(d_near > 0, nearest + 1, nearest - 1), first, last)
        other = np.where(other == nearest, np.where(nearest == first, nearest + 1, nearest - 1), other)
        other = np.where(single, nearest, other)
        d_other = np.take_along_axis(distance, np.clip(other, 0, len(self) - 1)[..., None], axis=-1)[..., 0]
        denom = d_near - d_other
        safe = np.where(denom == 0, 1.0, denom)
        step = self.slice_thickness or np.inf  # one-slice stack: unknown step unless the thickness is known
        idx = np.where(
            single,
            nearest + d_near / step,
            nearest + np.where(denom == 0, 0.0, (other - nearest) * d_near / safe),
        )
        origin, orientation, spacing = self._plane_at(idx, nearest)
        relative = points - origin
        x = np.einsum("...j,...j->...", relative, orientation[..., 0, :]) / spacing[..., 1]
        y = np.einsum("...j,...j->...", relative, orientation[..., 1, :]) / spacing[..., 0]
        return idx, x, y

    def nearest_slice(self, points: np.ndarray) -> np.ndarray:
        """Index (int64, (...)) of the slice (any stack) whose own plane is closest to each point (..., 3)."""
        distance = self._plane_distances(np.asarray(points, dtype=np.float64))
        if np.isnan(distance).any():
            raise DataError(
                f"series {self.series_id}: no nearest slice for NaN points or slices without geometry "
                "(ImagePositionPatient / ImageOrientationPatient missing)"
            )
        return np.argmin(np.abs(distance), axis=-1).astype(np.int64)

    def slice_normals(self) -> np.ndarray:
        """Unit normal (n, 3) of each slice's own plane, signed to agree with `normal`."""
        normals = np.cross(self.slice_orientations[:, 0], self.slice_orientations[:, 1])
        return normals * np.where(normals @ self.normal < 0, -1.0, 1.0)[:, None]

    def _plane_distances(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (..., n) of each point to each slice plane, positive towards higher indices."""
        normals = self.slice_normals()
        offsets = np.einsum("nj,nj->n", self.positions, normals)
        return points @ normals.T - offsets

    def _plane_at(
        self, idx: np.ndarray, nearest: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Origin (..., 3), orientation (..., 2, 3), spacing (..., 2) of the plane at fractional indices.

        The origin interpolates within the stack of `nearest` (default: the index rounded).
        """
        n = len(self)
        if nearest is None:
            # Integer parts from a NaN-free copy: NaN geometry must give NaN coordinates, not an IndexError.
            whole = np.nan_to_num(idx, nan=0.0, posinf=n - 1, neginf=0.0)
            nearest = np.clip(np.rint(whole), 0, n - 1).astype(np.intp)
        start, stop = self.stack_bounds()
        first, last = start[nearest], stop[nearest] - 1
        whole = np.nan_to_num(idx, nan=0.0, posinf=n - 1, neginf=0.0)
        lower = np.clip(np.floor(whole), first, np.maximum(last - 1, first)).astype(np.intp)
        upper = np.minimum(lower + 1, last)
        weight = (idx - lower)[..., None]
        step = np.where(
            (upper == lower)[..., None],
            self.slice_normals()[lower] * (self.slice_thickness or 0.0),
            self.positions[upper] - self.positions[lower],
        )
        origin = self.positions[lower] + weight * step
        return origin, self.slice_orientations[nearest], self.pixel_spacing[nearest]


def map_point(
    src: Series, slice_index: np.ndarray | float, x: np.ndarray | float, y: np.ndarray | float, dst: Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map pixel (slice_index, x, y) of `src` to (fractional slice index, x, y) in `dst` via patient space.

    E.g. a sagittal level point to the axial slice through it. Both series must come from the same study
    (one frame of reference).
    """
    return dst.patient_to_pixel(src.pixel_to_patient(slice_index, x, y))


def slice_through_point(series_list: Sequence[Series], point: np.ndarray) -> tuple[int, int] | None:
    """(position in `series_list`, slice index) of the slice plane nearest `point`, or None.

    Only series that hold the point are considered: within half a slice of their stack and inside the
    image of the nearest slice. Among them the nearest plane wins (e.g. the axial slice through a level).
    """
    best, best_distance = None, np.inf
    for i, series in enumerate(series_list):
        index = int(series.nearest_slice(point))
        fraction, x, y = series.patient_to_pixel(point)
        rows, cols = series.pixels.shape[1:]
        inside = -0.5 <= fraction <= len(series) - 0.5 and 0 <= x <= cols - 1 and 0 <= y <= rows - 1
        normal = np.cross(*series.slice_orientations[index])
        distance = abs(float((point - series.positions[index]) @ normal))
        if inside and distance < best_distance:
            best, best_distance = (i, index), distance
    return best


def canonical_normal(normal: np.ndarray) -> np.ndarray:
    """`normal` or its opposite, whichever points along the canonical slice order of its dominant patient
    axis (LPS): +x (towards patient left) for sagittal, +y (posterior) for coronal, -z (feet) for axial."""
    axis = int(np.argmax(np.abs(normal)))
    wanted = (1.0, 1.0, -1.0)[axis]
    return normal if normal[axis] * wanted >= 0 else -normal
