"""A synthetic dataset in the exact RSNA 2024 layout, with lesions that follow the labels.

`write_phantom` writes it; `phantom_studies` rebuilds its ground truth (labels, anatomy, geometry) without
pixels; `phantom_command` is the `spinegrade phantom` CLI command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spinegrade.phantom.command import phantom_command

if TYPE_CHECKING:
    from spinegrade.phantom.writer import PhantomSummary, phantom_studies, write_phantom

__all__ = ["PhantomSummary", "phantom_command", "phantom_studies", "write_phantom"]


def __getattr__(name: str) -> Any:
    # Lazy so that importing the CLI command does not load numpy, pandas and pydicom.
    if name in ("PhantomSummary", "phantom_studies", "write_phantom"):
        from spinegrade.phantom import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
