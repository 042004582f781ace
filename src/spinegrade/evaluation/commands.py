"""`spinegrade evaluate`: score a submission against train.csv-format labels and write the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spinegrade.errors import DataError


def _score_table(report: dict) -> Table:
    from spinegrade.evaluation.score import SCORE_PARTS

    table = Table(title="Challenge score (weighted log loss, lower is better)")
    table.add_column("part")
    table.add_column("value", justify="right")
    for part in ("score", *SCORE_PARTS):
        value = report[part]
        table.add_row(
            f"[bold]{part}[/bold]" if part == "score" else part, "n/a" if value is None else f"{value:.4f}"
        )
    return table


def evaluate_command(
    labels: Path = typer.Option(..., "--labels", help="Labels in train.csv format (study_id + 25 columns)."),
    pred: Path = typer.Option(
        ..., "--pred", help="Predictions in submission format (row_id,normal_mild,...)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write report.json, report.md, report.html and figures here."
    ),
    views: Path | None = typer.Option(
        None,
        "--views",
        help="Study pages from `spinegrade view` for report.html to link to "
        "(default: PRED's folder/studies/view when it exists).",
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Fill missing predictions with the per-level class frequencies."
    ),
) -> None:
    """Score predictions with the RSNA 2024 challenge metric, print the score, optionally write a report.

    Scores the studies of --labels that --pred predicts (a validation fold can be scored against train.csv).

    --out REPORT_DIR gets report.json, report.md, report.html and PNG figures (ROC, confusion, reliability,
    per level); report.html lists the costliest studies, linked to their `spinegrade view` pages.

    Example: spinegrade evaluate --labels data/train.csv --pred runs/fold0/val_predictions.csv --out report/
    """
    from spinegrade.evaluation.evaluate import evaluate_submission

    console, errors = Console(), Console(stderr=True)
    try:
        report = evaluate_submission(labels, pred, out=out, allow_missing=allow_missing, views=views)
        for note in report["warnings"]:
            errors.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
        console.print(_score_table(report))
        counts = report["counts"]
        console.print(
            f"{counts['scored_rows']} rows of {counts['scored_studies']} studies scored", highlight=False
        )
        if out is not None:
            console.print(f"report written to {out} (open {out / 'report.html'})", highlight=False)
    except DataError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
