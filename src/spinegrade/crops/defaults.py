"""Default crop settings, kept apart so that the CLI can show them without importing numpy and pandas."""

from __future__ import annotations

from typing import Final

# Physical crop side per condition group (mm): enough context around a lumbar disc level to see the canal
# (disc plus half of each adjacent vertebral body), the foramen with its pedicles, or the lateral recess.
# Subarticular at 32 or 64 mm measured no better (docs/results.md#classifier-levers-at-150-studies).
DEFAULT_CROP_MM: Final = {"spinal": 48.0, "foraminal": 40.0, "subarticular": 48.0}
# What --crop-mm takes, for the commands' help.
CROP_MM_HELP: Final = "Crop side in mm per condition group, e.g. subarticular=32 (defaults: {}).".format(
    ", ".join(f"{group}={mm:g}" for group, mm in DEFAULT_CROP_MM.items())
)
# Which crops grade a target (crops.views): "own" (its condition's series), "own,axial" adds the axial
# view of each sagittal target (better at 150 studies: docs/results.md#second-views).
DEFAULT_VIEWS: Final = "own,axial"
VIEWS_HELP: Final = (
    "Crops per target: own (its condition's series), or own,axial (each spinal and foraminal target also "
    "on the axial slice through its point; the views are averaged)."
)
DEFAULT_K: Final = 5  # neighbouring slices per crop
DEFAULT_SIZE: Final = 64  # crop side in pixels (CPU); 128+ on a GPU
DEFAULT_FOLDS: Final = 5
# Per-series intensity scaling between these percentiles (recorded in the cache and the model runs).
NORMALIZE_PERCENTILES: Final = (1.0, 99.0)
