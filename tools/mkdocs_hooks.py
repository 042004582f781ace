"""MkDocs hooks: pages generated at build time, so they cannot drift from what they document.

- cli.md: the `spinegrade` typer app rendered by typer's own Markdown renderer (`typer.cli`, the code
  behind `typer ... utils docs`), from the same command objects that print `--help`;
- changelog.md: CHANGELOG.md at the repository root, which stays the one file to edit.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


def cli_reference() -> str:
    """Every command and option of `spinegrade`, as Markdown (the texts `--help` prints)."""
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from spinegrade.cli import app

    command = typer.main.get_command(app)
    with typer.Context(command) as ctx:
        body = get_docs_for_click(obj=command, ctx=ctx, name="spinegrade", title="`spinegrade`")
    intro = (
        "# Command-line reference\n\n"
        "Generated from the `spinegrade` typer app when the docs are built, so it says what `spinegrade "
        "COMMAND --help` says. Defaults that depend on the architecture come from its recipe "
        "([Results](results.md#recipes)).\n\n"
    )
    # typer's renderer titles the app with "#": demote every heading one level under the page title.
    return intro + "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages to the site's files."""
    # CHANGELOG.md links docs pages from the repository root (docs/x.md); on the site they are siblings.
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
