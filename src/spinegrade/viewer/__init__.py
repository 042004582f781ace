"""The study viewer: one self-contained HTML page per graded study and an index (`spinegrade view`)."""

from spinegrade.viewer.build import write_views

__all__ = ["write_views"]
