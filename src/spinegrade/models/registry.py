"""The architectures spinegrade names, mapped to timm models (timm style: a registry, one builder).

A registered name may differ from timm's (``efficientnetv2_s`` -> ``tf_efficientnetv2_s``, which has
ImageNet weights) or ask for parts of the timm model to be dropped (VGG's 4096-wide fully connected
pre-logits, which only suit 224 px inputs and hold 120M parameters). Any other timm name passes through.

Each architecture also carries its training recipe (peak learning rate, warm-up, epochs), the way timm
carries a pretrained config: one learning rate does not fit every family. Measured on a 40-study phantom
(fold 0, 64 px, class weights, CPU, from scratch; prior 0.812): efficientnet_b0 scores 0.735 at lr 2e-3
in 4 epochs but 0.448 at 6e-3 (or at 2e-3 with 12 epochs), while vgg16 (0.452) and densenet121 (0.431)
do well at 2e-3; batch 64 made efficientnet_b0 worse (0.897). That phantom had no label noise; on the
current one the longer EfficientNet recipe below won. At 32 px (45-study phantom, fold 0 of 3,
4 epochs; prior 0.816) densenet121 reaches 0.483 while efficientnet_b0 stays at the prior (0.832 at 2e-3,
1.232 at 6e-3): its last feature map is 1x1 there, so EfficientNets want 64 px or more, and the demo's
32 px crops use resnet18 (demo.DemoSettings says why).
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


@dataclass(frozen=True)
class ArchSpec:
    """How to build and train one architecture: the timm model, the attributes of it that the classifier
    drops, and its training recipe."""

    timm_name: str
    drop: tuple[str, ...] = ()
    recipe: Recipe = Recipe()


# EfficientNets (depthwise convolutions, batch norm everywhere, from scratch) want many more steps than the
# others: on the noisy-label demo phantom (cv, fold 0, 64 px, located training points; prior 0.864) the
# old 6e-3 for 6 epochs scored 0.912 end to end, 2e-3 for 20 epochs 0.673 (paired difference -0.239
# [-0.309, -0.163]); 4e-3 for 20 epochs 0.951 (it diverged early, as 6e-3 did).
_EFFICIENTNET: Final = Recipe(lr=2e-3, warmup_epochs=1.0, epochs=20)


_REGISTRY: Final[dict[str, ArchSpec]] = {
    "vgg16": ArchSpec("vgg16_bn", drop=("pre_logits",)),
    "densenet121": ArchSpec("densenet121"),
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
