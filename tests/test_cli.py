"""The `spinegrade` app: every command is wired, documented with an example, and errors exit cleanly."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from spinegrade.cli import app

COMMANDS = (
    "phantom",
    "inspect",
    "prepare",
    "train",
    "evaluate",
    "calibrate",
    "train-locator",
    "predict",
    "view",
    "export",
    "merge",
    "cv",
    "demo",
)
runner = CliRunner()


def test_top_level_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"spinegrade {command}" in result.output, f"`{command} --help` shows no example invocation"


def test_train_help_states_each_family_recipe() -> None:
    """The recipe-dependent defaults in `train --help` are read from the registry, so they follow it."""
    from spinegrade.models.registry import recipe_for
    from spinegrade.training.commands import recipe_default

    epochs = recipe_default("epochs")
    assert f"efficientnet_b0..4, efficientnetv2_s: {recipe_for('efficientnet_b0').epochs}" in epochs
    assert f"vgg16: {recipe_for('vgg16').lr:.0e}".replace("e-0", "e-") in recipe_default("lr")
    result = runner.invoke(app, ["train", "--help"], terminal_width=400, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert " ".join(epochs.split()) in flat


def test_cli_import_leaves_torch_unloaded() -> None:
    """--help stays fast: the app (and the registry its help texts read) imports no torch."""
    import subprocess
    import sys

    code = "import sys, spinegrade.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
