"""`--config FILE.yaml`: a command's settings from a YAML file, flags on the command line winning.

The file's keys are the command's own parameter names (`locator_size` for `--locator-size`, `data_dir`
for the DATA_DIR argument), so every option can be set there and none can drift from the CLI. The file
becomes click's `default_map` (through typer's Context): each value is converted and checked by the
option's own type, as the same text on the command line would be, and a flag on the command line wins.
docs/configs.md says why this layer and not another (pydantic, OmegaConf, Hydra).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import typer
import yaml

CONFIG_PARAM = "config"


def read_config(path: Path, ctx: typer.Context) -> dict[str, Any]:
    """The file's settings checked against the parameters of ctx's command: an unknown key, or a value the
    option's type refuses, raises typer.BadParameter naming the file, the key and the valid keys."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise typer.BadParameter(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path}: not valid YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of setting: value, got {type(loaded).__name__}")
    command = ctx.command
    params = {p.name: p for p in command.params if p.name and p.name != CONFIG_PARAM}
    settings = {}
    for key, value in loaded.items():
        param = params.get(str(key))
        if param is None:
            close = difflib.get_close_matches(str(key).replace("-", "_"), params, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise typer.BadParameter(
                f"{path}: unknown key {key!r}{hint}; valid keys for `{command.name}`: "
                + ", ".join(sorted(params))
            )
        if isinstance(value, list) and not param.multiple and param.nargs == 1:
            value = ",".join(str(v) for v in value)  # arch: [a, b] is the comma list a,b
        try:
            param.process_value(ctx, value)  # the option's own conversion and checks
        except typer.BadParameter as exc:
            raise typer.BadParameter(f"{path}: key {key!r}: {exc.message}") from None
        settings[param.name] = value
    return settings


def _load(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Eager callback of --config: the file's settings become the defaults of the other parameters."""
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx)}
    return value


def config_option() -> Any:
    """The `--config FILE.yaml` option shared by train, train-locator, cv and predict."""
    return typer.Option(
        None,
        "--config",
        help="YAML file of settings, keyed by this command's parameter names (locator_size for "
        "--locator-size); flags given on the command line win. Examples in configs/.",
        is_eager=True,
        callback=_load,
        exists=True,
        dir_okay=False,
    )
