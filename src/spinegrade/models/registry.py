"""The architectures spinegrade names, mapped to timm models (timm style: a registry, one builder).

A registered name may differ from timm's (``efficientnetv2_s`` -> ``tf_efficientnetv2_s``, which has
ImageNet weights) or ask for parts of the timm model to be dropped (VGG's 4096-wide fully connected
pre-logits, which only suit 224 px inputs and hold 120M parameters). Any other timm name passes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from spinegrade.errors import DataError


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture: the timm model and the attributes of it that the classifier drops."""

    timm_name: str
    drop: tuple[str, ...] = ()


_REGISTRY: Final[dict[str, ArchSpec]] = {
    "vgg16": ArchSpec("vgg16_bn", drop=("pre_logits",)),
    "densenet121": ArchSpec("densenet121"),
    **{f"efficientnet_b{i}": ArchSpec(f"efficientnet_b{i}") for i in range(5)},
    "efficientnetv2_s": ArchSpec("tf_efficientnetv2_s"),
}


def list_models() -> list[str]:
    """The registered architecture names (any other timm model name is accepted as well)."""
    return sorted(_REGISTRY)


def resolve_arch(arch: str) -> ArchSpec:
    """A registered name or a timm model name -> its ArchSpec; DataError when timm has no such model."""
    import timm

    if arch in _REGISTRY:
        return _REGISTRY[arch]
    if timm.is_model(arch):
        return ArchSpec(arch)
    raise DataError(
        f"unknown architecture {arch!r}: use one of {', '.join(list_models())} or a timm model name "
        "(see timm.list_models())"
    )
