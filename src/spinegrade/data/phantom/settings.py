"""The phantom's fixed settings, kept apart so that the CLI can read them without importing numpy & co."""

from __future__ import annotations

from typing import Final

PHANTOM_FORMAT: Final = "spinegrade-phantom"
PHANTOM_VERSION: Final = 1  # bump when the same config would draw different studies
DEFAULT_SIZE: Final = 160  # rows and columns of every image
SIZE_RANGE: Final = (64, 1024)
