"""Read a DICOM series folder into a volume with its patient geometry: the one place for DICOM quirks.

`read_series` decodes every slice (compressed transfer syntaxes through pydicom's pylibjpeg / pillow / RLE
plugins), applies the modality rescale, inverts MONOCHROME1, splits multi-frame (Enhanced MR) files into
frames with their own geometry, orders the slices along the slice normal and resamples odd-sized slices.
`scan_series` reads headers only (no pixel decoding) and reports what is wrong as Problems, for `inspect`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.pixels import pixel_array as decode_pixels
from pydicom.pixels.processing import apply_modality_lut
from pydicom.tag import BaseTag
from scipy import ndimage

from spinegrade.data.intensity import normalize
from spinegrade.errors import DataError, Problem

__all__ = [
    "Series",
    "SeriesInfo",
    "SeriesWarning",
    "canonical_normal",
    "map_point",
    "read_series",
    "read_usable_series",
    "scan_series",
]

# Tags without which pydicom cannot decode a slice, in file order (a cut header reports the first lost).
REQUIRED_TAGS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PixelData",
)
_PIXEL_DATA = 0x7FE00010
# Problem kinds of slices read_series sets aside (each names its file).
SET_ASIDE_KINDS: Final = ("foreign_series", "localiser", "partial_geometry", "duplicate_position")
STACK_ANGLE_DEG: Final = 1.0  # slices within this angle (row and column directions) share a stack
STACK_OFFSET_MM: Final = 2.0  # ... and the same in-plane offset of their origins (they lie along one normal)
# Stacks tilted more than this from the main one are localisers, set aside. Angled lumbar blocks follow
# the discs, and lordosis tilts the L5/S1 block up to about 45 degrees from the upper ones (a phantom study
# lost its L5/S1 block at 45); localisers are orthogonal to the series (about 90 degrees).
BLOCK_ANGLE_DEG: Final = 60.0
DUPLICATE_MM: Final = 0.1  # slices of one stack closer than this along the normal are duplicates
T = TypeVar("T")


class SeriesWarning(UserWarning):
    """A series quirk that read_series worked around (skipped file, resampled slice, missing geometry)."""


@dataclass(frozen=True)
class Series:
    """A DICOM series as a float32 volume plus the geometry needed to map pixels to patient space (LPS, mm).

    The slices form one or more stacks (`stacks`: the stack number of each slice, contiguous, ascending):
    slices of one stack share an orientation and lie along one normal; several stacks are e.g. the angled
    axial blocks of a lumbar protocol. Each slice keeps its own geometry (`slice_orientations` (n, 2, 3),
    `positions`, `pixel_spacing`); `orientation` is the series' representative orientation. read_series
    orders every stack canonically (see `normal`): sagittal right -> left, axial head -> feet, coronal
    anterior -> posterior, whatever the sign of the DICOM normal; stacks follow one another the same way.
    `problems` lists what read_series worked around (slices set aside, duplicates, skipped files).
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
    slice_orientations: np.ndarray | None = None
    stacks: np.ndarray | None = None
    problems: tuple[Problem, ...] = ()
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
        if self.slice_orientations is None:
            object.__setattr__(self, "slice_orientations", np.repeat(self.orientation[None], n, axis=0))
        elif np.shape(self.slice_orientations) != (n, 2, 3):
            raise ValueError(
                f"Series {self.series_id}: slice_orientations has shape {np.shape(self.slice_orientations)}, "
                f"expected {(n, 2, 3)}"
            )
        if self.stacks is None:
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


@dataclass(frozen=True)
class SeriesInfo:
    """What the headers of a series folder say (no pixels decoded), with the problems found."""

    series_id: str
    n_slices: int
    rows: int
    cols: int
    sizes: Counter[tuple[int, int]]
    description: str | None
    instance_numbers: list[int]
    transfer_syntaxes: Counter[str]
    problems: list[Problem]
    n_stacks: int = 1


@dataclass
class _Frame:
    """One 2-D image: a single-frame file or one frame of a multi-frame file, with its own geometry."""

    path: Path
    frame: int  # 0-based frame in its file
    n_frames: int  # frames in its file
    file_instance: int | None  # the file's InstanceNumber
    position: np.ndarray  # (3,), NaN when absent
    orientation: np.ndarray  # (2, 3), NaN when absent
    spacing: np.ndarray  # (2,) = (dy, dx), NaN when absent
    thickness: float | None
    shape: tuple[int, int]
    series_uid: str | None
    description: str | None
    transfer_syntax: str
    rescale: tuple[float, float]  # (slope, intercept) of this frame
    value_range: tuple[int, int]  # of the stored values (BitsStored, PixelRepresentation)
    inverted: bool  # MONOCHROME1
    dataset: Dataset | None = None  # the file's dataset, pixel data not yet decoded (read_series only)

    @property
    def has_geometry(self) -> bool:
        return bool(np.isfinite(self.position).all() and np.isfinite(self.orientation).all())


