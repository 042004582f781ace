"""`predict --runtime onnx`: the loaded ensemble and locator with every network run by ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from spinegrade.localization.locate import Locator
from spinegrade.onnxrt import (
    OnnxClassifier,
    OnnxLocatorNet,
    classifier_file,
    export_classifier,
    export_locator,
    locator_file,
    session,
)
from spinegrade.prediction.grade import Ensemble


def with_onnx_runtime(
    ensemble: Ensemble, locator: Locator, onnx_dir: Path | None = None, threads: int = 1
) -> tuple[Ensemble, Locator]:
    """The ensemble and locator with ONNX Runtime in place of torch: a bundle's graphs in `onnx_dir` when
    it has them, else exported from the loaded torch models now (in memory)."""
    runs = []
    for run in ensemble.runs:
        file = classifier_file(onnx_dir, run.path) if onnx_dir else None
        graph: Path | bytes
        if file is not None and file.is_file():
            graph = file
        else:
            graph = export_classifier(run.model, run.spec.k, run.spec.size, str(run.path))[0]
        runs.append(replace(run, model=OnnxClassifier(session(graph, threads))))
    models = {}
    for slug, model in locator.models.items():
        file = locator_file(onnx_dir, slug) if onnx_dir else None
        graph = file if file is not None and file.is_file() else export_locator(model)[0]
        models[slug] = replace(model, net=OnnxLocatorNet(session(graph, threads)))
    return (
        Ensemble(runs, device="cpu", batch_size=ensemble.batch_size, tta=ensemble.tta, space=ensemble.space),
        Locator(models, torch.device("cpu")),
    )
