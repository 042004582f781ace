"""Sampling a phantom series: tissue codes -> sequence intensities, with the physics of a real MR image.

Partial volume (tissue sampled at two depths within the slice thickness and averaged), tissue texture
(fat lobules, striated muscle, heterogeneous marrow), in-plane blur, a smooth bias field, Rician noise, and
the intensity scale of a 12-bit scanner. Like most scanners, a fine matrix (pixels under ACQUIRED_MM) is
an interpolated reconstruction of a coarser acquisition: the series is imaged at that coarser grid (noise
included, so it comes out correlated as in real images) and interpolated up, which also keeps real sizes
(320-640 px) fast to write. Each study has its own contrast and each series its own intensity
scale, so no global brightness says anything about the labels; only the local shapes do.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import numpy as np
from scipy.ndimage import gaussian_filter

from spinegrade.phantom.anatomy import N_TISSUES, Anatomy, Tissue
from spinegrade.phantom.geometry import SeriesPlan

# Relative signal of each tissue (Tissue order up to NUCLEUS, then the healthy nucleus) per sequence.
SIGNAL: Final[dict[str, tuple[float, ...]]] = {
    #        air  soft  fat   muscle marrow cortex annulus csf   nerve lesion nucleus
    "T1": (0.0, 0.35, 0.90, 0.30, 0.60, 0.06, 0.30, 0.12, 0.35, 0.25, 0.38),
    "T2": (0.0, 0.30, 0.62, 0.20, 0.42, 0.05, 0.15, 0.95, 0.28, 0.12, 0.80),
    "STIR": (0.0, 0.35, 0.06, 0.22, 0.16, 0.04, 0.16, 0.95, 0.30, 0.12, 0.80),
}
BITS_STORED: Final = 12  # as every file of the real study
PSF_MM: Final = 0.7  # in-plane blur, so edges are not perfectly sharp
DEPTHS: Final = (-0.25, 0.25)  # where within the slice thickness tissue is sampled (partial volume)
# Texture: (tissue, relative amplitude, in-plane correlation length in mm along rows, along columns).
TEXTURE: Final = (
    (Tissue.FAT, 0.14, 1.2, 1.2),  # fat lobules and septa
    (Tissue.MUSCLE, 0.16, 3.0, 0.7),  # fibres (striated along the rows: craniocaudal on sagittals)
    (Tissue.MARROW, 0.18, 4.0, 4.0),  # heterogeneous (fatty, red) marrow
    (Tissue.SOFT, 0.08, 2.0, 2.0),
)
ACQUIRED_MM: Final = 0.8  # finest acquired pixel; finer matrices are interpolated from a coarser one
MAX_POINTS: Final = 2_000_000  # pixels rendered at once (bounds memory at large sizes)


def study_contrast(rng: np.random.Generator) -> np.ndarray:
    """Per-tissue signal factors shared by a study's series (scanner, coil, patient): (len(SIGNAL['T1']),)."""
    return rng.uniform(0.85, 1.15, len(SIGNAL["T1"]))


def signal_table(
    anatomy: Anatomy, sequence: str, rng: np.random.Generator, contrast: np.ndarray | None = None
) -> np.ndarray:
    """Intensity per tissue code (N_TISSUES,), jittered per study and series; nuclei by their hydration."""
    base = np.asarray(SIGNAL[sequence], dtype=np.float64) * rng.uniform(0.92, 1.08, len(SIGNAL[sequence]))
    if contrast is not None:
        base = base * contrast
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


def _textures(shape: tuple[int, int, int], dx: float, rng: np.random.Generator) -> list[np.ndarray]:
    """One smooth unit-variance noise field (n, rows, cols) per TEXTURE entry."""
    fields = []
    for _, _, along_rows, along_cols in TEXTURE:
        noise = gaussian_filter(
            rng.standard_normal(shape, dtype=np.float32),
            sigma=(0.0, along_rows / dx, along_cols / dx),
            mode="wrap",
        )
        fields.append(noise / max(float(noise.std()), 1e-6))
    return fields