class _FileError(DataError):
    """A file of the series that cannot be used; `kind` says why (a Problem kind)."""

    def __init__(self, kind: str, message: str, path: Path) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path


@dataclass(frozen=True)
class _Arrangement:
    """How the frames of a folder form the series: kept frames in order, their stacks, what was set aside."""

    order: np.ndarray  # indices into the frames, in series order
    stacks: np.ndarray  # stack number of each kept frame
    orientation: np.ndarray  # (2, 3) representative orientation of the kept frames
    problems: list[Problem]


def read_series(
    folder: str | os.PathLike,
    *,
    on_corrupt: Literal["raise", "skip"] = "raise",
    on_size_mismatch: Literal["resample", "raise"] = "resample",
) -> Series:
    """Read all DICOM slices in `folder` (one series; `series_id` = folder name) into a Series.

    - Non-DICOM files (no 'DICM' prefix at byte 128) are skipped with a SeriesWarning naming them.
    - A corrupt or truncated file, one missing a required tag (Rows, PixelData...) or one with a malformed
      header value (a DS/IS/sequence that does not parse: `header_fault`) raises DataError naming the file
      and the tag; with on_corrupt="skip" that slice is skipped with a SeriesWarning and a Problem instead.
      A transfer syntax no installed plugin can decode always raises, naming the package to install.
    - Pixels: float32 after the modality rescale (RescaleSlope/Intercept, per frame for Enhanced MR) or
      Modality LUT; MONOCHROME1 is inverted within its value range so that bright = high signal. No VOI
      window is applied. RLE / JPEG files decode through the pylibjpeg plugins when installed.
    - Multi-frame files (Enhanced MR) give one slice per frame, with position, orientation, spacing and
      rescale from the per-frame / shared functional groups. Frame instance numbers: 1..n when the series
      is one multi-frame file, else InstanceNumber * 1000 + frame number (1-based).
    - Stacks: the slices of the folder's main SeriesInstanceUID (the one with most slices) are split into
      stacks of one orientation (within STACK_ANGLE_DEG) lying along one normal; the largest stack is the
      main one. Set aside, each with a Problem and a SeriesWarning naming the file: slices of another
      SeriesInstanceUID (`foreign_series`), stacks tilted more than BLOCK_ANGLE_DEG from the main stack
      or single slices of another size or pixel spacing (`localiser`), and slices without position or
      orientation when others have them (`partial_geometry`). Angled blocks are kept as stacks.
    - Order: each stack canonically along its normal (sagittal patient right -> left, axial head -> feet,
      coronal anterior -> posterior; ties by instance number), stacks one after another the same way
      (by their mean position); without any geometry, by instance number.
    - Duplicates: of slices of one stack within DUPLICATE_MM of each other along the normal, the one with
      the lowest InstanceNumber (the first acquired) is kept, the others set aside (`duplicate_position`).
    - Slices whose size differs from the most common one are resampled to it (bilinear, corner pixel
      centres kept, so only their pixel spacing changes and geometry stays right) with a SeriesWarning
      naming the sizes; `original_shapes` keeps the sizes read. on_size_mismatch="raise" raises
      DataError instead.
    """
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt must be 'raise' or 'skip', not {on_corrupt!r}")
    if on_size_mismatch not in ("resample", "raise"):
        raise ValueError(f"on_size_mismatch must be 'resample' or 'raise', not {on_size_mismatch!r}")
    folder = _check_folder(folder)
    frames: list[_Frame] = []
    problems: list[Problem] = []

    def skip_or_raise(error: _FileError) -> None:
        if error.kind == "not_dicom" or (on_corrupt == "skip" and error.kind != "no_decoder"):
            problems.append(_problem(folder, error.kind, f"{error} - skipped", error.path))
            warnings.warn(problems[-1].message, SeriesWarning, stacklevel=3)
        else:
            raise error

    for result in _read_files(folder, decode=True):
        if isinstance(result, _FileError):
            skip_or_raise(result)
        else:
            frames.extend(result)
    if not frames:
        raise DataError(f"{folder}: no DICOM image files in this series folder")

    # Headers first, pixels last: decode straight into the volume, only the slices kept. A slice that
    # fails to decode (skipped) changes the arrangement: arrange and decode again without it (rare).
    while True:
        instances = _instance_numbers(frames)
        arranged = _arrange(folder, frames, instances)
        order = arranged.order
        kept = [frames[i] for i in order]
        target = _common_size(Counter(f.shape for f in kept))
        pixels = np.empty((len(kept), *target), dtype=np.float32)
        decoded: dict[Path, np.ndarray] = {}  # raw frames of multi-frame files, decoded once
        failed = set()
        for index, frame in enumerate(kept):
            try:
                _decode_into(pixels[index], frame, decoded)
            except _FileError as error:
                skip_or_raise(error)
                failed.add(id(frame))
        if not failed:
            break
        frames = [f for f in frames if id(f) not in failed]
        if not frames:
            raise DataError(f"{folder}: no slice of this series folder could be decoded")
    series_problems = []
    for problem in [*arranged.problems, *_series_problems(folder, kept, instances[order])]:
        if problem.kind == "size_mismatch":
            if on_size_mismatch == "raise":
                raise DataError(f"{problem.message}; pass on_size_mismatch='resample' to resample them")
            problem = replace(
                problem, message=f"{problem.message}; resampled the others to {target[0]}x{target[1]}"
            )
        series_problems.append(problem)
        warnings.warn(problem.message, SeriesWarning, stacklevel=2)
    spacing = [_resampled_spacing(f.spacing, f.shape, target) for f in kept]
    return Series(
        pixels=pixels,
        instance_numbers=instances[order],
        positions=np.stack([f.position for f in kept]),
        orientation=arranged.orientation,
        pixel_spacing=np.stack(spacing),
        original_shapes=np.array([f.shape for f in kept], dtype=np.int64),
        slice_thickness=_most_common(f.thickness for f in kept),
        series_id=folder.name,
        description=_most_common(f.description for f in kept),
        slice_orientations=np.stack([f.orientation for f in kept]),
        stacks=arranged.stacks,
        problems=tuple(problems + series_problems),
    )


