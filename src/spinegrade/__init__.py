"""spinegrade: grade degenerative lumbar spine conditions on MRI (RSNA 2024 challenge).

Pipeline: data (CSV tables, DICOM series) -> crops -> models -> training -> evaluation
-> localization -> prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Series", "__version__", "read_series"]

if TYPE_CHECKING:
    from spinegrade.data.series import Series, read_series


def __getattr__(name: str) -> Any:
    # Lazy so that `import spinegrade` (and the CLI's --help) stays fast.
    if name in ("Series", "read_series"):
        from spinegrade.data import series

        return getattr(series, name)
    raise AttributeError(f"module 'spinegrade' has no attribute {name!r}")
