"""The settings of a locator, kept apart (no torch at import) so that the CLI can show their defaults.

The defaults (output stride 2, 32 decoder channels, 24 depth channels, mobilenetv3_small_100 on CPU and
resnet10t as the GPU choice) were chosen on a 160-study phantom; measured: docs/results.md#locators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from spinegrade.crops.defaults import DEFAULT_FOLDS

REFINE_FIELDS: Final = ("refine_mm", "refine_size", "refine_depth", "refine_batch_size")


@dataclass(frozen=True)
class LocatorSettings:
    """Everything that shapes a locator; saved in OUT/config.json and (per model) OUT/<slug>.json."""

    size: int = 128  # input side (px); every slice is resized to size x size
    depth: int = 24  # sagittal slices resampled to this many channels
    context: int = 3  # axial slices per input (the centre one and its neighbours)
    arch: str = "mobilenetv3_small_100"
    decoder_channels: int = 32
    out_stride: int = 2
    sigma: float = 1.5  # heatmap Gaussian, output pixels
    slice_sigma: float = 1.0  # slice target Gaussian, depth channels
    epochs: int = 8  # passes over a task's training samples (see samples_per_epoch)
    # None: an epoch is one pass over the task's training samples, so more studies train longer; a number
    # draws exactly that many per epoch instead (a fixed budget, the old behaviour)
    samples_per_epoch: int | None = None
    # a pass over fewer samples than this is repeated up to it (small training sets still get the steps
    # they need: the demo's 33 training studies per fold)
    min_samples_per_epoch: int = 256
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    fold: int = 0
    n_folds: int = DEFAULT_FOLDS
    seed: int = 0
    # > 0: each located sagittal point is refined on a window of this side (mm) around it, `refine_size`
    # px and `refine_depth` slices (localization.refine); 0: the whole-series locators' points are final
    refine_mm: float = 32.0  # measured: docs/results.md#refinement
    refine_size: int = 48  # 64 localised alike in 1.4x the time (docs/results.md#refinement)
    refine_depth: int = 5
    # windows per batch: 32 steps 1.3x faster on CPU but localised worse at 50 studies (half the steps).
    # measured: docs/results.md#refinement
    refine_batch_size: int = 16

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> LocatorSettings:
        """The settings a file recorded; a field it does not record (added since) takes the value that
        reproduces what the file meant when it was written (no refiners before refine_mm, the refiners
        batched like the locators before refine_batch_size)."""
        absent = {"refine_mm": 0.0, "refine_batch_size": saved.get("batch_size", cls.batch_size)}
        return cls(**{**absent, **saved})

    def whole_series(self) -> LocatorSettings:
        """The settings of a whole-series locator: no window (the refiners' fields do not shape it, so a
        kept one is checked without them: `REFINE_FIELDS`)."""
        return replace(self, refine_mm=0.0)

    def refined(self) -> LocatorSettings:
        """The settings of a refiner: its input is `refine_size` px and `refine_depth` slices, its batches
        `refine_batch_size` windows."""
        return replace(
            self, size=self.refine_size, depth=self.refine_depth, batch_size=self.refine_batch_size
        )

    def epoch_samples(self, n_samples: int) -> int:
        """Samples drawn per epoch from a task's `n_samples` training samples."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        return max(n_samples, self.min_samples_per_epoch)
