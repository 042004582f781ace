"""The page skeleton shared by the study pages and the index: inline CSS and scripts, nothing fetched."""

from __future__ import annotations

import json
from html import escape
from importlib.resources import files
from typing import Any


def asset(name: str) -> str:
    """The text of viewer/assets/<name> (the CSS and the plain JavaScript inlined into every page)."""
    return (files("spinegrade.viewer") / "assets" / name).read_text(encoding="utf-8")


def json_script(element_id: str, data: Any) -> str:
    """`data` as a JSON <script> block; '<' escaped so that no string can close the element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def document(title: str, body: str, *, scripts: tuple[str, ...] = (), data: str = "", head: str = "") -> str:
    """A whole HTML page: `body` (already HTML) with the viewer CSS and the named asset scripts inline;
    `head` goes first in <head> (where `spinegrade view --resume` reads it back cheaply)."""
    inline = "".join(f"<script>{asset(name)}</script>" for name in scripts)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{head}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{asset('viewer.css')}</style></head>\n"
        f"<body>{body}{data}{inline}</body></html>\n"
    )
