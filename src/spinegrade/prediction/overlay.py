"""Overlay figures: per series, the slices where points were located, each point labelled with its grade.

One PNG per series (matplotlib's Agg backend, no display needed): one panel per slice that holds points
(the middle slice when none does; at most MAX_PANELS), each point marked with a number in the colour of
its predicted grade and listed under the panel as '<n>  <level> <condition>: <grade> <probability>'.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from spinegrade.data.intensity import normalize
from spinegrade.vocab import GROUP_OF_CONDITION, SEVERITIES, SEVERITY_LABELS, SIDE_OF_CONDITION, level_display

if TYPE_CHECKING:
    import pandas as pd

    from spinegrade.data.series import Series
    from spinegrade.prediction.results import StudyResult
    from spinegrade.prediction.studies import StudyImages

MAX_PANELS: Final = 9
MAX_COLUMNS: Final = 3
_COLOURS: Final = ("tab:green", "tab:orange", "tab:red")  # by predicted severity


def short_condition(condition: str) -> str:
    """'left_neural_foraminal_narrowing' -> 'L foraminal'; 'spinal_canal_stenosis' -> 'spinal'."""
    side = SIDE_OF_CONDITION[condition]
    group = GROUP_OF_CONDITION[condition]
    return f"{side[0].upper()} {group}" if side else group


def point_labels(points: pd.DataFrame, grades: pd.DataFrame) -> list[tuple[str, int]]:
    """For each point: its label text and the index of its most probable severity."""
    table = grades.set_index(["condition", "level"])
    labels = []
    for condition, level in zip(points["condition"], points["level"], strict=True):
        probs = table.loc[(condition, level), list(SEVERITIES)].to_numpy(np.float64)
        grade = int(probs.argmax())
        name = f"{level_display(level)} {short_condition(condition)}"
        labels.append((f"{name}: {SEVERITY_LABELS[grade]} {probs[grade]:.2f}", grade))
    return labels


def write_overlays(images: StudyImages, result: StudyResult, out_dir: Path) -> list[Path]:
    """Write out_dir/<study_id>_<series_id>.png for every series of the study; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    points = result.points
    keys = points["series_id"].astype(str) if len(points) else None
    paths = []
    for series_type, group in images.series_by_type.items():
        for series in group:
            mine = points[keys == series.series_id] if keys is not None else points
            path = out_dir / f"{images.study_id}_{series.series_id}.png"
            series_figure(series, mine, result.grades, f"study {images.study_id} · {series_type}", path)
            paths.append(path)
    return paths


def series_figure(series: Series, points: pd.DataFrame, grades: pd.DataFrame, title: str, path: Path) -> None:
    """One series' overlay figure (see the module doc), saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = sorted({int(i) for i in points["slice_index"]}) if len(points) else [len(series) // 2]
    slices = slices[:MAX_PANELS]
    labels = point_labels(points, grades) if len(points) else []
    ncols = min(len(slices), MAX_COLUMNS)
    nrows = -(-len(slices) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(slices) :]:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, slices, strict=False):
        ax.imshow(normalize(series.pixels[index]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"instance {int(series.instance_numbers[index])}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        on_slice = (
            np.flatnonzero(points["slice_index"].to_numpy() == index) if len(points) else np.array([], int)
        )
        for i in on_slice:
            grade = labels[i][1]
            x, y = float(points["x"].iat[i]), float(points["y"].iat[i])
            ax.plot(x, y, marker="+", color=_COLOURS[grade], markersize=10, markeredgewidth=2)
            ax.annotate(
                str(i + 1),
                (x, y),
                xytext=(4, 3),
                textcoords="offset points",
                color=_COLOURS[grade],
                fontsize=8,
            )
        ax.set_xlabel("\n".join(f"{i + 1}  {labels[i][0]}" for i in on_slice), fontsize=7, loc="left")
    fig.suptitle(f"{title} · series {series.series_id}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    tmp.replace(path)
