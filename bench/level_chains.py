"""Level chains bench: a finished cv's locators re-run on their held-out studies with each level decoding.

For each fold of a `spinegrade cv` folder, its fold<f>/locator locates the fold's held-out studies (from
the cv's folds.csv) once per `--chains` value ("none": each point its heatmap's arg-max, the decoding
before localization.levels; "S/B/C": the levels chained with stiffness S, bridge mass B and consensus
weight C, "none" for no bridges or no consensus), and the points are compared with the labelled ones
(crossval.points.located_errors). Prints one JSON line per decoding:
localization.metrics.summarise_errors (median and p90 error in mm, slice-exact share, ...) and the share of
located points off by more than `--gross` mm (about a third of a level's spacing: a point on the wrong
disc). Run:
    .venv/bin/python bench/level_chains.py --cv CV --data DATA --folds 0 --chains none,4/none,4/0.3,4/0.3/4
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

from spinegrade.crossval.points import located_errors
from spinegrade.crossval.run import study_plans
from spinegrade.data.tables import load_rsna
from spinegrade.localization.levels import LevelChains
from spinegrade.localization.locate import load_locator, locate_study
from spinegrade.localization.metrics import summarise_errors
from spinegrade.prediction.readahead import read_studies
from spinegrade.runtime import torch_threads


def summary(points: pd.DataFrame, gross: float) -> dict[str, dict[str, float]]:
    """`summarise_errors` with the share of located points off by more than `gross` mm, overall and per
    series type."""

    def one(group: pd.DataFrame) -> dict[str, float]:
        found = group["error_mm"].dropna().to_numpy()
        return {**summarise_errors(group), "gross_share": float((found > gross).mean())}

    return {"overall": one(points), **{t: one(g) for t, g in points.groupby("series_type")}}


def chains(text: str) -> LevelChains | None:
    """'none' or 'S/B[/C]' (B and C numbers or 'none'; C absent: none) as the decoding locate_study takes."""
    if text.strip() == "none":
        return None
    stiffness, bridge, consensus = [*text.split("/"), "none"][:3]
    return LevelChains(
        float(stiffness),
        None if bridge == "none" else float(bridge),
        None if consensus == "none" else float(consensus),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", required=True, help="a finished `spinegrade cv` folder")
    parser.add_argument("--data", required=True, help="its data folder (RSNA layout)")
    parser.add_argument("--folds", default="0", help="comma-separated folds to re-locate")
    parser.add_argument(
        "--chains", default="none,4/none,4/0.3,4/0.3/4", help="comma-separated: none or S/B/C"
    )
    parser.add_argument("--gross", type=float, default=10.0, help="error (mm) that counts as a wrong disc")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    settings = {v: chains(v) for v in args.chains.split(",")}
    data = load_rsna(args.data)
    assert data.coordinates is not None
    folds = pd.read_csv(f"{args.cv}/folds.csv")
    errors: dict[str, list[pd.DataFrame]] = {v: [] for v in settings}
    for fold in (int(f) for f in args.folds.split(",")):
        locator = load_locator(f"{args.cv}/fold{fold}/locator")
        studies = folds.loc[folds["fold"] == fold, "study_id"].astype(int).tolist()
        with torch.inference_mode(), torch_threads(args.threads):
            for images in read_studies(study_plans(data, studies), 0):
                truth = data.coordinates[data.coordinates["study_id"] == images.study_id]
                for v, setting in settings.items():
                    found = locate_study(images.series_by_type, locator, setting)
                    found = found.assign(study_id=images.study_id)
                    errors[v].append(located_errors(found, truth, images.series_by_id()))
    for v, parts in errors.items():
        points = pd.concat(parts, ignore_index=True)
        print(json.dumps({"chains": v, "folds": args.folds, **summary(points, args.gross)}))


if __name__ == "__main__":
    main()