def read_usable_series(folder: str | os.PathLike) -> tuple[Series | None, list[Problem]]:
    """Read a series as every pipeline stage does (prepare, predict, train-locator): bad slices skipped.

    Returns (series, problems); the series is None, with a Problem saying why, when it cannot be read at
    all or its geometry cannot be used (no finite position, orientation and pixel spacing on its slices),
    so that only the targets that need it fall back. Never raises for anything a file can cause.
    """
    folder = Path(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SeriesWarning)  # returned as Problems
        try:
            series = read_series(folder, on_corrupt="skip")
        except (DataError, OSError) as exc:
            series, failure = None, _problem(folder, "unreadable_series", f"{exc}; series ignored")
    for w in caught:  # other warnings go on as they came
        if not issubclass(w.category, SeriesWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if series is None:  # what was skipped before the series failed (its Problems died with it)
        notes = [w for w in caught if issubclass(w.category, SeriesWarning)]
        return None, [*(_problem(folder, "skipped_file", str(w.message)) for w in notes), failure]
    geometry = (series.positions, series.slice_orientations, series.pixel_spacing)
    if not all(np.isfinite(part).all() for part in geometry):
        return None, [
            *series.problems,
            _problem(
                folder,
                "unusable_geometry",
                f"series {folder}: no usable ImagePositionPatient / ImageOrientationPatient / PixelSpacing "
                "on its slices; series ignored",
            ),
        ]
    return series, list(series.problems)


def scan_series(folder: str | os.PathLike) -> SeriesInfo:
    """Summarise a series folder from its headers alone (fast: pixel data is neither read nor decoded).

    Non-DICOM, corrupt or truncated files (pixel data shorter than its header says), missing tags,
    malformed header values, undecodable transfer syntaxes, mixed sizes, duplicate instances and
    positions, several stacks, set-aside slices and missing geometry are returned as Problems instead of
    raised (as read_series would report them); only a missing folder raises DataError.
    """
    folder = _check_folder(folder)
    frames: list[_Frame] = []
    problems: list[Problem] = []
    for result in _read_files(folder, decode=False):
        if isinstance(result, _FileError):
            problems.append(_problem(folder, result.kind, str(result), result.path))
        else:
            frames.extend(result)
    if not frames:
        problems.append(_problem(folder, "empty_series", f"{folder}: no DICOM image files in this folder"))
        return SeriesInfo(folder.name, 0, 0, 0, Counter(), None, [], Counter(), problems, 0)
    instances = _instance_numbers(frames)
    arranged = _arrange(folder, frames, instances)
    kept = [frames[i] for i in arranged.order]
    problems += arranged.problems + _series_problems(folder, kept, instances[arranged.order])
    sizes = Counter(f.shape for f in kept)
    rows, cols = _common_size(sizes)
    return SeriesInfo(
        series_id=folder.name,
        n_slices=len(kept),
        rows=rows,
        cols=cols,
        sizes=sizes,
        description=_most_common(f.description for f in kept),
        instance_numbers=[int(i) for i in instances[arranged.order]],
        transfer_syntaxes=Counter(f.transfer_syntax for f in kept),
        problems=problems,
        n_stacks=len(np.unique(arranged.stacks)),
    )


def _check_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(
            f"DICOM series folder {folder} {what}; pass the folder holding the series' .dcm files"
        )
    return folder


def _read_files(folder: Path, *, decode: bool) -> list[list[_Frame] | _FileError]:
    """The frames of every file in `folder` (name order), or the _FileError that stopped each file.

    Deliberately serial: a thread pool was measured slower or no faster (20 slices of 256x256: 39 ms
    serial vs 55 ms pooled uncompressed; 262 ms with 1 or 2 threads for JPEG 2000), as pydicom and the
    pylibjpeg decoders hold the GIL. Parallelise across series (processes) instead.
    """
    results: list[list[_Frame] | _FileError] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            results.append(_read_file(path, decode=decode))
        except _FileError as exc:
            results.append(exc)
    return results


def _read_file(path: Path, *, decode: bool) -> list[_Frame]:
    """The frames of one DICOM file; decode=False reads headers only (pixel data deferred, never decoded)."""
    try:
        ds = pydicom.dcmread(path, defer_size=None if decode else 1024)
    except InvalidDicomError:
        raise _FileError(
            "not_dicom", f"{path}: not a DICOM file (no 'DICM' prefix at byte 128)", path
        ) from None
    except Exception as exc:  # pydicom raises many types on malformed bytes
        raise _FileError(
            "corrupt", f"{path}: corrupt DICOM header ({type(exc).__name__}: {exc})", path
        ) from exc
    for keyword in REQUIRED_TAGS:
        if _tag_number(keyword) not in ds:
            raise _FileError(
                "missing_tag",
                f"{path}: missing required DICOM tag {keyword} {_tag(keyword)}; "
                "the file may be truncated or not an image",
                path,
            )
    photometric = _value(ds, path, "PhotometricInterpretation", str)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise _FileError(
            "unsupported",
            f"{path}: PhotometricInterpretation {_tag('PhotometricInterpretation')} is "
            f"{photometric}; spinegrade reads grayscale (MONOCHROME1/2) MR images only",
            path,
        )
    syntax = _check_decoder(ds, path)
    n_frames = _value(ds, path, "NumberOfFrames", int) or 1
    header = _Header(ds, path, n_frames)
    instance = _value(ds, path, "InstanceNumber", int)
    if n_frames == 1 and instance is None:
        raise _FileError(
            "missing_tag", f"{path}: missing required DICOM tag InstanceNumber {_tag('InstanceNumber')}", path
        )
    shape = (_value(ds, path, "Rows", int), _value(ds, path, "Columns", int))
    geometry = [
        (
            header.vector(frame, "PlanePositionSequence", "ImagePositionPatient", 3),
            header.orientation(frame),
            header.vector(frame, "PixelMeasuresSequence", "PixelSpacing", 2),
            header.frame_value(frame, "PixelMeasuresSequence", "SliceThickness", float),
        )
        for frame in range(n_frames)
    ]
    uid = _value(ds, path, "SeriesInstanceUID", str)
    description = _value(ds, path, "SeriesDescription", str)
    bits, signed = _value(ds, path, "BitsStored", int), _value(ds, path, "PixelRepresentation", int)
    value_range = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    rescales = [header.rescale(frame) for frame in range(n_frames)]
    if not decode:
        _check_pixel_length(ds, path)
    return [
        _Frame(
            path=path,
            frame=frame,
            n_frames=n_frames,
            file_instance=instance,
            position=position,
            orientation=orientation,
            spacing=spacing,
            thickness=thickness,
            shape=shape,
            series_uid=uid or None,
            description=description or None,
            transfer_syntax=syntax.name,
            rescale=rescales[frame],
            value_range=value_range,
            inverted=photometric == "MONOCHROME1",
            dataset=ds if decode else None,
        )
        for frame, (position, orientation, spacing, thickness) in enumerate(geometry)
    ]


def _value(holder: Dataset, path: Path, keyword: str, convert: Callable[[Any], T]) -> T | None:
    """The one place header values are parsed: `keyword` of `holder` through `convert`, None when absent
    or empty; a value that does not parse (a malformed DS/IS, a broken sequence) is a `header_fault`
    _FileError naming the file and the tag."""
    tag = _tag_number(keyword)
    try:
        element = holder.get_item(tag)
        if element is None:
            return None
        value = _raw_value(element)
        if value is None:
            value = holder[tag].value
        if value is None or (isinstance(value, str | bytes) and not value.strip()):
            return None
        return convert(value)
    except Exception as exc:  # pydicom and the conversions raise ValueError, TypeError, OverflowError...
        try:
            raw = holder.get_item(keyword).value
        except Exception:  # the raw bytes themselves cannot be fetched: report the fault without them
            raw = "?"
        raise _FileError(
            "header_fault",
            f"{path}: malformed {keyword} {_tag(keyword)} value {raw!r} ({type(exc).__name__}: {exc})",
            path,
        ) from exc


def _raw_value(element: Any) -> float | int | str | list | bytes | None:
    """A DS / IS / UI / CS value still in its raw bytes, parsed directly (pydicom's conversions, with
    their validation, cost about as much as the RLE decoding of a slice): a number, an ASCII string or a
    list of numbers, b"" when empty; None for any other element (pydicom converts it: character sets,
    binary VRs). Malformed numbers raise ValueError."""
    if not isinstance(element, RawDataElement) or element.value is None:
        return None
    vr = element.VR or dictionary_VR(element.tag)
    if vr not in ("DS", "IS", "UI", "CS"):
        return None
    text = element.value.strip(b" \0")
    if not text:
        return b""
    if vr in ("UI", "CS"):
        return text.decode("ascii")
    parse = float if vr == "DS" else _integer
    values = [parse(part) for part in text.split(b"\\")]
    return values[0] if len(values) == 1 else values


def _integer(text: bytes) -> int:
    """An IS value: an integer, also when written as a whole decimal ('5.0'), as pydicom accepts it."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{text!r} is not an integer") from None
        return int(number)


@functools.cache
def _tag_number(keyword: str) -> BaseTag:
    """The tag of a keyword, as the BaseTag pydicom's lookups take without converting it again."""
    return BaseTag(tag_for_keyword(keyword))


def _tag(keyword: str) -> str:
    tag = _tag_number(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_decoder(ds: Dataset, path: Path) -> pydicom.uid.UID:
    """The file's transfer syntax, after checking that an installed pydicom plugin can decode it."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise _FileError(
            "missing_tag",
            f"{path}: missing required DICOM tag TransferSyntaxUID {_tag('TransferSyntaxUID')}",
            path,
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _FileError(
            "no_decoder",
            f"{path}: pixel data uses transfer syntax {syntax.name} ({syntax}), which pydicom cannot decode; "
            "convert the file (e.g. dcmdjpeg / gdcmconv --raw)",
            path,
        ) from None
    if not decoder.is_available:
        raise _FileError(
            "no_decoder",
            f"{path}: no installed plugin decodes transfer syntax {syntax.name} ({syntax}); install one of: "
            + "; ".join(decoder.missing_dependencies),
            path,
        )
    return syntax


def _check_pixel_length(ds: Dataset, path: Path) -> None:
    """Report pixel data that the (deferred-read) header says is longer than what is left in the file."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if (
        isinstance(element, RawDataElement)
        and element.length != 0xFFFFFFFF
        and element.value_tell is not None
    ):
        size = path.stat().st_size
        if element.value_tell + element.length > size:
            raise _FileError(
                "corrupt",
                f"{path}: truncated: PixelData {_tag('PixelData')} needs {element.length} bytes from byte "
                f"{element.value_tell} but the file has {size} bytes",
                path,
            )


def _decode_into(out: np.ndarray, frame: _Frame, decoded: dict[Path, np.ndarray]) -> None:
    """Decode one frame into `out` (float32 (rows, cols) of the series' size): rescaled (in float32, not
    pydicom's float64 apply_modality_lut; a Modality LUT sequence goes through pydicom), MONOCHROME1
    inverted within its value range, resampled when its size differs."""
    ds, path = frame.dataset, frame.path
    raw = decoded.get(path)
    if raw is None:
        try:
            # pydicom.pixels.pixel_array, unlike Dataset.pixel_array, keeps no copy on the dataset: the
            # raw array is freed after conversion and its memory serves the next slice.
            raw = decode_pixels(ds).reshape(frame.n_frames, *frame.shape)
        except Exception as exc:  # decoders raise ValueError, RuntimeError... on damaged data
            raise _FileError(
                "corrupt", f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})", path
            ) from exc
        if frame.n_frames > 1:
            decoded[path] = raw
    raw = raw[frame.frame]
    target = out if raw.shape == out.shape else np.empty(raw.shape, dtype=np.float32)
    slope, intercept = frame.rescale
    lut = _tag_number("ModalityLUTSequence") in ds
    if lut:
        target[...] = apply_modality_lut(raw, ds)
    elif slope == 1:  # the common case: one converting copy instead of a multiply
        np.copyto(target, raw, casting="unsafe")
    else:
        np.multiply(raw, np.float32(slope), out=target, casting="unsafe")
    if intercept and not lut:
        target += np.float32(intercept)
    if frame.inverted:
        value_range = np.array(frame.value_range)
        if lut:
            low, high = apply_modality_lut(value_range, ds).astype(np.float64)
        else:
            low, high = value_range * slope + intercept
        np.subtract(np.float32(low + high), target, out=target)
    if target is not out:
        out[...] = _resample(target, out.shape)


