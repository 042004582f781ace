"""The `spinegrade view` command: browsable HTML pages of graded studies."""

from __future__ import annotations

from pathlib import Path

import typer


def view_command(
    pred_dir: Path = typer.Argument(
        ..., help="Folder of predict's per-study JSON (or the folder holding it as studies/)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder for the pages; default: <JSON folder>/view."),
    labels: Path | None = typer.Option(
        None, "--labels", help="train.csv-format labels: true grades and per-target losses."
    ),
    coords: Path | None = typer.Option(
        None, "--coords", help="train_label_coordinates.csv-format points: the radiologists' points."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder (<study>/<series>/*.dcm) instead of the folders recorded."
    ),
    max_side: int = typer.Option(320, "--max-side", help="Slices shown at most this many pixels on a side."),
    resume: bool = typer.Option(
        False, "--resume", help="Keep pages newer than their JSON and the label files (same options)."
    ),
) -> None:
    """Write one self-contained HTML page per graded study and an index.html listing them (sortable).

    Example: spinegrade view out/studies --labels data/train.csv --coords data/train_label_coordinates.csv

    Each page scrolls through every series (wheel, arrow keys, slider) with the located points and the
    axial slice lines, and shows per target the crop the classifier saw, the probabilities, the grade, where
    it came from and the locator's confidence. Pages open offline: images and scripts are inline.
    """
    from rich.console import Console

    from spinegrade.viewer.build import write_views

    index = write_views(
        pred_dir, out, labels=labels, coords=coords, images=images, max_side=max_side, resume=resume
    )
    Console(stderr=True).print(f"open {index}", highlight=False)
