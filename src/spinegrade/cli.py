"""The `spinegrade` command line: one typer app wiring each stage's command function."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from spinegrade.bundle.commands import export_command
from spinegrade.crops.commands import prepare_command
from spinegrade.crossval.commands import cv_command
from spinegrade.data.inspect import inspect_command
from spinegrade.demo import demo_command
from spinegrade.errors import SpinegradeError
from spinegrade.evaluation.commands import calibrate_command, evaluate_command
from spinegrade.localization.commands import train_locator_command
from spinegrade.phantom import phantom_command
from spinegrade.prediction.commands import merge_command, predict_command
from spinegrade.training.commands import train_command
from spinegrade.viewer.commands import view_command

app = typer.Typer(
    name="spinegrade",
    help="Grade degenerative lumbar spine conditions on MRI (RSNA 2024): "
    "phantom -> inspect -> prepare -> train -> train-locator -> export -> predict -> view / evaluate "
    "(-> calibrate); cv for the end-to-end score.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("phantom")(phantom_command)
app.command("inspect")(inspect_command)
app.command("prepare")(prepare_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("calibrate")(calibrate_command)
app.command("train-locator")(train_locator_command)
app.command("predict")(predict_command)
app.command("view")(view_command)
app.command("export")(export_command)
app.command("merge")(merge_command)
app.command("cv")(cv_command)
app.command("demo")(demo_command)


def main() -> None:
    """Entry point: run the app; a SpinegradeError is shown as one red line and exit code 2."""
    try:
        app()
    except SpinegradeError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
