"""The `spinegrade phantom` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from spinegrade.phantom.settings import DEFAULT_AXIAL_BLOCKS, DEFAULT_SIZE


def phantom_command(
    out: Annotated[Path, typer.Argument(help="Folder to write; must be empty, missing, or this phantom.")],
    studies: Annotated[int, typer.Option(help="Number of train studies.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and options give the same bytes.")] = 0,
    size: Annotated[
        int | None,
        typer.Option(
            help="Rows of every image (pixels; some sagittals are narrower) [default: real sizes, 320-640 "
            "px by series: slow to write, use e.g. 128 for quick runs]."
        ),
    ] = DEFAULT_SIZE,
    test_studies: Annotated[
        int | None, typer.Option(help="Number of test studies [default: max(1, studies // 10)].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes rendering studies [default: all cores].")
    ] = None,
    axial_blocks: Annotated[
        float, typer.Option(help="Share of studies whose axial T2 is angled blocks, one per disc.")
    ] = DEFAULT_AXIAL_BLOCKS,
    preview: Annotated[
        Path | None,
        typer.Option(help="Draw crops of each condition and grade (beside a real study's) into this PNG."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace a non-phantom or differently configured OUT (only the phantom's files)."),
    ] = False,
) -> None:
    """Write a synthetic lumbar-spine MRI dataset in the exact RSNA 2024 layout (DICOMs and CSVs).

    Each study has a Sagittal T1, a Sagittal T2/STIR and an Axial T2 series whose lesions follow the
    labels; the test split's truth goes to OUT/phantom_truth/. The labels are a noisy reading of a latent
    severity the images show; OUT/oracle_submission.csv holds P(grade | latent) for every study, and its
    score (the floor no model can beat in expectation) is printed beside the per-level prior's. An
    interrupted run resumes where it stopped.

    Example: spinegrade phantom demo_out/phantom --studies 200 --seed 0 --size 160
    """
    from spinegrade.phantom.writer import write_phantom  # numpy, pandas, pydicom: only when run

    summary = write_phantom(
        out,
        studies,
        seed,
        size=size,
        test_studies=test_studies,
        workers=workers,
        overwrite=overwrite,
        axial_blocks=axial_blocks,
    )
    console = Console()
    console.print(
        f"[green]phantom[/green] {summary.out}: {summary.train_studies} train + {summary.test_studies} test "
        f"studies ({summary.rendered} rendered, {summary.reused} reused, {summary.files} files) "
        f"in {summary.seconds:.1f} s"
    )
    test = "" if summary.test_floor is None else f" (test split: {summary.test_floor:.3f})"
    console.print(
        f"floor (oracle_submission.csv) {summary.floor:.3f}{test}; per-level prior {summary.prior:.3f} "
        "(challenge score on the train split, lower is better)"
    )
    if preview is not None:
        from spinegrade.phantom.preview import write_preview

        console.print(f"preview: {write_preview(out, preview)}")
