"""The reader's public entry points: `read_series` (pixels and geometry), `read_usable_series` (the one
reading policy of every pipeline stage) and `scan_series` (headers only, for inspect)."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from spinegrade.data.series.arrange import (
    arrange,
    common_size,
    frame_instances,
    kept_slice_problems,
    most_common,
)
from spinegrade.data.series.decode import decode_into, resampled_spacing
from spinegrade.data.series.header import Frame, read_files
from spinegrade.data.series.problems import FileError, SeriesWarning, series_problem
from spinegrade.data.series.volume import Series
from spinegrade.errors import DataError, Problem


@dataclass(frozen=True)
class SeriesInfo:
    """What the headers of a series folder say (no pixels decoded), with the problems and notes found."""

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
    notes: list[Problem] = field(default_factory=list)


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
    frames: list[Frame] = []
    problems: list[Problem] = []

    def skip_or_raise(error: FileError) -> None:
        if error.kind == "not_dicom" or (on_corrupt == "skip" and error.kind != "no_decoder"):
            problems.append(series_problem(folder, error.kind, f"{error.text(folder)} - skipped", error.path))
            warnings.warn(SeriesWarning(problems[-1]), stacklevel=3)
        else:
            raise error

    for result in read_files(folder, decode=True):
        if isinstance(result, FileError):
            skip_or_raise(result)
        else:
            frames.extend(result)
    if not frames:
        raise FileError("empty_series", "no DICOM image files in this series folder", folder)

    # Headers first, pixels last: decode straight into the volume, only the slices kept. A slice that
    # fails to decode (skipped) changes the arrangement: arrange and decode again without it (rare).
    while True:
        instances = frame_instances(frames)
        arranged = arrange(folder, frames, instances)
        order = arranged.order
        kept = [frames[i] for i in order]
        target = common_size(Counter(f.shape for f in kept))
        pixels = np.empty((len(kept), *target), dtype=np.float32)
        decoded: dict[Path, np.ndarray] = {}  # raw frames of multi-frame files, decoded once
        failed, reports = set(), []
        for index, frame in enumerate(kept):
            try:
                report = decode_into(pixels[index], frame, decoded)
            except FileError as error:
                skip_or_raise(error)
                failed.add(id(frame))
            else:
                if report is not None:
                    text = f"{frame.path.name}: {report.text}"
                    reports.append(series_problem(folder, report.kind, text, frame.path))
        if not failed:
            break
        frames = [f for f in frames if id(f) not in failed]
        if not frames:
            raise FileError("unreadable_series", "no slice of this series folder could be decoded", folder)
    series_problems, notes = [], []
    for problem in [*reports, *arranged.problems, *kept_slice_problems(folder, kept, instances[order])]:
        if problem.note:
            notes.append(problem)
            continue
        if problem.kind == "size_mismatch":
            if on_size_mismatch == "raise":
                raise DataError(f"{problem.message}; pass on_size_mismatch='resample' to resample them")
            problem = replace(
                problem, message=f"{problem.message}; resampled the others to {target[0]}x{target[1]}"
            )
        series_problems.append(problem)
        warnings.warn(SeriesWarning(problem), stacklevel=2)
    spacing = [resampled_spacing(f.spacing, f.shape, target) for f in kept]
    return Series(
        pixels=pixels,
        instance_numbers=instances[order],
        positions=np.stack([f.position for f in kept]),
        orientation=arranged.orientation,
        pixel_spacing=np.stack(spacing),
        original_shapes=np.array([f.shape for f in kept], dtype=np.int64),
        slice_thickness=most_common(f.thickness for f in kept),
        series_id=folder.name,
        description=most_common(f.description for f in kept),
        slice_orientations=np.stack([f.orientation for f in kept]),
        stacks=arranged.stacks,
        problems=tuple(problems + series_problems),
        notes=tuple(notes),
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
            why = exc.text(folder) if isinstance(exc, FileError) else str(exc)
            series, failure = None, series_problem(folder, "unreadable_series", f"{why}; series ignored")
    for w in caught:  # other warnings go on as they came
        if not issubclass(w.category, SeriesWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if series is None:  # what was skipped before the series failed (the warnings carry it)
        skipped = [w.message.problem for w in caught if isinstance(w.message, SeriesWarning)]
        return None, [*skipped, failure]
    geometry = (series.positions, series.slice_orientations, series.pixel_spacing)
    if not all(np.isfinite(part).all() for part in geometry):
        return None, [
            *series.problems,
            series_problem(
                folder,
                "unusable_geometry",
                "no usable ImagePositionPatient / ImageOrientationPatient / PixelSpacing on its slices; "
                "series ignored",
            ),
        ]
    return series, list(series.problems)


def scan_series(folder: str | os.PathLike) -> SeriesInfo:
    """Summarise a series folder from its headers alone (fast: pixel data is neither read nor decoded).

    Non-DICOM, corrupt or truncated files (pixel data shorter than its header says), missing tags,
    malformed header values, undecodable transfer syntaxes, mixed sizes, duplicate instances and
    positions, set-aside slices and missing geometry are returned as Problems instead of raised (as
    read_series would report them), angled blocks and InstanceNumber order as notes; only a missing
    folder raises DataError.
    """
    folder = _check_folder(folder)
    frames: list[Frame] = []
    problems: list[Problem] = []
    for result in read_files(folder, decode=False):
        if isinstance(result, FileError):
            problems.append(series_problem(folder, result.kind, result.text(folder), result.path))
        else:
            frames.extend(result)
    if not frames:
        problems.append(series_problem(folder, "empty_series", "no DICOM image files in this folder"))
        return SeriesInfo(folder.name, 0, 0, 0, Counter(), None, [], Counter(), problems, 0)
    instances = frame_instances(frames)
    arranged = arrange(folder, frames, instances)
    kept = [frames[i] for i in arranged.order]
    found = arranged.problems + kept_slice_problems(folder, kept, instances[arranged.order])
    problems += [p for p in found if not p.note]
    sizes = Counter(f.shape for f in kept)
    rows, cols = common_size(sizes)
    return SeriesInfo(
        series_id=folder.name,
        n_slices=len(kept),
        rows=rows,
        cols=cols,
        sizes=sizes,
        description=most_common(f.description for f in kept),
        instance_numbers=[int(i) for i in instances[arranged.order]],
        transfer_syntaxes=Counter(f.transfer_syntax for f in kept),
        problems=problems,
        n_stacks=len(np.unique(arranged.stacks)),
        notes=[p for p in found if p.note],
    )


def _check_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(
            f"DICOM series folder {folder} {what}; pass the folder holding the series' .dcm files"
        )
    return folder
