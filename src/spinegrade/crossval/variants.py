"""cv's training variants: `--variant NAME:key=value[,key=value]`, a TrainConfig override trained and graded
beside the headline classifiers with the same fold plan, locators, located points and crops. `arch` is one
too (a paired comparison of two architectures), where cv trains a single --arch."""

from __future__ import annotations

import re
import typing
from dataclasses import fields, replace
from typing import Any, Final

from spinegrade.errors import DataError
from spinegrade.models.registry import resolve_arch
from spinegrade.training.runs import TrainConfig

FIXED: Final = ("fold",)  # set by cv for every run
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def variant_keys() -> tuple[str, ...]:
    """The TrainConfig fields a variant may set."""
    return tuple(f.name for f in fields(TrainConfig) if f.name not in FIXED)


def _value(key: str, text: str, kind: Any) -> Any:
    """`text` as the type of TrainConfig's field `key` (bool, int, float, str, or one of them | None)."""
    options = typing.get_args(kind) or (kind,)
    if type(None) in options and text.lower() == "none":
        return None
    base = next(t for t in options if t is not type(None))
    if base is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise DataError(f"--variant key {key}: {text!r} is not a boolean (true or false)")
        return text.lower() in _TRUE
    try:
        return base(text)
    except ValueError:
        raise DataError(f"--variant key {key}: {text!r} is not {base.__name__}") from None


def _check_key(name: str, key: str) -> None:
    if key not in variant_keys():
        raise DataError(
            f"--variant {name}: {key!r} is not a training setting a variant may change; use one of "
            f"{', '.join(variant_keys())}"
        )


def check_variant(name: str, overrides: dict[str, Any]) -> None:
    """DataError unless `name` is a folder-safe name and `overrides` a valid, non-empty TrainConfig change."""
    if not _NAME.fullmatch(name) or not overrides:
        raise DataError(f"--variant {name!r}: write NAME:key=value[,key=value], e.g. smote:imbalance=smote")
    for key in overrides:
        _check_key(name, key)
    try:
        replace(TrainConfig(), **overrides)  # TrainConfig's own checks (imbalance names, loss, ...) now
        if "arch" in overrides:
            resolve_arch(overrides["arch"])
    except DataError as exc:
        raise DataError(f"--variant {name}: {exc}") from None


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """(name, overrides) of `NAME:key=value[,key=value]`, keys and values checked against TrainConfig."""
    name, _, body = (p.strip() for p in text.partition(":"))
    hints = typing.get_type_hints(TrainConfig)
    overrides: dict[str, Any] = {}
    for item in (i.strip() for i in body.split(",") if i.strip()):
        key, eq, value = (p.strip() for p in item.partition("="))
        if not eq:
            raise DataError(f"--variant {text!r}: {item!r} is not key=value")
        _check_key(name, key)
        overrides[key] = _value(key, value, hints[key])
    check_variant(name, overrides)
    return name, overrides


def parse_variants(texts: typing.Sequence[str]) -> dict[str, dict[str, Any]]:
    """name -> overrides of every --variant; DataError for a repeated name."""
    out: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, overrides = parse_variant(text)
        if name in out:
            raise DataError(f"--variant {name} given twice; give each variant its own name")
        out[name] = overrides
    return out
