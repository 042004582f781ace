"""The architectures spinegrade names, mapped to timm models (timm style: a registry, one builder).

A registered name may differ from timm's (``efficientnetv2_s`` -> ``tf_efficientnetv2_s``, which has
ImageNet weights) or ask for parts of the timm model to be dropped (VGG's 4096-wide fully connected
pre-logits, which only suit 224 px inputs and hold 120M parameters). Any other timm name passes through.

Each architecture also carries its training recipe (peak learning rate, warm-up, epochs, weight EMA, side
flip), the way timm carries a pretrained config: one schedule does not fit every family. The recipes are
measured end to end with `cv`, which keeps each run's last epoch (the figures beside each recipe below).
Earlier figures, each run's best validation epoch on a clean 40-study phantom (fold 0, 64 px, prior 0.812):
efficientnet_b0 0.735 at lr 2e-3 in 4 epochs, 0.448 at 6e-3 or at 2e-3 for 12 epochs, vgg16 0.452 and
densenet121 0.431 at 2e-3; batch 64 made efficientnet_b0 worse (0.897). At 32 px (45-study phantom, fold
0 of 3, 4 epochs; prior 0.816) densenet121 reaches 0.483 while efficientnet_b0 stays at the prior (0.832
at 2e-3, 1.232 at 6e-3): its last feature map is 1x1 there, so EfficientNets want 64 px or more, and the
demo's 32 px crops use resnet18 (demo.DemoSettings says why).
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


# Every recipe below is measured end to end with `cv` on the demo's phantom and folds (50 studies out of
# fold, 64 px, located training points, the last epoch kept; the training folds' prior scores 0.845), as a
# paired difference with its 95% bootstrap interval over studies. Two demo runs (same code and seeds, their
# own locators) moved one recipe by up to 0.12, so a recipe changes only for a difference clear of its
# interval; README "Families at the CPU defaults, end to end" has the table.
#
# EfficientNets (depthwise convolutions, batch norm everywhere, from scratch) swing from epoch to epoch and
# overfit ~800 training crops: in the first run 20 epochs scored 0.900 (worse than the prior), 12 epochs
# with an EMA of the weights (decay 0.99) 0.731, -0.115 [-0.204, -0.017] to the prior; in the second run
# the same recipe was level with the prior (0.849, +0.004 [-0.101, +0.119]). Left/right mirrors (side flip:
# every side's crops teach both sides, doubling the foraminal and subarticular data) are the clear gain
# there: 0.726, -0.123 [-0.210, -0.031] against no flip (seed 1: 0.773, -0.077 [-0.170, +0.008]). With
# twice the crops, 16 epochs pay: 0.656 with flip, -0.070 [-0.151, +0.005] against 12 (seed 1: 0.654,
# -0.119 [-0.189, -0.048]), -0.190 [-0.280, -0.088] to the prior (seed 1: -0.191 [-0.267, -0.116]).
_EFFICIENTNET: Final = Recipe(lr=2e-3, warmup_epochs=1.0, epochs=16, ema=0.99, side_flip=True)

# VGG (plain 3x3 stacks with batch norm, from scratch) learns slowly and blows up early at 2e-3: first run,
# 6 epochs 0.841 and 12 epochs 0.805 (-0.041 [-0.107, +0.032] to the prior). A lower peak with the
# weights' EMA (1e-3 for 12 epochs, decay 0.99), second run: 0.725 [0.607, 0.840], -0.120 [-0.206, -0.029]
# to the prior (foraminal 0.770, level with the prior's 0.755). Side flip there: +0.049 [-0.018, +0.113],
# not taken (foraminal 0.708, but spinal and any severe worse).
_VGG: Final = Recipe(lr=1e-3, warmup_epochs=1.0, epochs=12, ema=0.99)

# densenet121 at the generic 2e-3 for 6 epochs: first run 0.740 (-0.106 [-0.173, -0.031] to the prior),
# second run 0.792 (-0.054 [-0.120, +0.022]). 12 epochs with the weights' EMA: first run 0.686 (-0.053
# [-0.109, +0.006] against 6 epochs), second run 0.681 [0.595, 0.766], -0.110 [-0.173, -0.048] against 6
# epochs and -0.164 [-0.224, -0.101] to the prior, every part below the prior's. Side flip at 6 epochs:
# -0.039 [-0.107, +0.030], inside.
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
