"""The architectures spinegrade names, mapped to timm models (timm style: a registry, one builder).

A registered name may differ from timm's (``efficientnetv2_s`` -> ``tf_efficientnetv2_s``, which has
ImageNet weights) or ask for parts of the timm model to be dropped (VGG's 4096-wide fully connected
pre-logits, which only suit 224 px inputs and hold 120M parameters). Any other timm name passes through.

Each architecture also carries its training recipe (peak learning rate, warm-up, epochs, weight EMA, side
flip), the way timm carries a pretrained config: one schedule does not fit every family. Every recipe is
measured end to end with `cv` (each run's last epoch kept) and changes only for a paired difference clear
of its interval; the figures: docs/results.md#recipes and #families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from spinegrade.errors import DataError


@dataclass(frozen=True)
class Recipe:
    """The training defaults of an architecture (used when a run does not set them)."""

    lr: float = 2e-3  # peak AdamW learning rate (warm-up, then cosine)
    warmup_epochs: float = 1.0
    epochs: int = 6
    ema: float = 0.0  # decay of the kept weights' moving average (0: none; training.module.GradingModule)
    side_flip: bool = False  # left/right mirrors in augmentation (training.augment.side_flip)


@dataclass(frozen=True)
class ArchSpec:
    """How to build and train one architecture: the timm model, the attributes of it that the classifier
    drops, and its training recipe."""

    timm_name: str
    drop: tuple[str, ...] = ()
    recipe: Recipe = Recipe()


# EfficientNets (depthwise convolutions, batch norm everywhere, from scratch) swing from epoch to epoch and
# overfit a few hundred crops: the weights' EMA and left/right mirrors (twice the side conditions' data) hold
# them, and with the mirrors' data 16 epochs pay. measured: docs/results.md#recipes
_EFFICIENTNET: Final = Recipe(lr=2e-3, warmup_epochs=1.0, epochs=16, ema=0.99, side_flip=True)

# VGG (plain 3x3 stacks with batch norm, from scratch) learns slowly and blows up early at 2e-3: a lower peak
# with the weights' EMA. measured: docs/results.md#recipes
_VGG: Final = Recipe(lr=1e-3, warmup_epochs=1.0, epochs=12, ema=0.99)

# densenet121: twice the generic epochs with the weights' EMA. measured: docs/results.md#recipes
_DENSENET: Final = Recipe(lr=2e-3, warmup_epochs=1.0, epochs=12, ema=0.99)

# resnet18, the demo's and the CPU defaults' 32 px classifier: from scratch on ~2,500 crops it overfits after
# about 6 epochs; left/right mirrors (twice the foraminal and subarticular data) and the weights' EMA hold it.
# measured: docs/results.md#recipes
_RESNET: Final = Recipe(lr=2e-3, warmup_epochs=1.0, epochs=10, ema=0.99, side_flip=True)

_REGISTRY: Final[dict[str, ArchSpec]] = {
    "resnet18": ArchSpec("resnet18", recipe=_RESNET),
    "vgg16": ArchSpec("vgg16_bn", drop=("pre_logits",), recipe=_VGG),
    "densenet121": ArchSpec("densenet121", recipe=_DENSENET),
    **{f"efficientnet_b{i}": ArchSpec(f"efficientnet_b{i}", recipe=_EFFICIENTNET) for i in range(5)},
    "efficientnetv2_s": ArchSpec("tf_efficientnetv2_s", recipe=_EFFICIENTNET),
}


def list_models() -> list[str]:
    """The registered architecture names (any other timm model name is accepted as well)."""
    return sorted(_REGISTRY)


def recipe_for(arch: str) -> Recipe:
    """The training recipe of a registered name; the generic one for other timm models (no timm import)."""
    spec = _REGISTRY.get(arch)
    return spec.recipe if spec is not None else Recipe()


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
