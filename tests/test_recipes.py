"""Per-architecture training recipes: unset lr / warm-up / epochs come from the registry, set ones win."""

from __future__ import annotations

from spinegrade.models.registry import Recipe, recipe_for
from spinegrade.training.runs import TrainConfig


def test_recipes_fill_only_what_the_run_leaves_unset() -> None:
    assert recipe_for("efficientnet_b0").epochs > recipe_for("vgg16").epochs
    assert recipe_for("some_timm_model") == Recipe()
    b0 = TrainConfig(arch="efficientnet_b0").resolved()
    assert (b0.lr, b0.warmup_epochs, b0.epochs) == (2e-3, 1.0, 20)
    vgg = TrainConfig(arch="vgg16", epochs=3).resolved()
    assert (vgg.lr, vgg.epochs) == (2e-3, 3)
    assert TrainConfig(arch="efficientnet_b0", lr=1e-3).resolved().lr == 1e-3
    assert TrainConfig.from_dict({"arch": "densenet121"}).lr is None  # resolved at train time
