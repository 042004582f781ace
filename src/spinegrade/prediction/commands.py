"""The `spinegrade predict` command: grade the test studies of a data folder into submission.csv."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from spinegrade.configfile import config_option

if TYPE_CHECKING:
    from spinegrade.errors import Problem


def predict_command(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder in the RSNA layout (test_series_descriptions.csv, test_images/...)."
    ),
    more_runs: list[Path] | None = typer.Argument(
        None,
        help="More classifier run folders (what follows --runs RUN: `--runs A B C`).",
        show_default=False,
    ),
    runs: list[Path] | None = typer.Option(
        None,
        "--runs",
        help="Classifier run folder(s) from `spinegrade train`; a folder holding several runs (folds, "
        "architectures) counts as all of them. Their probabilities are averaged.",
    ),
    locator: Path | None = typer.Option(
        None, "--locator", help="Locator folder written by `spinegrade train-locator`."
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Model bundle (folder or .zip) written by `spinegrade export`, instead of --runs/--locator; "
        "its hashes and versions are checked first.",
    ),
    runtime: str = typer.Option(
        "torch", "--runtime", help="torch, or onnx (ONNX Runtime on CPU: a bundle's graphs, else exported)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Grade only shard i/n of the studies (0-based); join with `spinegrade merge`."
    ),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Submission CSV to write."),
    images: Path | None = typer.Option(
        None, "--images", help="Image folder (<study>/<series>/*.dcm) instead of DATA_DIR/test_images."
    ),
    details: Path | None = typer.Option(
        None, "--details", help="Folder for the per-study JSON (and figures); default: OUT's folder/studies."
    ),
    figures: bool = typer.Option(False, "--figures", help="Also draw an overlay PNG per series."),
    report: bool = typer.Option(
        False, "--report", help="Also write the study pages and index.html (spinegrade view) in DETAILS/view."
    ),
    workers: int = typer.Option(
        0, "--workers", help="Processes reading studies ahead of the models (0: read in the main process)."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for the models (cpu, cuda, cuda:1...)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Crops per classifier forward pass."),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average with left-right mirrored crops (sides swapped). Default: on when every run was trained "
        "on mirrors (side_flip).",
    ),
    threads: int = typer.Option(
        1, "--threads", help="Torch CPU threads (0: torch's default); one study's batch runs fastest on one."
    ),
    resume: bool = typer.Option(False, "--resume", help="Reuse studies already graded by the same models."),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="Calibration JSON from `spinegrade calibrate` (default: calibration.json in a --runs folder).",
    ),
    stacking: Path | None = typer.Option(
        None,
        "--stacking",
        help="Second stage grading each study's targets together (stacking.json from `spinegrade cv`; "
        "default: stacking.json in a --runs folder). It replaces a calibration found beside it.",
    ),
    ensemble_space: str | None = typer.Option(
        None,
        "--ensemble-space",
        help="Average the runs in probability or logit space (default: the runs' ensemble.json, "
        "else probability).",
    ),
    run_weights: str | None = typer.Option(
        None, "--run-weights", help="Comma list of one weight per run, in the order the runs are found."
    ),
    config: Path | None = config_option(),
) -> None:
    """Grade every test study end to end (read, locate, crop, classify) and write a submission CSV.

    Example: spinegrade predict data/phantom --runs runs/cls --locator runs/locator --out submission.csv

    With a bundle: spinegrade predict data/rsna --model bundle/ --runtime onnx --out submission.csv

    Rows follow DATA_DIR/sample_submission.csv when it exists. Targets whose series is missing or
    unreadable get the per-level prior probabilities; the closing summary lists those studies and why.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from spinegrade.bundle.manifest import open_bundle, unpacked
    from spinegrade.errors import DataError
    from spinegrade.prediction.predict import predict
    from spinegrade.sharding import parse_shard

    try:
        weights = [float(w) for w in run_weights.split(",")] if run_weights else None
    except ValueError:
        raise DataError(f"--run-weights {run_weights!r}: give numbers separated by commas") from None

    console = Console(stderr=True)
    all_runs = [*(runs or []), *(more_runs or [])]
    if model is not None and (all_runs or locator):
        raise DataError("--model BUNDLE already holds the runs and the locator; drop --runs/--locator")
    if model is None and not (all_runs and locator is not None):
        raise DataError("pass either --model BUNDLE or both --runs RUN... and --locator LOCATOR")
    with unpacked(model) if model is not None else nullcontext() as folder:
        bundle = open_bundle(folder) if folder is not None else None
        if bundle is not None:
            run_dirs, locator_dir = bundle.runs, bundle.locator
        else:
            assert locator is not None  # checked above
            run_dirs, locator_dir = all_runs, locator
        summary = predict(
            data_dir,
            run_dirs,
            locator_dir,
            out,
            images=images,
            details=details,
            figures=figures,
            workers=workers,
            device=device,
            batch_size=batch_size,
            tta=tta,
            threads=threads,
            resume=resume,
            runtime=runtime,
            onnx_dir=bundle.onnx_dir if bundle else None,
            shard=parse_shard(shard),
            calibration=calibration,
            stacking=stacking,
            space=ensemble_space,
            run_weights=weights,
        )
    per_study = sum(summary.seconds_per_study.values())
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary.seconds_per_study.items())
    console.print(
        Text(
            f"{summary.n_studies} studies ({summary.resumed} resumed) -> {summary.submission}; "
            f"details in {summary.details}\nseconds per study {per_study:.2f} ({stages})\n"
            f"priors from {summary.prior_source}; stacking {summary.stacking}; "
            f"calibration {summary.calibration}"
        )
    )
    # Ids in their own column; long words (paths) fold instead of being cut at 80 columns (a log, a pipe).
    for title, rows in (
        ("studies graded partly or wholly with priors", summary.studies_with_priors().items()),
        ("problems of studies graded from their images", _by_study(summary.other_problems()).items()),
    ):
        if rows:
            table = Table(title=title, title_justify="left")
            table.add_column("study", justify="right", no_wrap=True)
            table.add_column("why", overflow="fold")
            for study_id, reasons in rows:
                table.add_row(Text(str(study_id)), Text("\n".join(reasons)))
            console.print(table)
    for kind, notes in summary.notes().items():  # how series were acquired: each kind once
        console.print(
            Text(f"note ({kind}, {len(notes)} series, nothing to fix): e.g. {notes[0].message}", style="dim")
        )
    if report:
        from spinegrade.viewer.build import write_views

        console.print(f"study pages: open {write_views(summary.details)}", highlight=False)


def _by_study(problems: list[Problem]) -> dict[int | None, list[str]]:
    """Problem messages grouped by study, each once."""
    out: dict[int | None, dict[str, None]] = {}
    for p in problems:
        out.setdefault(p.study_id, {})[p.message] = None
    return {study_id: list(messages) for study_id, messages in out.items()}


def merge_command(
    parts: list[Path] = typer.Argument(..., help="Partial submissions written by `predict --shard i/n`."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Merged submission CSV to write."),
    sample: Path | None = typer.Option(
        None, "--sample", help="sample_submission.csv: every row must be there once, in its order."
    ),
) -> None:
    """Join the partial submissions of `predict --shard` and check that every row is there exactly once.

    Example: spinegrade merge part0.csv part1.csv --sample data/sample_submission.csv --out submission.csv
    """
    from rich.console import Console

    from spinegrade.prediction.merge import merge_submissions

    merged = merge_submissions(parts, out, sample)
    n_studies = merged["row_id"].str.partition("_")[0].nunique()
    Console(stderr=True).print(f"{len(parts)} parts, {n_studies} studies, {len(merged)} rows -> {out}")
