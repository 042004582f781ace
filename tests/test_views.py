"""Second views (crops.views): which targets get an axial view, where it is cut, how training mirrors it and
how grading averages a target's views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from spinegrade.crops.prepare import prepare
from spinegrade.crops.views import (
    SAGITTAL_CONDITIONS,
    axial_plane,
    check_views,
    expand_views,
    parse_views,
)
from spinegrade.data.series import read_usable_series
from spinegrade.errors import DataError
from spinegrade.prediction.grade import Cut, views_averaged
from spinegrade.training.augment import side_flip
from spinegrade.vocab import CONDITIONS

QUIET = Console(quiet=True)
AXIAL_T2 = 3201256954  # the real study's axial series (54 slices, head to feet)


def test_views_need_own_and_name_what_is_unknown() -> None:
    assert parse_views("axial, own") == ("own", "axial")  # VIEWS order, whatever the order given
    assert check_views(["own"]) == ("own",)
    with pytest.raises(DataError, match="'axial'"):
        parse_views("axial")  # a target is always graded on its own series
    with pytest.raises(DataError, match="coronal"):
        parse_views("own,coronal")


def test_only_sagittal_targets_get_an_axial_copy_right_after_their_own_row() -> None:
    points = pd.DataFrame({"study_id": 1, "condition": list(CONDITIONS), "level": "l4_l5", "x": range(5)})
    plain = expand_views(points, ["own"])
    assert plain["view"].tolist() == ["own"] * 5 and plain["x"].tolist() == list(range(5))
    both = expand_views(points, ["own", "axial"])
    assert set(SAGITTAL_CONDITIONS) == {c for c in CONDITIONS if "subarticular" not in c}
    expected = []
    for c in CONDITIONS:
        expected += [(c, "own")] + ([(c, "axial")] if c in SAGITTAL_CONDITIONS else [])
    assert list(zip(both["condition"], both["view"], strict=True)) == expected
    assert axial_plane(both["condition"], both["view"]).tolist() == [
        "subarticular" in c or v == "axial" for c, v in expected
    ]


def test_a_side_flip_mirrors_each_crop_as_its_plane_says() -> None:
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    foraminal = CONDITIONS.index("left_neural_foraminal_narrowing")
    condition = torch.tensor([foraminal, foraminal])
    flip = torch.ones(2, dtype=torch.bool)
    out, mirrored = side_flip(x, condition, flip, torch.tensor([False, True]))
    assert torch.equal(out[0], x[0].flip(0))  # sagittal: the slices (left-right) reversed
    assert torch.equal(out[1], x[1].flip(-1))  # axial view: the image mirrored, the slices kept
    assert mirrored.tolist() == [CONDITIONS.index("right_neural_foraminal_narrowing")] * 2
    same, _ = side_flip(x, condition, flip)  # no plane given: the condition's own series decides
    assert torch.equal(same, x.flip(1))


def test_views_are_averaged_per_point_and_cuts_join_in_point_order() -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2], [0.6, 0.2, 0.2]])
    owner = np.array([0, 1, 2, 0])  # point 0 has an own crop and an axial view
    np.testing.assert_allclose(views_averaged(probs, owner, 3), [[0.7, 0.15, 0.15], probs[1], probs[2]])
    first = Cut(np.zeros((3, 1, 2, 2)), np.array([0, 1, 0]), np.array([False, False, True]))
    second = Cut(np.ones((1, 1, 2, 2)), np.array([0]), np.array([True]))
    joined = Cut.join([first, second], [2, 1])
    assert joined.owner.tolist() == [0, 1, 0, 2] and joined.axial.tolist() == [False, False, True, True]
    single = Cut.single(np.zeros((2, 1, 2, 2)), ["spinal_canal_stenosis", "left_subarticular_stenosis"])
    assert single.owner.tolist() == [0, 1] and single.axial.tolist() == [False, True]


def test_real_study_axial_views_land_on_the_axial_slices_of_their_level(
    real_twins: Path, tmp_path: Path
) -> None:
    """Each spinal point's axial view is cut within a slice of where the reader put that level's subarticular
    points, and in the canal between them; the foramina's views lie at or above the disc, beside the canal."""
    cache = prepare(
        real_twins,
        tmp_path / "cache",
        k=3,
        size=24,
        n_folds=2,
        workers=1,
        views=("own", "axial"),
        console=QUIET,
    )
    assert cache.meta["views"] == ["own", "axial"]
    real = cache.index[cache.index["study_id"] == 4646740]
    assert real["view"].value_counts().to_dict() == {"own": 25, "axial": 15}
    axial = real[real["view"] == "axial"]
    assert set(axial["condition"]) == set(SAGITTAL_CONDITIONS)
    subarticular = real[(real["view"] == "own") & real["condition"].str.contains("subarticular")]
    series, _ = read_usable_series(real_twins / "train_images" / "4646740" / str(AXIAL_T2))
    assert series is not None
    for row in axial.itertuples():
        centre = int(row.instances.split()[1])  # the instances are the axial series' own
        assert 1 <= centre <= 54
        labelled = subarticular[subarticular["level"] == row.level]["instance_number"]
        if row.condition == "spinal_canal_stenosis":
            assert abs(centre - labelled.mean()) <= 1.0, (row.level, centre, labelled.tolist())
        else:  # the foramen lies beside the disc and up to a few slices (4 mm) above it
            assert 0 <= labelled.mean() - centre <= 3.5, (row.level, centre, labelled.tolist())
    crops = np.asarray(cache.crops[axial.index.to_numpy()], dtype=np.float32)
    assert (crops.std(axis=(2, 3)) > 0.02).all()  # anatomy, not padding

    with pytest.raises(DataError, match="views"):  # a cache cut with axial views is not resumed without
        prepare(real_twins, tmp_path / "cache", k=3, size=24, n_folds=2, workers=1, console=QUIET)


def test_targets_whose_axial_view_cannot_be_cut_keep_their_own(real_twins: Path, tmp_path: Path) -> None:
    """The twin's axial folder is missing (and its subarticular points dropped): its sagittal targets are
    cropped on their own series only, the real study's get both views."""
    data = tmp_path / "data"
    (data / "train_images" / "4646741").mkdir(parents=True)
    for name in ("train.csv", "train_series_descriptions.csv"):
        (data / name).symlink_to(real_twins / name)
    coordinates = pd.read_csv(real_twins / "train_label_coordinates.csv")
    twin_axial = (coordinates["study_id"] == 4646741) & (coordinates["series_id"] == AXIAL_T2)
    coordinates[~twin_axial].to_csv(data / "train_label_coordinates.csv", index=False)
    (data / "train_images" / "4646740").symlink_to(real_twins / "train_images" / "4646740")
    for folder in (real_twins / "train_images" / "4646740").iterdir():
        if folder.name != str(AXIAL_T2):
            (data / "train_images" / "4646741" / folder.name).symlink_to(folder)
    cache = prepare(
        data, tmp_path / "cache", k=3, size=24, n_folds=2, workers=1, views=("own", "axial"), console=QUIET
    )
    counts = cache.index.groupby(["study_id", "view"]).size().to_dict()
    assert counts == {(4646740, "axial"): 15, (4646740, "own"): 25, (4646741, "own"): 15}
    assert (cache.index["instances"] != "").all() and len(cache.crops) == 55
