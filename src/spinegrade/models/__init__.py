"""Classifiers: a registry of timm backbones and one entry point, `create_model`, building them all alike."""

from spinegrade.models.classifier import SpineClassifier, create_model
from spinegrade.models.registry import list_models

__all__ = ["SpineClassifier", "create_model", "list_models"]
