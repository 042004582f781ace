"""Per-architecture training recipes: unset lr / warm-up / epochs come from the registry, set ones win."""

from __future__ import annotations

from spinegrade.models.registry import Recipe, recipe_for
from spinegrade.training.runs import TrainConfig


def test_recipes_fill_only_what_the_run_leaves_unset() -> None:
    assert recipe_for("efficientnet_b0").ema > recipe_for("some_timm_model").ema == 0.0
    assert recipe_for("some_timm_model") == Recipe()
    b0 = TrainConfig(arch="efficientnet_b0").resolved()
    assert (b0.lr, b0.warmup_epochs, b0.epochs, b0.ema, b0.side_flip) == (2e-3, 1.0, 16, 0.99, True)
    assert TrainConfig(arch="efficientnet_b0", side_flip=False).resolved().side_flip is False  # set wins
    assert TrainConfig(arch="some_timm_model").resolved().side_flip is False
    assert TrainConfig(arch="efficientnet_b0", ema=0.0).resolved().ema == 0.0  # a set 0 (no EMA) wins
    vgg = TrainConfig(arch="vgg16", epochs=3).resolved()
    assert (vgg.lr, vgg.epochs, vgg.ema) == (1e-3, 3, 0.99)
    assert recipe_for("densenet121") == Recipe(epochs=12, ema=0.99)
    assert TrainConfig(arch="efficientnet_b0", lr=1e-3).resolved().lr == 1e-3
    assert TrainConfig.from_dict({"arch": "densenet121"}).lr is None  # resolved at train time
