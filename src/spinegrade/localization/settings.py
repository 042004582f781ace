"""The settings of a locator, kept apart (no torch at import) so that the CLI can show their defaults.

Defaults, measured on a 160-study phantom (fold 0 held out: 32 studies; 8 epochs of 256 samples per
series type; CPU shared with other work): output stride 2 instead of 4 halves the in-plane error (median
on the right slice 1.6-2.1 mm vs 2.9-3.9 mm; share within 5 mm 75-91% vs 50-64%) for about 1.8x the
compute at 64 decoder channels; 32 channels give the same error for less; 24 depth channels beat 16
slightly (mean slice error 0.30 vs 0.39 on Sagittal T2; real sagittal series have 15-25 slices);
resnet10t is more precise in-plane (1.4 vs 1.9 mm) but 1.8x slower, so it is a GPU choice (with
--size 256). With these defaults the three locators train in about 3.5 min on one thread and reach a
median error of 3.0 (Sagittal T2), 3.8 (Sagittal T1) and 1.9 mm (Axial T2).
"""

from __future__ import annotations

from dataclasses import dataclass

from spinegrade.crops.defaults import DEFAULT_FOLDS


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

    def epoch_samples(self, n_samples: int) -> int:
        """Samples drawn per epoch from a task's `n_samples` training samples."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        return max(n_samples, self.min_samples_per_epoch)