class _Header:
    """Per-frame header values of one file: functional groups (Enhanced MR) first, then the top level;
    every value parsed by _value."""

    def __init__(self, ds: Dataset, path: Path, n_frames: int) -> None:
        self.ds, self.path = ds, path
        per_frame = _value(ds, path, "PerFrameFunctionalGroupsSequence", list)
        if per_frame is not None and len(per_frame) != n_frames:
            raise _FileError(
                "corrupt",
                f"{path}: PerFrameFunctionalGroupsSequence {_tag('PerFrameFunctionalGroupsSequence')} has "
                f"{len(per_frame)} items for NumberOfFrames {n_frames}",
                path,
            )
        shared = _value(ds, path, "SharedFunctionalGroupsSequence", list)
        self.groups = [
            ([per_frame[f]] if per_frame else []) + ([shared[0]] if shared else []) for f in range(n_frames)
        ]

    def holder(self, frame: int, sequence: str, keyword: str) -> Dataset | None:
        """The dataset holding `keyword` for `frame`: per-frame group, shared group, else top level."""
        if not self.groups[frame]:  # a single-frame file: the top level (_value finds absent values)
            return self.ds
        for group in self.groups[frame]:
            items = _value(group, self.path, sequence, list)
            if items and _present(items[0], keyword):
                return items[0]
        return self.ds if _present(self.ds, keyword) else None

    def frame_value(self, frame: int, sequence: str, keyword: str, convert: Callable[[Any], T]) -> T | None:
        holder = self.holder(frame, sequence, keyword)
        return None if holder is None else _value(holder, self.path, keyword, convert)

    def vector(self, frame: int, sequence: str, keyword: str, size: int) -> np.ndarray:
        """A numeric multi-value geometry tag of a frame as float64 (size,), NaN when absent."""

        def floats(value: Any) -> np.ndarray:
            values = [float(v) for v in value] if isinstance(value, list | tuple | MultiValue) else [value]
            if len(values) != size:
                raise ValueError(f"{len(values)} values, expected {size}")
            if not all(map(math.isfinite, values)):
                raise ValueError("not finite")
            return np.array(values, dtype=np.float64)

        value = self.frame_value(frame, sequence, keyword, floats)
        return np.full(size, np.nan) if value is None else value

    def orientation(self, frame: int) -> np.ndarray:
        """ImageOrientationPatient of a frame as unit row and column directions (2, 3), NaN when absent.

        Writers round the six direction cosines to a few decimals; normalising them here keeps the angle
        tests between slices (stacks) exact. Rows that are not directions (zero, or far from perpendicular)
        are a header fault.
        """
        directions = self.vector(frame, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        if math.isnan(directions[0]):  # vector() gives all six or NaN for all
            return directions.reshape(2, 3)
        row, col = directions[:3].tolist(), directions[3:].tolist()  # plain floats: 6 numbers, no numpy ops
        norms = (math.hypot(*row), math.hypot(*col))
        unit = [[v / n for v in axis] if n > 0 else axis for axis, n in zip((row, col), norms, strict=True)]
        if min(norms) < 0.5 or abs(sum(a * b for a, b in zip(*unit, strict=True))) > 0.1:
            raise _FileError(
                "header_fault",
                f"{self.path}: ImageOrientationPatient {_tag('ImageOrientationPatient')} "
                f"{np.round(directions, 4).tolist()} is not two perpendicular unit directions",
                self.path,
            )
        return np.array(unit, dtype=np.float64)

    def rescale(self, frame: int) -> tuple[float, float]:
        """(RescaleSlope, RescaleIntercept) of a frame; (1, 0) when absent."""
        holder = self.holder(frame, "PixelValueTransformationSequence", "RescaleSlope") or self.ds
        slope = _value(holder, self.path, "RescaleSlope", float)
        intercept = _value(holder, self.path, "RescaleIntercept", float)
        return (1.0 if slope is None else slope, 0.0 if intercept is None else intercept)


def _present(holder: Dataset, keyword: str) -> bool:
    """Whether `keyword` is in `holder` with a non-empty value (without parsing the value)."""
    element = holder.get_item(_tag_number(keyword))
    value = None if element is None else element.value
    return value is not None and not (isinstance(value, str | bytes) and not value.strip())


def _instance_numbers(frames: list[_Frame]) -> np.ndarray:
    """Instance number of each frame (see read_series: frames of multi-frame files get their own)."""
    if len({f.path for f in frames}) == 1 and frames[0].n_frames > 1:
        return np.array([f.frame + 1 for f in frames], dtype=np.int64)
    return np.array(
        [f.file_instance if f.n_frames == 1 else (f.file_instance or 0) * 1000 + f.frame + 1 for f in frames],
        dtype=np.int64,
    )


def _most_common(values: Iterable[T | None]) -> T | None:
    """The most frequent value that is not None (first seen wins ties), or None."""
    counts = Counter(v for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None


def _common_size(sizes: Counter) -> tuple[int, int]:
    """The most common (rows, cols); ties go to the larger image (less detail lost)."""
    return max(sizes, key=lambda size: (sizes[size], size[0] * size[1]))


def canonical_normal(normal: np.ndarray) -> np.ndarray:
    """`normal` or its opposite, whichever points along the canonical slice order of its dominant patient
    axis (LPS): +x (towards patient left) for sagittal, +y (posterior) for coronal, -z (feet) for axial."""
    axis = int(np.argmax(np.abs(normal)))
    wanted = (1.0, 1.0, -1.0)[axis]
    return normal if normal[axis] * wanted >= 0 else -normal


def _arrange(folder: Path, frames: list[_Frame], instances: np.ndarray) -> _Arrangement:
    """Split the frames into stacks, set aside what does not belong, order everything (see read_series)."""
    problems: list[Problem] = []
    keep = list(range(len(frames)))

    def set_aside(indices: Iterable[int], kind: str, why: str) -> None:
        for i in indices:
            problems.append(
                _problem(
                    folder,
                    kind,
                    f"series {folder}: {frames[i].path.name} (instance {instances[i]}) set aside: {why}",
                    frames[i].path,
                )
            )
            keep.remove(i)

    uids = Counter(frames[i].series_uid for i in keep if frames[i].series_uid)
    if len(uids) > 1:
        main_uid = uids.most_common(1)[0][0]
        set_aside(
            [i for i in keep if frames[i].series_uid not in (None, main_uid)],
            "foreign_series",
            f"its SeriesInstanceUID differs from the series' {main_uid} ({uids[main_uid]} slices)",
        )
    located = [i for i in keep if frames[i].has_geometry]
    if not located:  # no geometry at all: one stack in instance order (_series_problems reports it)
        order = np.array(sorted(keep, key=lambda i: (instances[i], i)), dtype=np.int64)
        orientations = np.stack([frames[i].orientation for i in keep])
        known = np.isfinite(orientations).all(axis=(1, 2))
        orientation = _representative(orientations[known]) if known.any() else np.full((2, 3), np.nan)
        return _Arrangement(order, np.zeros(len(order), dtype=np.int64), orientation, problems)
    set_aside(
        [i for i in keep if not frames[i].has_geometry],
        "partial_geometry",
        "it lacks ImagePositionPatient or ImageOrientationPatient while the other slices have them",
    )

    stacks = _split_stacks([frames[i] for i in keep])
    stacks = [[keep[j] for j in stack] for stack in stacks]
    main = max(stacks, key=len)
    main_normal = np.cross(*frames[main[0]].orientation)
    main_frame = frames[main[0]]
    kept_stacks = []
    for stack in stacks:
        first = frames[stack[0]]
        tilt = np.degrees(np.arccos(min(1.0, abs(float(np.cross(*first.orientation) @ main_normal)))))
        other_grid = first.shape != main_frame.shape or not np.allclose(
            first.spacing, main_frame.spacing, rtol=0.01, equal_nan=True
        )
        if stack is not main and tilt > BLOCK_ANGLE_DEG:
            set_aside(stack, "localiser", f"its plane is tilted {tilt:.0f} degrees from the main stack's")
        elif stack is not main and len(stack) == 1 and other_grid:
            set_aside(
                stack, "localiser", "a single slice of another size or pixel spacing than the main stack"
            )
        else:
            kept_stacks.append(stack)

    kept = [i for stack in kept_stacks for i in stack]
    orientation = _representative(np.stack([frames[i].orientation for i in kept]))
    normal = canonical_normal(np.cross(orientation[0], orientation[1]))
    location = {i: float(frames[i].position @ normal) for i in kept}
    ordered = []
    for stack in sorted(kept_stacks, key=lambda s: np.mean([location[i] for i in s])):
        stack = sorted(stack, key=lambda i: (location[i], instances[i], i))
        unique = [stack[0]]
        for i in stack[1:]:
            previous = unique[-1]
            if location[i] - location[previous] < DUPLICATE_MM:
                keep_i, drop = sorted((previous, i), key=lambda j: (instances[j], j))
                unique[-1] = keep_i
                set_aside(
                    [drop],
                    "duplicate_position",
                    f"it lies within {DUPLICATE_MM} mm of {frames[keep_i].path.name} "
                    f"(instance {instances[keep_i]}), which is kept (the lower InstanceNumber)",
                )
            else:
                unique.append(i)
        ordered.append(unique)
    if len(ordered) > 1:
        sizes = ", ".join(str(len(s)) for s in ordered)
        problems.append(
            _problem(
                folder,
                "several_stacks",
                f"series {folder}: {len(ordered)} stacks (angled blocks) of {sizes} slices; each keeps "
                "its own geometry and 2.5D neighbours come from a slice's own stack",
            )
        )
    order = np.array([i for stack in ordered for i in stack], dtype=np.int64)
    stack_ids = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(ordered)])
    return _Arrangement(order, stack_ids, orientation, problems)


