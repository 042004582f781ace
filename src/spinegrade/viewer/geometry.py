"""Where the slices of one series cross the images of another (the axial slice lines on a sagittal view).

Each crossing is the line where two slice planes meet, clipped to both images' extents, so a line is drawn
only where the axial image actually covers the sagittal slice. Coordinates are the series' stored pixel
grid (x = column, y = row), the same grid the located points use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spinegrade.data.series import Series

Interval = tuple[float, float]


def _restrict(interval: Interval | None, f0: float, df: float, lo: float, hi: float) -> Interval | None:
    """`interval` of t narrowed to where lo <= f0 + t * df <= hi (None when empty)."""
    if interval is None:
        return None
    if abs(df) < 1e-12:
        return interval if lo <= f0 <= hi else None
    t1, t2 = sorted(((lo - f0) / df, (hi - f0) / df))
    start, stop = max(interval[0], t1), min(interval[1], t2)
    return (start, stop) if start < stop else None


def crossing_lines(view: Series, other: Series, *, decimals: int = 1) -> list[list[list[float]]]:
    """For each slice of `view`: [other's slice index, x0, y0, x1, y1] of every slice of `other` whose
    image crosses it, in `view`'s pixel grid. Slices without geometry (NaN) cross nothing."""
    rows_v, cols_v = view.pixels.shape[1:]
    rows_o, cols_o = other.pixels.shape[1:]
    orientations = other.slice_orientations
    assert orientations is not None  # Series fills it on construction
    normals = np.cross(orientations[:, 0], orientations[:, 1])
    out: list[list[list[float]]] = []
    for s in range(len(view)):
        origin, step_x, step_y = (
            view.pixel_to_patient(s, x, y) for x, y in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))
        )
        step_x, step_y = step_x - origin, step_y - origin
        lines = []
        for i in range(len(other)):
            # The plane of slice i in view's pixels: a*x + b*y + c = 0.
            n, q = normals[i], other.positions[i]
            a, b, c = float(n @ step_x), float(n @ step_y), float(n @ (origin - q))
            norm = a * a + b * b
            if not np.isfinite([a, b, c]).all() or norm < 1e-12:
                continue  # parallel planes or missing geometry
            # Points p + t * d of that line, restricted to both images.
            p, d = np.array([-a * c, -b * c]) / norm, np.array([-b, a]) / np.sqrt(norm)
            t: Interval | None = (-np.inf, np.inf)
            t = _restrict(t, p[0], d[0], 0.0, cols_v - 1.0)
            t = _restrict(t, p[1], d[1], 0.0, rows_v - 1.0)
            # other's in-plane pixel coordinates (u, v) along the line are affine in t.
            row_dir, col_dir = orientations[i]
            dy, dx = other.pixel_spacing[i]
            at = origin + p[0] * step_x + p[1] * step_y - q
            along = d[0] * step_x + d[1] * step_y
            t = _restrict(t, float(at @ row_dir) / dx, float(along @ row_dir) / dx, 0.0, cols_o - 1.0)
            t = _restrict(t, float(at @ col_dir) / dy, float(along @ col_dir) / dy, 0.0, rows_o - 1.0)
            if t is None:
                continue
            ends = [p + t[0] * d, p + t[1] * d]
            lines.append([i, *(round(float(v), decimals) for e in ends for v in e)])
        out.append(lines)
    return out
