"""Sampling a phantom series: tissue codes -> sequence intensities, blur, bias field, Rician noise, 16 bits.

Each series gets its own intensity scale and stored bit depth, so no global brightness says anything about
the labels; only the local shapes do.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from scipy.ndimage import gaussian_filter

from spinegrade.data.phantom.anatomy import N_TISSUES, Anatomy, Tissue
from spinegrade.data.phantom.geometry import SeriesPlan

# Relative signal of each tissue (Tissue order up to NUCLEUS, then the healthy nucleus) per sequence.
SIGNAL: Final[dict[str, tuple[float, ...]]] = {
    #        air  soft  fat   muscle marrow cortex annulus csf   nerve lesion nucleus
    "T1": (0.0, 0.35, 0.90, 0.30, 0.60, 0.06, 0.30, 0.12, 0.35, 0.25, 0.38),
    "T2": (0.0, 0.30, 0.62, 0.20, 0.42, 0.05, 0.15, 0.95, 0.28, 0.12, 0.80),
    "STIR": (0.0, 0.35, 0.06, 0.22, 0.16, 0.04, 0.16, 0.95, 0.30, 0.12, 0.80),
}
BITS_STORED: Final = (12, 16)
PSF_MM: Final = 0.7  # in-plane blur, so edges are not perfectly sharp
MAX_POINTS: Final = 2_000_000  # pixels rendered at once (bounds memory at large sizes)


def signal_table(anatomy: Anatomy, sequence: str, rng: np.random.Generator) -> np.ndarray:
    """Intensity per tissue code (N_TISSUES,), jittered per series; each disc's nucleus by its hydration."""
    base = np.asarray(SIGNAL[sequence], dtype=np.float64) * rng.uniform(0.9, 1.1, len(SIGNAL[sequence]))
    annulus, nucleus = base[Tissue.ANNULUS], base[Tissue.NUCLEUS]
    table = np.empty(N_TISSUES)
    table[: Tissue.NUCLEUS] = base[: Tissue.NUCLEUS]
    table[Tissue.NUCLEUS :] = annulus + (nucleus - annulus) * anatomy.hydration
    return table.astype(np.float32)


def _bias(points: np.ndarray, centre: np.ndarray, gradient: np.ndarray, falloff: np.float32) -> np.ndarray:
    """Smooth multiplicative field exp(gradient . r - falloff |r|^2), r in decimetres from `centre`."""
    exponent = np.zeros(points.shape[:-1], dtype=np.float32)
    for axis in range(3):
        r = (points[..., axis] - np.float32(centre[axis])) / np.float32(100.0)
        exponent += r * (gradient[axis] - falloff * r)
    return np.exp(exponent)


def render_series(
    anatomy: Anatomy, plan: SeriesPlan, sequence: str, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Pixels (n, rows, cols) uint16 of `plan` seen with `sequence`, and their BitsStored."""
    table = signal_table(anatomy, sequence, rng)
    n, rows, cols = len(plan.positions), plan.rows, plan.cols
    dy, dx = plan.pixel_spacing
    centre = plan.positions.mean(axis=0) + (cols - 1) / 2.0 * dx * plan.orientation[0]
    centre += (rows - 1) / 2.0 * dy * plan.orientation[1]
    gradient = rng.normal(0.0, 0.12, 3).astype(np.float32)  # smooth coil-sensitivity (bias) field
    falloff = np.float32(rng.uniform(0.0, 0.15))
    image = np.empty((n, rows, cols), dtype=np.float32)
    step = max(1, MAX_POINTS // (rows * cols))
    for first in range(0, n, step):
        points = plan.pixel_points(first, first + step)
        image[first : first + step] = table[anatomy.tissue(points)] * _bias(points, centre, gradient, falloff)
    sigma = max(0.4, PSF_MM / dx)
    image = gaussian_filter(image, sigma=(0.0, sigma, sigma), mode="nearest")
    noise = np.float32(rng.uniform(0.015, 0.04))
    image = np.hypot(
        image + noise * rng.standard_normal(image.shape, dtype=np.float32),
        noise * rng.standard_normal(image.shape, dtype=np.float32),
    )  # Rician magnitude noise
    bits = int(rng.choice(BITS_STORED))
    top = (2**bits - 1) * rng.uniform(0.3, 0.9)
    scaled = image * np.float32(top / max(float(image.max()), 1e-6)) + np.float32(rng.uniform(0.0, 40.0))
    return np.clip(np.rint(scaled), 0, 2**bits - 1).astype(np.uint16), bits
