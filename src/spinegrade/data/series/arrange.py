"""The arrangement of a folder's frames into a series: stacks (angled blocks), the set-aside rules
(foreign series, localisers, slices without geometry, duplicates), the canonical order, and the quirks of
the kept slices as a whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import numpy as np

from spinegrade.data.series.header import Frame, tag_label
from spinegrade.data.series.problems import series_problem
from spinegrade.data.series.volume import canonical_normal
from spinegrade.errors import Problem

STACK_ANGLE_DEG: Final = 1.0  # slices within this angle (row and column directions) share a stack
STACK_OFFSET_MM: Final = 2.0  # ... and the same in-plane offset of their origins (they lie along one normal)
# Stacks tilted more than this from the main one are localisers, set aside. Angled lumbar blocks follow
# the discs, and lordosis tilts the L5/S1 block up to about 45 degrees from the upper ones (a phantom study
# lost its L5/S1 block at 45); localisers are orthogonal to the series (about 90 degrees).
BLOCK_ANGLE_DEG: Final = 60.0
DUPLICATE_MM: Final = 0.1  # slices of one stack closer than this along the normal are duplicates
T = TypeVar("T")


@dataclass(frozen=True)
class Arrangement:
    """How the frames of a folder form the series: kept frames in order, their stacks, what was set aside."""

    order: np.ndarray  # indices into the frames, in series order
    stacks: np.ndarray  # stack number of each kept frame
    orientation: np.ndarray  # (2, 3) representative orientation of the kept frames
    problems: list[Problem]


def frame_instances(frames: list[Frame]) -> np.ndarray:
    """Instance number of each frame (see read_series: frames of multi-frame files get their own)."""
    if len({f.path for f in frames}) == 1 and frames[0].n_frames > 1:
        return np.array([f.frame + 1 for f in frames], dtype=np.int64)
    return np.array(
        [f.file_instance if f.n_frames == 1 else (f.file_instance or 0) * 1000 + f.frame + 1 for f in frames],
        dtype=np.int64,
    )


def most_common(values: Iterable[T | None]) -> T | None:
    """The most frequent value that is not None (first seen wins ties), or None."""
    counts = Counter(v for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None


def common_size(sizes: Counter) -> tuple[int, int]:
    """The most common (rows, cols); ties go to the larger image (less detail lost)."""
    return max(sizes, key=lambda size: (sizes[size], size[0] * size[1]))


def arrange(folder: Path, frames: list[Frame], instances: np.ndarray) -> Arrangement:
    """Split the frames into stacks, set aside what does not belong, order everything (see read_series)."""
    problems: list[Problem] = []
    keep = list(range(len(frames)))

    def set_aside(indices: Iterable[int], kind: str, why: str) -> None:
        for i in indices:
            problems.append(
                series_problem(
                    folder,
                    kind,
                    f"{frames[i].path.name} (instance {instances[i]}) set aside: {why}",
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
    if not located:  # no geometry at all: one stack in instance order (kept_slice_problems reports it)
        order = np.array(sorted(keep, key=lambda i: (instances[i], i)), dtype=np.int64)
        orientations = np.stack([frames[i].orientation for i in keep])
        known = np.isfinite(orientations).all(axis=(1, 2))
        orientation = _representative(orientations[known]) if known.any() else np.full((2, 3), np.nan)
        return Arrangement(order, np.zeros(len(order), dtype=np.int64), orientation, problems)
    set_aside(
        [i for i in keep if not frames[i].has_geometry],
        "partial_geometry",
        "it lacks ImagePositionPatient or ImageOrientationPatient while the other slices have them",
    )
    spaced = {i for i in keep if np.isfinite(frames[i].spacing).all()}
    if spaced:  # none spaced: kept, and kept_slice_problems reports it
        set_aside(
            [i for i in keep if i not in spaced],
            "partial_geometry",
            f"it lacks PixelSpacing {tag_label('PixelSpacing')} while the other slices have it",
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
            series_problem(
                folder,
                "several_stacks",
                f"{len(ordered)} stacks (angled blocks) of {sizes} slices; each keeps "
                "its own geometry and 2.5D neighbours come from a slice's own stack",
                note=True,
            )
        )
    problems += _instance_order(folder, [[int(instances[i]) for i in stack] for stack in ordered], normal)
    order = np.array([i for stack in ordered for i in stack], dtype=np.int64)
    stack_ids = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(ordered)])
    return Arrangement(order, stack_ids, orientation, problems)


# The canonical slice order (see Series.normal) in words, by the normal's dominant patient axis (LPS).
_ORDER_IN_WORDS: Final = ("patient right -> left", "anterior -> posterior", "head -> feet")


def _instance_order(folder: Path, stacks: list[list[int]], normal: np.ndarray) -> list[Problem]:
    """A note when InstanceNumber runs against the canonical slice order (or in no order) in some stack:
    how the series was acquired, nothing to fix (slices are ordered by their position)."""
    steps = [np.sign(np.diff(stack)) for stack in stacks if len(stack) > 1]
    if not steps or all((s > 0).all() for s in steps):
        return []
    how = "decreases" if all((s < 0).all() for s in steps) else "is not monotonic"
    direction = _ORDER_IN_WORDS[int(np.argmax(np.abs(normal)))]
    return [
        series_problem(
            folder,
            "instance_order",
            f"InstanceNumber {how} along the slice order ({direction}); slices are ordered by position",
            note=True,
        )
    ]


def _split_stacks(frames: list[Frame]) -> list[list[int]]:
    """Group frames (all with geometry) into stacks: same orientation within STACK_ANGLE_DEG and the same
    in-plane offset within STACK_OFFSET_MM (so they lie along one normal); in first-seen order."""
    cos_tolerance = np.cos(np.radians(STACK_ANGLE_DEG))
    stacks: list[tuple[Frame, list[int]]] = []
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


def kept_slice_problems(folder: Path, frames: list[Frame], instances: np.ndarray) -> list[Problem]:
    """Quirks of the kept slices as a whole: mixed sizes, duplicate instances, missing geometry; and a
    note for MONOCHROME1 slices (stored inverted; read so that bright is high signal)."""
    problems = []
    inverted = sum(f.inverted for f in frames)
    if inverted:
        text = f"{inverted} of {len(frames)} slices are MONOCHROME1; inverted so that bright is high signal"
        problems.append(series_problem(folder, "monochrome1", text, note=True))
    sizes = Counter(f.shape for f in frames)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} slices)" for (r, c), n in sizes.most_common())
        problems.append(series_problem(folder, "size_mismatch", f"slices have different sizes {listed}"))
    counts = Counter(instances.tolist())
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        problems.append(
            series_problem(
                folder,
                "duplicate_instance",
                f"instance numbers {duplicates[:10]} occur more than once; "
                "index_of_instance returns the first slice in series order",
            )
        )
    missing = [f for f in frames if not f.has_geometry]
    if missing:
        problems.append(
            series_problem(
                folder,
                "missing_geometry",
                f"{len(missing)} of {len(frames)} slices lack ImagePositionPatient or "
                f"ImageOrientationPatient (first: {missing[0].path}); slices are ordered by InstanceNumber "
                "and their patient coordinates are NaN",
                missing[0].path,
            )
        )
    unspaced = [f for f in frames if not np.isfinite(f.spacing).all()]
    if unspaced:
        problems.append(
            series_problem(
                folder,
                "missing_geometry",
                f"{len(unspaced)} slices lack PixelSpacing {tag_label('PixelSpacing')} "
                f"(first: {unspaced[0].path}); their spacing is NaN",
                unspaced[0].path,
            )
        )
    return problems
