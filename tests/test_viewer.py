"""spinegrade view: the study pages and the index, checked in the HTML, against the prediction code (crops,
geometry, losses) and in a real browser (headless Chromium through selenium and the system chromedriver).

Tiny untrained models on a tiny phantom, as in test_predict: the grades are meaningless, the page is what is
checked. The browser tests skip, saying why, only where Chromium or its driver cannot be found.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.crops.extract import DEFAULT_CROP_MM, label_to_pixel
from spinegrade.data.series import read_series
from spinegrade.data.tables import read_label_coordinates
from spinegrade.errors import DataError
from spinegrade.evaluation.evaluate import evaluate_submission
from spinegrade.localization.model import LocatorSettings, build_net
from spinegrade.localization.targets import TASKS
from spinegrade.localization.train import model_info
from spinegrade.localization.train import save_model as save_locator
from spinegrade.models.classifier import create_model
from spinegrade.prediction.grade import CropSpec, cut_crops
from spinegrade.prediction.predict import predict
from spinegrade.prediction.results import PredictionWarning, StudyResult
from spinegrade.prediction.studies import read_study
from spinegrade.runtime import torch_threads
from spinegrade.training.checkpoint import save_model
from spinegrade.viewer import write_views
from spinegrade.viewer.build import ViewWarning, study_plan
from spinegrade.viewer.geometry import crossing_lines
from spinegrade.viewer.index import index_page
from spinegrade.viewer.page import PageSummary
from spinegrade.vocab import TARGETS

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna2024-real-study"
MAX_PAGE_BYTES = 3_000_000


@pytest.fixture(scope="module")
def graded(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """predict (untrained locator + classifier) on the tiny phantom's test study, then its pages."""
    root = tmp_path_factory.mktemp("view")
    locator, run = root / "locator", root / "run"
    locator.mkdir()
    run.mkdir()
    torch.manual_seed(0)
    settings = LocatorSettings(size=64, depth=8, decoder_channels=16)
    for task in TASKS:
        save_locator(locator, task, build_net(task, settings), model_info(task, settings, 0))
    model = {"conditioning": "film", "mean": 0.3, "std": 0.2}
    info = {
        "arch": "resnet10t",
        "in_chans": 3,
        "k": 3,
        "size": 32,
        "crop_mm": DEFAULT_CROP_MM,
        "model": model,
    }
    save_model(run, "best", create_model("resnet10t", in_chans=3, **model), info)
    out = root / "out" / "submission.csv"
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)  # the untrained locator misses points
        predict(tiny_phantom, [run], locator, out, progress=False)
    truth = tiny_phantom / "phantom_truth"
    index = write_views(
        out.parent, labels=truth / "test.csv", coords=truth / "test_label_coordinates.csv", progress=False
    )
    return {
        "out": out,
        "details": out.parent / "studies",
        "index": index,
        "data": tiny_phantom,
        "truth": truth,
        "locator": locator,
        "run": run,
    }


def page_of(graded: dict[str, Path]) -> tuple[Path, StudyResult]:
    path = next(p for p in graded["details"].glob("*.json"))
    return graded["index"].parent / f"{path.stem}.html", StudyResult.from_json(json.loads(path.read_text()))


def page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    assert found, "the page carries no study data"
    return json.loads(found.group(1))


def decode(uri: str) -> np.ndarray:
    from PIL import Image

    assert uri.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return np.asarray(image, dtype=np.float32) / 255


# ------------------------------------------------------------------------------------------ the page itself


def test_page_has_every_target_every_series_and_no_network(graded: dict[str, Path]) -> None:
    page, result = page_of(graded)
    html = page.read_text()
    assert page.stat().st_size < MAX_PAGE_BYTES
    rows = re.findall(r'<tr data-target="([^"]+)"', html)
    assert sorted(rows) == sorted(f"{c}/{lv}" for c, lv in TARGETS)
    data = page_data(html)
    graded_series = sorted(str(s) for ids in result.series.values() for s in ids)
    assert sorted(s["id"] for s in data["series"]) == graded_series
    for series in data["series"]:
        volume = read_series(Path(result.folders[series["id"]]))
        assert len(series["slices"]) == len(volume)
        assert (series["rows"], series["cols"]) == volume.pixels.shape[1:]
        assert f'id="viewer-{series["id"]}"' in html
    # Self-contained: no URL but data URIs and the link back to the index.
    assert not re.search(r'(src|href)="(?!data:|index\.html)', html)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_located_and_labelled_points_are_drawn_on_their_slices(graded: dict[str, Path]) -> None:
    page, result = page_of(graded)
    data = page_data(page.read_text())
    drawn = {
        (p["kind"], p["target"]): (s["id"], p["slice"], p["x"], p["y"])
        for s in data["series"]
        for p in s["points"]
    }
    for r in result.points.itertuples():
        assert drawn[("located", f"{r.condition}/{r.level}")] == (
            str(r.series_id),
            r.slice_index,
            round(r.x, 1),
            round(r.y, 1),
        )
    labels = read_label_coordinates(graded["truth"] / "test_label_coordinates.csv")
    mine = labels[labels["study_id"] == result.study_id]
    assert len(mine) and all(("truth", f"{r.condition}/{r.level}") in drawn for r in mine.itertuples())
    r = mine.iloc[0]
    series = read_series(Path(result.folders[str(r.series_id)]))
    index, x, y = label_to_pixel(series, r.instance_number, r.x, r.y)
    assert drawn[("truth", f"{r.condition}/{r.level}")] == (str(r.series_id), index, round(x, 1), round(y, 1))


