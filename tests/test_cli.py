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
