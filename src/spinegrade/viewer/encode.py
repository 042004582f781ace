"""Grey images in [0, 1] as compressed data URIs: what keeps a study page self-contained and small."""

from __future__ import annotations

import base64
import io
from typing import Final

import numpy as np

JPEG_QUALITY: Final = 82


def image_uri(image: np.ndarray, *, max_side: int | None = None, quality: int = JPEG_QUALITY) -> str:
    """A (rows, cols) image in [0, 1] as a JPEG data URI, shrunk (aspect kept) so no side exceeds max_side.

    JPEG because MR slices are smooth: at this quality a 384 px slice is a few kB, against ~10x for PNG.
    The 8-bit conversion is for display only; the models never see these bytes.
    """
    from PIL import Image

    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    grey = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    if max_side is not None and max(grey.size) > max_side:
        scale = max_side / max(grey.size)
        grey = grey.resize(
            (max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    grey.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def strip_uri(slices: np.ndarray, *, gap: int = 1, quality: int = JPEG_QUALITY) -> str:
    """k slices (k, rows, cols) side by side with a black `gap`, as one JPEG data URI (a crop's thumbnail)."""
    k, rows, cols = slices.shape
    strip = np.zeros((rows, k * cols + (k - 1) * gap), dtype=np.float32)
    for j in range(k):
        strip[:, j * (cols + gap) : j * (cols + gap) + cols] = slices[j]
    return image_uri(strip, quality=quality)
