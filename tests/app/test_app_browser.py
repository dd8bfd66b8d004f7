"""The web app in headless Chromium: upload, click a point, a bicubic x16 zoom streamed, download, viewer, refusals.

One app server for the module (Gradio takes seconds to start); each test its own page.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.app.fakes import PAUSE

gradio = pytest.importorskip("gradio", reason="the app needs the [app] extra (gradio)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright ([test] extra)")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,  # every test here talks to the app that headless Chromium drives
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]
TIMEOUT_MS = 90_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from chainzoom.app.server import launch
    from chainzoom.backbones import BACKBONES
    from tests.app.fakes import SLOW

    if SLOW.name not in BACKBONES.entries:
        BACKBONES.register(SLOW)  # the menus are read from the registry when the app is built
    port = free_port()
    demo = launch(tmp_path_factory.mktemp("app"), port=port, block=False)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()
    demo.chainzoom_viewers.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CHAINZOOM_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#upload input[type=file]", state="attached")
    return page


def click_at(page, selector: str, x: float, y: float) -> None:
    """Click the point (x, y), in fractions, of the picture an ``<img>`` draws (Gradio's object-fit: scale-down)."""
    box = page.locator(selector).bounding_box()
    natural = page.locator(selector).evaluate("img => [img.naturalWidth, img.naturalHeight]")
    scale = min(1.0, box["width"] / natural[0], box["height"] / natural[1])
    width, height = natural[0] * scale, natural[1] * scale
    left, top = box["x"] + (box["width"] - width) / 2, box["y"] + (box["height"] - height) / 2
    page.mouse.click(left + width * x, top + height * y)


def test_upload_click_zoom_x16_and_download(app, browser, artifacts: Path) -> None:
    demo, url = app
    folder = demo.chainzoom_folder
    page = open_page(browser, url)
    page.locator("#upload input[type=file]").set_input_files(str(SAMPLE))
    page.wait_for_selector("#picture img")
    assert "sample.jpg: 451x300" in page.inner_text("#message")
    click_at(page, "#picture img", 0.3, 0.6)
    page.wait_for_function("document.querySelector('#center textarea').value !== '0.5,0.5'")
    x, y = (float(v) for v in page.input_value("#center textarea").split(","))
    assert x == pytest.approx(0.3, abs=0.01) and y == pytest.approx(0.6, abs=0.01)
    page.get_by_label("16", exact=True).check()
    page.locator("#backbone input").click()
    page.locator("#backbone input").fill("bicubic")
    page.keyboard.press("Enter")
    choose(page, "#consistency", "wavelet")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('#zoom-gallery img').length === 3")
    page.wait_for_function("document.querySelector('#zoom-status').innerText.startsWith('Done')")
    captions = page.locator("#zoom-gallery").inner_text()
    assert "x1: (no prompt)" in captions and "x16: (no prompt)" in captions
    page.screenshot(path=str(artifacts / "app-zoom.png"), full_page=True)

    [run] = list(folder.runs.iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["states"]) == 3
    request = manifest["request"]
    assert (request["backbone"], request["prompter"], request["scale"], request["mode"], request["consistency"]) == (
        "bicubic",
        "null",
        16.0,
        "chain",
        "wavelet",
    )
    assert request["center"] == pytest.approx([x, y], abs=1e-3)

    with page.expect_download() as download:
        page.click("#zoom-zip")
    saved = artifacts / "run.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = {Path(n).name for n in archive.namelist()}
    assert {"manifest.json", "step_00.png", "step_01.png", "step_02.png", "strip.png", "zoom.webp"} <= names

    viewer = page.locator("#zoom-viewer a").get_attribute("href")
    assert viewer.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(viewer + "layers.json", timeout=10) as reply:
        assert [layer["label"] for layer in json.loads(reply.read())["layers"]] == ["x1", "x4", "x16"]

    page.get_by_role("tab", name="Previous runs").click()
    page.click("#refresh")
    page.wait_for_function(f"document.querySelector('#runs').innerText.includes('{run.name}')")
    assert "3 of 3" in page.inner_text("#runs")
    page.close()


def choose(page, dropdown: str, value: str) -> None:
    """Pick ``value`` in a Gradio dropdown: type it, click its option, and wait until the field holds it
    (pressing Enter at once could pick the first option before the list was filtered)."""
    field = page.locator(f"{dropdown} input")
    field.click()
    field.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    page.wait_for_function(
        "([selector, value]) => document.querySelector(selector).value === value", arg=[f"{dropdown} input", value]
    )


def test_a_cancelled_zoom_keeps_its_states_and_resumes(app, browser, artifacts: Path) -> None:
    demo, url = app
    folder = demo.chainzoom_folder
    page = open_page(browser, url)
    page.locator("#upload input[type=file]").set_input_files(str(ROOT / "assets" / "photos" / "coffee.png"))
    page.wait_for_selector("#picture img")
    page.get_by_label("1024", exact=True).check()
    choose(page, "#backbone", "slow")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('#zoom-gallery img').length >= 2")
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#zoom-status').innerText.startsWith('Cancelled')")
    [run] = [p for p in folder.runs.iterdir() if p.name.startswith("coffee-x1024")]
    time.sleep(2 * PAUSE)  # the step under way when the click landed is finished, then nothing more
    manifest = json.loads((run / "manifest.json").read_text())
    made = len(manifest["states"])
    assert 2 <= made < 6 and not manifest["complete"]
    time.sleep(2 * PAUSE)
    assert len(json.loads((run / "manifest.json").read_text())["states"]) == made  # it really stopped

    page.get_by_role("tab", name="Previous runs").click()
    page.click("#refresh")
    page.wait_for_function(f"document.querySelector('#runs').innerText.includes('{made} of 6')")
    choose(page, "#pick", run.name)
    page.click("#resume")
    page.wait_for_function("document.querySelector('#runs-status').innerText.startsWith('Done')")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and [s["index"] for s in manifest["states"]] == list(range(6))
    assert page.locator("#runs-gallery img").count() == 6
    page.screenshot(path=str(artifacts / "app-resumed.png"), full_page=True)
    page.close()


def test_an_x4_zoom_shows_its_gallery(app, browser, artifacts: Path) -> None:
    """x4 is one step: Gradio 6 refused the step slider's 1..1 range and the page showed only that error."""
    page = open_page(browser, app[1])
    page.locator("#upload input[type=file]").set_input_files(str(SAMPLE))
    page.wait_for_selector("#picture img")
    page.get_by_label("4", exact=True).check()
    choose(page, "#backbone", "bicubic")
    page.click("#run")
    page.wait_for_function("document.querySelector('#zoom-status').innerText.startsWith('Done')")
    assert page.locator("#zoom-gallery img").count() == 2
    assert "x4: (no prompt)" in page.locator("#zoom-gallery").inner_text()
    page.wait_for_selector("#zoom-zip", state="visible")  # its update may land just after the status
    assert "Slider" not in page.inner_text("body") and "Error" not in page.inner_text("#zoom-status")
    page.screenshot(path=str(artifacts / "app-x4.png"), full_page=True)
    page.close()


def test_a_run_that_fails_at_step_1_shows_its_reason(app, browser) -> None:
    """A prompter whose server is not there fails the first step: the page says so, not a slider's complaint."""
    page = open_page(browser, app[1])
    page.locator("#upload input[type=file]").set_input_files(str(SAMPLE))
    page.wait_for_selector("#picture img")
    page.get_by_label("16", exact=True).check()
    choose(page, "#backbone", "bicubic")
    choose(page, "#prompter", "openai")
    page.locator("#parg textarea").fill("http://127.0.0.1:1/v1,model=x,retries=0")
    page.click("#run")
    page.wait_for_function("document.querySelector('#zoom-status').innerText.startsWith('Stopped')")
    status = page.inner_text("#zoom-status")
    assert "no usable answer after 1 tries" in status and "Connection refused" in status, status
    assert "Slider" not in page.inner_text("body")
    page.close()


def test_a_bad_upload_is_a_message_in_the_page_and_writes_nothing(app, browser, tmp_path: Path, artifacts) -> None:
    demo, url = app
    folder = demo.chainzoom_folder
    before = kept(folder.root)
    bad = tmp_path / "holiday.png"
    bad.write_text("this is not a picture\n")
    page = open_page(browser, url)
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.wait_for_function("document.querySelector('#message').innerText.includes('Upload refused')")
    assert "holiday.png: not an image file" in page.inner_text("#message")
    page.screenshot(path=str(artifacts / "app-refused.png"))
    page.click("#run")  # nothing to run on: said in the page, nothing started
    page.wait_for_function("document.querySelector('#zoom-status').innerText.includes('Upload a photo')")
    page.close()
    assert kept(folder.root) == before
    assert not list(folder.cache.rglob("holiday*"))  # Gradio's copy of the refused upload is deleted too


def kept(root: Path) -> list[Path]:
    """What the app keeps in its folder, Gradio's cache aside."""
    found = root.rglob("*") if root.exists() else []
    return sorted(p.relative_to(root) for p in found if p.relative_to(root).parts[0] != "cache")


def test_the_app_serves_no_file_outside_its_folders(app) -> None:
    _, url = app
    for outside in ("/etc/passwd", str(ROOT / "pyproject.toml")):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{url}gradio_api/file={outside}", timeout=10)
        assert error.value.code in (403, 404), outside
