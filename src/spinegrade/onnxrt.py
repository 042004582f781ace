"""The networks as ONNX graphs, run with ONNX Runtime on CPU (`spinegrade predict --runtime onnx`).

A classifier is exported as x, condition, level -> probabilities; a locator as x -> heatmaps (and slice
logits for the sagittal ones), the batch dimension left free. The runtime objects stand in for the torch
modules where prediction calls them (`predict_proba`, the locator net's call) and take and give torch
tensors, so grading and locating run unchanged. Export checks ONNX Runtime against torch on a random input
(within TOLERANCE). On CPU it is faster than eager torch (measured: docs/results.md#inference).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import torch
from torch import nn

from spinegrade.errors import DataError
from spinegrade.vocab import CONDITIONS, LEVELS

if TYPE_CHECKING:
    import onnxruntime

    from spinegrade.localization.locate import LocatorModel
    from spinegrade.models.classifier import SpineClassifier

TOLERANCE: Final = 1e-4
OPSET: Final = 17
PROBE_BATCH: Final = 3


class _Probabilities(nn.Module):
    """The classifier with its softmax, the graph that is exported."""

    def __init__(self, model: SpineClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, condition: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.model(x, condition, level).float().softmax(dim=1)


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]
) -> bytes:
    buffer = io.BytesIO()
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            args,
            buffer,  # type: ignore[arg-type]  # a binary file works too; the annotation names paths only
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=OPSET,
            dynamo=False,
        )
    module.eval()  # export restores the module's mode; keep it in eval for the checks after it
    return buffer.getvalue()


def session(model: bytes | Path, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session on `threads` threads (0: its default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _check(name: str, expected: list[torch.Tensor], got: list[np.ndarray]) -> float:
    worst = max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got, strict=True))
    if not worst <= TOLERANCE:
        raise DataError(f"ONNX export of {name} differs from torch by {worst:.2e} (> {TOLERANCE:g})")
    return worst


def export_classifier(
    model: SpineClassifier | OnnxClassifier, k: int, size: int, name: str = "classifier"
) -> tuple[bytes, float]:
    """The classifier as ONNX bytes and the largest difference from torch on a random probe batch."""
    if isinstance(model, OnnxClassifier):
        raise DataError(f"{name} already runs on ONNX Runtime: export it from its torch weights")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(PROBE_BATCH, k, size, size, generator=generator)
    condition = torch.arange(PROBE_BATCH, dtype=torch.int64) % len(CONDITIONS)
    level = torch.arange(PROBE_BATCH, dtype=torch.int64) % len(LEVELS)
    wrapped = _Probabilities(model)
    data = _export(wrapped, (x, condition, level), ["x", "condition", "level"], ["probs"])
    with torch.inference_mode():
        expected = [wrapped(x, condition, level)]
    got = session(data).run(None, {"x": x.numpy(), "condition": condition.numpy(), "level": level.numpy()})
    return data, _check(name, expected, got)


def export_locator(model: LocatorModel) -> tuple[bytes, float]:
    """A locator network as ONNX bytes and its largest difference from torch on a random probe."""
    if not isinstance(model.net, nn.Module):
        raise DataError(f"{model.task.slug} already runs on ONNX Runtime: export it from its torch weights")
    s = model.settings
    channels = s.depth if model.task.volume else s.context
    x = torch.rand(
        1 if model.task.volume else PROBE_BATCH,
        channels,
        s.size,
        s.size,
        generator=torch.Generator().manual_seed(0),
    )
    outputs = ["heatmaps", "slices"] if model.task.volume else ["heatmaps"]

    class Graph(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            heatmaps, slices = self.net(x)
            return (heatmaps, slices) if slices is not None else (heatmaps,)

    graph = Graph(model.net)
    data = _export(graph, (x,), ["x"], outputs)
    with torch.inference_mode():
        expected = list(graph(x))
    return data, _check(model.task.slug, expected, session(data).run(None, {"x": x.numpy()}))


class OnnxClassifier:
    """Stands in for a SpineClassifier at inference: `predict_proba` through ONNX Runtime."""

    def __init__(self, runtime: onnxruntime.InferenceSession) -> None:
        self.runtime = runtime

    def predict_proba(self, x: torch.Tensor, condition: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        feeds = {"x": x.cpu().numpy(), "condition": condition.cpu().numpy(), "level": level.cpu().numpy()}
        return torch.from_numpy(self.runtime.run(None, feeds)[0])


class OnnxLocatorNet:
    """Stands in for a LocatorNet at inference: (heatmaps, slice logits or None) through ONNX Runtime."""

    def __init__(self, runtime: onnxruntime.InferenceSession) -> None:
        self.runtime = runtime

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = [torch.from_numpy(a) for a in self.runtime.run(None, {"x": x.cpu().numpy()})]
        return out[0], out[1] if len(out) > 1 else None


def classifier_file(onnx_dir: Path, run: Path) -> Path:
    """Where a bundle keeps the ONNX graph of its classifier run folder `run`."""
    return onnx_dir / "classifiers" / f"{run.name}.onnx"


def locator_file(onnx_dir: Path, slug: str) -> Path:
    """Where a bundle keeps the ONNX graph of the locator `slug`."""
    return onnx_dir / "locator" / f"{slug}.onnx"
