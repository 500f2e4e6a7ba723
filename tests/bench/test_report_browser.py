"""report.html in a real browser: headless Chromium (Debian's, driven by Selenium) renders it offline.

Chromium and its driver come from Debian (`make test` installs them when run as root); without them
the test is skipped on a developer's machine and fails in CI, where it must run.
"""

import os
import shutil

import pytest

from splitveil.bench import read_rows, run_bench
from splitveil.checkpoint import CheckpointCache
from splitveil.config import parse_spec

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are missing in CI: `make test` installs them as root")
    pytest.skip(
        "chromium / chromedriver not installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )

SPEC = {
    "name": "browser",
    "data": {"name": "fashion-mnist", "limit": 256},
    "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 64},
    "cuts": ["relu22"],
    "attacks": [{"name": "inverse-network", "options": {"epochs": 1}}, {"name": "rmle", "options": {"steps": 10}}],
    "defenses": [{"name": "gaussian-noise", "strengths": [0.5, 2.0]}],
    "audit": {"targets": 8, "grid_images": 4, "mine": {"samples": 128, "steps": 20}, "evaluator": {"epochs": 1}},
}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_report_renders_with_every_section_and_no_broken_image(tmp_path, browser):
    out = tmp_path / "run"
    run_bench(parse_spec(SPEC), out, cache=CheckpointCache(tmp_path / "cache"), progress=False, workers=1)
    browser.get((out / "report.html").as_uri())
    assert browser.title == "splitveil report — he-cnn on fashion-mnist"
    headings = [h.text for h in browser.find_elements("css selector", "h2")]
    for expected in ("Summary", "Best defense per cut", "Privacy-utility frontiers", "Reconstructions",
                     "Cost of each deployed split", "Runs of this directory", "Resolved spec"):  # fmt: skip
        assert any(h.startswith(expected) for h in headings), (expected, headings)
    assert headings.index("Summary") == 0  # the summary comes first
    images = browser.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])"
    )
    # frontier plots (SSIM, MI, re-identification where measured; no oracle, so no excess), depth plots (the same
    # three), one grid per deployed split (3)
    reid = any(row.reid_top1 is not None for row in read_rows(out))
    assert len(images) == (2 + reid) + (2 + reid) + 3, images
    for alt, complete, width, source in images:
        assert complete and width > 100, f"image {alt!r} is broken"
        assert source == "data:image/png;base64,", f"image {alt!r} is not embedded"
    body = browser.find_element("tag name", "body").text
    assert "Undefended at relu22" in body and "gaussian-noise" in body and "torch" in body
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # self-contained