def test_crops_are_what_the_classifier_saw(graded: dict[str, Path]) -> None:
    page, result = page_of(graded)
    html = page.read_text()
    spec = CropSpec.of_info(result.crops[0])
    study = read_study(study_plan(result))
    points = result.points.assign(series_id=result.points["series_id"].astype(str))
    expected = cut_crops(study.series_by_id(), points, spec).crops
    for r, crop in zip(points.itertuples(), expected, strict=True):
        row = re.search(
            rf'<tr data-target="{r.condition}/{r.level}".*?<img class="crop[^"]*" src="([^"]+)"', html
        )
        assert row, f"no crop for {r.condition} {r.level}"
        strip = decode(row.group(1))
        assert strip.shape == (spec.size, spec.k * spec.size + spec.k - 1)
        shown = np.stack(
            [strip[:, j * (spec.size + 1) : j * (spec.size + 1) + spec.size] for j in range(spec.k)]
        )
        assert np.abs(shown - crop).mean() < 0.03  # the same crop, give or take JPEG


def test_index_lists_the_study_with_the_loss_evaluate_reports(
    graded: dict[str, Path], tmp_path: Path
) -> None:
    page, result = page_of(graded)
    index = graded["index"].read_text()
    assert f'<a href="{page.name}">{result.study_id}</a>' in index
    report = evaluate_submission(graded["truth"] / "test.csv", graded["out"], out=tmp_path / "report")
    loss = next(r["weighted_log_loss"] for r in report["study_losses"] if r["study_id"] == result.study_id)
    assert f'<td class="num">{loss:.3f}</td>' in index
    assert f"<b>{loss:.3f}</b>" in page.read_text()
    # evaluate --out found the pages beside the submission (studies/view) and links to them.
    html = (tmp_path / "report" / "report.html").read_text()
    link = re.search(rf'<a href="([^"]+)">{result.study_id}</a>', html)
    assert link and (tmp_path / "report" / link.group(1)).resolve() == page.resolve()


def test_priors_say_why_and_problems_come_first(graded: dict[str, Path], tmp_path: Path) -> None:
    _, result = page_of(graded)
    details = tmp_path / "studies"
    shutil.copytree(graded["details"], details, ignore=shutil.ignore_patterns("view"))
    path = details / f"{result.study_id}.json"
    data = json.loads(path.read_text())
    axial = data["series"].pop("Axial T2")[0]
    data["points"] = [p for p in data["points"] if str(p["series_id"]) != str(axial)]
    for g in data["grades"]:
        if "subarticular" in g["condition"]:
            g["source"] = "prior"
    message = f"study {result.study_id} has no readable Axial T2 series: left/right subarticular get priors"
    data["problems"].insert(
        0, {"kind": "missing_series_type", "message": message, "study_id": result.study_id}
    )
    path.write_text(json.dumps(data))
    html = (write_views(details, progress=False).parent / f"{result.study_id}.html").read_text()
    assert html.index("missing_series_type") < html.index('class="viewers"')
    row = re.search(r'<tr data-target="left_subarticular_stenosis/l4_l5".*?</tr>', html).group(0)
    assert "prior" in row and "no readable Axial T2 series" in row
    assert f'id="viewer-{axial}"' not in html