def _split_stacks(frames: list[_Frame]) -> list[list[int]]:
    """Group frames (all with geometry) into stacks: same orientation within STACK_ANGLE_DEG and the same
    in-plane offset within STACK_OFFSET_MM (so they lie along one normal); in first-seen order."""
    cos_tolerance = np.cos(np.radians(STACK_ANGLE_DEG))
    stacks: list[tuple[_Frame, list[int]]] = []
    for i, frame in enumerate(frames):
        for reference, members in stacks:
            same_plane = all(
                float(frame.orientation[axis] @ reference.orientation[axis]) >= cos_tolerance
                for axis in (0, 1)
            )
            offset = (frame.position - reference.position) @ reference.orientation.T
            if same_plane and np.all(np.abs(offset) <= STACK_OFFSET_MM):
                members.append(i)
                break
        else:
            stacks.append((frame, [i]))
    return [members for _, members in stacks]


def _representative(orientations: np.ndarray) -> np.ndarray:
    """The common orientation of (n, 2, 3) slice orientations, else their orthonormalised mean."""
    if np.allclose(orientations, orientations[0], atol=1e-6):
        return orientations[0].copy()
    row, col = orientations.mean(axis=0)
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    return np.stack([row, col / np.linalg.norm(col)])


def _resample(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a slice to `shape` (bilinear) keeping its corner pixel centres in place."""
    zoom = np.array(shape) / np.array(pixels.shape)
    return ndimage.zoom(pixels, zoom, order=1, grid_mode=False)


def _resampled_spacing(spacing: np.ndarray, shape: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """The pixel spacing of a slice of `shape` resampled by _resample to `target`."""
    if shape == target:
        return spacing
    old, new = np.array(shape) - 1, np.array(target) - 1
    return spacing * np.where(new > 0, old / np.maximum(new, 1), 1.0)


def _series_problems(folder: Path, frames: list[_Frame], instances: np.ndarray) -> list[Problem]:
    """Quirks of the kept slices as a whole: mixed sizes, duplicate instances, missing geometry."""
    problems = []
    sizes = Counter(f.shape for f in frames)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} slices)" for (r, c), n in sizes.most_common())
        problems.append(
            _problem(folder, "size_mismatch", f"series {folder}: slices have different sizes {listed}")
        )
    counts = Counter(instances.tolist())
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        problems.append(
            _problem(
                folder,
                "duplicate_instance",
                f"series {folder}: instance numbers {duplicates[:10]} occur more than once; "
                "index_of_instance returns the first slice in series order",
            )
        )
    missing = [f for f in frames if not f.has_geometry]
    if missing:
        problems.append(
            _problem(
                folder,
                "missing_geometry",
                f"series {folder}: {len(missing)} of {len(frames)} slices lack ImagePositionPatient or "
                f"ImageOrientationPatient (first: {missing[0].path}); slices are ordered by InstanceNumber "
                "and their patient coordinates are NaN",
                missing[0].path,
            )
        )
    unspaced = [f for f in frames if not np.isfinite(f.spacing).all()]
    if unspaced:
        problems.append(
            _problem(
                folder,
                "missing_geometry",
                f"series {folder}: {len(unspaced)} slices lack PixelSpacing {_tag('PixelSpacing')} "
                f"(first: {unspaced[0].path}); their spacing is NaN",
                unspaced[0].path,
            )
        )
    return problems


def _problem(folder: Path, kind: str, message: str, file: Path | None = None) -> Problem:
    """A Problem of the series in `folder` (RSNA layout: <study_id>/<series_id>)."""

    def number(name: str) -> int | None:
        return int(name) if name.isdigit() else None

    return Problem(
        kind=kind,
        message=message,
        file=str(file if file is not None else folder),
        study_id=number(folder.parent.name),
        series_id=number(folder.name),
    )