def _interpolation(fine: int, coarse: int, factor: int) -> np.ndarray:
    """(fine, coarse) linear interpolation weights: fine pixel i lies at coarse position i / factor."""
    position = np.minimum(np.arange(fine, dtype=np.float64) / factor, coarse - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, coarse - 1)
    weights = np.zeros((fine, coarse), dtype=np.float32)
    np.add.at(weights, (np.arange(fine), low), 1.0 - (position - low))
    np.add.at(weights, (np.arange(fine), high), position - low)
    return weights


def render_series(
    anatomy: Anatomy,
    plan: SeriesPlan,
    sequence: str,
    rng: np.random.Generator,
    contrast: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Pixels (n, rows, cols) uint16 of `plan` seen with `sequence`, and their BitsStored.

    `contrast` (study_contrast) is the study's own tissue contrast; None leaves the nominal one.
    """
    dy, dx = plan.pixel_spacing
    factor = max(1, round(ACQUIRED_MM / dx))
    if factor == 1:
        image = _acquire(anatomy, plan, sequence, rng, contrast)
    else:
        rows, cols = -(-plan.rows // factor), -(-plan.cols // factor)
        coarse = replace(plan, pixel_spacing=(dy * factor, dx * factor), rows=rows, cols=cols)
        image = _acquire(anatomy, coarse, sequence, rng, contrast)
        image = _interpolation(plan.rows, rows, factor) @ image @ _interpolation(plan.cols, cols, factor).T
    top = (2**BITS_STORED - 1) * rng.uniform(0.3, 0.9)
    scaled = image * np.float32(top / max(float(image.max()), 1e-6)) + np.float32(rng.uniform(0.0, 40.0))
    return np.clip(np.rint(scaled), 0, 2**BITS_STORED - 1).astype(np.uint16), BITS_STORED


def _acquire(
    anatomy: Anatomy,
    plan: SeriesPlan,
    sequence: str,
    rng: np.random.Generator,
    contrast: np.ndarray | None,
) -> np.ndarray:
    """Magnitude image (n, rows, cols) float32 of `plan`: tissue, texture, partial volume, blur, noise."""
    table = signal_table(anatomy, sequence, rng, contrast)
    amplitude = np.zeros((len(TEXTURE), N_TISSUES), dtype=np.float32)
    for j, (kind, amp, _, _) in enumerate(TEXTURE):
        amplitude[j, kind] = amp * rng.uniform(0.7, 1.3)
    n, rows, cols = len(plan.positions), plan.rows, plan.cols
    dy, dx = plan.pixel_spacing
    centre = plan.positions.mean(axis=0) + (cols - 1) / 2.0 * dx * plan.orientation[0]
    centre += (rows - 1) / 2.0 * dy * plan.orientation[1]
    gradient = rng.normal(0.0, 0.12, 3).astype(np.float32)  # smooth coil-sensitivity (bias) field
    falloff = np.float32(rng.uniform(0.0, 0.15))
    textures = _textures((n, rows, cols), dx, rng)
    normals = plan.normals.astype(np.float32)
    image = np.zeros((n, rows, cols), dtype=np.float32)
    step = max(1, MAX_POINTS // (rows * cols * len(DEPTHS)))
    for first in range(0, n, step):
        stop = min(n, first + step)
        points = plan.pixel_points(first, stop)
        for depth in DEPTHS:
            offset = np.float32(depth * plan.thickness) * normals[first:stop, None, None, :]
            tissue = anatomy.tissue(points + offset)
            value = table[tissue]
            modulation = np.ones_like(value)
            for j, field in enumerate(textures):
                modulation += amplitude[j][tissue] * field[first:stop]
            image[first:stop] += value * modulation
        image[first:stop] *= _bias(points, centre, gradient, falloff) / np.float32(len(DEPTHS))
    sigma = max(0.4, PSF_MM / dx)
    image = gaussian_filter(np.maximum(image, 0.0), sigma=(0.0, sigma, sigma), mode="nearest")
    noise = np.float32(rng.uniform(0.015, 0.04))
    return np.hypot(
        image + noise * rng.standard_normal(image.shape, dtype=np.float32),
        noise * rng.standard_normal(image.shape, dtype=np.float32),
    )  # Rician magnitude noise
