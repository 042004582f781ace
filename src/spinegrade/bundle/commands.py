"""The `spinegrade export` command: trained runs + locator -> one model bundle folder (and .zip)."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    more_runs: list[Path] | None = typer.Argument(
        None, help="More classifier run folders (after --runs RUN: `--runs A B C`).", show_default=False
    ),
    runs: list[Path] = typer.Option(
        ..., "--runs", help="Classifier run folder(s); a folder holding several runs counts as all of them."
    ),
    locator: Path = typer.Option(..., "--locator", help="Locator folder of `spinegrade train-locator`."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    zip_archive: bool = typer.Option(False, "--zip", help="Also write OUT.zip (one file to upload)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also export every network as ONNX."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Copy trained classifiers and locators into one bundle: weights, settings, versions, sha256 of each.

    Example: spinegrade export --runs runs/cls --locator runs/locator --out bundle --zip

    Grade with it: spinegrade predict data/ --model bundle [--runtime onnx]
    """
    import json

    from rich.console import Console

    from spinegrade.bundle.export import export_bundle
    from spinegrade.bundle.manifest import MANIFEST

    bundle = export_bundle(
        [*runs, *(more_runs or [])], locator, out, onnx=onnx, zip_archive=zip_archive, overwrite=overwrite
    )
    manifest = json.loads((bundle / MANIFEST).read_text())
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 2**20
    Console().print(
        f"bundle {bundle}: {len(manifest['classifiers'])} classifier(s), "
        f"{len(manifest['locator']['models'])} locator(s), {len(manifest['files'])} files, {size:.1f} MiB"
        + (f"; {bundle.with_name(bundle.name + '.zip')}" if zip_archive else ""),
        highlight=False,
    )
