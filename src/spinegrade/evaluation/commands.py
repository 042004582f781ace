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
        False, "--allow-missing", help="Fill missing predictions with the training priors of --priors."
    ),
    priors: Path | None = typer.Option(
        None,
        "--priors",
        help="With --allow-missing: the training studies' train.csv (class frequencies x 1/2/4) or the "
        "classifier runs that made --pred (their best.json priors); never the scored labels.",
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
        report = evaluate_submission(
            labels, pred, out=out, allow_missing=allow_missing, priors=priors, views=views
        )
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


def calibrate_command(
    pred: Path = typer.Option(..., "--pred", help="Out-of-fold predictions in submission format."),
    labels: Path = typer.Option(..., "--labels", help="Labels in train.csv format (study_id + 25 columns)."),
    out: Path = typer.Option(
        ..., "--out", help="Calibration JSON to write (calibration.json in a run folder is found by predict)."
    ),
    folds: Path | None = typer.Option(
        None,
        "--folds",
        help="CSV with study_id and fold (a crop cache's index.csv): also report the nested, out-of-fold "
        "score of the calibration.",
    ),
    bias: bool = typer.Option(False, "--bias/--no-bias", help="Also fit a class bias per condition group."),
    boost: bool = typer.Option(
        False, "--boost/--no-boost", help="Also fit a boost of each study's top spinal severe probability."
    ),
) -> None:
    """Fit a calibration of OOF predictions to the challenge score: a temperature per condition group
    (optionally a class bias per group and a boost of each study's top spinal severe probability).

    Example: spinegrade calibrate --pred oof.csv --labels data/train.csv --folds cache/index.csv
    --out runs/cls/calibration.json
    """
    from dataclasses import replace

    import pandas as pd

    from spinegrade.data.tables import read_train_labels
    from spinegrade.evaluation.calibration import fit_calibration, folds_of, nested_calibrated_oof
    from spinegrade.evaluation.score import predicted_rows, score_rows
    from spinegrade.evaluation.submission import read_submission

    console = Console()
    truth, oof = read_train_labels(labels), read_submission(pred)
    oof = oof[["row_id", "normal_mild", "moderate", "severe"]]
    calibration = fit_calibration(oof, truth, bias=bias, boost=boost)
    fitted = dict(calibration.fitted)
    if folds is not None:
        nested = nested_calibrated_oof(
            oof, truth, folds_of(pd.read_csv(folds), str(folds)), bias=bias, boost=boost
        )
        fitted["score_nested"] = score_rows(predicted_rows(truth, nested))["score"]
    calibration = replace(calibration, fitted=fitted)
    calibration.save(out)
    table = Table(title="Calibration (challenge score, lower is better)")
    for column in ("group", "temperature", "bias (moderate, severe)"):
        table.add_column(column)
    for group, t in calibration.temperature.items():
        table.add_row(group, f"{t:.3f}", ", ".join(f"{b:+.3f}" for b in calibration.bias[group][1:]))
    console.print(table)
    console.print(
        f"top spinal severe boost {calibration.spinal_severe_boost:.3f}; "
        f"score raw {fitted['score_raw']:.4f}, "
        f"calibrated in sample {fitted['score_calibrated']:.4f}"
        + (f", nested out of fold {fitted['score_nested']:.4f}" if "score_nested" in fitted else "")
        + f" -> {out}",
        highlight=False,
    )
    if "score_nested" in fitted and not fitted["score_nested"] < fitted["score_raw"]:
        console.print(
            "[yellow]warning:[/yellow] out of fold the calibration does not beat the raw predictions; "
            f"leave {out} out of the run folders (predict applies a calibration.json it finds there)",
            highlight=False,
        )
