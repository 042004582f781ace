"""The `spinegrade phantom` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from spinegrade.data.phantom.settings import DEFAULT_SIZE


def phantom_command(
    out: Annotated[Path, typer.Argument(help="Folder to write; must be empty, missing, or this phantom.")],
    studies: Annotated[int, typer.Option(help="Number of train studies.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and options give the same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Rows and columns of every image (pixels).")] = DEFAULT_SIZE,
    test_studies: Annotated[
        int | None, typer.Option(help="Number of test studies [default: max(1, studies // 10)].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes rendering studies [default: all cores].")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace a non-phantom or differently configured OUT (only the phantom's files)."),
    ] = False,
) -> None:
    """Write a synthetic lumbar-spine MRI dataset in the exact RSNA 2024 layout (DICOMs and CSVs).

    Each study has a Sagittal T1, a Sagittal T2/STIR and an Axial T2 series whose lesions follow the
    labels; the test split's truth goes to OUT/phantom_truth/. An interrupted run resumes where it stopped.

    Example: spinegrade phantom demo_out/phantom --studies 200 --seed 0 --size 160
    """
    from spinegrade.data.phantom.writer import write_phantom  # numpy, pandas, pydicom: only when run

    summary = write_phantom(
        out, studies, seed, size=size, test_studies=test_studies, workers=workers, overwrite=overwrite
    )
    Console().print(
        f"[green]phantom[/green] {summary.out}: {summary.train_studies} train + {summary.test_studies} test "
        f"studies ({summary.rendered} rendered, {summary.reused} reused, {summary.files} files) "
        f"in {summary.seconds:.1f} s"
    )