def test_old_json_needs_images_and_one_bad_study_does_not_stop_the_others(
    graded: dict[str, Path], tmp_path: Path
) -> None:
    _, result = page_of(graded)
    details = tmp_path / "studies"
    details.mkdir()
    data = json.loads((graded["details"] / f"{result.study_id}.json").read_text())
    del data["folders"], data["crops"]  # as written before the viewer existed
    (details / f"{result.study_id}.json").write_text(json.dumps(data))
    (details / "123.json").write_text("{not json")
    with pytest.warns(ViewWarning) as caught:
        index = write_views(details, tmp_path / "pages", progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "123.json" in messages and "pass the image folder with --images" in messages
    assert "page not written" in index.read_text()
    with pytest.warns(ViewWarning, match="123.json"):
        index = write_views(
            details, tmp_path / "pages", images=graded["data"] / "test_images", progress=False
        )
    html = (index.parent / f"{result.study_id}.html").read_text()
    assert "crop settings not recorded" in html and len(page_data(html)["series"]) == 3


def test_resume_keeps_the_pages_newer_than_their_json(graded: dict[str, Path], tmp_path: Path) -> None:
    _, result = page_of(graded)
    details = tmp_path / "studies"
    shutil.copytree(graded["details"], details, ignore=shutil.ignore_patterns("view"))
    index = write_views(details, progress=False)
    page = index.parent / f"{result.study_id}.html"
    written, listed = page.stat().st_mtime_ns, index.read_text()
    assert write_views(details, resume=True, progress=False).read_text() == listed  # summary read back
    assert page.stat().st_mtime_ns == written
    later = written + 10**9
    os.utime(details / f"{result.study_id}.json", ns=(later, later))  # graded again since
    write_views(details, resume=True, progress=False)
    assert page.stat().st_mtime_ns > written


def test_predict_report_and_view_on_the_command_line(graded: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pred" / "submission.csv"
    args = ["predict", str(graded["data"]), "--runs", str(graded["run"]), "--locator", str(graded["locator"])]
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        result = CliRunner().invoke(app, [*args, "--out", str(out), "--report"], terminal_width=300)
    assert result.exit_code == 0, result.output
    index = out.parent / "studies" / "view" / "index.html"
    assert f"open {index}" in result.output.replace("\n", "") and index.is_file()
    pages = tmp_path / "pages"
    truth = graded["truth"]
    labelled = ["--labels", str(truth / "test.csv"), "--coords", str(truth / "test_label_coordinates.csv")]
    result = CliRunner().invoke(app, ["view", str(out.parent), "--out", str(pages), *labelled])
    assert result.exit_code == 0, result.output
    assert "Weighted log loss" in (pages / "index.html").read_text()
    result = CliRunner().invoke(app, ["view", str(tmp_path / "pages")])
    assert isinstance(result.exception, DataError) and "holds no per-study" in str(result.exception)


# ------------------------------------------------------------------------------------------------ geometry


def test_crossing_lines_lie_on_both_slices(graded: dict[str, Path]) -> None:
    _, result = page_of(graded)
    study = read_study(study_plan(result))
    sagittal, axial = study.series_by_type["Sagittal T2/STIR"][0], study.series_by_type["Axial T2"][0]
    lines = crossing_lines(sagittal, axial, decimals=6)  # the page rounds to 0.1 px; check the geometry
    assert len(lines) == len(sagittal) and sum(map(len, lines)) > 0
    for s, per_slice in enumerate(lines):
        for i, x0, y0, x1, y1 in per_slice:
            ends = sagittal.pixel_to_patient(s, np.array([x0, x1]), np.array([y0, y1]))
            normal = np.cross(*axial.slice_orientations[i])
            assert np.abs((ends - axial.positions[i]) @ normal).max() < 1e-3  # mm: on the axial plane
            index, u, v = axial.patient_to_pixel(ends)
            assert np.allclose(index, i, atol=0.05)
            rows, cols = axial.pixels.shape[1:]
            assert (u > -0.5).all() and (u < cols - 0.5).all() and (v > -0.5).all() and (v < rows - 0.5).all()


@pytest.mark.skipif(not REAL_STUDY.is_dir(), reason="the real study is not in ../shared")
def test_real_axial_slice_line_crosses_the_sagittal_canal_at_its_level() -> None:
    """On study 4646740: the line of the axial slice the radiologist used for L4/L5 subarticular passes the
    radiologist's L4/L5 canal point on the sagittal T2."""
    labels = read_label_coordinates(REAL_STUDY / "train_label_coordinates.csv")
    images = REAL_STUDY / "train_images" / "4646740"
    canal = labels[(labels["condition"] == "spinal_canal_stenosis") & (labels["level"] == "l4_l5")].iloc[0]
    axial_point = labels[
        (labels["condition"] == "left_subarticular_stenosis") & (labels["level"] == "l4_l5")
    ].iloc[0]
    sagittal, axial = (
        read_series(images / str(canal.series_id)),
        read_series(images / str(axial_point.series_id)),
    )
    s, x, y = label_to_pixel(sagittal, canal.instance_number, canal.x, canal.y)
    i = axial.index_of_instance(int(axial_point.instance_number))
    segment = next(seg for seg in crossing_lines(sagittal, axial)[s] if seg[0] == i)
    a, b = np.array(segment[1:3]), np.array(segment[3:5])
    t = np.clip((np.array([x, y]) - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    gap_px = np.linalg.norm(a + t * (b - a) - np.array([x, y]))
    assert gap_px * sagittal.pixel_spacing[s].mean() < 8.0  # mm: within about two axial slices


# ------------------------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven through the system chromedriver (Debian: chromium, chromium-driver)."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "no chromium / chromedriver on PATH (apt-get install chromium chromium-driver; .ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1400",
    ):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_in_chromium_the_slider_keys_and_rows_change_the_slice(
    graded: dict[str, Path], browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, result = page_of(graded)
    browser.get(page.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-target]")
    assert len(rows) == len(TARGETS) and all(r.is_displayed() for r in rows)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # no fetches
    sagittal = result.series["Sagittal T2/STIR"][0]
    viewer = browser.find_element(By.ID, f"viewer-{sagittal}")
    image, slider = viewer.find_element(By.TAG_NAME, "img"), viewer.find_element(By.TAG_NAME, "input")
    label = viewer.find_element(By.CLASS_NAME, "slice-label")

    def shown() -> tuple[int, str, str]:
        return int(viewer.get_attribute("data-slice")), image.get_attribute("src"), label.text

    slider.send_keys(Keys.HOME)
    at_start = shown()
    assert at_start[0] == 0 and at_start[2].startswith("slice 1 /")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    moved = shown()
    assert moved[0] == 2 and moved[1] != at_start[1] and moved[2].startswith("slice 3 /")
    browser.execute_script("arguments[0].focus()", viewer)
    viewer.send_keys(Keys.ARROW_DOWN)
    assert shown()[0] == 3
    frame = viewer.find_element(By.CLASS_NAME, "frame")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(frame), 0, 120).perform()
    assert shown()[0] == 4  # one wheel turn, one slice
    assert len(viewer.find_elements(By.CSS_SELECTOR, "line.plane.current")) >= 1  # the axial slice shown
    # A target row jumps to its point's series and slice.
    point = result.points.iloc[0]
    browser.find_element(By.CSS_SELECTOR, f'tr[data-target="{point.condition}/{point.level}"]').click()
    target_viewer = browser.find_element(By.ID, f"viewer-{point.series_id}")
    assert int(target_viewer.get_attribute("data-slice")) == int(point.slice_index)
    assert target_viewer.find_elements(By.CSS_SELECTOR, "g.point.located.hl")
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "study.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_in_chromium_the_index_sorts_by_a_column(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    pages = [
        PageSummary(s, f"{s}.html", p, "L4/L5 spinal", 0, loss, ())
        for s, p, loss in ((1, 0.2, 0.5), (2, 0.9, 0.1), (3, 0.5, 0.9))
    ]
    path = tmp_path / "index.html"
    path.write_text(index_page(pages, {4: "DataError: broken"}))
    browser.get(path.as_uri())

    def studies() -> list[str]:
        return [
            r.find_elements(By.TAG_NAME, "td")[0].text
            for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    assert studies() == ["3", "1", "2", "4"]  # worst loss first; the study without a page last
    header = browser.find_elements(By.TAG_NAME, "th")[1]  # highest severe probability
    header.click()
    assert studies()[:3] == ["2", "3", "1"]
    header.click()
    assert studies()[1:] == ["1", "3", "2"]  # ascending: the page-less study (n/a) first


def test_notes_are_shown_apart_from_the_problems_each_once(graded: dict[str, Path]) -> None:
    page, result = page_of(graded)
    notes = [p for p in result.problems if p.note]
    assert notes, "the phantom's angled axial blocks are noted"
    body = page.read_text().split("</head>", 1)[1]
    box = re.search(r'<div class="notes">(.*?)</div>', body, re.S).group(1)
    problems = re.search(r'<div class="problems[^"]*">(.*?)</div>', body, re.S).group(1)
    for note in notes:
        assert body.count(html.escape(note.message)) == 1 and html.escape(note.message) in box
        assert note.kind not in problems
    index = graded["index"].read_text()
    row = re.search(rf'<tr><td data-value="{result.study_id}">.*?</tr>', index, re.S).group(0)
    noted = re.search(r'<td data-value="(\d+)" class="why dim">', row)
    assert noted and int(noted.group(1)) == len({n.message for n in notes})
    assert "<th>Problems</th><th>Notes</th>" in index
