"""Classifiers: a registry of timm backbones and one entry point, `create_model`, building them all alike."""

from typing import Any

from spinegrade.models.registry import list_models

__all__ = ["SpineClassifier", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    """The classifier names load torch and timm, so they are imported on first use: the CLI reads the
    registry's recipes for its help texts without them."""
    if name in ("SpineClassifier", "create_model"):
        from spinegrade.models import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
