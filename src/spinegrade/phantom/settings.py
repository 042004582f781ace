"""The phantom's fixed settings, kept apart so that the CLI can read them without importing numpy & co."""

from __future__ import annotations

from typing import Final

PHANTOM_FORMAT: Final = "spinegrade-phantom"
PHANTOM_VERSION: Final = 2  # bump when the same config would draw different studies
DEFAULT_SIZE: Final = None  # None: image widths vary by series as in the real data (320-640 px)
SIZE_RANGE: Final = (64, 1024)
# Share of studies whose axial T2 is a set of blocks angled along each disc (the rest: one stack), about
# half as in the real data.
DEFAULT_AXIAL_BLOCKS: Final = 0.5
SECOND_AXIAL_RATE: Final = 0.1  # share of studies with a second axial T2 series (blocks at the lower discs)
