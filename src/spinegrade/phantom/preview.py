"""A picture check of the phantom: crops of each condition group and grade, beside a real study's.

The crops are cut by the project's own crop code (crops.extract.crops_for_points) around the labelled
points, exactly as `prepare` cuts them for training, and the middle slice of each is drawn. Row by row:
condition group x grade; columns: phantom studies, then the real study's crops of that group and grade
(where it has any).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import numpy as np

from spinegrade.crops.extract import crops_for_points
from spinegrade.data.series import read_series
from spinegrade.data.tables import labels_long, load_rsna
from spinegrade.vocab import CONDITION_GROUPS, GROUP_OF_CONDITION, SEVERITY_LABELS

REAL_STUDY: Final = Path("../shared/data/rsna2024-real-study")  # the project's shared real study
CROP_PX: Final = 64


def labelled_crops(data: Path, per_cell: int, size: int = CROP_PX) -> dict[tuple[str, int], list[np.ndarray]]:
    """Up to `per_cell` middle-slice crops (size x size) per (condition group, grade) of a dataset's train
    split, from as many different studies as there are."""
    rsna = load_rsna(data, "train")
    assert rsna.coordinates is not None  # load_rsna reads them for the train split
    points = rsna.coordinates.merge(labels_long(rsna.labels), on=["study_id", "condition", "level"])
    points["group"] = points["condition"].map(GROUP_OF_CONDITION)
    chosen = (
        points.sort_values(["group", "severity", "study_id"], kind="stable")
        .drop_duplicates(["group", "severity", "study_id"])
        .groupby(["group", "severity"])
        .head(per_cell)
    )
    cells: dict[tuple[str, int], list[np.ndarray]] = {}
    for (study_id, series_id), rows in chosen.groupby(["study_id", "series_id"]):
        series = read_series(rsna.image_dir / str(study_id) / str(series_id))
        crops = crops_for_points(series, rows, k=3, size=size)
        for row, crop in zip(rows.itertuples(), crops, strict=True):
            cells.setdefault((row.group, int(row.severity)), []).append(crop[len(crop) // 2])
    return cells


def write_preview(data: Path, png: Path, real: Path | None = None, per_cell: int = 4) -> Path:
    """Draw the grid of `data`'s crops (and `real`'s, default REAL_STUDY when present) into `png`."""
    from matplotlib.figure import Figure

    real = REAL_STUDY if real is None else real
    ours = labelled_crops(Path(data), per_cell)
    theirs = labelled_crops(real, 2) if (real / "train.csv").is_file() else {}
    n_real = max((len(v) for v in theirs.values()), default=0)
    columns = per_cell + n_real
    keys = [(group, grade) for group in CONDITION_GROUPS for grade in range(len(SEVERITY_LABELS))]
    figure = Figure(figsize=(1.3 * columns, 1.35 * len(keys)))
    axes = figure.subplots(len(keys), columns, squeeze=False)
    for r, key in enumerate(keys):
        crops = ours.get(key, [])[:per_cell] + [None] * (per_cell - len(ours.get(key, [])[:per_cell]))
        crops += theirs.get(key, [])[:n_real] + [None] * (n_real - len(theirs.get(key, [])[:n_real]))
        for c, crop in enumerate(crops):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if crop is not None:
                ax.imshow(crop, cmap="gray", vmin=0.0, vmax=1.0)
            if c == 0:
                ax.set_ylabel(f"{key[0]}\n{SEVERITY_LABELS[key[1]]}", fontsize=7)
            if r == 0:
                ax.set_title("phantom" if c < per_cell else "real", fontsize=8)
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    figure.savefig(tmp, dpi=80)
    os.replace(tmp, png)
    return png
