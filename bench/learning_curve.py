"""The learning curve: the end-to-end out-of-fold score against the number of training studies.

    python bench/learning_curve.py --studies 50,150,400 --seed 0 --out lc

For each size N: a phantom of N training studies (OUT/seed<S>/n<N>/data) and `spinegrade cv` on it at the
project's CPU defaults (the demo's settings: spinegrade.demo.DemoSettings) in OUT/seed<S>/n<N>/cv. Both
resume, so a rerun reuses what is there and adds new sizes or seeds. Prints one JSON line per size (end to
end, side-flip TTA, nested-calibrated, stacked, oracle points, prior and floor with their 95% intervals;
the locators' median / p90 error and slice-exact share; cv's time) and writes OUT/learning_curve.json, .md
(a table) and .png with every seed found under OUT.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from spinegrade.crossval.run import PRIOR_ENTRY, check_resumable, cross_validate
from spinegrade.demo import DemoSettings
from spinegrade.fileio import write_atomic
from spinegrade.phantom import write_phantom

ENTRIES = {  # JSON key -> report entry (its name with the headline's training points)
    "end_to_end": "end to end ({points})",
    "calibrated": "end to end ({points}), calibrated (nested)",
    "stacked": "end to end ({points}), stacked (nested)",
    "tta": "end to end ({points}), side-flip TTA",
    "oracle": "oracle points ({points})",
    "prior": PRIOR_ENTRY,
    "floor": "floor (phantom's true probabilities)",
}


def size_row(report: dict[str, Any], studies: int, seed: int, seconds: float | None) -> dict[str, Any]:
    """One size's figures from cv's report.json."""
    points = report["settings"]["train_points"][0]
    graded = report["folds_graded"]
    row: dict[str, Any] = {
        "studies": studies,
        "seed": seed,
        "graded_folds": None if len(graded) == report["folds"]["n_folds"] else graded,  # None: all
        "classifier_seeds": report["settings"].get("seeds", 1),  # classifiers averaged per fold
    }
    for key, entry in ENTRIES.items():
        score = report["scores"].get(entry.format(points=points), {}).get("score")
        row[key] = (
            None if score is None else {k: round(score[k], 6) for k in ("value", "low", "high")}
        )  # 6: no double rounding at 3
    headline = f"end to end ({points}) - {PRIOR_ENTRY}"
    row["end_to_end_minus_prior"] = report["differences"].get(headline)
    floor = row["floor"]["value"] if row["floor"] else None
    row["end_to_end_minus_floor"] = None if floor is None else round(row["end_to_end"]["value"] - floor, 6)
    loc = report["localization"]["overall"]
    row["located"] = {
        "median_mm": round(loc["median_mm"], 2),
        "p90_mm": round(loc["p90_mm"], 2),
        "exact_slice_share": round(loc["exact_slice_share"], 3),
    }
    row["cv_seconds"] = None if seconds is None else round(seconds, 1)
    return row


def run_size(out: Path, studies: int, seed: int, settings: DemoSettings, console: Console) -> dict:
    """Write (or reuse) the phantom and cv of one size; its row. A finished cv with fewer classifier seeds
    or other graded folds than asked is resumed (only the missing classifiers train); its time adds up."""
    folder = out / f"seed{seed}" / f"n{studies}"
    data, cv = folder / "data", folder / "cv"
    write_phantom(data, studies, seed, size=settings.image_px, test_studies=0)
    done = cv / "report.json"
    cv_settings = replace(settings, seed=seed).cv_settings()
    seconds_file = folder / "cv_seconds.txt"
    seconds = float(seconds_file.read_text()) if seconds_file.is_file() else None
    current = False
    if done.is_file():  # a finished cv counts only if made with today's settings
        saved = json.loads((cv / "cv.json").read_text())["settings"]
        check_resumable(saved, cv_settings)
        folds = None if cv_settings.folds is None else list(cv_settings.folds)
        current = saved.get("seeds", 1) == cv_settings.seeds and saved.get("folds") == folds
    if not current:
        start = time.perf_counter()
        cross_validate(data, cv, cv_settings, resume=True, console=console)
        seconds = (seconds or 0.0) + time.perf_counter() - start
        write_atomic(seconds_file, f"{seconds:.1f}\n")
    return size_row(json.loads(done.read_text()), studies, seed, seconds)


def collect(out: Path) -> list[dict[str, Any]]:
    """The rows of every finished size and seed under OUT."""
    rows = []
    for report in sorted(out.glob("seed*/n*/cv/report.json")):
        folder = report.parent.parent
        seconds_file = folder / "cv_seconds.txt"
        seconds = float(seconds_file.read_text()) if seconds_file.is_file() else None
        studies, seed = int(folder.name[1:]), int(folder.parent.name[4:])
        rows.append(size_row(json.loads(report.read_text()), studies, seed, seconds))
    return sorted(rows, key=lambda r: (r["seed"], r["studies"]))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The learning curve as a Markdown table (the docs' results page carries it)."""

    def cell(entry: dict[str, float] | None) -> str:
        return "-" if entry is None else f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    lines = [
        "| studies | seed | classifiers per fold | end to end | - prior (paired) | side-flip TTA "
        "| calibrated (nested) | stacked (nested) | oracle points | prior | floor | e2e - floor "
        "| located median / p90 / slice exact | cv time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loc = r["located"]
        seconds = "-" if r["cv_seconds"] is None else f"{r['cv_seconds']:.0f} s"
        graded = r["graded_folds"]
        studies = f"{r['studies']}" + (f" (folds graded: {','.join(map(str, graded))})" if graded else "")
        lines.append(
            f"| {studies} | {r['seed']} | {r['classifier_seeds']} | {cell(r['end_to_end'])} "
            f"| {cell(r['end_to_end_minus_prior'])} "
            f"| {cell(r['tta'])} | {cell(r['calibrated'])} | {cell(r['stacked'])} | {cell(r['oracle'])} "
            f"| {cell(r['prior'])} | {cell(r['floor'])} | {r['end_to_end_minus_floor']:+.3f} "
            f"| {loc['median_mm']:.1f} mm / {loc['p90_mm']:.1f} mm / {100 * loc['exact_slice_share']:.0f}% "
            f"| {seconds} |"
        )
    return "\n".join(lines) + "\n"


def plot(
    rows: list[dict[str, Any]], path: Path, before: tuple[str, list[dict[str, Any]]] | None = None
) -> None:
    """Score against studies (every seed; bars: 95% intervals) and the locators' median error; `before`
    (label, rows): an earlier curve's end-to-end points, faded, to show what a change moved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "end_to_end": ("end to end", "tab:blue"),
        "calibrated": ("end to end, calibrated (nested)", "tab:cyan"),
        "stacked": ("end to end, stacked (nested)", "tab:purple"),
        "tta": ("end to end, side-flip TTA", "tab:red"),
        "oracle": ("oracle points", "tab:green"),
        "prior": ("per-level prior", "tab:gray"),
        "floor": ("phantom's floor", "black"),
    }
    fig, ax = plt.subplots(figsize=(10, 4.5))
    seeds = sorted({r["seed"] for r in rows})
    markers = "os^D"
    for k, (key, (label, colour)) in enumerate(styles.items()):
        for i, seed in enumerate(seeds):
            mine = [r for r in rows if r["seed"] == seed and r[key]]
            if not mine:
                continue
            shift = 1 + 0.025 * (k - len(styles) / 2) + 0.01 * i  # side by side, so the bars do not overlap
            x = [r["studies"] * shift for r in mine]
            y = [r[key]["value"] for r in mine]
            err = [
                [v - r[key]["low"] for v, r in zip(y, mine, strict=True)],
                [r[key]["high"] - v for v, r in zip(y, mine, strict=True)],
            ]
            ax.errorbar(
                x, y, yerr=err, color=colour, marker=markers[i % len(markers)], capsize=3,
                linestyle="-" if key not in ("prior", "floor") else ":",
                label=label if i == 0 else None,
            )  # fmt: skip
    if before is not None:
        label, earlier = before
        for i, seed in enumerate(sorted({r["seed"] for r in earlier})):
            mine = [r for r in earlier if r["seed"] == seed]
            ax.plot(
                [r["studies"] for r in mine], [r["end_to_end"]["value"] for r in mine], color="tab:blue",
                marker=markers[i % len(markers)], linestyle="--", alpha=0.35, fillstyle="none",
                label=f"end to end, {label}" if i == 0 else None,
            )  # fmt: skip
    ax.set_xscale("log")
    sizes = sorted({r["studies"] for r in rows + (before[1] if before else [])})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)
    ax.set_xlabel("training studies (phantom; 3-fold cv, out of fold)")
    ax.set_ylabel("challenge score (lower is better)")
    twin = ax.twinx()
    for i, seed in enumerate(seeds):
        mine = [r for r in rows if r["seed"] == seed]
        twin.plot(
            [r["studies"] for r in mine], [r["located"]["median_mm"] for r in mine], color="tab:orange",
            marker=markers[i % len(markers)], linestyle="--", alpha=0.7,
            label="locators' median error (mm)" if i == 0 else None,
        )  # fmt: skip
    twin.set_ylabel("median located error (mm)", color="tab:orange")
    twin.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    markers_note = ", ".join(f"seed {s}: {markers[i % len(markers)]}" for i, s in enumerate(seeds))
    ax.set_title(f"spinegrade learning curve at the CPU defaults ({markers_note})", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--studies", default="50,150,400", help="Training studies per size, comma-separated.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the phantom, the folds and training.")
    parser.add_argument("--out", type=Path, required=True, help="Folder of the phantoms, cv runs and figure.")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the demo's; 1 on shared cores)"
    )
    parser.add_argument(
        "--graded-folds",
        default=None,
        help="Folds cv grades, comma-separated (default: all). Every locator is still trained; one graded "
        "fold trains a third of the classifiers (a 400-study point on 2 cores).",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="Classifiers per fold, averaged (default: the demo's); a finished cv with others is resumed.",
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="LABEL=DIR",
        help="Another curve's OUT (e.g. before a change): its end-to-end points are drawn faded, as LABEL.",
    )
    args = parser.parse_args()
    console = Console(stderr=True, width=120)
    settings = DemoSettings()
    if args.threads is not None:
        settings = replace(settings, threads=args.threads)
    if args.seeds is not None:
        settings = replace(settings, seeds=args.seeds)
    if args.graded_folds is not None:
        settings = replace(settings, graded_folds=tuple(int(f) for f in args.graded_folds.split(",")))
    for studies in (int(s) for s in args.studies.split(",") if s.strip()):
        row = run_size(args.out, studies, args.seed, settings, console)
        print(json.dumps(row), flush=True)
    rows = collect(args.out)
    write_atomic(args.out / "learning_curve.json", json.dumps(rows, indent=1) + "\n")
    write_atomic(args.out / "learning_curve.md", markdown(rows))
    before = None
    if args.before:
        label, _, folder = args.before.partition("=")
        if not folder or not Path(folder).is_dir():
            parser.error(f"--before {args.before!r}: give LABEL=DIR with an existing folder")
        before = (label, collect(Path(folder)))
    plot(rows, args.out / "learning_curve.png", before)
    console.print(f"wrote {args.out / 'learning_curve.json'} and {args.out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
