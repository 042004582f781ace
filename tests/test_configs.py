"""`--config FILE.yaml`: the shipped configs, flags winning over keys, unknown keys refused."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.configfile import read_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMANDS = typer.main.get_command(app).commands
runner = CliRunner()


def _plain(output: str) -> str:
    """The output with rich's panel borders and line wrapping taken out."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _as_json(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_read_by_its_command(path: Path) -> None:
    """configs/<setup>-<command>.yaml: every key is a parameter of that command and its value converts."""
    command = COMMANDS[path.stem.split("-", 1)[1]]
    settings = read_config(path, typer.Context(command))
    assert settings and set(settings) <= {p.name for p in command.params}


class _Stop(Exception):
    """Raised where the test has seen enough of a cv run."""


def test_cv_config_runs_the_demos_cv(
    tiny_phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cv --config configs/demo-cv.yaml trains what the demo trains: cv.json holds the demo's settings.

    The run is stopped at its first stage (prepare), after cv.json is written.
    """
    import spinegrade.crops.prepare as prepare_lib
    from spinegrade.demo import DemoSettings

    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop

    monkeypatch.setattr(prepare_lib, "prepare", stop)
    out = tmp_path / "cv"
    args = ["cv", str(tiny_phantom), "--out", str(out), "--config", str(CONFIGS / "demo-cv.yaml")]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, _Stop), result.output
    saved = json.loads((out / "cv.json").read_text())
    assert saved["data_dir"] == str(tiny_phantom)  # the command line's, not the file's demo_out/data
    assert saved["settings"] == _as_json(asdict(DemoSettings().cv_settings()))


def test_a_flag_on_the_command_line_wins_over_the_files_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spinegrade.crossval.run as run

    seen = {}
    monkeypatch.setattr(run, "cross_validate", lambda data, out, settings, **_: seen.update(s=settings))
    config = tmp_path / "cv.yaml"
    config.write_text(
        "out: somewhere\nepochs: 10\nlocator_size: 96\narch: [resnet18, vgg16]\nlogger: tensorboard\n"
    )
    args = ["cv", str(tmp_path), "--config", str(config), "--epochs", "3", "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    settings = seen["s"]
    assert settings.epochs == 3  # the flag
    assert settings.locator.size == 96 and settings.archs == ("resnet18", "vgg16")  # the file
    assert settings.size == 64  # neither: the command's default
    assert settings.logger == "tensorboard"  # cv passes it to every locator and classifier it trains


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("locator_epoch: 3\n", "unknown key 'locator_epoch' (did you mean locator_epochs?)"),
        ("epochs: many\n", "key 'epochs':"),
        ("- epochs\n", "expected a mapping"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = runner.invoke(app, ["cv", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(config)])
    assert result.exit_code == 2
    shown = _plain(result.output)
    assert "bad.yaml" in shown
    assert expected in shown
    if "unknown key" in expected:
        valid = shown.split("valid keys for `cv`:")[1]
        names = {name.strip(" .") for name in valid.split(",")}
        assert {"locator_epochs", "locator_size", "arch", "data_dir", "variant"} <= names
        assert "config" not in names
