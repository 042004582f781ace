"""Fuzzing (issue 23): a few hundred seeded mutations of the real study's files and CSVs keep the invariant
(tests/fuzzing.py). bench/fuzz.py runs thousands. A failure prints (kind, seed, file): `fuzzing.mutate`
replays it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fuzzing import MUTATIONS, Outcome, Workbench, mutate, pixel_start
from untrained import write_models

from spinegrade.data.series import Series
from spinegrade.runtime import torch_threads

READER_MUTATIONS = 300
CSVS = ("test_series_descriptions.csv", "sample_submission.csv", "train.csv", "train_label_coordinates.csv")


@pytest.fixture(scope="module")
def bench(real_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    root = tmp_path_factory.mktemp("fuzz")
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's and predict's reports go into Problems
        yield Workbench(root / "work", real_study, write_models(root / "models"))


def _breaches(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.kind} seed {o.seed} on {o.target}: {o.why}" for o in outcomes if not o.held]


def test_the_mutations_replay_and_change_the_file(real_study: Path) -> None:
    file = next((real_study / "train_images").glob("*/*/1.dcm"))
    data = file.read_bytes()
    for kind in MUTATIONS:
        changed = [mutate(data, kind, seed) for seed in range(3)]
        assert changed[0] == mutate(data, kind, 0)
        assert any(c != data for c in changed), kind
    assert 700 < pixel_start(data) < len(data) - 100_000  # the RLE pixel data follows a short header


def test_the_reader_holds_under_seeded_mutations_of_every_kind(bench: Workbench) -> None:
    files, kinds = bench.files(), list(MUTATIONS)
    rng = np.random.default_rng(23)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = [
            bench.reader_case(files[rng.integers(len(files))], kinds[i % len(kinds)], i)
            for i in range(READER_MUTATIONS)
        ]
    assert not _breaches(outcomes), _breaches(outcomes)[:5]


def test_the_pipeline_holds_under_file_and_csv_mutations(bench: Workbench) -> None:
    sagittal_t2 = sorted(bench.series["3666319702"].iterdir())
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = [bench.pipeline_case(sagittal_t2[8], "planted_pixel_run", 0)]
        # The fault went through pydicom's own decoder, said with the file's name.
        fallback = [p for p in bench.summary.problems if p.kind == "decoder_fallback"]
        assert [(p.study_id, Path(p.file).name) for p in fallback] == [(bench.MUTATED, sagittal_t2[8].name)]
        assert "PanicException" in fallback[0].message
        outcomes.append(bench.pipeline_case(sagittal_t2[2], "truncation", 1))
        outcomes.append(
            bench.pipeline_case(sorted(bench.series["3201256954"].iterdir())[20], "header_values", 5)
        )
        outcomes += [bench.csv_case(name, seed) for seed, name in enumerate(CSVS)]
    assert not _breaches(outcomes), _breaches(outcomes)


def test_the_invariant_catches_a_reader_that_loses_a_slice_unsaid(
    bench: Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spinegrade.data.series import read_usable_series

    def loses_one(folder: Path) -> tuple[Series | None, list]:
        series, problems = read_usable_series(folder)
        if series is None:
            return series, problems
        fields = ("pixels", "instance_numbers", "positions", "pixel_spacing", "original_shapes")
        kept = {f: getattr(series, f)[:-1] for f in (*fields, "slice_orientations", "stacks")}
        return replace(series, **kept), problems

    monkeypatch.setattr("spinegrade.data.series.read_usable_series", loses_one)
    outcome = bench.reader_case(sorted(bench.series["3666319702"].iterdir())[5], "pixel_bit_flips", 0)
    assert not outcome.held and "neither read nor named" in outcome.why
